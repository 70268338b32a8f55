"""The engine contract: every engine submits, reports, streams logs and stops the same way.

An engine runs in the notebook kernel. It is built once per kernel with the hub's
`NotebookContext` and the kernel's traitlets config (`c.LocalEngine.interrupt_timeout = ...`), and
every method takes the same `JobHandle` (spec + job directory, read once).

Errors:
- `SpecError` (launcher_magic.core.spec): the request cannot run as asked (too many GPUs for the
  machine, over the quota); the user changes the cell.
- `EngineError`: the engine failed at run time (the API server refused or did not answer, a process
  could not start); the message says what happened and what to check. `EngineUnavailable` is the
  kind raised when the engine cannot run here at all.

Threads: `status`, `log_lines`, `notes` and `status_feed` may be called from any thread (a
detached panel refreshes from its own); `submit`, `stop`, `follow_log` and `shutdown` from one
thread at a time.

Engines live in this package: `local` (process groups on this machine, `engines.local`) and the
cluster engine with one adapter per job kind (`engines.cluster`; the kinds are registered in
`workbench_contract.jobkinds`).

`status.json` has exactly one writer per engine, named by each engine's docstring.
"""

from __future__ import annotations

import codecs
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from traitlets.config import LoggingConfigurable

from launcher_magic.core.jobdir import JobHandle, tail_lines
from launcher_magic.core.spec import JobSpec
from launcher_magic.core.status import JobStatus
from workbench_contract.environment import NotebookContext


class EngineError(RuntimeError):
    """The engine failed at run time; the message says what happened and what to check."""


class EngineUnavailable(EngineError):
    """The engine cannot run jobs here; the message says what is missing."""


@dataclass(frozen=True)
class UsageRecord:
    """What one job held, as an engine can tell of any job of the tenant: the input of its
    GPU-hours (nodes x GPUs per node x the time from `started_at` to `finished_at`)."""

    job_id: str
    user: str
    nodes: int
    gpus_per_node: int
    started_at: float | None
    finished_at: float | None = None  # None: it still holds its nodes
    tenant: str | None = None


@dataclass(frozen=True)
class TenantUsage:
    """The jobs of the whole tenant an engine can see; `caveat` says, for the user, which jobs
    the records leave out ("" when none)."""

    tenant: str | None
    records: tuple[UsageRecord, ...]
    caveat: str = ""


class StatusFeed:
    """The statuses of one job in the order its engine saw them, for one panel: an engine that
    follows its jobs by watching puts each new state here, so the panel draws every state the job
    went through, even two within one refresh."""

    def __init__(self):
        self._queued: list[JobStatus] = []
        self._cond = threading.Condition()

    def put(self, status: JobStatus) -> None:
        with self._cond:
            self._queued.append(status)
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` for a status; True when one is queued."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._queued), timeout)

    def take(self) -> list[JobStatus]:
        """Every status queued since the last call, oldest first (at once, maybe none)."""
        with self._cond:
            taken, self._queued = self._queued, []
            return taken


class Engine(LoggingConfigurable):
    """Runs jobs described by a JobSpec in their job directory. Subclass and register the class
    under the `launcher_magic.engines` entry-point group; the magic finds it by that name."""

    name: ClassVar[str] = ""
    # How often a live panel asks for status (seconds).
    poll_interval: ClassVar[float] = 0.25

    def __init__(self, context: NotebookContext | None = None, **kwargs):
        super().__init__(**kwargs)
        self.context = context or NotebookContext()

    def preflight(self, spec: JobSpec) -> None:  # noqa: B027 (optional hook)
        """Refuse a job that cannot run here, before anything exists. The default accepts all.

        Raises: SpecError, EngineError.
        """

    def submit(self, job: JobHandle) -> None:
        """Start the job whose directory already holds spec and cell; return once it is on its
        way (not when it ends). On any failure it leaves nothing of the job running or created
        outside the job directory (the caller removes the directory).

        Raises: SpecError, EngineError.
        """
        raise NotImplementedError

    def status(self, job: JobHandle) -> JobStatus:
        """The job's current status; once terminal it never changes. Raises: EngineError."""
        raise NotImplementedError

    def status_feed(self, job: JobHandle) -> StatusFeed | None:
        """A feed of the job's statuses as they change, starting with the current one, for a live
        panel; None (the default) where the engine does not follow its jobs by itself, and the
        panel asks `status` every `poll_interval` instead.

        Raises: EngineError.
        """
        return None

    def stop(self, job: JobHandle) -> JobStatus:
        """End the job; returns its final status once nothing of it is left running.

        Stopping a job that has ended returns its status unchanged. Raises: EngineError.
        """
        raise NotImplementedError

    def shutdown(self, jobs: Sequence[JobHandle]) -> None:
        """The kernel is exiting: make these jobs (the ones it started) end, without waiting for
        them. Never raises; called from an atexit hook."""
        for job in jobs:
            try:
                self.stop(job)
            except Exception as err:  # noqa: BLE001 - nothing may stop the kernel's exit
                self.log.warning("Could not stop job %s at exit: %s", job.job_id, err)

    def notes(self, spec: JobSpec) -> list[str]:
        """What this engine does not honour of `spec`, in words for the user (panel, %paddle_jobs)."""
        return []

    def log_lines(self, job: JobHandle, rank: int, count: int,
                  status: JobStatus | None = None) -> list[str]:
        """The last `count` lines `rank` wrote in the job's latest attempt (`status` saves a read).

        The default reads the rank's log file in the job directory.
        """
        status = status or self.status(job)
        return tail_lines(self._rank_log(job, rank, status), count)

    def follow_log(self, job: JobHandle, rank: int, poll: float = 0.5) -> Iterator[str]:
        """Yield what `rank` writes from now on, until the job ends, across restarts.

        The default follows the rank's log file in the job directory. When the job restarts it
        yields the rest of the old attempt's file, a line `== restart <n>: attempt <n+1> ==` and
        the new attempt's file from its start (one such line per restart, none skipped). It
        returns once the job is terminal and the last attempt's file is drained.
        Raises: EngineError.
        """
        status = self.status(job)
        attempt = status.restarts
        path = self._rank_log(job, rank, status)
        log = _Tail(path, path.stat().st_size if path.exists() else 0)
        while True:
            # Status first, then the file: whatever the rank wrote before the job ended (or
            # restarted) is in the file by the time that status is seen, so it is drained.
            status = self.status(job)
            chunk = log.read()
            if chunk:
                yield chunk
            elif attempt < status.restarts:
                attempt += 1
                log = _Tail(job.dir.rank_log(attempt, rank, job.spec.resources.nproc_per_node))
                yield f"== restart {attempt}: attempt {attempt + 1} ==\n"
            elif status.state.is_terminal():
                return
            else:
                time.sleep(poll)

    @staticmethod
    def _rank_log(job: JobHandle, rank: int, status: JobStatus):
        return job.dir.rank_log(status.restarts, rank, job.spec.resources.nproc_per_node)

    def tenant_usage(self, since: float | None) -> TenantUsage | None:
        """What every job of the user's tenant held since `since` (None: as far back as the
        engine knows), for the tenant's GPU-hours; None where the engine cannot see other users'
        jobs (the default). Jobs that ended before `since` may be left out.

        Raises: EngineError.
        """
        return None


class _Tail:
    """New text of a file that may not exist yet, decoded without splitting a character."""

    def __init__(self, path: Path, position: int = 0):
        self.path, self.position = path, position
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def read(self) -> str:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.position)
                data = handle.read()
        except FileNotFoundError:
            return ""
        self.position += len(data)
        return self._decoder.decode(data)
