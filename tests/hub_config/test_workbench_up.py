"""The README's first command from a fresh clone: `workbench up`, a login, a spawn, and the sample
notebook's magic cell executed on that server's kernel; then Ctrl-C stops everything.

How the fresh tree is made: a clean checkout is cloned with git; a working tree with uncommitted
work is copied file by file (`git ls-files -co --exclude-standard`), since a clone would miss it.
The existing virtual environment and npm install are reused (installing one takes ten minutes) by running
`<venv>/bin/python -m hub_config.cli.main up` with the fresh tree first on PYTHONPATH. Not `make up`:
its setup step would `pip install -e` the temporary tree into the shared environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from .conftest import REPO, local_login, requests, workbench_up

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")
pytestmark = [pytest.mark.timeout(900), pytest.mark.kernel, pytest.mark.paddle]
pytest.importorskip("paddle", reason="paddlepaddle is not installed (paddle extra)")

NOTEBOOK = "paddle-quickstart.ipynb"


def fresh_tree(target: Path) -> Path:
    status = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    if not status.strip():
        subprocess.run(["git", "clone", "-q", str(REPO), str(target)], check=True)
        return target
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def run_cell(ws, code: str, session: str, timeout: float) -> tuple[str, str]:
    """Execute code over the kernel's websocket; return (status, all text output)."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": session, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    texts, status, idle = [], None, False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (status and idle):
        ws.settimeout(max(1.0, deadline - time.monotonic()))
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            texts.append(content["text"])
        elif kind in ("display_data", "execute_result", "update_display_data"):
            texts.append(str(content["data"].get("text/plain", "")))
            texts.append(str(content["data"].get("text/html", "")))
        elif kind == "error":
            texts.append("\n".join(content["traceback"]))
        elif kind == "execute_reply":
            status = content["status"]
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
    return status or "timeout", "".join(texts)


def test_workbench_up_login_spawn_and_magic(tmp_path, proxy_available):
    tree = fresh_tree(tmp_path / "clone")
    state = tmp_path / "state"
    # The npm install is reused like the virtual environment (node_modules is not in the tree).
    env = dict(os.environ, PYTHONPATH=str(tree), WORKBENCH_PROXY_COMMAND=proxy_available)
    with workbench_up(tree, state, env) as up:
        url, user = up.url, up.user
        port = url.rsplit(":", 1)[1]

        class Hub:  # what local_login needs
            pass
        hub = Hub()
        hub.url = url
        browser = local_login(hub, user, up.password)
        assert browser.login_response.status_code == 302
        xsrf = browser.cookies.get("_xsrf", path="/hub/")
        token = browser.post(f"{url}/hub/api/users/{user}/tokens", headers={"X-XSRFToken": xsrf},
                             json={"note": "e2e"}, timeout=30).json()["token"]
        auth = {"Authorization": f"token {token}"}
        spawn = requests.post(f"{url}/hub/api/users/{user}/server", headers=auth, timeout=120)
        assert spawn.status_code in (201, 202), spawn.text
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            model = requests.get(f"{url}/hub/api/users/{user}", headers=auth, timeout=30).json()
            if (model["servers"].get("") or {}).get("ready"):
                break
            time.sleep(1)
        server = f"{url}/user/{user}"
        contents = requests.get(f"{server}/api/contents/{NOTEBOOK}", headers=auth, timeout=30)
        assert contents.status_code == 200, "the sample notebook was not copied into the home"
        cells = [c for c in contents.json()["content"]["cells"] if c["cell_type"] == "code"]
        magic = next(c["source"] for c in cells if c["source"].startswith("%%paddle_launch"))

        kernel = requests.post(f"{server}/api/kernels", headers=auth, json={}, timeout=60).json()
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/user/{user}/api/kernels/{kernel['id']}/channels",
            header=[f"Authorization: token {token}"], timeout=60,
        )
        try:
            session = uuid.uuid4().hex
            status, output = run_cell(ws, "%load_ext launcher_magic", session, 120)
            assert status == "ok", output
            status, output = run_cell(ws, magic, session, 600)
            assert status == "ok", output
            assert "Succeeded" in output, output[-3000:]
            status, output = run_cell(
                ws, "import os; print(os.environ['PADDLE_WORKBENCH_TENANT'], "
                    "os.environ['PADDLE_WORKBENCH_ENGINE'])", session, 60)
            assert output.split() == ["vision", "local"], output
        finally:
            ws.close()
    # Ctrl-C stopped everything.
    assert up.process.returncode == 0, up.process.stdout.read()
    assert not up.leftovers, f"left running after Ctrl-C: {up.leftovers}"
