"""A real JupyterHub with our configuration, configurable-http-proxy, the local login and the local
process spawner: tenant from groups, isolation between users, refusals, metrics and culling.

As root (CI), each user's server runs as their own system account (see conftest's `HubProcess`);
`test_local_accounts_attacks.py` attacks that from real kernels.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
import yaml

from hub_config.auth import add_user

from .conftest import AS_ROOT, EXAMPLE_TENANTS, HubProcess, local_login, psutil, requests

pytestmark = pytest.mark.timeout(600)

USERS = {  # name: groups
    "alice": ["vision-team"],
    "bob": ["students"],
    "carol": ["guests"],  # in no tenant
    "eve": ["vision-team"],
}
PASSWORD = "correct horse battery"
SAMPLE = Path(__file__).resolve().parents[2] / "hub_config" / "samples" / "paddle-quickstart.ipynb"


def make_users(state: Path) -> None:
    for name, groups in USERS.items():
        add_user(state / "users.yaml", name, groups, PASSWORD)


@pytest.fixture(scope="module")
def hub(tmp_path_factory, proxy_available):
    state = tmp_path_factory.mktemp("hub-local")
    make_users(state)
    hub = HubProcess(state=state, env={"WORKBENCH_CULLER": "0"})
    try:
        yield hub.start()
    finally:
        hub.stop()


def user_token(hub: HubProcess, name: str) -> str:
    """Log the user in (which creates them with their groups) and make them an API token."""
    assert local_login(hub, name, PASSWORD).login_response.status_code == 302
    response = hub.api("POST", f"/users/{name}/tokens", json={"note": "test"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def server_environ(hub: HubProcess, name: str) -> dict[str, str]:
    """The environment of the user's real server process, read from /proc."""
    model = hub.wait_ready(name)
    pid = model["servers"][""]["state"]["pid"]
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_login_without_tenant_is_refused_with_a_clear_page(hub):
    session = local_login(hub, "carol", PASSWORD)
    response = session.login_response
    assert response.status_code == 403
    assert "not a member of any tenant" in response.text
    assert "guests" in response.text


def test_wrong_password_is_refused(hub):
    session = local_login(hub, "alice", "wrong")
    assert session.login_response.status_code != 302
    assert "jupyterhub-session-id" not in session.cookies


def test_spawned_server_carries_the_tenant(hub):
    session = local_login(hub, "alice", PASSWORD)
    assert session.login_response.status_code == 302
    token = user_token(hub, "alice")
    response = hub.api("POST", "/users/alice/server", token=token,
                       json={"profile": "vision--cpu-small"})
    assert response.status_code in (201, 202), response.text
    env = server_environ(hub, "alice")
    assert env["PADDLE_WORKBENCH_TENANT"] == "vision"
    assert env["PADDLE_WORKBENCH_NAMESPACE"] == "wb-vision"
    assert env["PADDLE_WORKBENCH_ENGINE"] == "local"
    assert env["PADDLE_WORKBENCH_MAX_NODES"] == "4"
    assert env["CPU_LIMIT"] == "2.0"
    home = Path(env["HOME"])
    # (`<state>/home` is the conftest's link to the homes folder)
    assert home.resolve() == (hub.state / "home" / "alice").resolve()
    if AS_ROOT:
        account = hub.account("alice")
        assert home.resolve() == Path(account.pw_dir)
        assert not home.resolve().is_relative_to(hub.state.resolve())
        info = home.stat()
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, account.pw_uid)
        server = psutil.Process(hub.wait_ready("alice")["servers"][""]["state"]["pid"])
        assert server.uids().real == account.pw_uid
        assert "--allow-root" not in server.cmdline()
        assert env["USER"] == account.pw_name
        assert env["PADDLE_WORKBENCH_UID"] == str(account.pw_uid)
    if SAMPLE.exists():
        assert (home / SAMPLE.name).exists()
    # and the server answers its owner through the proxy
    # (a page, not an API call: the server sends a browser through the hub's OAuth first)
    ok = session.get(f"{hub.url}/user/alice/lab", timeout=60)
    assert ok.status_code == 200 and ok.url.startswith(f"{hub.url}/user/alice/"), ok.url


