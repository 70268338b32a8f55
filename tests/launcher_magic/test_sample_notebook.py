"""The sample notebook every user gets runs top to bottom in a real kernel (nbclient)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .support import requires_paddle

SAMPLE = Path(__file__).parents[2] / "hub_config" / "samples" / "paddle-quickstart.ipynb"

pytestmark = [requires_paddle, pytest.mark.paddle, pytest.mark.kernel]


def _text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.append(out.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def test_sample_notebook_runs_and_keeps_a_readable_final_state(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    monkeypatch.setenv("PADDLE_WORKBENCH_JOBS_DIR", str(jobs))
    # The panel's VisualDL board is recorded here, not in the real user's runtime folder.
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    notebook = nbformat.read(SAMPLE, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()

    code = [c for c in notebook.cells if c.cell_type == "code"]

    def cell(start: str):
        (found,) = [c for c in code if c.source.startswith(start)]
        return found

    launch, pulled = cell("%%paddle_launch"), cell("for name, value in weights.items()")
    listing, logs = cell("%paddle_jobs"), cell("%paddle_logs")
    # The saved notebook shows the final state as HTML and text, not only as a live widget.
    html = [o["data"]["text/html"] for o in launch.outputs if "text/html" in o.get("data", {})]
    assert any("Succeeded" in h for h in html), launch.outputs
    assert "Succeeded" in _text(launch)
    assert "progress: 60/60 (100%)" in _text(launch)  # the progress bar's final figures
    assert "Pulled weights from rank 0" in _text(launch)
    assert "pulled 0.weight (16, 32)" in _text(pulled)  # the trained weights, in this kernel
    assert "quickstart-" in _text(listing) and "Succeeded" in _text(listing)
    assert "world size 2" in _text(logs)

    (job,) = jobs.iterdir()
    assert json.loads((job / "spec.json").read_text())["visualdl"] is True
    assert json.loads((job / "status.json").read_text())["state"] == "Succeeded"

    # The launch cell's ScalarLogger wrote rank 0's scalars into the job's VisualDL folder.
    visualdl = pytest.importorskip("visualdl", reason="visualdl is not installed (notebook extra)")
    (records,) = (job / "visualdl").glob("vdlrecords.*")
    reader = visualdl.LogReader(file_path=str(records))
    assert {"train/loss", "train/step_time", "train/throughput"} <= set(reader.get_tags()["scalar"])
    loss = reader.get_data("scalar", "train/loss")
    assert [r.id for r in loss] == list(range(60))  # one point per step, from one rank only
    assert loss[-1].value < loss[0].value  # and the model learned
