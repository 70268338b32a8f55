"""Real VisualDL behind real jupyter-server-proxy in a server spawned by the workbench hub: the
owner gets the board and its scalar API with the job's data; another user and an anonymous
client are refused, over HTTP and over the websocket route of the same prefix.

VisualDL itself speaks no websocket. The proof for websockets is therefore about the gate: the
owner's upgrade is accepted by the user's server (101, after which the proxy finds no websocket
upstream and closes), while another user's and an anonymous upgrade are refused before that.
"""

from __future__ import annotations

import json

import pytest

from hub_config.auth import add_user
from launcher_magic.kernel import visualdl as boards
from tests.hub_config.conftest import HubProcess, local_login, proxy_command, psutil, requests

from .conftest import requires_visualdl, write_scalars

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")
pytest.importorskip("jupyter_server_proxy", reason="jupyter-server-proxy is not installed")
pytestmark = [requires_visualdl, pytest.mark.timeout(600)]

PASSWORD = "correct horse battery"
JOB = "train-1a2b3c"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    if not proxy_command():
        pytest.skip("configurable-http-proxy is not installed; `npm ci` (scripts/setup.sh) adds it")
    state = tmp_path_factory.mktemp("hub-visualdl")
    for name in ("alice", "eve"):
        add_user(state / "users.yaml", name, ["vision-team"], PASSWORD)
    hub = HubProcess(state=state, env={"WORKBENCH_CULLER": "0"})
    try:
        hub.start()
        assert local_login(hub, "alice", PASSWORD).login_response.status_code == 302
        assert local_login(hub, "eve", PASSWORD).login_response.status_code == 302
        for name in ("alice", "eve"):
            assert hub.api("POST", f"/users/{name}/server").status_code in (201, 202)
        for name in ("alice", "eve"):
            hub.wait_ready(name)
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def job_scalars(hub) -> dict[int, float]:
    """A finished job's scalars in alice's jobs root, as the job's rank 0 wrote them."""
    return write_scalars(hub.state / "home" / "alice" / "jobs" / JOB / "visualdl", JOB)


@pytest.fixture(scope="module")
def sessions(hub):
    alice = local_login(hub, "alice", PASSWORD)
    eve = local_login(hub, "eve", PASSWORD)
    assert alice.login_response.status_code == eve.login_response.status_code == 302
    return {"alice": alice, "eve": eve, "anonymous": requests.Session()}


def points(response) -> dict[int, float]:
    return {step: value for _, step, value in response.json()["data"]}


def assert_frames_only_from_own_origin(response) -> None:
    csp = response.headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'self'" in csp, response.headers
    assert "*" not in csp


def assert_refused(response, hub) -> None:
    """Refused: a 403/404, or sent to the hub's login; never the board."""
    assert response.status_code in (302, 403, 404) or response.url.startswith(
        f"{hub.url}/hub/login"), (response.status_code, response.url)
    assert '"status": 0' not in response.text and "visualdl" not in response.text.lower()


def ws_status(url: str, session) -> int:
    """The HTTP status of a websocket upgrade sent with `session`'s cookies."""
    cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    try:
        ws = websocket.create_connection(url, cookie=cookies or None, timeout=30)
    except websocket.WebSocketBadStatusException as err:
        return err.status_code
    status = ws.getstatus()
    ws.close()
    return status


def test_owner_gets_the_proxied_board_and_its_scalars(hub, sessions, job_scalars):
    alice = sessions["alice"]
    page = alice.get(f"{hub.url}/user/alice/visualdl/", timeout=120)
    assert page.status_code == 200 and page.url.startswith(f"{hub.url}/user/alice/visualdl/")
    assert "<title>VisualDL</title>" in page.text or "visualdl" in page.text.lower()
    assert_frames_only_from_own_origin(page)
    # VisualDL's assets resolve under the proxied prefix (its --public-path)
    assert "/user/alice/visualdl/" in page.text

    runs = alice.get(f"{hub.url}/user/alice/visualdl/api/runs", timeout=60)
    assert JOB in runs.json()["data"]
    loss = alice.get(f"{hub.url}/user/alice/visualdl/api/scalar/list",
                     params={"run": JOB, "tag": "train/loss"}, timeout=60)
    assert loss.status_code == 200 and points(loss) == pytest.approx(job_scalars)
    assert_frames_only_from_own_origin(loss)


