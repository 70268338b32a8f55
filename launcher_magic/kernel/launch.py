"""The launch service: what `%%paddle_launch` and the line magics do, apart from parsing and showing.

One `Launcher` per kernel holds the engines (each loaded once, by entry point) and the jobs this
kernel started. `launch` validates, preflights, creates the job directory and submits, and undoes
all of it on any exception (a typo, an API timeout, a Ctrl-C halfway): nothing is left half-started.

What the hub said (`NotebookContext`) is read from the kernel's environment at each call, so the
engines always act on the current one.

`Job` is what a detached launch returns to the user: a handle to ask about the job, wait for it or
stop it from code, in the manner of ipyparallel's AsyncResult.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from launcher_magic.core.jobdir import (
    RESERVED_NAMES,
    JobDir,
    JobHandle,
    JobNotFound,
    JobUnreadable,
    jobs_root,
    resolve,
)
from launcher_magic.core.spec import JobSpec, LaunchOptions, SpecError, build_spec
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.core.transfer import (
    DEFAULT_PUSH_LIMIT,
    TransferError,
    pack_push,
    read_pull,
    write_push,
)
from launcher_magic.engines import Engine, EngineError, canonical_name, load_engine
from workbench_contract.environment import HubSettingError, NotebookContext

# What a launch or a lookup raises for a user or operator to act on: the magics turn these into
# one line (a UsageError), never a traceback. The project's own types only: a KeyError or an
# IndexError is a bug, and the magics say so (see magics.reports_bugs).
USER_ERRORS = (SpecError, EngineError, HubSettingError, JobNotFound, JobUnreadable,
               TransferError)


def check_files(paths: tuple[str, ...]) -> list[Path]:
    """The `--files` paths as they will be copied beside the cell.

    Raises:
        SpecError: a path does not exist, or its name is one the job directory uses itself.
    """
    found = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.name in RESERVED_NAMES:
            raise SpecError(f"--files {raw}: the job directory has its own {path.name}; rename it")
        if not path.exists():
            raise SpecError(
                f"--files {raw}: no such file or folder (relative paths start at {Path.cwd()})"
            )
        found.append(path)
    return found


class Launcher:
    """The jobs of one kernel. Thread-safe: a detached panel's thread reads status through it."""

    def __init__(self, env: Mapping[str, str] | None = None, parent=None):
        self._env = env
        self._parent = parent
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self.session_jobs: dict[str, JobHandle] = {}

    def context(self) -> NotebookContext:
        """What the hub said, as the kernel's environment says it now. Raises HubSettingError."""
        return NotebookContext.from_env(self._env)

    def root(self) -> Path:
        return jobs_root(self._env)

    def engine(self, name: str) -> Engine:
        """The engine `name` (or the one a deprecated name now is), loaded once. Raises
        EngineUnavailable."""
        context, name = self.context(), canonical_name(name)
        with self._lock:
            if name not in self._engines:
                self._engines[name] = load_engine(name, context=context, parent=self._parent)
            engine = self._engines[name]
        engine.context = context
        return engine

    def launch(self, options: LaunchOptions, cell: str, *,
               namespace: Mapping[str, object] | None = None,
               push_limit: int = DEFAULT_PUSH_LIMIT) -> JobHandle:
        """Validate, preflight, create the job directory and submit; returns once the job is on
        its way. `namespace` holds the variables `--push` names (the notebook's).

        Raises one of USER_ERRORS with nothing created, or re-raises anything else after undoing
        what was done.
        """
        spec = build_spec(options, cell, self.context())
        files = check_files(options.files)
        pushed = pack_push(spec.push, namespace or {}, push_limit) if spec.push else None
        if not options.new:
            self._refuse_a_second_copy(spec)
        engine = self.engine(spec.engine)
        engine.preflight(spec)
        job = JobHandle(spec, JobDir.create(self.root(), spec, cell, files))
        try:
            if pushed is not None:
                write_push(job.dir.path, pushed)
            engine.submit(job)
        except BaseException:
            self._abandon(engine, job)
            raise
        self.session_jobs[spec.job_id] = job
        return job

    def _refuse_a_second_copy(self, spec: JobSpec) -> None:
        """A job of this name still running (from this kernel or an earlier one) is not started
        again by accident: say what runs and what the user can do."""
        try:
            running = self.lookup(spec.name)
        except (JobNotFound, JobUnreadable):
            return
        try:
            state = self.status(running).state
        except USER_ERRORS:
            return  # its engine cannot tell (gone, unreachable): nothing to protect
        if not state.is_terminal():
            raise AlreadyRunning(
                f"job {running.job_id} ({spec.name}) is still {state.value}: "
                f"%paddle_attach {running.job_id} shows it, %paddle_stop {running.job_id} stops "
                "it, or add --new to start another one anyway")

    def _abandon(self, engine: Engine, job: JobHandle) -> None:
        """Undo a submit that failed part-way: stop whatever started, remove the directory."""
        try:
            engine.stop(job)
        except Exception as err:  # noqa: BLE001 - the first error is the one the user sees
            engine.log.warning("Could not stop the half-submitted job %s: %s", job.job_id, err)
        shutil.rmtree(job.dir.path, ignore_errors=True)

    def lookup(self, ref: str) -> JobHandle:
        """A job by id or name (its newest).

        Raises:
            JobNotFound: none matches; the message has the ids a user could have meant.
            JobUnreadable: its directory's spec cannot be read.
        """
        job = resolve(self.root(), ref)
        try:
            return JobHandle.open(job.path)
        except (OSError, ValueError, KeyError, TypeError) as err:  # a spec edited by hand
            raise JobUnreadable(f"job {job.job_id} cannot be read: {err}") from None

    def status(self, job: JobHandle) -> JobStatus:
        return self.engine(job.spec.engine).status(job)

    def stop(self, job: JobHandle) -> JobStatus:
        return self.engine(job.spec.engine).stop(job)

    def shutdown(self) -> None:
        """The kernel is exiting: each engine ends the jobs this kernel started (but those
        launched with --keep), without waiting."""
        by_engine: dict[str, list[JobHandle]] = {}
        for job in list(self.session_jobs.values()):
            if job.spec.keep:
                continue
            last = job.dir.read_status() if job.dir.path.exists() else None
            if last is None or not last.state.is_terminal():
                by_engine.setdefault(job.spec.engine, []).append(job)
        for name, jobs in by_engine.items():
            engine = self._engines.get(name)
            if engine is not None:
                engine.shutdown(jobs)


