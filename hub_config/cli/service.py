"""`workbench service install|uninstall|status`: the embedded default as a systemd service.

`install` writes the unit (`hub_config.systemd_unit`) for this Python and these settings, checks
it with `systemd-analyze verify`, and where systemd is the init system enables and starts it.
Elsewhere (a container whose PID 1 is not systemd) it writes and verifies the unit and says what
to run where systemd runs. `uninstall` stops and disables the service and removes the unit; the
state folder (users, the hub's database) and the users' homes are kept. `status` says whether
the unit is installed, what systemd says of it, and which process holds the state folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from hub_config.cli import CommandError
from hub_config.instance import holder
from hub_config.systemd_unit import STATE_DIR, UNIT_NAME, unit_text

UNIT_DIR = Path("/etc/systemd/system")
SYSTEMD_RUNNING = Path("/run/systemd/system")  # present only when systemd is PID 1


def register(subparsers) -> None:
    parser = subparsers.add_parser("service", help="run the workbench as a systemd service")
    parser.add_argument("action", choices=("install", "uninstall", "status"))
    parser.add_argument("--state-dir", type=Path, default=STATE_DIR,
                        help=f"the service's state folder (default {STATE_DIR})")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1")
    parser.add_argument("--homes-dir", type=Path, default=Path("/home"),
                        help="where the users' accounts get their homes")
    parser.add_argument("--tenants", type=Path, default=None, help="the tenants file")
    parser.add_argument("--unit-dir", type=Path, default=UNIT_DIR,
                        help=f"where the unit is written (default {UNIT_DIR})")
    parser.add_argument("--no-start", action="store_true",
                        help="install: write and enable the unit, but do not start it")
    parser.set_defaults(func=run)


def systemd_running() -> bool:
    return SYSTEMD_RUNNING.is_dir()


def systemctl(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["systemctl", *argv], capture_output=True, text=True)


def verify(unit: Path) -> str:
    """What `systemd-analyze verify` says is wrong with the unit ("" when nothing). A setting it
    cannot parse is only a warning to it (it ignores the line), and a problem here."""
    if shutil.which("systemd-analyze") is None:
        raise CommandError("systemd-analyze is not installed (Debian package systemd): the "
                           "unit cannot be checked")
    checked = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                             text=True)
    said = (checked.stdout + checked.stderr).strip().splitlines()
    if not checked.returncode:
        said = [line for line in said if str(unit) in line or UNIT_NAME in line]
    return "\n".join(said)


def install(args) -> int:
    unit = args.unit_dir / UNIT_NAME
    if args.unit_dir == UNIT_DIR and os.geteuid() != 0:
        raise CommandError(f"writing {unit} needs root; run it with sudo")
    tenants = args.tenants.resolve() if args.tenants else None
    text = unit_text(sys.executable, state_dir=args.state_dir.resolve(), port=args.port,
                     homes_dir=args.homes_dir.resolve(), tenants=tenants)
    args.unit_dir.mkdir(parents=True, exist_ok=True)
    unit.write_text(text)
    unit.chmod(0o644)
    problems = verify(unit)
    if problems:
        raise CommandError(f"systemd-analyze verify found problems in {unit}:\n{problems}")
    print(f"Wrote {unit} (verified with systemd-analyze): the workbench on "
          f"http://127.0.0.1:{args.port}, state in {args.state_dir}")
    if not systemd_running():
        print("systemd is not the init system here, so nothing was started. Where it is, run: "
              f"systemctl daemon-reload && systemctl enable --now {UNIT_NAME}")
        return 0
    steps = [("daemon-reload",), ("enable", UNIT_NAME) if args.no_start
             else ("enable", "--now", UNIT_NAME)]
    for step in steps:
        done = systemctl(*step)
        if done.returncode:
            raise CommandError(f"systemctl {' '.join(step)} failed: {done.stderr.strip()}")
    print(f"Enabled {UNIT_NAME}" + ("" if args.no_start else " and started it") +
          f"; `journalctl -u {UNIT_NAME}` shows what it says")
    return 0


def uninstall(args) -> int:
    unit = args.unit_dir / UNIT_NAME
    if systemd_running():
        systemctl("disable", "--now", UNIT_NAME)
    if unit.exists():
        unit.unlink()
        print(f"Removed {unit}")
    else:
        print(f"{unit} was not installed")
    if systemd_running():
        systemctl("daemon-reload")
    print(f"Kept the state folder {args.state_dir} and the users' homes in {args.homes_dir}")
    return 0


def status(args) -> int:
    unit = args.unit_dir / UNIT_NAME
    print(f"unit: {unit} " + ("installed" if unit.exists() else "not installed"))
    if systemd_running():
        active = systemctl("is-active", UNIT_NAME).stdout.strip() or "unknown"
        print(f"systemd: {UNIT_NAME} is {active}")
    else:
        print("systemd: not the init system here")
    pid = holder(args.state_dir)
    running = pid is not None and Path(f"/proc/{pid}").exists()
    print(f"state folder: {args.state_dir} " +
          (f"held by workbench up (process {pid})" if running else "not in use"))
    return 0 if unit.exists() else 1


def run(args) -> int:
    return {"install": install, "uninstall": uninstall, "status": status}[args.action](args)
