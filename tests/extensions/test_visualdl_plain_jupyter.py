"""`%visualdl`'s boards under a plain Jupyter server (no hub): the kernel finds its server's base
URL, the board is served through that server's proxy under it, and only with the server's token."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time

import pytest

from launcher_magic.kernel import visualdl as boards
from tests.hub_config.conftest import free_port, requests

from .conftest import requires_visualdl, write_scalars

pytest.importorskip("jupyter_server_proxy", reason="jupyter-server-proxy is not installed")
pytestmark = [requires_visualdl, pytest.mark.timeout(300)]


@pytest.fixture
def jupyter_server(tmp_path, runtime_dir):
    """`jupyter server` with base URL /base/ and a token; yields (url, token, pid)."""
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(runtime_dir))
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter_server", "--no-browser", f"--port={port}",
         "--ServerApp.ip=127.0.0.1", "--ServerApp.base_url=/base/",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}",
         "--allow-root"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}/base/"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "jupyter server exited"
            try:
                if requests.get(f"{url}api/status", params={"token": token}, timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "jupyter server did not answer in 90 s"
            time.sleep(0.3)
        yield url, token, process.pid
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def test_board_is_served_under_the_servers_base_url_to_its_token_only(tmp_path, jupyter_server):
    url, token, pid = jupyter_server
    logdir = tmp_path / "jobs" / "demo-9f" / "visualdl"
    losses = write_scalars(logdir, "demo-9f")
    # what a kernel of that server sees: its parent's pid
    assert boards.server_base_url({"JPY_PARENT_PID": str(pid)}) == "/base/"
    board = boards.start(logdir, env={"JPY_PARENT_PID": str(pid)}).instance
    assert board.url == f"/base/proxy/absolute/{board.port}/"

    origin = url.split("/base/")[0]
    browser = requests.Session()
    browser.headers["Authorization"] = f"token {token}"
    page = browser.get(f"{origin}{board.page_url()}", timeout=60)  # the link %visualdl shows
    assert page.status_code == 200 and board.url in page.text
    assert page.headers["Content-Security-Policy"] == "frame-ancestors 'self'"
    api = f"{origin}{board.url}api/scalar/list?run=demo-9f&tag=train/loss"
    mine = browser.get(api, timeout=60)
    assert mine.status_code == 200
    assert {s: v for _, s, v in mine.json()["data"]} == pytest.approx(losses)

    anonymous = requests.get(api, timeout=60, allow_redirects=False)
    assert anonymous.status_code in (302, 403), anonymous.status_code
    wrong = requests.get(api, headers={"Authorization": "token nope"}, timeout=60,
                         allow_redirects=False)
    assert wrong.status_code in (302, 403), wrong.status_code
