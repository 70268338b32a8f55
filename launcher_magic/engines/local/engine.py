"""The local engine: each job runs under its own supervisor process on this machine.

The supervisor (`launcher_magic.engines.local.supervisor`) owns the job's process groups; this engine starts
it, reads the status it writes, and stops it. The supervisor watches the kernel that started it,
so a job never outlives its kernel, whether the kernel shut down cleanly or was killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from traitlets import Float, Unicode, default

from launcher_magic.core.commands import assign_devices
from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.processes import StopTimeouts, pid_alive, stop_groups
from launcher_magic.core.spec import JobSpec, SpecError
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.engines.base import Engine
from launcher_magic.engines.local.devices import detect_gpus

# Options that only a cluster can enforce; the local engine records them and says so.
CLUSTER_ONLY = ("image", "cpu", "memory")


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

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._children: dict[str, subprocess.Popen] = {}

    @property
    def timeouts(self) -> StopTimeouts:
        return StopTimeouts(self.interrupt_timeout, self.terminate_timeout)

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
        self._devices(spec)

    def submit(self, spec: JobSpec, job: JobDir) -> None:
        devices = self._devices(spec)
        argv = [
            self.python, "-m", "launcher_magic.engines.local.supervisor", str(job.path),
            "--owner-pid", str(os.getpid()),
            "--interrupt-timeout", str(self.interrupt_timeout),
            "--terminate-timeout", str(self.terminate_timeout),
        ]
        if any(devices):
            argv += ["--devices", ";".join(",".join(map(str, d)) for d in devices)]
        with open(job.path / "supervisor.log", "ab") as log:
            child = subprocess.Popen(
                argv, cwd=str(job.path), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._children[spec.job_id] = child
        status = job.read_status() or JobStatus(job_id=spec.job_id)
        if status.supervisor_pid is None:
            job.write_status(
                JobStatus(job_id=spec.job_id, supervisor_pid=child.pid, message="starting")
            )
        self.log.info("Started job %s (supervisor pid %s)", spec.job_id, child.pid)

    def _reap(self, job_id: str) -> None:
        child = self._children.get(job_id)
        if child is not None and child.poll() is not None:
            del self._children[job_id]

    def status(self, job: JobDir) -> JobStatus:
        self._reap(job.job_id)
        status = job.read_status() or JobStatus(job_id=job.job_id)
        if status.state.is_terminal() or pid_alive(status.supervisor_pid):
            return status
        # Re-read: the supervisor may have written its last status just before exiting.
        status = job.read_status() or status
        if status.state.is_terminal() or status.supervisor_pid is None:
            return status
        stop_groups([n.pid for n in status.nodes if n.pid], self.timeouts)
        status = status.moved_to(JobState.FAILED, "the job's supervisor exited unexpectedly")
        job.write_status(status)
        return status

    def stop(self, job: JobDir) -> JobStatus:
        status = self.status(job)
        if status.state.is_terminal():
            return status
        pid = status.supervisor_pid
        self.log.info("Stopping job %s (supervisor pid %s)", job.job_id, pid)
        if pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
        # The supervisor escalates on every node; give it that long, plus a margin.
        deadline = time.monotonic() + self.interrupt_timeout + self.terminate_timeout + 10
        while pid_alive(pid) and time.monotonic() < deadline:
            self._reap(job.job_id)
            time.sleep(0.05)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
        self._reap(job.job_id)
        status = job.read_status() or status
        stop_groups([n.pid for n in status.nodes if n.pid], self.timeouts)
        if not status.state.is_terminal():
            status = status.moved_to(JobState.STOPPED, "stopped by request")
            job.write_status(status)
        return status
