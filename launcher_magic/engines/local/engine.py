"""The local engine: each job runs under its own supervisor process on this machine.

The supervisor (`launcher_magic.engines.local.supervisor`) owns the job's process groups and is
the one writer of the job's `status.json`; this engine starts it, records its pid (with the
process's start time, so a recycled pid is never mistaken for it) in `supervisor.pid`, reads the
status it writes, and stops it. The supervisor watches the kernel that started it, so a job never
outlives its kernel, whether the kernel shut down cleanly or was killed, unless it was launched with
`--keep`: then the supervisor does not watch the kernel and any kernel of the user may attach.

When the supervisor is gone without having written a final state (it was killed), the engine
stops whatever is left of the job's process groups and reports the job Failed (or Stopped, when it
was asked to stop); that conclusion follows from the dead supervisor every time it is drawn, so it
never changes and is not written.

Warm start (`LocalEngine.warm`, on by default): the first local job of a kernel starts one warm
interpreter (`launcher_magic.engines.local.warm`) that imports Paddle once and then forks each
job's supervisor, nodes and ranks, so a rank reaches the cell without importing Paddle again. A job
the warm interpreter cannot take (GPUs, import-time variables that differ, the warm process gone)
starts cold, as before: the supervisor runs `paddle.distributed.launch` per node.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from traitlets import Bool, Float, Unicode, default

from launcher_magic.core.commands import assign_devices, job_process_environ
from launcher_magic.core.jobdir import JobHandle, tail_lines
from launcher_magic.core.processes import (
    StopTimeouts,
    same_process_alive,
    start_time,
    stop_groups,
)
from launcher_magic.core.spec import JobSpec, SpecError
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.engines.base import Engine, EngineError, EngineUnavailable
from launcher_magic.engines.local import isolation
from launcher_magic.engines.local.devices import detect_gpus
from launcher_magic.engines.local.warm import WarmInterpreter, WarmUnavailable, eligible

PID_FILE = "supervisor.pid"
LOG_FILE = "supervisor.log"
# Spec fields a cluster enforces and this engine cannot: (field, what the user sees).
CLUSTER_ONLY = (("image", "--image"), ("cpu", "--cpu"), ("memory", "--memory"))
PADDLE_MISSING = (
    "PaddlePaddle is not installed in this kernel's environment ({python}), so the job's ranks "
    "could not start. Install it in this environment (pip install paddlepaddle for CPU, "
    "paddlepaddle-gpu for GPUs, or pip install 'paddle-workbench[paddle]') and restart the kernel"
)


def has_paddle(python: str) -> bool:
    """Whether `python` can import paddle (asked without importing it here when it is us)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        return importlib.util.find_spec("paddle") is not None
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('paddle') is None)"
    try:
        return subprocess.run([python, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class LocalEngine(Engine):
    """Process groups on this machine, one per node, rendezvousing over loopback."""

    name = "local"

    python = Unicode(help="The Python that runs the supervisor and Paddle's launcher.").tag(
        config=True
    )

    @default("python")
    def _default_python(self) -> str:
        return sys.executable

    interrupt_timeout = Float(
        5.0, help="Seconds a stopping node gets after SIGINT before SIGTERM."
    ).tag(config=True)
    terminate_timeout = Float(
        5.0, help="Seconds a stopping node gets after SIGTERM before SIGKILL."
    ).tag(config=True)

    warm = Bool(
        True,
        help="""Start CPU jobs from a warm interpreter: one process per kernel, started with the
        kernel's first local job, that has Paddle imported and forks each job's ranks, so a job
        does not wait for `import paddle` (twice, cold). It holds the memory of a Python with
        Paddle imported (about 300 MiB) for as long as the kernel lives. False: every job starts
        cold, through `paddle.distributed.launch`.""",
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._children: dict[str, subprocess.Popen] = {}
        self._paddle_checked: set[str] = set()
        self._warm: WarmInterpreter | None = None
        self._network_probe: concurrent.futures.Future | None = None

    @property
    def warm_interpreter(self) -> WarmInterpreter | None:
        """The kernel's warm interpreter, once a job has started it (None before, or when off)."""
        return self._warm

    def _warm_for(self, spec: JobSpec) -> WarmInterpreter | None:
        """The warm interpreter that starts `spec`, started now if need be; None: start it cold."""
        if not self.warm or eligible(spec) is not None:
            return None
        if self._warm is not None and not self._warm.alive():
            self.log.warning("The warm interpreter exited (%s); starting another",
                             self._warm.process.returncode)
            self._warm.close()
            self._warm = None
        if self._warm is None:
            try:
                self._warm = WarmInterpreter(self.python, owner_pid=os.getpid())
            except OSError as err:
                self.log.warning("Could not start the warm interpreter: %s", err)
                return None
            self.log.info("Started the warm interpreter (pid %s)", self._warm.pid)
        return self._warm

    @property
    def timeouts(self) -> StopTimeouts:
        return StopTimeouts(self.interrupt_timeout, self.terminate_timeout)

    # -- before the job ------------------------------------------------------------------------

    def _devices(self, spec: JobSpec) -> list[list[int]]:
        if spec.resources.gpus_per_node == 0:
            return [[] for _ in range(spec.nodes)]
        gpus = detect_gpus()
        if not gpus:
            raise SpecError(
                f"--gpus {spec.resources.gpus_per_node} asks for GPUs, but this machine has none "
                "visible; drop --gpus to train on CPU"
            )
        try:
            return assign_devices(spec, gpus)
        except ValueError as err:
            raise SpecError(str(err)) from None

    def preflight(self, spec: JobSpec) -> None:
        if self.python not in self._paddle_checked:
            if not has_paddle(self.python):
                raise EngineUnavailable(PADDLE_MISSING.format(python=self.python))
            self._paddle_checked.add(self.python)
        self._devices(spec)
        self._probe_network()  # answered by the time the panel asks for the notes
        self._warm_for(spec)  # importing Paddle while the job directory is written

    def notes(self, spec: JobSpec) -> list[str]:
        ignored = [flag for fieldname, flag in CLUSTER_ONLY
                   if getattr(spec.resources, fieldname, None) or
                   (fieldname == "image" and spec.image and spec.image != self.context.image)]
        notes = [f"{', '.join(ignored)} not used by the local engine: ranks run in this kernel's "
                 "environment with no per-job CPU or memory limit"] if ignored else []
        shared = self._shared_network()
        if shared:
            notes.append("other accounts of this machine can reach this job's ports (its "
                         f"rendezvous and Paddle's stores): {shared}")
        return notes

    def _probe_network(self) -> None:
        """Ask, once and in the background, whether jobs get a network of their own here."""
        if self._network_probe is None:
            pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="network-probe")
            self._network_probe = pool.submit(isolation.available, self.python)
            pool.shutdown(wait=False)

    def _shared_network(self) -> str | None:
        """Why jobs here run on the machine's loopback, not a network of their own (None: they
        do not)."""
        self._probe_network()
        try:
            return self._network_probe.result(timeout=60)
        except concurrent.futures.TimeoutError:
            return "the check of this machine did not answer within a minute"

    # -- the job -------------------------------------------------------------------------------

    def submit(self, job: JobHandle) -> None:
        devices = self._devices(job.spec)
        argv = [
            self.python, "-m", "launcher_magic.engines.local.supervisor", str(job.dir.path),
            "--interrupt-timeout", str(self.interrupt_timeout),
            "--terminate-timeout", str(self.terminate_timeout),
        ]
        if not job.spec.keep:  # the supervisor ends the job when this kernel is gone
            argv += ["--owner-pid", str(os.getpid())]
        if any(devices):
            argv += ["--devices", ";".join(",".join(map(str, d)) for d in devices)]
        warm = self._warm_for(job.spec)
        if warm is not None:
            try:
                # The supervisor's own arguments: argv less `python -m <module>`.
                pid, started = warm.start_supervisor(
                    argv[3:] + ["--warm"], job_process_environ(os.environ), job.dir.path,
                    job.dir.path / LOG_FILE)
            except WarmUnavailable as err:
                self.log.warning("Starting job %s cold: %s", job.job_id, err)
            else:
                (job.dir.path / PID_FILE).write_text(f"{pid} {started or ''}\n")
                self.log.info("Started job %s warm (supervisor pid %s)", job.job_id, pid)
                return
        try:
            with open(job.dir.path / LOG_FILE, "ab") as log:
                child = subprocess.Popen(
                    argv, cwd=str(job.dir.path), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True,
                    env=job_process_environ(os.environ),
                )
        except OSError as err:
            raise EngineError(f"could not start the job's supervisor ({self.python}): "
                              f"{err.strerror or err}") from None
        self._children[job.job_id] = child
        (job.dir.path / PID_FILE).write_text(f"{child.pid} {start_time(child.pid) or ''}\n")
        self.log.info("Started job %s (supervisor pid %s)", job.job_id, child.pid)

    def _supervisor(self, job: JobHandle) -> tuple[int | None, int | None]:
        """The supervisor's (pid, start time), from what submit recorded."""
        try:
            pid, _, started = (job.dir.path / PID_FILE).read_text().strip().partition(" ")
            return int(pid), int(started) if started else None
        except (OSError, ValueError):
            return None, None

    def _alive(self, job: JobHandle) -> bool:
        child = self._children.get(job.job_id)
        if child is not None and child.poll() is not None:
            del self._children[job.job_id]  # reaped: it is no zombie of ours any more
        return same_process_alive(*self._supervisor(job))

    def _read(self, job: JobHandle) -> JobStatus:
        return job.dir.read_status() or JobStatus(job_id=job.job_id)

    def status(self, job: JobHandle) -> JobStatus:
        status = self._read(job)
        if status.state.is_terminal() or self._alive(job):
            return status
        # Re-read: the supervisor may have written its last status just before exiting.
        status = self._read(job)
        if status.state.is_terminal():
            return status
        return self._concluded(job, status, JobState.FAILED,
                               f"the job's supervisor exited unexpectedly; see {LOG_FILE}")

    def _concluded(self, job: JobHandle, status: JobStatus, state: JobState,
                   message: str) -> JobStatus:
        """The end of a job whose supervisor is gone without saying so: no process of it may be
        left, and the state follows from the dead supervisor."""
        stop_groups([n.pid for n in status.nodes if n.pid], self.timeouts)
        return status.moved_to(state, message)

    def stop(self, job: JobHandle) -> JobStatus:
        status = self.status(job)
        if status.state.is_terminal():
            return status
        pid, _ = self._supervisor(job)
        self.log.info("Stopping job %s (supervisor pid %s)", job.job_id, pid)
        self._signal(job, signal.SIGTERM)
        # The supervisor escalates on every node; give it that long, plus a margin.
        deadline = time.monotonic() + self.interrupt_timeout + self.terminate_timeout + 10
        while self._alive(job) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._alive(job):
            self._signal(job, signal.SIGKILL)
            while self._alive(job):
                time.sleep(0.05)
        status = self._read(job)
        if status.state.is_terminal():
            return status
        return self._concluded(job, status, JobState.STOPPED, "stopped by request")

    def shutdown(self, jobs: Sequence[JobHandle]) -> None:
        """Signal each live supervisor and return: each stops its own nodes and writes the end."""
        for job in jobs:
            self._signal(job, signal.SIGTERM)
        if self._warm is not None:  # the jobs it started are in their own sessions
            self._warm.close()
            self._warm = None

    def _signal(self, job: JobHandle, signum: int) -> None:
        if self._alive(job):
            try:
                os.kill(self._supervisor(job)[0], signum)
            except (ProcessLookupError, PermissionError, TypeError):
                pass

    def log_lines(self, job: JobHandle, rank: int, count: int,
                  status: JobStatus | None = None) -> list[str]:
        """The rank's own log; while it has none (its launcher failed before starting it, say,
        because Paddle is missing), the end of its node's launcher log, which says why."""
        status = status or self.status(job)
        lines = super().log_lines(job, rank, count, status)
        if lines:
            return lines
        node = rank // job.spec.resources.nproc_per_node
        return tail_lines(job.dir.launch_log(status.restarts, node), count)
