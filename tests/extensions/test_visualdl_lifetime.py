"""How long a `%visualdl` board lives: it belongs to the kernel that started it and goes when that
kernel goes, however it dies, without anything running in the child between fork and exec."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher_magic.core.processes import pid_alive
from launcher_magic.kernel import visualdl as boards

from .conftest import requires_visualdl, write_scalars

# A stand-in for a kernel: starts a board the way `%visualdl` does, says which, then waits.
OWNER = """
import sys, time
from launcher_magic.kernel import visualdl as boards
board = boards.start(sys.argv[1], env={}).instance
print(board.pid, flush=True)
time.sleep(600)
"""
# The board learns at once (its lifeline closes); generous for a busy machine.
GONE_WITHIN = 30.0


def _wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rfind(")") + 2:].split()[0]


class _Refused(Exception):
    """Raised by the stand-in Popen, so nothing is started."""


def test_start_runs_nothing_in_the_child_before_exec_and_hands_over_a_lifeline(
        tmp_path, runtime_dir, monkeypatch):
    seen = {}

    def popen(argv, **kwargs):
        seen.update(argv=argv, kwargs=kwargs)
        raise _Refused

    monkeypatch.setattr(boards, "_check_installed", lambda: None)
    monkeypatch.setattr(boards.subprocess, "Popen", popen)
    with pytest.raises(_Refused):
        boards.start(tmp_path, env={})
    # preexec_fn runs Python between fork and exec: unsafe in a kernel with threads
    assert seen["kwargs"].get("preexec_fn") is None
    assert seen["kwargs"]["start_new_session"] is True  # its pid is its group's: how it is stopped
    argv = seen["argv"]
    lifeline = int(argv[argv.index("--lifeline") + 1])
    assert seen["kwargs"]["pass_fds"] == (lifeline,)  # the read end, and nothing else
    assert boards._LIFELINES == {}  # the refused start kept no write end open


@requires_visualdl
def test_a_board_goes_when_the_kernel_that_started_it_is_killed(tmp_path, runtime_dir):
    logdir = tmp_path / "logs"
    write_scalars(logdir, "run")
    errors = tmp_path / "owner.err"
    with open(errors, "wb") as stderr:
        owner = subprocess.Popen([sys.executable, "-c", OWNER, str(logdir)],
                                 stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        line = owner.stdout.readline().strip()
        assert line.isdigit(), f"the owner started no board: {errors.read_text()}"
        board = int(line)
        assert pid_alive(board)
        owner.send_signal(signal.SIGKILL)  # nothing of the owner's runs: no atexit, no stop
        # not reaped yet: the dead owner is a zombie while the board decides
        assert _wait_until(lambda: not pid_alive(board), GONE_WITHIN), (
            f"the board (pid {board}) outlived its owner")
    finally:
        owner.kill()
        owner.wait()
        owner.stdout.close()
    # what it said on the way out, in the log its owner gave it
    (log,) = (runtime_dir / boards.RECORDS_FOLDER).glob("*.log")
    assert "the kernel that started it has gone" in log.read_text()


def test_a_board_whose_lifeline_is_already_closed_does_not_stay(tmp_path):
    lifeline, keep = os.pipe()
    os.close(keep)  # its starter is gone before the board runs
    argv = boards.server_command(sys.executable, tmp_path, boards._free_port(), "/visualdl",
                                 lifeline=lifeline)
    try:
        board = subprocess.run(argv, capture_output=True, text=True, timeout=GONE_WITHIN * 2,
                               start_new_session=True, pass_fds=(lifeline,))
    finally:
        os.close(lifeline)
    assert board.returncode == 0 and "has gone" in board.stdout
