"""Checkpoints that make a restarted job resume where it stopped.

Inside a `%%paddle_launch` cell::

    from launcher_magic.checkpoint import Checkpointer

    ckpt = Checkpointer(model, optimizer, every=50)
    for step in ckpt.steps(1000):   # starts after the last checkpoint, if there is one
        train_one_batch(step)       # make the batch a function of `step` to resume exactly

Rank 0 writes `checkpoints/step-<n>/` (model, optimizer, metadata) into a hidden folder and renames
it into place, so a reader sees whole checkpoints only; it keeps the last `keep`. Every rank loads
the newest one on start. The directory defaults to the job's (PADDLE_WORKBENCH_CHECKPOINT_DIR).
`steps(N)` also reports the loop's progress (step, N, steps/s) for the job panel, from rank 0.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from launcher_magic.core.progress import progress_writer
from workbench_contract import environment as wbenv

_STEP_DIR = re.compile(r"^step-(\d+)$")
META = "meta.json"


def list_checkpoints(directory: Path | str) -> list[tuple[int, Path]]:
    """Complete checkpoints in `directory`, oldest first, as (step, path)."""
    directory = Path(directory)
    found = []
    if directory.is_dir():
        for path in directory.iterdir():
            match = _STEP_DIR.match(path.name)
            if match and (path / META).is_file():
                found.append((int(match.group(1)), path))
    return sorted(found)


def latest_step(directory: Path | str) -> int | None:
    """The step of the newest complete checkpoint, or None. Needs no Paddle."""
    found = list_checkpoints(directory)
    return found[-1][0] if found else None


def _default_directory() -> Path:
    path = os.environ.get(wbenv.CHECKPOINT_DIR)
    if not path:
        raise ValueError(
            "Checkpointer needs a directory: pass directory=... or run inside %%paddle_launch, "
            f"which sets {wbenv.CHECKPOINT_DIR}"
        )
    return Path(path)


class Checkpointer:
    """Saves model and optimizer every `every` steps and restores the newest checkpoint.

    Args:
        model: a paddle.nn.Layer (a DataParallel wrapper is fine).
        optimizer: a paddle optimizer, or None.
        every: save after every `every` completed steps.
        keep: how many checkpoints to keep (oldest are removed).
        directory: where checkpoints live (default: the job's checkpoint directory).
    """

    def __init__(self, model, optimizer=None, *, every: int = 100, keep: int = 3,
                 directory: Path | str | None = None):
        if every < 1 or keep < 1:
            raise ValueError("Checkpointer needs every >= 1 and keep >= 1")
        self.model = model
        self.optimizer = optimizer
        self.every = every
        self.keep = keep
        self.directory = Path(directory) if directory is not None else _default_directory()
        self.directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _rank() -> int:
        return int(os.environ.get("PADDLE_TRAINER_ID", "0"))

    def restore(self) -> int:
        """Load the newest checkpoint; returns the number of steps it had completed (0: none)."""
        import paddle

        found = list_checkpoints(self.directory)
        if not found:
            return 0
        step, path = found[-1]
        self.model.set_state_dict(paddle.load(str(path / "model.pdparams")))
        if self.optimizer is not None and (path / "optimizer.pdopt").is_file():
            self.optimizer.set_state_dict(paddle.load(str(path / "optimizer.pdopt")))
        print(f"[checkpoint] resumed from step {step} ({path.name})", flush=True)
        return step

    def save(self, step: int) -> Path | None:
        """Write a checkpoint of `step` completed steps (rank 0 only; others return None)."""
        if self._rank() != 0:
            return None
        import paddle

        final = self.directory / f"step-{step:09d}"
        if final.exists():
            return final
        staging = self.directory / f".step-{step:09d}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        paddle.save(self.model.state_dict(), str(staging / "model.pdparams"))
        if self.optimizer is not None:
            paddle.save(self.optimizer.state_dict(), str(staging / "optimizer.pdopt"))
        (staging / META).write_text(json.dumps({"step": step, "time": time.time()}))
        os.rename(staging, final)
        for _, old in list_checkpoints(self.directory)[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def steps(self, total: int) -> Iterator[int]:
        """Yield step indices from the restored position to `total`, saving as they complete.

        On rank 0 of a job it also reports each completed step, `total` and where this attempt
        resumed to the job's progress file (`launcher_magic.core.progress`), for the panel's
        progress bar and ETA.
        """
        start = self.restore()
        progress = progress_writer()
        if progress is not None:
            progress.begin(start, total)
        for step in range(start, total):
            yield step
            done = step + 1
            if done % self.every == 0 or done == total:
                self.save(done)
            if progress is not None:
                # After the save: 100 % means the last checkpoint is on disk too.
                progress.step(done, total)
