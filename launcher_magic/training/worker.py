"""What every rank runs: record how the rank ends, then run the notebook cell as `__main__`.

`paddle.distributed.launch` starts `<job dir>/main.py` once per rank, which calls `main`. The rank
writes `ranks/attempt-<a>/rank-<r>.json` when it starts and when it ends, so the panel can say which
rank failed and with what, even when the launcher only reports the node's exit code.

Rendezvous without waiting: Paddle's non-zero ranks connect to rank 0's TCP store and, if it is not
listening yet, retry only every few seconds. Each rank imports paddle first (the cell would do so
anyway) and ranks other than 0 wait until rank 0's store accepts connections, polling quickly, so
their first connect succeeds. Nothing the training computes changes.

Variables: what the notebook pushed (`--push`) is in the cell's globals when it starts; when the
cell ends well, rank 0 saves its values of the pulled names (`--pull`) for the kernel (see
`launcher_magic.core.transfer`).
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from launcher_magic.core.jobdir import JobDir, atomic_write_json
from launcher_magic.core.status import RankState
from launcher_magic.core.transfer import read_push, write_pull
from workbench_contract import environment as wbenv

STORE_WAIT_SECONDS = 120.0
STORE_POLL_SECONDS = 0.02


def _record(job: JobDir, attempt: int, rank: int, node: int, state: RankState, **extra) -> None:
    path = job.rank_record(attempt, rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"rank": rank, "node": node, "state": state.value, "pid": os.getpid(),
              "time": time.time(), **extra}
    atomic_write_json(path, record)


def wait_for_store(endpoint: str, timeout: float = STORE_WAIT_SECONDS,
                   gone: Callable[[], bool] = lambda: False) -> bool:
    """True once `host:port` accepts a TCP connection; False after `timeout` seconds, or as soon
    as `gone()` says the store will never open (rank 0 ended without opening it: a cell that
    never calls `init_parallel_env`)."""
    host, _, port = endpoint.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, int(port)), timeout=1):
                return True
        except OSError:
            if gone():
                return False
            time.sleep(STORE_POLL_SECONDS)
    return False


def _rank0_ended(job: JobDir, attempt: int) -> bool:
    """Whether rank 0 of `attempt` has recorded its end."""
    try:
        record = json.loads(job.rank_record(attempt, 0).read_text())
    except (OSError, ValueError):
        return False
    return record.get("state") != RankState.RUNNING.value


def _prepare_rendezvous(job: JobDir, attempt: int, rank: int) -> None:
    world = int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))
    if world < 2:
        return
    try:
        import paddle  # noqa: F401  (warm the import the cell is about to do)
    except ImportError:
        return
    store = os.environ.get("PADDLE_MASTER", "")
    if rank != 0 and ":" in store:
        wait_for_store(store, gone=lambda: _rank0_ended(job, attempt))


def _terminate(signum, _frame):
    # Turn the launcher's SIGTERM into SystemExit so the rank records that it was stopped.
    raise SystemExit(128 + signum)


def main(main_path: str) -> None:
    job = JobDir(Path(main_path).resolve().parent)
    rank = int(os.environ.get("PADDLE_TRAINER_ID", "0"))
    node = int(os.environ.get(wbenv.NODE_RANK, "0"))
    attempt = int(os.environ.get(wbenv.ATTEMPT, "0"))
    signal.signal(signal.SIGTERM, _terminate)
    _record(job, attempt, rank, node, RankState.RUNNING)

    code, error, state = 0, None, RankState.SUCCEEDED
    try:
        spec = job.read_spec()
        pushed = read_push(job.path) if spec.push else {}
        _prepare_rendezvous(job, attempt, rank)
        sys.argv = [str(job.cell_path)]
        sys.path.insert(0, str(job.path))
        names = runpy.run_path(str(job.cell_path), init_globals=pushed, run_name="__main__")
        if spec.pull and rank == 0:
            write_pull(job.path, spec.pull, names)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            code = exc.code if isinstance(exc.code, int) else 1
            state = RankState.STOPPED if code == 128 + signal.SIGTERM else RankState.FAILED
            error = f"SystemExit({exc.code!r})"
    except BaseException as exc:  # the cell's own error: report it, then fail the rank
        traceback.print_exc()
        code, state = 1, RankState.FAILED
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        _record(job, attempt, rank, node, state, exit_code=code, error=error)
    if code:
        # os._exit: Paddle's exit hooks can block on a peer that is gone; the rank has ended.
        os._exit(code)
    sys.exit(0)
