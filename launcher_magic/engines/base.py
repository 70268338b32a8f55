"""The engine contract: every engine submits, reports, streams logs and stops the same way."""

from __future__ import annotations

from pathlib import Path

from traitlets.config import LoggingConfigurable

from ..jobdir import JobDir
from ..spec import JobSpec
from ..status import JobStatus


class EngineUnavailable(RuntimeError):
    """The engine cannot run jobs here; the message says what is missing."""


class Engine(LoggingConfigurable):
    """Runs jobs described by a JobSpec in their job directory.

    Contract:
    - `preflight(spec)` raises `SpecError` for a job that cannot fit, before anything exists.
    - `submit(spec, job)` starts the job whose directory `job` already holds spec and cell;
      it returns once the job is on its way (it does not wait for it to finish).
    - `status(job)` is the last known JobStatus; once terminal it never changes.
    - `stop(job)` ends the job and returns once nothing of it is left running.
    """

    name: str = ""

    def preflight(self, spec: JobSpec) -> None:  # noqa: B027 (optional hook)
        """Refuse a job that cannot run here. The default accepts every job."""

    def submit(self, spec: JobSpec, job: JobDir) -> None:
        raise NotImplementedError

    def status(self, job: JobDir) -> JobStatus:
        raise NotImplementedError

    def stop(self, job: JobDir) -> JobStatus:
        raise NotImplementedError

    def log_path(self, job: JobDir, rank: int) -> Path:
        """The file holding `rank`'s output in the job's latest attempt."""
        spec = job.read_spec()
        status = self.status(job)
        return job.rank_log(status.restarts, rank, spec.resources.nproc_per_node)
