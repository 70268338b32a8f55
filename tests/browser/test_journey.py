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
import shutil
from pathlib import Path

import pytest

from tests.browser.sample_steps import (
    CHROMIUM,
    CHROMIUM_ARGS,
    NOTEBOOK,
    notebook_ready,
    run_the_sample_and_see_the_board,
)
from tests.browser.sample_steps import shot as shot_into
from tests.hub_config.conftest import REPO, proxy_command, workbench_up

SHOTS = REPO / "test-output" / "browser"

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
    return shot_into(page, SHOTS, name)


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
            notebook = notebook_ready(page)
            shot(page, "03-notebook")

            # 4-6. run the sample; the panel says Succeeded with the job's board drawn
            run_the_sample_and_see_the_board(page, notebook, SHOTS)
            notebook.screenshot(path=str(SHOTS / "06-notebook.png"))
        except BaseException:
            shot(page, "99-failure")
            raise
        finally:
            browser.close()
