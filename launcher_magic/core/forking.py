"""Forking a job's nodes and ranks from an interpreter that has Paddle imported already.

Two users: the local engine's warm interpreter (`engines.local.warm`) and the node process of a
TrainJob's CPU pod (`training.node_launch`), which forks its ranks the same way.

No per-node launcher is imported at all: a node is a small forked process (`start_node`) that
gives each rank the environment `paddle.distributed.launch` would (`node_environments`, checked
against Paddle's own launcher in the tests), forks it, and stops its ranks in order, the way the
launcher does. A rank runs the job's `main.py` as `__main__`, as a cold rank's interpreter does.
Each child has its own random state (`reseed`) and no file descriptor but its standard streams
(`redirect_output`). Why forking is safe: see `warm`.

Locally, the supervisor uses this for its nodes and the warm process for supervisors.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import random
import runpy
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path

from launcher_magic.core.commands import job_environment
from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import JobSpec
from workbench_contract import environment as wbenv

LINGER_SECONDS = 10.0
LOOPBACK = "127.0.0.1"  # where every node of a local job is


# -- what a rank is given -------------------------------------------------------------------------

def free_endpoints(count: int, host: str = "127.0.0.1") -> list[str]:
    """`count` distinct free TCP endpoints on `host` (held open together, so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            socks.append(sock)
        return [f"{host}:{s.getsockname()[1]}" for s in socks]
    finally:
        for sock in socks:
            sock.close()


def node_environments(spec: JobSpec, job: JobDir, *, node: int, attempt: int,
                      master: str, endpoints: Sequence[str], pod_ip: str = LOOPBACK
                      ) -> list[dict[str, str]]:
    """Per local rank of `node`, the variables `paddle.distributed.launch` gives a collective CPU
    worker (Paddle 3's CollectiveController), plus the job's own (`job_environment`).

    `master` is rank 0's TCP store, `endpoints` one per global rank, `pod_ip` the node's own
    address (a local node's is the loopback address). Not set: Paddle's
    PADDLE_BACKUP_ENV_PATH, a file where its launcher copies each worker's whole environment
    (secrets included) in case a value is too long for the environment; none of these is."""
    nproc, world = spec.resources.nproc_per_node, spec.world_size
    base = job_environment(spec, job, master)
    # POD_IP as the supervisor gives a cold node's launcher, which passes it on to its workers.
    base.update({wbenv.NODE_RANK: str(node), wbenv.ATTEMPT: str(attempt), "POD_IP": pod_ip})
    envs = []
    for local in range(nproc):
        rank = node * nproc + local
        envs.append({
            **base,
            "PADDLE_GLOBAL_SIZE": str(world),
            "PADDLE_LOCAL_SIZE": str(nproc),
            "PADDLE_GLOBAL_RANK": str(rank),
            "PADDLE_LOCAL_RANK": str(local),
            "PADDLE_NNODES": str(spec.nodes),
            "PADDLE_CURRENT_ENDPOINT": endpoints[rank],
            "PADDLE_TRAINER_ID": str(rank),
            "PADDLE_TRAINERS_NUM": str(world),
            "PADDLE_RANK_IN_NODE": str(local),
            "PADDLE_AUTO_CLUSTER": "0",  # str() of the launcher's default (0)
            "PADDLE_TRAINER_ENDPOINTS": ",".join(endpoints),
            "PADDLE_DISTRI_BACKEND": "gloo",
            "PADDLE_LOG_DIR": str(job.node_log_dir(attempt, node)),
            "POD_NAME": f"{spec.job_id}-node-{node}",  # the launcher's name for the node
        })
    return envs


# -- forking --------------------------------------------------------------------------------------

class ForkedProcess:
    """A forked child, with the part of `subprocess.Popen` the supervisor and `stop_groups` use."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # collected elsewhere: its status is lost
                self.returncode = 1
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.02)
        return self.returncode


def redirect_output(path: Path | None) -> None:
    """stdin from /dev/null; stdout and stderr appended to `path`; every other fd closed."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    if path is not None:
        out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX") if hasattr(os, "sysconf") else 1024)
    # Unbuffered, as PYTHONUNBUFFERED makes a cold rank: a log line is there as soon as printed.
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = io.TextIOWrapper(io.FileIO(fd, "w", closefd=False), write_through=True,
                                  line_buffering=True, errors="backslashreplace")
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def reseed() -> None:
    """A child's own random state, as a freshly started interpreter would have."""
    random.seed()
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()
    core = sys.modules.get("paddle.base.core")
    if core is not None:
        core.default_cpu_generator().manual_seed(int.from_bytes(os.urandom(7), "little"))


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def fork(child, *, new_session: bool) -> ForkedProcess:
    """Run `child()` (it returns an exit code) in a forked process; never returns in the child."""
    _flush()
    pid = os.fork()
    if pid:
        return ForkedProcess(pid)
    code = 1
    try:
        if new_session:
            os.setsid()
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = child()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - a child reports and exits; it never returns
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        _flush()
        os._exit(code)


def _run_rank(env: Mapping[str, str], main_path: Path, log: Path) -> int:
    redirect_output(log)
    os.environ.update(env)  # over the supervisor's: the kernel's at submit, as a cold rank's
    reseed()
    try:
        # What a cold rank runs: main.py as __main__, which runs the training worker.
        runpy.run_path(str(main_path), run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    else:
        code = 0
    if code == 0:
        _linger(JobDir(main_path.parent), int(env[wbenv.ATTEMPT]), int(env["PADDLE_TRAINERS_NUM"]))
    # What a cold rank's interpreter does at exit (the cell's atexit hooks, Paddle's own).
    atexit._run_exitfuncs()
    return code


def _linger(job: JobDir, attempt: int, world: int) -> None:
    """Stay until every rank has recorded its end (each records before it lingers, so none
    waits on another), at most LINGER_SECONDS.

    A forked rank exits in a millisecond, where a cold one spends a while tearing its interpreter
    down; a peer still completing Paddle's gloo handshake with it then fails on the closed socket.
    """
    deadline = time.monotonic() + LINGER_SECONDS
    while time.monotonic() < deadline:
        records = job.read_rank_records(attempt)
        if len(records) >= world and all("exit_code" in r for r in records.values()):
            return
        time.sleep(0.02)


def _run_node(envs: Sequence[Mapping[str, str]], job: JobDir, attempt: int, node: int,
              nproc: int) -> int:
    """A forked local node: its output to its launch log, then its ranks (`run_ranks`)."""
    redirect_output(job.launch_log(attempt, node))
    logs = [job.rank_log(attempt, node * nproc + local, nproc) for local in range(nproc)]
    return run_ranks(envs, job.main_path, logs, node=node, nproc=nproc,
                     origin="the warm interpreter")


def run_ranks(envs: Sequence[Mapping[str, str]], main_path: Path, logs: Sequence[Path], *,
              node: int, nproc: int, origin: str, echo: bool = False) -> int:
    """Fork one rank per environment (each logging to its entry of `logs`), wait for them, and
    stop the rest when one fails or when this process is asked to stop; the node's exit code.
    `echo`: copy the first rank's log to this process's output as it grows, as Paddle's launcher
    shows its first worker's log."""
    stop: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, lambda s, _f: stop.append(s))
    ranks = [
        fork(lambda env=env, log=log: _run_rank(env, main_path, log), new_session=False)
        for env, log in zip(envs, logs, strict=True)
    ]
    print(f"node {node}: started ranks {[node * nproc + i for i in range(nproc)]} "
          f"(pids {[r.pid for r in ranks]}) from {origin}", flush=True)
    shown = _Echo(logs[0]) if echo else None
    code, signalled = 0, False
    while any(r.poll() is None for r in ranks):
        failed = [r.returncode for r in ranks if r.returncode not in (None, 0)]
        if (stop or failed) and not signalled:
            code = (128 + stop[0]) if stop else _exit_code(failed[0])
            for rank in ranks:
                if rank.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(rank.pid, signal.SIGTERM)
            signalled = True
        if shown:
            shown.copy()
        time.sleep(0.05)
    if shown:
        shown.copy()
    if not code:
        failed = [r.returncode for r in ranks if r.returncode]
        code = _exit_code(failed[0]) if failed else 0
    print(f"node {node}: ranks ended with {[r.returncode for r in ranks]}", flush=True)
    return code


class _Echo:
    """What a log file gained since the last `copy`, written to this process's stdout."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def copy(self) -> None:
        with contextlib.suppress(OSError), self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
            self.offset += len(data)
            if data:
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def start_node(spec: JobSpec, job: JobDir, *, node: int, attempt: int, master: str,
               endpoints: Sequence[str]) -> ForkedProcess:
    """Fork `node` of the job as the leader of a new session and process group (its ranks in
    it), logging to the node's launch log, as `start_group` starts a cold node's launcher."""
    envs = node_environments(spec, job, node=node, attempt=attempt, master=master,
                             endpoints=endpoints)
    job.node_log_dir(attempt, node).mkdir(parents=True, exist_ok=True)
    nproc = spec.resources.nproc_per_node
    return fork(lambda: _run_node(envs, job, attempt, node, nproc), new_session=True)


