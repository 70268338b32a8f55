"""A profile's CPU and memory limits on one machine: one cgroup (v1) per user server.

The Littlest JupyterHub puts each user's server in a systemd slice; here the hub, as root, makes
`<controller>/<the hub's own cgroup>/workbench/<account>` for the `cpu`, `memory` and `pids`
controllers, writes the profile's limits (`cpu.cfs_quota_us` over `cpu.cfs_period_us`,
`memory.limit_in_bytes`, `pids.max`), and the server joins it between fork and exec. Its kernels,
jobs and VisualDL boards are its children, and a process cannot leave a cgroup without root, so
the limit binds everything the user starts. When the server stops, what is left in the cgroup is
stopped too and the cgroup removed (as stopping a systemd unit does).

Only cgroup v1 is handled (the controllers mounted at /sys/fs/cgroup/<controller>); `unavailable`
says why limits cannot be enforced elsewhere (cgroup v2 only, not root).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

CONTROLLERS = ("cpu", "memory", "pids")
CFS_PERIOD_US = 100_000
UNLIMITED = "-1"


@dataclass(frozen=True)
class Limits:
    """What a profile allows one server: CPUs (cores, None: no limit), memory (bytes, None: no
    limit) and tasks (processes and threads; None: no limit)."""

    cpu: float | None
    memory: int | None
    tasks: int | None = None


def limit_files(limits: Limits,
                period_us: int = CFS_PERIOD_US) -> dict[str, list[tuple[str, str]]]:
    """The files to write, per controller and in order, to apply `limits` to a v1 cgroup.

    The swap-inclusive memory limit is opened first and set last, because the kernel wants it
    never below the memory limit; it is skipped where swap accounting is off.
    """
    memory = str(limits.memory) if limits.memory else UNLIMITED
    quota = str(max(1000, round(limits.cpu * period_us))) if limits.cpu else UNLIMITED
    return {
        "cpu": [("cpu.cfs_period_us", str(period_us)), ("cpu.cfs_quota_us", quota)],
        "memory": [("memory.memsw.limit_in_bytes", UNLIMITED), ("memory.limit_in_bytes", memory),
                   ("memory.memsw.limit_in_bytes", memory)],
        "pids": [("pids.max", str(limits.tasks) if limits.tasks else "max")],
    }


def own_cgroups(proc_self_cgroup: str) -> dict[str, str]:
    """Each v1 controller's cgroup path from the text of /proc/self/cgroup
    (`4:memory:/a/b`, `3:cpu,cpuacct:/`); the v2 line (`0::/`) is skipped."""
    paths = {}
    for line in proc_self_cgroup.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in filter(None, controllers.split(",")):
            paths[controller] = path
    return paths


def cgroup_dirs(root: Path, own: Mapping[str, str], parent: str, name: str) -> dict[str, Path]:
    """Where the cgroup `name` lives under each controller: below the hub's own cgroup, so that
    whatever limits the hub (a service manager, a container) also bounds its users."""
    return {
        controller: root / controller / own.get(controller, "/").lstrip("/") / parent / name
        for controller in CONTROLLERS
    }


def unavailable(root: Path = Path("/sys/fs/cgroup")) -> str | None:
    """Why per-server limits cannot be enforced here, or None when they can."""
    if os.geteuid() != 0:
        return "the hub does not run as root"
    missing = [c for c in CONTROLLERS if not (root / c / "cgroup.procs").exists()]
    if missing:
        return (f"the cgroup v1 controllers {', '.join(missing)} are not mounted under {root} "
                "(cgroup v2 alone is not supported yet)")
    return None


class ServerCgroup:
    """The cgroup of one user server, in every controller of `CONTROLLERS`."""

    def __init__(self, dirs: Mapping[str, Path]):
        self.dirs = dict(dirs)

    @classmethod
    def for_account(cls, account: str, root: Path = Path("/sys/fs/cgroup"),
                    parent: str = "workbench") -> ServerCgroup:
        own = own_cgroups(Path("/proc/self/cgroup").read_text())
        return cls(cgroup_dirs(root, own, parent, account))

    def create(self, limits: Limits) -> None:
        """Make the cgroup (or reuse it) and write `limits`. Raises OSError."""
        for controller, files in limit_files(limits).items():
            folder = self.dirs[controller]
            folder.mkdir(parents=True, exist_ok=True)
            for name, value in files:
                path = folder / name
                if name.startswith("memory.memsw") and not path.exists():
                    continue  # no swap accounting in this kernel
                path.write_text(value)

    def joiner(self) -> Callable[[], None]:
        """A function for `preexec_fn`: moves the calling (just forked) process into the cgroup.

        It only opens and writes files whose paths were computed here, as little as can run
        safely between fork and exec."""
        targets = [os.fsencode(folder / "cgroup.procs") for folder in self.dirs.values()]

        def join() -> None:
            pid = str(os.getpid()).encode()
            for target in targets:
                fd = os.open(target, os.O_WRONLY)
                try:
                    os.write(fd, pid)
                finally:
                    os.close(fd)

        return join

    def pids(self) -> list[int]:
        """The processes in the cgroup (its `pids` controller sees every one)."""
        try:
            text = (self.dirs["pids"] / "cgroup.procs").read_text()
        except FileNotFoundError:
            return []
        return [int(pid) for pid in text.split()]

    def contains(self, pid: int) -> bool:
        return pid in self.pids()

    def remove(self, grace: float = 5.0) -> list[int]:
        """Stop what is left in the cgroup (SIGTERM, then SIGKILL after `grace` seconds) and
        remove it. Returns the pids it had to signal. Raises OSError when a folder stays busy."""
        left = self.pids()
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + wait
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.05)
        for folder in self.dirs.values():
            for _ in range(50):
                try:
                    folder.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while the last exits are accounted
                    time.sleep(0.1)
            else:
                folder.rmdir()
        return left
