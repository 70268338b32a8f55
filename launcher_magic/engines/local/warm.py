"""The warm interpreter: one Python per kernel with Paddle already imported, forking jobs on demand.

Without it, a local job pays for `import paddle` twice before its first step: once in each node's
`paddle.distributed.launch`, once more in each rank. With it, the kernel's local engine keeps one
process (`python -m launcher_magic.engines.local.warm <socket>`) that imports Paddle once, while
the user is still typing, and then waits on a Unix socket in a private (0700) folder. Each job
asks it for a supervisor; the supervisor forks its nodes and each node forks its ranks, all from
that pristine image, so a rank starts in milliseconds with Paddle loaded (`forking`: how a node
and its ranks are forked and what each is given). This module is the warm process's server and
the engine's handle on it (`WarmInterpreter`).

Why forking is safe here:
- Nothing has initialised a device or run user code in the warm process: it imports Paddle, NumPy
  and the workbench, and answers requests. Only CPU jobs start warm (`eligible`); GPU jobs take the
  cold path, so no CUDA context is ever forked.
- The warm process is single-threaded in Python; the one native thread `import paddle` starts is
  idle and holds no lock a child needs (a child has only the thread that forked it).
- Every child gets its own random state (Python, NumPy and Paddle's CPU generator are re-seeded
  from the OS), its own environment (the kernel's as it is at submit time, plus the job's: nothing
  of an earlier job, which ran in another child), and no file descriptor but stdin/stdout/stderr.
- Paddle reads some variables when it is imported (FLAGS_*, OMP_*, ...): when the kernel's or the
  job's differ from what the warm process imported with, the job takes the cold path.
- The warm process is the kernel's child, started by the same account in the same cgroup, so every
  rank runs with the user's identity and limits, exactly as a cold one would.
- It serves only its own account (the peer's uid is checked) and ends with the kernel: it watches
  the kernel's pid (and asks Linux to signal it when its parent dies).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from pathlib import Path

from launcher_magic.core.commands import job_process_environ
from launcher_magic.core.forking import fork, redirect_output, reseed
from launcher_magic.core.processes import pid_alive, start_time
from launcher_magic.core.spec import JobSpec

# Variables Paddle (or the numeric libraries under it) reads when it is imported: a job whose
# values differ from the warm process's cannot use it.
IMPORT_TIME_PREFIXES = ("FLAGS_", "OMP_", "MKL_", "KMP_", "OPENBLAS_", "GLOG_", "CUDA_", "LD_",
                        "PYTHON")
PR_SET_PDEATHSIG = 1
SOCKET_NAME = "fork.sock"
REQUEST_LIMIT = 1 << 20
CONNECT_SECONDS = 120.0  # the first request may wait for `import paddle` on a busy machine


class WarmUnavailable(RuntimeError):
    """The warm interpreter cannot start this job; the engine takes the cold path."""


def import_time_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` that take effect when Paddle is imported (PYTHONUNBUFFERED aside:
    the ranks set their streams unbuffered themselves)."""
    return {k: v for k, v in env.items()
            if k.startswith(IMPORT_TIME_PREFIXES) and k != "PYTHONUNBUFFERED"}


def eligible(spec: JobSpec) -> str | None:
    """Why `spec` cannot start warm, or None when it can."""
    if spec.resources.gpus_per_node:
        return "GPU jobs start cold (no device state is ever forked)"
    if import_time_env(spec.env):
        return f"--env sets {', '.join(sorted(import_time_env(spec.env)))}, read at import"
    return None


# -- the warm process -----------------------------------------------------------------------------

def _recv_line(conn: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk or len(data) > REQUEST_LIMIT:
            raise ConnectionError("incomplete request")
        data += chunk
    return data


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


# What importing Paddle set in this process's environment (OMP_NUM_THREADS=1, say): a cold process
# sets it when it imports Paddle, so every child gets it on top of the kernel's environment.
_SET_BY_IMPORT: dict[str, str] = {}


def _start_supervisor(request: dict) -> int:
    os.chdir(request["cwd"])
    redirect_output(Path(request["log"]))
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(_SET_BY_IMPORT)
    reseed()
    from launcher_magic.engines.local.supervisor import main

    return main(request["argv"])


def _serve_one(conn: socket.socket, listener: socket.socket) -> None:
    try:
        if _peer_uid(conn) != os.getuid():
            raise PermissionError("request from another account")
        request = json.loads(_recv_line(conn))

        def child() -> int:
            listener.close()
            conn.close()
            return _start_supervisor(request)

        process = fork(child, new_session=True)
        reply = {"pid": process.pid, "started": start_time(process.pid)}
    except Exception as err:  # noqa: BLE001 - the engine falls back to the cold path
        reply = {"error": f"{type(err).__name__}: {err}"}
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(reply).encode() + b"\n")
    conn.close()


