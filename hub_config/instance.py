"""One embedded workbench per state folder, and what a killed one leaves behind.

`workbench up` holds `StateLock` on `<state>/workbench.lock` for its whole life (an exclusive
`flock`, which the kernel drops when the process ends however it ends, never inherited by the
hub): a second `workbench up` on the same folder is refused with the holder's pid.

Every process the workbench starts for a state folder (the hub, and through it the proxy and the
hub's services) carries `MARKER=<state folder>` in its environment; users' servers do not (the
spawner passes them only what it chooses). `leftovers` finds the marked processes of a folder,
as the account running `workbench up`, and `reclaim` stops them: what a killed workbench or a
killed hub left running, found by the state folder and never by a process name.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_FILE = "workbench.lock"
MARKER = "WORKBENCH_INSTANCE"
# How long reclaim waits for a SIGTERM to work before SIGKILL.
TERM_SECONDS = 10.0


class StateHeld(RuntimeError):
    """Another `workbench up` holds the state folder; `pid` is its process (None: unknown)."""

    def __init__(self, state: Path, pid: int | None):
        self.pid = pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"{state} is in use by another workbench ({holder}); stop that one "
                         f"first, or give this one its own --state-dir")


class StateLock:
    """The lock that makes one `workbench up` the only one of a state folder."""

    def __init__(self, state: Path):
        self.path = state / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock and record this process in it. Raises StateHeld."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # not inheritable (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateHeld(self.path.parent, holder(self.path.parent)) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def holder(state: Path) -> int | None:
    """The pid recorded by the workbench that holds (or last held) `state`."""
    try:
        return int((state / LOCK_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass(frozen=True)
class Leftover:
    pid: int
    command: str


def leftovers(state: Path) -> list[Leftover]:
    """Processes of this account marked with `state` (see the module docstring), but this one."""
    marker = f"{MARKER}={state}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.geteuid():
                continue
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                errors="replace").strip()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        found.append(Leftover(int(entry.name), command))
    return found


def reclaim(state: Path, term_seconds: float = TERM_SECONDS) -> list[Leftover]:
    """Stop every leftover of `state`: SIGTERM, then SIGKILL to those still there after
    `term_seconds`. Returns what it stopped."""
    found = leftovers(state)
    for leftover in found:
        _signal(leftover.pid, signal.SIGTERM)
    deadline = time.monotonic() + term_seconds
    alive = {left.pid for left in found}
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = {left.pid for left in leftovers(state)} & alive
    for pid in alive:
        _signal(pid, signal.SIGKILL)
    return found


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass
