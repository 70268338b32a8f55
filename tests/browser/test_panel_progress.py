"""The job panel's progress bar in a real JupyterLab, in Debian's Chromium driven by Playwright.

A plain `jupyter lab` (no hub: the journey test covers the hub) opens a notebook whose
`%%paddle_launch --nodes 2` cell trains for real on the CPU wheel with `Checkpointer.steps` and
`ScalarLogger`. While it runs, the live widget view shows a progress bar with percent, steps/s,
ETA and the last loss; once it has ended, the summary the notebook keeps shows the bar full with
the final figures.

Screenshots go to test-output/browser/ (git-ignored); `progress-running.png` is the picture in
docs/job-panel-progress.png.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher_magic.core.progress import read_progress
from tests.hub_config.conftest import REPO, free_port, requests

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
SHOTS = REPO / "test-output" / "browser"
NOTEBOOK = "progress.ipynb"
STEPS = 80

LAUNCH_CELL = f"""%%paddle_launch --nodes 2 --name progress
import time
import numpy as np
import paddle
import paddle.distributed as dist
from launcher_magic.checkpoint import Checkpointer
from launcher_magic.metrics import ScalarLogger

dist.init_parallel_env()
paddle.seed(7)
model = paddle.DataParallel(paddle.nn.Linear(8, 1))
opt = paddle.optimizer.Adam(learning_rate=0.05, parameters=model.parameters())
ckpt, scalars = Checkpointer(model, opt, every=20), ScalarLogger(batch_size=16)
for step in ckpt.steps({STEPS}):
    rng = np.random.default_rng(1000 * step + dist.get_rank())
    x = paddle.to_tensor(rng.normal(size=(16, 8)).astype("float32"))
    loss = ((model(x) - x.sum(axis=1, keepdim=True)) ** 2).mean()
    loss.backward()
    opt.step()
    opt.clear_grad()
    scalars.log(step, loss=float(loss))
    time.sleep(0.2)
scalars.close()"""

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (test extra)")
pytest.importorskip("paddle", reason="paddlepaddle is not installed (paddle extra)")
pytest.importorskip("visualdl", reason="visualdl is not installed (notebook extra)")
pytest.importorskip("jupyterlab", reason="jupyterlab is not installed (notebook extra)")
pytestmark = [
    pytest.mark.timeout(900), pytest.mark.paddle, pytest.mark.kernel,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian's chromium is not installed (scripts/system-packages.txt)"),
]


def _write_notebook(path: Path) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("%load_ext launcher_magic"),
                      nbformat.v4.new_code_cell(LAUNCH_CELL)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    nbformat.write(notebook, str(path))


@pytest.fixture
def jupyter_lab(tmp_path):
    """`jupyter lab` on a free port with a token over `tmp_path`; yields (url, jobs root)."""
    port, token = free_port(), secrets.token_hex(16)
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    _write_notebook(tmp_path / NOTEBOOK)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "workspaces"),
               PADDLE_WORKBENCH_JOBS_DIR=str(jobs), PYTHONPATH=str(REPO))
    env.pop("PADDLE_WORKBENCH_PANEL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={tmp_path}", "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "jupyter lab exited"
            try:
                if requests.get(f"{url}api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "jupyter lab did not answer in 120 s"
            time.sleep(0.3)
        yield f"{url}lab/tree/{NOTEBOOK}?token={token}", jobs
    finally:
        # SIGTERM to the server alone: it shuts its kernels down, and the kernel its jobs.
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _job_progress(jobs: Path):
    found = [p for p in jobs.iterdir() if not p.name.startswith(".")] if jobs.is_dir() else []
    return read_progress(found[0]) if found else None


def test_the_panel_shows_a_progress_bar_with_eta_and_keeps_the_final_figures(jupyter_lab):
    url, jobs = jupyter_lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.set_default_timeout(120_000)
        try:
            page.goto(url)
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
            cells = notebook.locator(".jp-CodeCell")
            cells.first.wait_for(timeout=180_000)
            page.get_by_text(re.compile(r"\| Idle")).first.wait_for(timeout=180_000)
            news = page.locator(".jp-toast-button", has_text="No")
            if news.count():  # JupyterLab asks about its news feed once
                news.first.click()

            cells.nth(0).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            cells.nth(0).locator(".jp-InputPrompt", has_text="[1]").wait_for()
            page.keyboard.press("Shift+Enter")
            launch = cells.nth(1)

            # While it runs: the widget bar and its label with an ETA, part of the way.
            label = launch.locator(".widget-label", has_text="ETA")
            label.wait_for(timeout=300_000)
            deadline = time.monotonic() + 120
            while (now := _job_progress(jobs)) is None or now.step < STEPS * 0.45:
                assert time.monotonic() < deadline, f"no progress past 45 %: {now}"
                time.sleep(0.2)
            page.wait_for_timeout(1500)  # the panel's next poll draws it
            running = label.first.inner_text()
            match = re.search(r"progress: (\d+)/(\d+) \((\d+)%\), [\d.]+ steps/s, ETA \d+:\d\d, "
                              r"loss [\d.e+-]+", running)
            assert match and int(match.group(1)) < STEPS, running
            bar = launch.locator(".widget-hprogress .progress-bar").first
            width = bar.evaluate("el => el.getBoundingClientRect().width / "
                                 "el.parentElement.getBoundingClientRect().width")
            assert 0.2 < width < 1.0, width
            page.mouse.move(2, 2)
            outputs = launch.locator(".jp-Cell-outputWrapper")
            outputs.screenshot(path=str(SHOTS / "progress-running.png"))

            # Once it has ended: the summary the notebook keeps has the bar full, no ETA.
            launch.locator("button", has_text="Succeeded").first.wait_for(timeout=600_000)
            summary = launch.locator(".paddle-job-panel:visible", has_text="Succeeded").first
            summary.wait_for(timeout=60_000)
            figures = summary.locator(".paddle-job-progress").inner_text()
            assert f"{STEPS}/{STEPS} (100%)" in figures and "loss" in figures, figures
            assert "ETA" not in figures
            full = summary.locator("[role=progressbar] > div").evaluate(
                "el => el.getBoundingClientRect().width / "
                "el.parentElement.getBoundingClientRect().width")
            assert full == pytest.approx(1.0, abs=0.02)
            outputs.screenshot(path=str(SHOTS / "progress-finished.png"))
        except BaseException:
            page.screenshot(path=str(SHOTS / "progress-failure.png"))
            raise
        finally:
            browser.close()