def test_user_cannot_reach_another_users_server(hub):
    bob = user_token(hub, "bob")
    assert hub.api("POST", "/users/bob/server", token=bob).status_code in (201, 202)
    assert server_environ(hub, "bob")["PADDLE_WORKBENCH_TENANT"] == "classroom"
    alice = user_token(hub, "alice")
    headers = {"Authorization": f"token {alice}"}
    # bob's server, through the proxy, with alice's token and with alice's browser session
    direct = requests.get(f"{hub.url}/user/bob/api/contents", headers=headers, timeout=30)
    assert direct.status_code in (403, 404), direct.status_code
    browser = local_login(hub, "alice", PASSWORD)
    page = browser.get(f"{hub.url}/user/bob/lab", timeout=60)
    assert page.status_code in (403, 404), (page.status_code, page.url)
    # bob in the hub's API
    assert hub.api("GET", "/users/bob", token=alice).status_code in (403, 404)
    assert hub.api("DELETE", "/users/bob/server", token=alice).status_code in (403, 404)
    assert hub.wait_ready("bob")  # still running
    # the owner still gets in
    own = requests.get(f"{hub.url}/user/bob/api/contents",
                       headers={"Authorization": f"token {bob}"}, timeout=30)
    assert own.status_code == 200


def test_the_spawn_form_offers_profiles_and_no_image(hub):
    session = local_login(hub, "eve", PASSWORD)
    assert session.login_response.status_code == 302
    page = session.get(f"{hub.url}/hub/spawn", timeout=60)
    assert page.status_code == 200, page.status_code
    assert 'name="profile"' in page.text and 'value="vision--cpu-small"' in page.text
    assert 'name="image"' not in page.text


def test_unlisted_image_in_a_direct_spawn_request_is_refused(hub):
    token = user_token(hub, "eve")
    response = hub.api("POST", "/users/eve/server", token=token,
                       json={"image": "docker.io/library/python:3.12"})
    assert response.status_code == 400, response.text
    assert "is not on the allowlist of tenant 'vision'" in response.json()["message"]
    assert not hub.api("GET", "/users/eve").json()["servers"]


def test_user_without_tenant_cannot_spawn(hub):
    assert hub.api("POST", "/users/frank").status_code == 201  # created by an admin, no groups
    response = hub.api("POST", "/users/frank/server")
    assert response.status_code == 403, response.text
    assert "not a member of any tenant" in response.json()["message"]


def test_metrics_need_authentication(hub):
    assert requests.get(f"{hub.url}/hub/metrics", timeout=30).status_code == 403
    response = requests.get(f"{hub.url}/hub/metrics", timeout=30,
                            headers={"Authorization": f"token {hub.metrics_token}"})
    assert response.status_code == 200
    assert "jupyterhub_" in response.text


def test_idle_culler_follows_each_tenants_policy(tmp_path, proxy_available):
    """classroom servers idle for 3 s are stopped; vision's (1 h) stay."""
    tenants = yaml.safe_load(EXAMPLE_TENANTS.read_text())
    for tenant in tenants["tenants"]:
        if tenant["name"] == "classroom":
            tenant["idle"] = {"server_timeout": 3, "max_age": 0}
    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump(tenants))
    make_users(tmp_path)
    hub = HubProcess(state=tmp_path, env={"WORKBENCH_CULL_EVERY": "2",
                                          "WORKBENCH_TENANTS_FILE": str(tmp_path / "tenants.yaml")})
    try:
        hub.start()
        for name in ("alice", "bob"):
            assert local_login(hub, name, PASSWORD).login_response.status_code == 302
            assert hub.api("POST", f"/users/{name}/server").status_code in (201, 202)
        hub.wait_ready("alice")
        deadline = time.monotonic() + 180
        while hub.api("GET", "/users/bob").json()["servers"] and time.monotonic() < deadline:
            time.sleep(1)
        assert not hub.api("GET", "/users/bob").json()["servers"], "bob's server was not culled"
        assert hub.api("GET", "/users/alice").json()["servers"][""]["ready"]
        assert "idle-culler-classroom" in hub.log_text()
    finally:
        hub.stop()
