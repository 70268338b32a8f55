"""Process groups: start them, tell whether anything in them is alive, and stop them for good.

Every node of a local job is one process group (its launcher and the launcher's workers). Stopping
escalates SIGINT (to the launcher, which stops its workers in order), then SIGTERM and SIGKILL to
the whole group, each step with its own timeout, as JupyterHub's local spawner does.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class StopTimeouts:
    """Seconds to wait after each signal before the next, stronger one."""

    interrupt: float = 5.0
    terminate: float = 5.0
    kill: float = 5.0


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux), so workers whose launcher died are still ours to reap."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def reap_children() -> None:
    """Collect every exited child that nobody else waits for."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def start_group(
    argv: list[str], env: Mapping[str, str], cwd: Path, log_path: Path
) -> subprocess.Popen:
    """Start `argv` as the leader of a new session and process group, output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            argv,
            env=dict(env),
            cwd=str(cwd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
            return [pgid]
        except (ProcessLookupError, PermissionError):
            return []
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(pgids: Iterable[int], timeout: float, leaders: Iterable[subprocess.Popen]) -> bool:
    deadline = time.monotonic() + timeout
    pgids = list(pgids)
    while True:
        for leader in leaders:
            leader.poll()
        reap_children()
        if not any(group_members(pgid) for pgid in pgids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_groups(
    pgids: Iterable[int],
    timeouts: StopTimeouts | None = None,
    leaders: Iterable[subprocess.Popen] = (),
) -> bool:
    """Stop every process in the groups: SIGINT to each leader, then SIGTERM, then SIGKILL.

    Returns True when nothing is left alive (always, unless a process ignores SIGKILL).
    """
    timeouts = timeouts or StopTimeouts()
    pgids = [pgid for pgid in pgids if pgid]
    leaders = list(leaders)
    alive = [pgid for pgid in pgids if group_members(pgid)]
    if not alive:
        return True
    for pgid in alive:
        try:
            os.kill(pgid, signal.SIGINT)  # the leader; it stops its own workers in order
        except (ProcessLookupError, PermissionError):
            pass
    if _wait_gone(alive, timeouts.interrupt, leaders):
        return True
    for sig, timeout in ((signal.SIGTERM, timeouts.terminate), (signal.SIGKILL, timeouts.kill)):
        for pgid in alive:
            _signal_group(pgid, sig)
        if _wait_gone(alive, timeout, leaders):
            return True
    return False


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
