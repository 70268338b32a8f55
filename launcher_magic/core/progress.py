"""Training progress: how far a job is, how fast it goes and its last scalars.

Rank 0 of a job writes `<job dir>/progress.json` through the training helpers
(`Checkpointer.steps(N)` reports steps and the total, `ScalarLogger.log` the last scalars); the
kernel's panel reads it to draw a progress bar with percent, steps/s, ETA and the last loss. A job
whose code uses neither helper has no file, and the panel shows its elapsed time only.

Both helpers share the one writer of the process (`progress_writer()`), which exists on rank 0 of
a job only (`PADDLE_TRAINER_ID` "0" or unset, and the job directory in the environment); everywhere
else it is None and the helpers report nothing. Reporting is cheap: a step only stores numbers, and
the file is rewritten (atomically) at most every `WRITE_INTERVAL` seconds and on the last step.

Standard library only: ranks write it, the kernel reads it.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from numbers import Real
from pathlib import Path

from workbench_contract import environment as wbenv

FILENAME = "progress.json"
WRITE_INTERVAL = 0.5  # seconds between two writes of the file, except the last step's
RATE_TIME_CONSTANT = 10.0  # seconds over which the smoothed rate forgets older speed


@dataclass(frozen=True)
class Progress:
    """One snapshot of a training loop, as rank 0 wrote it.

    Attributes:
        step: steps completed so far (the loop's position; `total` when it is done).
        total: steps the loop runs to, or None when unknown (only scalars were logged).
        started_at, updated_at: wall-clock times (time.time()) this attempt's loop started and
            this snapshot was taken.
        steps_per_second: the smoothed rate, or None until it can be measured.
        scalars: the last value of each scalar logged (name -> float; NaN is kept: it says
            that training diverged).
        first_step: where this attempt's loop started (after a checkpoint resume, not 0).
    """

    step: int
    total: int | None = None
    started_at: float = 0.0
    updated_at: float = 0.0
    steps_per_second: float | None = None
    scalars: dict[str, float] = field(default_factory=dict)
    first_step: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Progress:
        """The snapshot in `data`; unknown keys are ignored.

        Raises:
            KeyError, TypeError, ValueError: `data` is not a progress record.
        """
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["step"] = int(values["step"])
        for name in ("total", "steps_per_second"):
            if values.get(name) is not None:
                values[name] = (int if name == "total" else float)(values[name])
        values["scalars"] = {str(k): float(v) for k, v in dict(values.get("scalars", {})).items()}
        return cls(**values)


def percent(progress: Progress) -> float | None:
    """How much of the loop is done, 0 to 100; None when the total is unknown."""
    if not progress.total or progress.total <= 0:
        return None
    return max(0.0, min(100.0, 100.0 * progress.step / progress.total))


def eta_seconds(progress: Progress, now: float) -> float | None:
    """Seconds until the loop ends at the current rate, as of `now`; None when unknown or done.

    The time since the snapshot was taken is taken off, so the estimate counts down between two
    writes instead of standing still; it never goes below 0.
    """
    rate = progress.steps_per_second
    if progress.total is None or progress.step >= progress.total or not rate or rate <= 0:
        return None
    remaining = (progress.total - progress.step) / rate
    return max(0.0, remaining - max(0.0, now - progress.updated_at))


def read_progress(job_dir: Path | str) -> Progress | None:
    """The job's last progress snapshot, or None: no file, or not a readable record."""
    try:
        with open(Path(job_dir) / FILENAME) as handle:
            return Progress.from_dict(json.load(handle))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        # A job that reports nothing has no file; a foreign file is no progress either.
        return None


def _write_atomically(path: Path, data: dict) -> None:
    # Readers (the panel) see the old snapshot or the new one, never half of one.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class ProgressWriter:
    """Keeps the progress of one process's training loop and writes it to `path`.

    The rate is an exponentially weighted average of the speed between two writes, weighted by
    the time each covers (weight 1 - exp(-dt / RATE_TIME_CONSTANT)). Why not steps since
    `first_step` over time since `started_at`: that mean carries the slow first steps (graph
    building, warm-up) and any pause (evaluation, a slow shared disk) for the whole run, so the
    ETA would stay wrong long after the speed settled; the weighted rate follows the current speed
    within tens of seconds, and weighting by time keeps the short last interval (the final step's
    forced write) from swinging it.

    Args:
        path: the file to write (`<job dir>/progress.json`).
        clock: wall-clock time in seconds (injected by tests).
        interval: least seconds between two writes, except the last step's and `flush`.

    Not thread-safe: one training loop reports from one thread. Errors writing the file are
    swallowed (training must never fail for its progress bar) and retried on the next write.
    """

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time,
                 interval: float = WRITE_INTERVAL):
        self.path = Path(path)
        self.clock = clock
        self.interval = interval
        self.writes = 0  # how many times the file was written (tests count them)
        self._progress: Progress | None = None
        self._loop = False  # a loop with a total (Checkpointer.steps) owns the step count
        self._written: tuple[int, float] | None = None  # (step, time) of the last write
        self._dirty = False

    @property
    def progress(self) -> Progress | None:
        """What the writer holds now (written or not)."""
        return self._progress

    def begin(self, first_step: int, total: int | None) -> None:
        """A loop starts at `first_step` (a resumed position) towards `total`; writes at once."""
        now = self.clock()
        scalars = self._progress.scalars if self._progress else {}
        self._progress = Progress(step=first_step, total=total, started_at=now, updated_at=now,
                                  scalars=scalars, first_step=first_step)
        self._loop = total is not None
        self._written = None
        self._write(now)

    def step(self, step: int, total: int | None = None) -> None:
        """`step` steps are done; writes when a write is due or the loop reached its total."""
        if self._progress is None:
            self.begin(0, total)
        if total is not None and total != self._progress.total:
            self._progress, self._loop = replace(self._progress, total=total), True
        self._progress = replace(self._progress, step=step)
        self._dirty = True
        self._maybe_write(force=total is not None and step >= total)

    def scalars(self, values: Mapping[str, float], step: int | None = None) -> None:
        """Record the last `values`; `step` (the index logged) counts steps when no loop does."""
        clean = {str(k): float(v) for k, v in values.items() if isinstance(v, Real)}
        if self._progress is None:
            self.begin(0 if step is None else step, None)
        merged = {**self._progress.scalars, **clean}
        self._progress = replace(self._progress, scalars=merged)
        if step is not None and not self._loop:
            self._progress = replace(self._progress, step=max(self._progress.step, step + 1))
        self._dirty = True
        self._maybe_write()

    def flush(self) -> None:
        """Write what has not been written yet (the end of a loop, process exit)."""
        if self._dirty and self._progress is not None:
            self._write(self.clock())

    def _maybe_write(self, force: bool = False) -> None:
        now = self.clock()
        if force or self._written is None or now - self._written[1] >= self.interval:
            self._write(now)

    def _write(self, now: float) -> None:
        progress = replace(self._progress, updated_at=now,
                           steps_per_second=self._rate(now))
        try:
            _write_atomically(self.path, progress.to_dict())
        except OSError:
            return  # keep training (a full or gone disk); the next write tries again
        self._progress = progress
        self._written = (progress.step, now)
        self._dirty = False
        self.writes += 1

    def _rate(self, now: float) -> float | None:
        old = self._progress.steps_per_second
        if self._written is None:
            return None  # the loop's first snapshot: nothing to measure against yet
        last_step, last_time = self._written
        dt, done = now - last_time, self._progress.step - last_step
        if dt <= 0 or done < 0:
            return old
        sample = done / dt
        if old is None:
            return sample
        weight = 1.0 - math.exp(-dt / RATE_TIME_CONSTANT)
        return old + weight * (sample - old)


_WRITER: ProgressWriter | None = None


def progress_writer(env: Mapping[str, str] | None = None) -> ProgressWriter | None:
    """The process's writer, shared by the training helpers; None where nothing is reported.

    None outside a job (no `PADDLE_WORKBENCH_JOB_DIR`) and on every rank but 0. The same writer
    is returned while the job directory stays the same; what it holds is flushed at exit.
    """
    global _WRITER
    env = os.environ if env is None else env
    job_dir = env.get(wbenv.JOB_DIR)
    if not job_dir or env.get("PADDLE_TRAINER_ID", "0") not in ("", "0"):
        return None
    path = Path(job_dir) / FILENAME
    if _WRITER is None or _WRITER.path != path:
        if _WRITER is not None:
            _WRITER.flush()
        _WRITER = ProgressWriter(path)
    return _WRITER


@atexit.register
def _flush_at_exit() -> None:
    # A loop without a total (scalars only) has no last step to force the final write.
    if _WRITER is not None:
        _WRITER.flush()
