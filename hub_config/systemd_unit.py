"""The systemd unit that runs the embedded default as a service (pure: settings in, text out).

What the unit asks of systemd, and why:
- `ExecStart` is `workbench up` with a fixed state folder (`/var/lib/paddle-workbench` by
  default), so users, the hub's database, its cookie secret and the job history's homes survive
  restarts and upgrades.
- Stopping: systemd sends SIGTERM to `workbench up` alone (`KillMode=mixed`), which stops the hub
  in order (servers, services, proxy); whatever is still there after `TimeoutStopSec` is killed,
  the users' servers included, since all of them stay in the service's cgroup.
- `Restart=on-failure`: a `workbench up` that dies is started again; it reclaims what the dead
  one left (`hub_config.instance`) before it serves.
- `Delegate=yes`: the service may make cgroups below its own (each user's server gets its
  profile's limits in one); `ProtectControlGroups` would forbid that and is not set.
- Hardening that still lets the hub create users' accounts (it writes /etc/passwd with
  `useradd`) and their homes: the kernel's tunables, modules, logs and clock are read-only or
  out of reach, `/usr` and `/boot` are read-only (`ProtectSystem=true`; `full` would make /etc
  read-only too), no realtime scheduling, no personality changes.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

UNIT_NAME = "paddle-workbench.service"
STATE_DIR = Path("/var/lib/paddle-workbench")
STOP_SECONDS = 120  # longer than `workbench up`'s own stop: the hub stops servers first


def unit_text(python: str, *, state_dir: Path = STATE_DIR, port: int = 8000,
              homes_dir: Path = Path("/home"), tenants: Path | None = None,
              extra_env: Sequence[tuple[str, str]] = ()) -> str:
    """The unit for `python -m hub_config.cli.main up` with these settings."""
    argv = [python, "-m", "hub_config.cli.main", "up", "--state-dir", str(state_dir),
            "--port", str(port), "--homes-dir", str(homes_dir)]
    if tenants is not None:
        argv += ["--tenants", str(tenants)]
    environment = [("PYTHONUNBUFFERED", "1"), *extra_env]
    lines = [
        "[Unit]",
        "Description=Paddle Workbench (the embedded default: hub, proxy and local engine)",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        f"ExecStart={shlex.join(argv)}",
        *(f"Environment={shlex.quote(f'{key}={value}')}" for key, value in environment),
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={STOP_SECONDS}",
        "Restart=on-failure",
        "RestartSec=5",
        "Delegate=yes",
        "LimitNOFILE=65536",
        "ProtectSystem=true",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectClock=yes",
        "RestrictRealtime=yes",
        "LockPersonality=yes",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)
