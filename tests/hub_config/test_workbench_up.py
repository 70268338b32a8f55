"""The README's first command from a fresh clone: `workbench up`, a login, a spawn, and the sample
notebook's magic cell executed on that server's kernel; then Ctrl-C stops everything.

How the fresh tree is made: a clean checkout is cloned with git; a working tree with uncommitted
work is copied file by file (`git ls-files -co --exclude-standard`), since a clone would miss it.
The existing virtual environment and npm install are reused (installing one takes ten minutes) by running
`<venv>/bin/python -m hub_config.cli.main up` with the fresh tree first on PYTHONPATH. Not `make up`:
its setup step would `pip install -e` the temporary tree into the shared environment.

Run as root (as CI does), the server, its kernel and the job run as the user's own system account,
within the profile's cgroup; the tree lives under /tmp, where those accounts can read it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from .conftest import (
    AS_ROOT,
    REPO,
    login_and_spawn,
    psutil,
    public_dir,
    requests,
    run_cell,
    workbench_up,
)

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


@pytest.fixture
def tree():
    """A fresh tree under /tmp (pytest's temp root is 0700: the accounts could not read it)."""
    root = public_dir("wb-tree-")
    try:
        yield fresh_tree(root / "clone")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_workbench_up_login_spawn_and_magic(tmp_path, tree, proxy_available):
    state = tmp_path / "state"
    # The npm install is reused like the virtual environment (node_modules is not in the tree).
    env = dict(os.environ, PYTHONPATH=str(tree), WORKBENCH_PROXY_COMMAND=proxy_available)
    with workbench_up(tree, state, env) as up:
        url, user = up.url, up.user
        port = url.rsplit(":", 1)[1]
        token, _ = login_and_spawn(url, user, up.password)
        auth = {"Authorization": f"token {token}"}
        server = f"{url}/user/{user}"
        contents = requests.get(f"{server}/api/contents/{NOTEBOOK}", headers=auth, timeout=30)
        assert contents.status_code == 200, "the sample notebook was not copied into the home"
        cells = [c for c in contents.json()["content"]["cells"] if c["cell_type"] == "code"]
        # The notebook's cells up to its first launch cell, in order, as a person runs them.
        sources = ["".join(c["source"]) for c in cells]
        magic = next(i for i, source in enumerate(sources) if source.startswith("%%paddle_launch"))

        kernel = requests.post(f"{server}/api/kernels", headers=auth, json={}, timeout=60).json()
        ws = websocket.create_connection(
            f"ws://127.0.0.1:{port}/user/{user}/api/kernels/{kernel['id']}/channels",
            header=[f"Authorization: token {token}"], timeout=60,
        )
        try:
            session = uuid.uuid4().hex
            for source in sources[:magic]:
                status, output = run_cell(ws, source, session, 120)
                assert status == "ok", output
            status, output = run_cell(ws, sources[magic], session, 600)
            assert status == "ok", output
            assert "Succeeded" in output, output[-3000:]
            status, output = run_cell(
                ws, "import os; print(os.environ['PADDLE_WORKBENCH_TENANT'], "
                    "os.environ['PADDLE_WORKBENCH_ENGINE'])", session, 60)
            assert output.split() == ["vision", "local"], output
            if AS_ROOT:
                status, output = run_cell(ws, "import os; print(os.getuid(), os.environ['HOME'])",
                                          session, 60)
                account = up.account(user)
                assert output.split() == [str(account.pw_uid), account.pw_dir], output
                assert not Path(account.pw_dir).is_relative_to(state)
                assert_in_the_servers_cgroup(account.pw_uid)
        finally:
            ws.close()
    # Ctrl-C stopped everything.
    assert up.process.returncode == 0, up.output
    assert not up.leftovers, f"left running after Ctrl-C: {up.leftovers}"
    if AS_ROOT:
        assert "Each user runs as a system account of their own" in up.output, up.output


def assert_in_the_servers_cgroup(uid: int) -> None:
    """Every process of the account (server, kernel) shares the server's cgroups."""
    # (A process that has exited but is not reaped yet has left its cgroups.)
    processes = [p for p in psutil.process_iter(["uids", "cmdline", "status"])
                 if p.info["uids"] and p.info["uids"].real == uid
                 and p.info["status"] != psutil.STATUS_ZOMBIE]
    assert processes
    groups = {}
    for p in processes:
        try:  # a process may end between the listing and this read (a job rank, a probe)
            groups[(p.pid, *p.info["cmdline"][:3])] = Path(f"/proc/{p.pid}/cgroup").read_text()
        except OSError:
            continue
    assert len(set(groups.values())) == 1, groups
    assert "/workbench/" in next(iter(groups.values()))
