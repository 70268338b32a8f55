"""The engine contract: every engine submits, reports, streams logs and stops the same way."""

from __future__ import annotations

import time
from collections.abc import Iterator

from traitlets.config import LoggingConfigurable

from launcher_magic.core.jobdir import JobDir, tail_lines
from launcher_magic.core.spec import JobSpec
from launcher_magic.core.status import JobStatus


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
    # How often a live panel asks for status (seconds).
    poll_interval: float = 0.25

    def preflight(self, spec: JobSpec) -> None:  # noqa: B027 (optional hook)
        """Refuse a job that cannot run here. The default accepts every job."""

    def submit(self, spec: JobSpec, job: JobDir) -> None:
        raise NotImplementedError

    def status(self, job: JobDir) -> JobStatus:
        raise NotImplementedError

    def stop(self, job: JobDir) -> JobStatus:
        raise NotImplementedError

    def log_lines(self, job: JobDir, rank: int, count: int,
                  status: JobStatus | None = None) -> list[str]:
        """The last `count` lines `rank` wrote in the job's latest attempt.

        The default reads the rank's log file in the job directory; `status` saves a re-read.
        """
        status = status or self.status(job)
        path = job.rank_log(status.restarts, rank, job.read_spec().resources.nproc_per_node)
        return tail_lines(path, count)

    def follow_log(self, job: JobDir, rank: int, poll: float = 0.5) -> Iterator[str]:
        """Yield what `rank` writes from now on, until the job ends."""
        path = job.rank_log(self.status(job).restarts, rank,
                            job.read_spec().resources.nproc_per_node)
        position = path.stat().st_size if path.exists() else 0
        while True:
            if path.exists() and path.stat().st_size > position:
                with open(path, "rb") as handle:
                    handle.seek(position)
                    chunk = handle.read()
                position += len(chunk)
                yield chunk.decode("utf-8", errors="replace")
            elif self.status(job).state.is_terminal():
                return
            else:
                time.sleep(poll)
