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


def _stat_fields(pid: int | str) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, pgrp, ...)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may hold spaces and parentheses: split after the last ')'.
    return stat[stat.rfind(")") + 2:].split()


def reap_children(keep: Iterable[int] = ()) -> None:
    """Collect exited children (adopted orphans), except `keep`: pids a Popen still waits for,
    whose exit status would otherwise be lost to it."""
    keep = set(keep)
    proc = Path("/proc")
    if not proc.is_dir():
        return
    me = str(os.getpid())
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in keep:
            continue
        try:
            fields = _stat_fields(entry.name)
        except OSError:
            continue
        if fields[0] == "Z" and fields[1] == me:
            try:
                os.waitpid(int(entry.name), os.WNOHANG)
            except ChildProcessError:
                pass


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
            fields = _stat_fields(entry.name)
        except OSError:
            continue
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
        reap_children(keep=[leader.pid for leader in leaders if leader.returncode is None])
        if not any(group_members(pgid) for pgid in pgids):
            for leader in leaders:  # dead (no live member left): collect their exit status
                try:
                    leader.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
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
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return True


def start_time(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, /proc/<pid>/stat field 22); None if unknown.

    A pid and its start time name one process for good: a recycled pid has another start time.
    """
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def same_process_alive(pid: int | None, started: int | None) -> bool:
    """True while the process `pid` that started at `started` (see `start_time`) lives."""
    if not pid_alive(pid):
        return False
    return started is None or start_time(pid) in (None, started)
