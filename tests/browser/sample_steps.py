"""The browser steps both journeys share (the embedded default's and the cluster's): open the
sample notebook once its kernel is idle, run its first three cells with Shift+Enter as a person
would, wait for Succeeded in the job panel and find the job's VisualDL board in it with the loss
chart drawn and the job's points behind it (read by the page itself from the board's API)."""

from __future__ import annotations

import re
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
NOTEBOOK = "paddle-quickstart.ipynb"
SAMPLE_STEPS = 60  # the sample's training steps: one loss point each
SERIES_PIXELS = """canvas => {
    const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let blue = 0;
    for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] >= 128 && d[i + 2] > d[i] + 60 && d[i + 2] > d[i + 1] + 60) blue++;
    }
    return blue;
}"""


def shot(page, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def notebook_ready(page):
    """The open notebook's panel once its kernel is idle (JupyterLab's news question declined,
    as a person would)."""
    notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
    notebook.locator(".jp-CodeCell").first.wait_for()
    page.get_by_text(re.compile(r"\| Idle")).first.wait_for(timeout=240_000)
    news = page.locator(".jp-toast-button", has_text="No")
    if news.count():
        news.first.click()
    return notebook


def run_the_sample_and_see_the_board(page, notebook, folder: Path) -> str:
    """`%load_ext`, the variables cell and the launch cell run; the panel ends Succeeded with the
    job's board drawn. Screenshots ``04-running`` and ``05-panel-and-board`` go to ``folder``;
    returns the job's id."""
    cells = notebook.locator(".jp-CodeCell")
    cells.nth(0).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Shift+Enter")
    cells.nth(0).locator(".jp-InputPrompt", has_text="[1]").wait_for(timeout=120_000)
    page.keyboard.press("Shift+Enter")
    cells.nth(1).locator(".jp-InputPrompt", has_text="[2]").wait_for(timeout=120_000)
    page.keyboard.press("Shift+Enter")
    launch = cells.nth(2)
    launch.locator(".jp-OutputArea-output .paddle-job-panel").first.wait_for(timeout=240_000)
    shot(page, folder, "04-running")

    # the panel says Succeeded: the live widget (its Stop button shows the final state) and the
    # summary the notebook keeps
    launch.locator("button", has_text="Succeeded").first.wait_for(timeout=900_000)
    launch.locator(".paddle-job-panel:visible", has_text="Succeeded").first.wait_for(
        timeout=60_000)

    # the job's VisualDL board is in the panel, with the loss chart drawn
    frame_element = launch.locator("iframe[title^='VisualDL']")
    frame_element.wait_for(timeout=120_000)
    frame_element.scroll_into_view_if_needed()
    frame = frame_element.content_frame
    chart = frame.locator("canvas").first
    chart.wait_for(timeout=180_000)
    job_id = frame_element.get_attribute("title").split(": ", 1)[1]
    points = frame.locator("body").evaluate(
        """async (body, run) => {
            const response = await fetch(
                `api/scalar/list?run=${encodeURIComponent(run)}&tag=train%2Floss`);
            return (await response.json()).data;
        }""",
        job_id,
    )
    assert len(points) == SAMPLE_STEPS, points
    box = chart.bounding_box()
    assert box and box["width"] > 100 and box["height"] > 100, box
    page.mouse.move(2, 300)  # no hover menus over the board in the picture
    page.wait_for_timeout(1500)  # let the chart's entry animation finish
    # The chart's titles live inside ECharts' canvas, not the DOM: count the pixels of the series
    # line (VisualDL draws runs in blue; axes and grid are grey).
    drawn = chart.evaluate(SERIES_PIXELS)
    assert drawn > 200, f"the loss chart has no line drawn ({drawn} blue pixels)"
    shot(page, folder, "05-panel-and-board")
    return job_id