class AlreadyRunning(SpecError):
    """A job of the same name is still running; the message says how to attach, stop, or start
    another anyway."""


class Job:
    """A job started from this notebook, as `%%paddle_launch --detach` (or `--keep`) and
    `%paddle_attach` return it.

    `job.state`, `job.status()`, `job.logs(rank=0, tail=50)`, `job.wait(timeout=None)`,
    `job.stop()`, `job.attach()` (the live panel, here), `job.result()` (the `--pull` variables).
    A job launched without `--keep` still ends with the kernel that started it.
    """

    def __init__(self, launcher: Launcher, handle: JobHandle,
                 namespace: dict[str, object] | None = None):
        self._launcher = launcher
        self._namespace = namespace
        self.handle = handle

    @property
    def job_id(self) -> str:
        return self.handle.job_id

    @property
    def spec(self) -> JobSpec:
        return self.handle.spec

    @property
    def state(self) -> JobState:
        return self.status().state

    def status(self) -> JobStatus:
        return self._launcher.status(self.handle)

    def stop(self) -> JobStatus:
        """Stop the job; returns once nothing of it runs."""
        return self._launcher.stop(self.handle)

    def logs(self, rank: int | None = None, tail: int = 50) -> str:
        """The last `tail` lines of a rank's log (default: the failed rank, else 0)."""
        status = self.status()
        rank = status.failed_rank or 0 if rank is None else rank
        engine = self._launcher.engine(self.spec.engine)
        return "\n".join(engine.log_lines(self.handle, rank, tail, status))

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job ends (or `timeout` seconds pass); returns the last status."""
        engine = self._launcher.engine(self.spec.engine)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (status := engine.status(self.handle)).state.is_terminal():
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(engine.poll_interval)
        return status

    def attach(self) -> None:
        """Show the job's live panel in this cell's output."""
        from launcher_magic.kernel.live import show

        show(self.handle, self._launcher.engine(self.spec.engine))

    def result(self) -> dict[str, object]:
        """Rank 0's values of the `--pull` names, once the job has Succeeded; they are also put
        into the notebook's variables.

        Raises:
            TransferError: the job did not succeed, pulled nothing, or lacked a name.
        """
        if not self.spec.pull:
            raise TransferError(f"job {self.job_id} was launched without --pull: nothing to bring "
                                "back")
        state = self.state
        if state != JobState.SUCCEEDED:
            raise TransferError(
                f"--pull: job {self.job_id} is {state.value}, so there is nothing to pull"
                + ("" if not state.is_terminal() else f"; see %paddle_logs {self.job_id}"))
        values = read_pull(self.handle.dir.path, self.spec.pull)
        if self._namespace is not None:
            self._namespace.update(values)
        return values

    def __repr__(self) -> str:
        return f"<Job {self.job_id} ({self.spec.engine}): {self.state.value}>"
