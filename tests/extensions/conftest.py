"""Fixtures for the VisualDL tests.

- `requires_visualdl`: skips a test when VisualDL is not installed (the notebook extra adds it).
- `runtime_dir`: a private Jupyter runtime folder (JUPYTER_RUNTIME_DIR), so board records of a
  test never mix with a real user's; every board recorded there is stopped at teardown, so no
  VisualDL process outlives its test.
- `write_scalars(logdir, run, steps)`: real VisualDL records written by the workbench's
  `ScalarLogger` as rank 0 of a job would; returns the losses written per step.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from launcher_magic.kernel import visualdl as boards
from launcher_magic.training.metrics import ScalarLogger

requires_visualdl = pytest.mark.skipif(
    importlib.util.find_spec("visualdl") is None,
    reason="visualdl is not installed (pip install -e '.[notebook]')",
)


@pytest.fixture
def runtime_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(folder))
    yield folder
    for instance in boards.read_records(folder / boards.RECORDS_FOLDER):
        boards.stop(instance, folder / boards.RECORDS_FOLDER)
    boards.stop_owned()


def write_scalars(logdir: Path, run: str, steps: int = 12) -> dict[int, float]:
    losses = {}
    with ScalarLogger(logdir, batch_size=32, rank=0, world_size=2, run_name=run,
                      env={}) as scalars:
        for step in range(steps):
            losses[step] = 1.0 / (step + 1)
            scalars.log(step, loss=losses[step])
    return losses