def _preload() -> None:
    """Import what every job needs, once. Paddle's import-time warnings go to this process's log."""
    import numpy  # noqa: F401

    import launcher_magic.engines.local.supervisor  # noqa: F401
    import launcher_magic.training.worker  # noqa: F401

    with contextlib.suppress(ImportError):
        import paddle  # noqa: F401
        import paddle.distributed  # noqa: F401


def serve(socket_path: Path, owner_pid: int | None) -> int:
    """Listen first (a job may ask while Paddle is still importing: it waits), then preload, then
    fork a supervisor per request until the owner is gone or SIGTERM."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    parent = os.getppid()
    done: list[int] = []
    signal.signal(signal.SIGTERM, lambda s, _f: done.append(s))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen(16)
    before = dict(os.environ)
    _preload()
    _SET_BY_IMPORT.update({k: v for k, v in os.environ.items() if before.get(k) != v})
    listener.settimeout(0.5)
    try:
        while not done and (owner_pid is None or (pid_alive(owner_pid)
                                                  and os.getppid() == parent)):
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                conn = None
            except InterruptedError:
                continue
            if conn is not None:
                conn.settimeout(30)
                _serve_one(conn, listener)
            _reap()
    finally:
        listener.close()
        with contextlib.suppress(OSError):
            socket_path.unlink()
    return 0


def _reap() -> None:
    """Collect supervisors that ended (they were reported to the engine already)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return


# -- the engine's side ----------------------------------------------------------------------------

class WarmInterpreter:
    """The kernel's handle on its warm process: start it, ask it for supervisors, end it.

    Not thread-safe; the engine calls it from the kernel's main thread (submit)."""

    def __init__(self, python: str, owner_pid: int | None = None):
        self.python = python
        self.folder = Path(tempfile.mkdtemp(prefix="paddle-workbench-warm-"))  # 0700
        self.socket_path = self.folder / SOCKET_NAME
        self.env = import_time_env(os.environ)
        argv = [python, "-m", "launcher_magic.engines.local.warm", str(self.socket_path)]
        if owner_pid:
            argv += ["--owner-pid", str(owner_pid)]
        with open(self.folder / "warm.log", "ab") as log:
            self.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True,
                                            env=job_process_environ(os.environ))
        # Ended when the kernel exits, or as soon as the engine holding it is dropped.
        self._finalizer = weakref.finalize(self, _end, self.process, self.folder)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def unusable(self) -> str | None:
        """Why this warm process cannot start a job now (None: it can)."""
        if not self.alive():
            return f"the warm interpreter exited ({self.process.returncode}); see its log"
        if import_time_env(os.environ) != self.env:
            return "the kernel's import-time variables changed since the warm interpreter started"
        return None

    def rss_kib(self) -> int | None:
        """The warm process's resident memory now (KiB), None when unknown."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return None

    def start_supervisor(self, argv: list[str], env: Mapping[str, str], cwd: Path,
                         log: Path) -> tuple[int, int | None]:
        """Fork a supervisor running `python -m launcher_magic.engines.local.supervisor argv`
        in `cwd` with `env`, output to `log`. Returns its (pid, start time).

        Raises WarmUnavailable when the warm process cannot (the engine then starts it cold)."""
        reason = self.unusable()
        if reason:
            raise WarmUnavailable(reason)
        request = {"argv": list(argv), "env": dict(env), "cwd": str(cwd), "log": str(log)}
        deadline = time.monotonic() + CONNECT_SECONDS
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                while True:
                    try:
                        conn.connect(str(self.socket_path))
                        break
                    except (FileNotFoundError, ConnectionRefusedError):
                        if not self.alive() or time.monotonic() > deadline:
                            raise
                        time.sleep(0.01)
                conn.settimeout(max(1.0, deadline - time.monotonic()))
                conn.sendall(json.dumps(request).encode() + b"\n")
                reply = json.loads(_recv_line(conn))
        except (OSError, ValueError) as err:
            raise WarmUnavailable(f"the warm interpreter did not answer: {err}") from None
        if "pid" not in reply:
            raise WarmUnavailable(f"the warm interpreter refused: {reply.get('error')}")
        return int(reply["pid"]), reply.get("started")

    def close(self) -> None:
        """End the warm process (jobs it started are in their own sessions and go on)."""
        self._finalizer()


def _end(process: subprocess.Popen, folder: Path) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher_magic.engines.local.warm")
    parser.add_argument("socket", type=Path)
    parser.add_argument("--owner-pid", type=int, default=None)
    args = parser.parse_args(argv)
    return serve(args.socket, args.owner_pid)


if __name__ == "__main__":
    sys.exit(main())
