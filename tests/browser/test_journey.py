"""The whole journey in a real browser: Debian's Chromium driven by Playwright.

`workbench up` starts the hub; the browser logs in through the login form, picks a profile on the
spawn form, opens the sample notebook from JupyterLab's file browser, runs its cells with
Shift+Enter (the `%%paddle_launch --nodes 2 --visualdl` cell trains for real on two local nodes),
waits for Succeeded in the job panel and finds the job's VisualDL board in the panel with the
loss chart drawn and the job's points behind it (read by the page itself from the board's API).

Screenshots of each step go to test-output/browser/ (git-ignored). One heavy test on purpose:
the machine it runs on has two cores.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from tests.hub_config.conftest import REPO, proxy_command, workbench_up

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
SHOTS = REPO / "test-output" / "browser"
NOTEBOOK = "paddle-quickstart.ipynb"
SERIES_PIXELS = """canvas => {
    const d = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let blue = 0;
    for (let i = 0; i < d.length; i += 4) {
        if (d[i + 3] >= 128 && d[i + 2] > d[i] + 60 && d[i + 2] > d[i + 1] + 60) blue++;
    }
    return blue;
}"""

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (test extra)")
pytest.importorskip("paddle", reason="paddlepaddle is not installed (paddle extra)")
pytest.importorskip("visualdl", reason="visualdl is not installed (notebook extra)")
pytest.importorskip("jupyter_server_proxy", reason="jupyter-server-proxy is not installed")
pytestmark = [
    pytest.mark.timeout(1500), pytest.mark.paddle, pytest.mark.kernel,
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="Debian's chromium is not installed (scripts/system-packages.txt)"),
]


@pytest.fixture
def workbench(tmp_path):
    """`workbench up` on a free port; yields (url, user, password); Ctrl-C and a sweep after."""
    proxy = proxy_command()
    if not proxy:
        pytest.skip("configurable-http-proxy is not installed; `npm ci` (scripts/setup.sh) adds it")
    env = dict(os.environ, WORKBENCH_PROXY_COMMAND=proxy, WORKBENCH_CULLER="0",
               PYTHONPATH=str(REPO))
    with workbench_up(REPO, tmp_path / "state", env) as up:
        yield up.url, up.user, up.password


def shot(page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_login_spawn_run_the_sample_and_see_the_chart(workbench):
    url, user, password = workbench
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                     headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1050})
            page.set_default_timeout(120_000)

            # 1. log in through the hub's form
            page.goto(f"{url}/hub/login")
            page.fill("#username_input", user)
            page.fill("#password_input", password)
            shot(page, "01-login")
            page.click("#login_submit")

            # 2. the spawn form lists the tenant's profiles: pick the CPU one
            page.wait_for_selector("#spawn_form")
            page.select_option("#profile", label=None, value="vision--cpu-small")
            shot(page, "02-spawn-form")
            page.click("#spawn_form button[type=submit]")

            # 3. JupyterLab opens; open the sample notebook from the file browser
            page.wait_for_url(f"{url}/user/{user}/lab**", timeout=240_000)
            # jupyter-server-proxy put the board over all jobs in the launcher, with its icon
            page.locator(".jp-LauncherCard", has_text="VisualDL").wait_for(timeout=240_000)
            item = page.locator(".jp-DirListing-item", has_text=NOTEBOOK)
            item.wait_for(timeout=240_000)
            item.dblclick()
            notebook = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden)")
            cells = notebook.locator(".jp-CodeCell")
            cells.first.wait_for()
            page.get_by_text(re.compile(r"\| Idle")).first.wait_for(timeout=240_000)
            news = page.locator(".jp-toast-button", has_text="No")
            if news.count():  # JupyterLab asks about its news feed once; decline as a person would
                news.first.click()
            shot(page, "03-notebook")

            # 4. run `%load_ext`, the variables cell, then the launch cell, with Shift+Enter as a
            # person would
            cells.nth(0).locator(".jp-InputArea-editor").click()
            page.keyboard.press("Shift+Enter")
            cells.nth(0).locator(".jp-InputPrompt", has_text="[1]").wait_for(timeout=120_000)
            page.keyboard.press("Shift+Enter")
            cells.nth(1).locator(".jp-InputPrompt", has_text="[2]").wait_for(timeout=120_000)
            page.keyboard.press("Shift+Enter")
            launch = cells.nth(2)
            panel = launch.locator(".jp-OutputArea-output .paddle-job-panel").first
            panel.wait_for(timeout=240_000)
            shot(page, "04-running")

            # 5. the panel says Succeeded: the live widget (its Stop button shows the final
            # state) and the summary the notebook keeps
            launch.locator("button", has_text="Succeeded").first.wait_for(timeout=900_000)
            launch.locator(".paddle-job-panel:visible", has_text="Succeeded").first.wait_for(
                timeout=60_000)

            # 6. the job's VisualDL board is in the panel, with the loss chart drawn
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
            assert len(points) == 60, points  # one per step of the sample's 60 steps
            box = chart.bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100, box
            page.mouse.move(2, 300)  # no hover menus over the board in the picture
            page.wait_for_timeout(1500)  # let the chart's entry animation finish
            # The chart's titles live inside ECharts' canvas, not the DOM: count the pixels of
            # the series line (VisualDL draws runs in blue; axes and grid are grey).
            drawn = chart.evaluate(SERIES_PIXELS)
            assert drawn > 200, f"the loss chart has no line drawn ({drawn} blue pixels)"
            shot(page, "05-panel-and-board")
            notebook.screenshot(path=str(SHOTS / "06-notebook.png"))
        except BaseException:
            shot(page, "99-failure")
            raise
        finally:
            browser.close()