@pytest.mark.parametrize("who", ["eve", "anonymous"])
def test_others_are_refused_the_board(hub, sessions, job_scalars, who):
    session = sessions[who]
    for path in ("visualdl/", "visualdl/api/runs",
                 f"visualdl/api/scalar/list?run={JOB}&tag=train/loss"):
        assert_refused(session.get(f"{hub.url}/user/alice/{path}", timeout=60), hub)
    # with eve's own API token too
    if who == "eve":
        token = hub.api("POST", "/users/eve/tokens", json={"note": "t"}).json()["token"]
        response = requests.get(f"{hub.url}/user/alice/visualdl/api/runs", timeout=60,
                                headers={"Authorization": f"token {token}"})
        assert response.status_code in (403, 404), response.status_code


def test_websocket_route_admits_only_the_owner(hub, sessions, job_scalars):
    base = hub.url.replace("http://", "ws://") + "/user/alice/visualdl/ws"
    assert sessions["alice"].get(f"{hub.url}/user/alice/visualdl/", timeout=60).ok
    assert ws_status(base, sessions["alice"]) == 101
    assert ws_status(base, sessions["eve"]) in (302, 403, 404)
    assert ws_status(base, sessions["anonymous"]) in (302, 403, 404)


def test_magic_board_on_the_proxy_route_is_the_owners_only(hub, sessions, job_scalars,
                                                           monkeypatch, tmp_path):
    """A `%visualdl JOB` board, started as alice's kernel would, through proxy/absolute/<port>."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    logdir = hub.state / "home" / "alice" / "jobs" / JOB / "visualdl"
    board = boards.start(logdir, env={"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}).instance
    try:
        assert board.url == f"/user/alice/proxy/absolute/{board.port}/"
        # the link the notebook shows: its key becomes a cookie for the board's path
        page = sessions["alice"].get(f"{hub.url}{board.page_url()}", timeout=60)
        assert page.status_code == 200 and page.url == f"{hub.url}{board.url}scalar"
        assert board.url in page.text
        assert_frames_only_from_own_origin(page)
        api = f"{hub.url}{board.url}api/scalar/list?run={JOB}&tag=train/loss"
        mine = sessions["alice"].get(api, timeout=60)
        assert mine.status_code == 200 and points(mine) == pytest.approx(job_scalars)
        for who in ("eve", "anonymous"):
            assert_refused(sessions[who].get(api, timeout=60), hub)
            # even holding the link: the hub lets only alice into alice's server
            assert_refused(sessions[who].get(f"{hub.url}{board.page_url()}", timeout=60), hub)
        ws = f"{hub.url.replace('http://', 'ws://')}{board.url}ws"
        assert ws_status(ws, sessions["alice"]) == 101
        assert ws_status(ws, sessions["eve"]) in (302, 403, 404)
        assert ws_status(ws, sessions["anonymous"]) in (302, 403, 404)
    finally:
        boards.stop(board)
    assert json.dumps(boards.read_records()) == "[]"


def named_board_port(hub) -> int:
    """The port of alice's proxied `visualdl` board (started by an earlier request)."""
    for proc in psutil.process_iter(["cmdline"]):
        argv = proc.info["cmdline"] or []
        if "extensions.visualdl_server" in argv and "/user/alice/visualdl" in argv:
            return int(argv[argv.index("--port") + 1])
    raise AssertionError("alice's visualdl board is not running")


def test_another_users_server_cannot_be_used_to_reach_the_board(hub, sessions, job_scalars,
                                                                monkeypatch, tmp_path):
    """On one machine every server can proxy to any local port: eve, through her own server's
    `proxy/<port>/` route (so the hub lets her in), still gets nothing from alice's boards."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    eve = sessions["eve"]
    assert sessions["alice"].get(f"{hub.url}/user/alice/visualdl/", timeout=120).ok
    logdir = hub.state / "home" / "alice" / "jobs" / JOB / "visualdl"
    board = boards.start(logdir, env={"JUPYTERHUB_SERVICE_PREFIX": "/user/alice/"}).instance
    try:
        targets = [(named_board_port(hub), "/user/alice/visualdl"),
                   (board.port, board.public_path)]
        for port, public_path in targets:
            for route in (f"proxy/{port}{public_path}", f"proxy/absolute/{port}{public_path}"):
                response = eve.get(f"{hub.url}/user/eve/{route}/api/runs", timeout=60)
                assert response.url.startswith(f"{hub.url}/user/eve/"), response.url
                assert response.status_code in (403, 404), (route, response.status_code)
                assert JOB not in response.text
        # the control: eve's own server does proxy a local port for her
        own = eve.get(f"{hub.url}/user/eve/proxy/{board.port}/alive", timeout=60)
        assert own.status_code == 403 and b"answers only its owner" in own.content
    finally:
        boards.stop(board)
