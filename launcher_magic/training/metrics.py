"""Training scalars for VisualDL, written from rank 0 of a job.

Inside a `%%paddle_launch --visualdl` cell::

    from launcher_magic.metrics import ScalarLogger

    scalars = ScalarLogger(batch_size=64)       # per-rank batch size, for the throughput
    for step in range(steps):
        loss = train_one_batch(step)
        scalars.log(step, loss=float(loss))     # also: any other name=value pairs
    scalars.close()

It writes `train/loss`, `train/step_time` (seconds between two `log` calls) and
`train/throughput` (samples per second over all ranks: batch size x world size / step time) into
the job's VisualDL folder (PADDLE_WORKBENCH_VISUALDL_DIR), with the job id as the run's name, so the
job panel's board and the `visualdl` board over all jobs show it. On other ranks it does nothing,
so the same cell runs on every rank. Records are flushed every `flush_secs`, so charts are live.
The last value of each scalar you pass also goes to the job's progress file, so the job panel
shows the last loss beside its progress bar (without `Checkpointer.steps`, `step` counts steps).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from numbers import Real
from pathlib import Path

from launcher_magic.core.progress import progress_writer
from workbench_contract import environment as wbenv

PREFIX = "train/"


def _default_logdir(env: Mapping[str, str]) -> Path:
    path = env.get(wbenv.VISUALDL_DIR)
    if not path:
        raise ValueError(
            "ScalarLogger needs a folder: pass logdir=... or run inside %%paddle_launch, which "
            f"sets {wbenv.VISUALDL_DIR}"
        )
    return Path(path)


class ScalarLogger:
    """Writes scalars for VisualDL from rank 0; a no-op on every other rank.

    Args:
        logdir: where records go (default: the job's VisualDL folder).
        batch_size: samples per step on one rank; enables `train/throughput`.
        rank, world_size: default to Paddle's PADDLE_TRAINER_ID / PADDLE_TRAINERS_NUM.
        run_name: the run's name on the board (default: the job id, PADDLE_JOB_ID).
        flush_secs: how often records reach the disk.

    Raises:
        ValueError: no folder is known, or a size is not positive.
        ImportError: VisualDL is missing on rank 0 (with what to install).
    """

    def __init__(self, logdir: Path | str | None = None, *, batch_size: int | None = None,
                 rank: int | None = None, world_size: int | None = None,
                 run_name: str | None = None, flush_secs: float = 2.0,
                 env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        self.rank = int(env.get("PADDLE_TRAINER_ID", "0")) if rank is None else rank
        self.world_size = (int(env.get("PADDLE_TRAINERS_NUM", "1")) if world_size is None
                           else world_size)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: give the samples per step, at least 1")
        if self.world_size < 1:
            raise ValueError(f"world_size={self.world_size} must be at least 1")
        self.batch_size = batch_size
        self.logdir = Path(logdir) if logdir is not None else _default_logdir(env)
        self._last: float | None = None
        self._writer = None
        self._progress = progress_writer(env) if self.rank == 0 else None
        if self.rank != 0:
            return
        try:
            from visualdl import LogWriter
        except ImportError:
            raise ImportError(
                "ScalarLogger needs VisualDL in the job's environment: pip install visualdl "
                "(the workbench's notebook images include it)"
            ) from None
        self.logdir.mkdir(parents=True, exist_ok=True)
        name = run_name or env.get("PADDLE_JOB_ID") or self.logdir.name
        self._writer = LogWriter(logdir=str(self.logdir), flush_secs=flush_secs,
                                 display_name=name)

    @property
    def active(self) -> bool:
        """True on the rank that writes (rank 0) until `close`."""
        return self._writer is not None

    def log(self, step: int, *, loss: float | None = None, **scalars: float) -> dict[str, float]:
        """Record the scalars of `step`; returns what was written (empty on other ranks).

        Raises:
            TypeError: a value is not a real number.
        """
        now = time.perf_counter()
        values: dict[str, float] = {}
        if loss is not None:
            values["loss"] = loss
        values.update(scalars)
        for name, value in values.items():
            if not isinstance(value, Real):
                raise TypeError(f"ScalarLogger.log: {name}={value!r} is not a number; pass "
                                f"float(...) of it")
        mine = dict(values)  # what the user passed, for the panel (not the derived timings)
        if self._last is not None:
            # The first call has no previous step to time against.
            step_time = now - self._last
            values["step_time"] = step_time
            if self.batch_size and step_time > 0:
                values["throughput"] = self.batch_size * self.world_size / step_time
        self._last = now
        if self._writer is None:
            return {}
        if self._progress is not None:
            self._progress.scalars(mine, step=int(step))
        written = {}
        for name, value in values.items():
            value = float(value)
            if math.isfinite(value):  # VisualDL's charts cannot place NaN or infinity
                self._writer.add_scalar(tag=PREFIX + name, value=value, step=int(step))
                written[PREFIX + name] = value
        return written

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close; later `log` calls record nothing."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            if self._progress is not None:
                self._progress.flush()

    def __enter__(self) -> ScalarLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
