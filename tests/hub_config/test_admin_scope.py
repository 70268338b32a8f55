"""A tenant's admins administer their tenant only, tried for real: our hub configuration, the local
login and the local process spawner, two running single-user servers (vic in tenant vision, cleo in
tenant classroom) and the admins of each tenant acting through the REST API and the proxy with
their own tokens. Also: a group taken away in the users file stops the next spawn, without a new
login.

JupyterHub answers a request on a user the token may not see with 404 ("no access to resources or
resources not found"), the same as for a user that does not exist, so that a tenant admin cannot
even learn who is in another tenant; the single-user server answers 403.
"""

from __future__ import annotations

import re
import time

import pytest

from hub_config.auth import add_user

from .conftest import HubProcess, local_login, requests

pytestmark = pytest.mark.timeout(600)

USERS = {  # name: groups
    "ada": ["vision-admins"],  # admin of tenant vision, not a member
    "vic": ["vision-team"],
    "tom": ["teachers"],  # admin of tenant classroom, and a member
    "cleo": ["students"],
    "oper": ["ops"],  # the operator's admin group: full admin
    "opal": ["ops", "vision-team"],  # an operator who is also a member of tenant vision
}
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def hub(tmp_path_factory, proxy_available):
    state = tmp_path_factory.mktemp("hub-admin-scope")
    for name, groups in USERS.items():
        add_user(state / "users.yaml", name, groups, PASSWORD)
    hub = HubProcess(state=state, env={"WORKBENCH_CULLER": "0", "WORKBENCH_ADMIN_GROUPS": "ops"})
    try:
        hub.start()
        for name in USERS:  # a login creates the user with their groups
            assert local_login(hub, name, PASSWORD).login_response.status_code == 302, name
        for name in ("vic", "cleo", "opal"):
            assert hub.api("POST", f"/users/{name}/server").status_code in (201, 202)
        for name in ("vic", "cleo", "opal"):
            hub.wait_ready(name)
        yield hub
    finally:
        hub.stop()


@pytest.fixture(scope="module")
def tokens(hub) -> dict[str, str]:
    """Each user's own API token (the permissions of the user, nothing more)."""
    made = {}
    for name in USERS:
        response = hub.api("POST", f"/users/{name}/tokens", json={"note": "test"})
        assert response.status_code == 201, response.text
        made[name] = response.json()["token"]
    return made


def as_user(hub: HubProcess, tokens: dict[str, str], name: str, method: str, path: str, **kw):
    return hub.api(method, path, token=tokens[name], **kw)


def open_server(hub: HubProcess, who: str, owner: str) -> requests.Response:
    """`who` opens `owner`'s server in a browser session: the single-user server sends the
    browser to the hub's OAuth page, which asks `who` to confirm access to another user's server
    (and refuses those `who` has no `access:servers` for); confirm it; returns the last response.

    A browser, not an API token: the single-user server cannot resolve a `!group=` filter in a
    token's scopes (JupyterHub's `check_scopes` says so), but the hub resolves it when it issues
    the server's OAuth token, which is how people open servers.
    """
    session = local_login(hub, who, PASSWORD)
    page = session.get(f"{hub.url}/user/{owner}/lab", timeout=120)
    if page.status_code == 200 and 'name="scopes"' in page.text:
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text).group(1)
        scopes = re.findall(r'name="scopes" value="([^"]+)"', page.text)
        page = session.post(page.url, data={"_xsrf": xsrf, "scopes": scopes}, timeout=120)
    if page.status_code != 200:
        return page
    # In: the server's own API answers this browser now.
    return session.get(f"{hub.url}/user/{owner}/api/status", timeout=60)


def running(hub: HubProcess, name: str) -> bool:
    return bool((hub.api("GET", f"/users/{name}").json().get("servers") or {}).get("", {}))


def test_only_the_operators_group_makes_full_admins(hub, tokens) -> None:
    admins = {name: hub.api("GET", f"/users/{name}").json()["admin"] for name in USERS}
    assert admins == {"ada": False, "vic": False, "tom": False, "cleo": False, "oper": True,
                      "opal": True}
    assert as_user(hub, tokens, "oper", "GET", "/users/cleo").status_code == 200


# (id, admin, target, may they?)
REACH = [
    ("vision-admin-on-vision-user", "ada", "vic", True),
    ("vision-admin-on-classroom-user", "ada", "cleo", False),
    ("classroom-admin-on-classroom-user", "tom", "cleo", True),
    ("classroom-admin-on-vision-user", "tom", "vic", False),
    # An operator who is also a member of the tenant is beyond the tenant's admins.
    ("vision-admin-on-operator-in-vision", "ada", "opal", False),
]


@pytest.mark.parametrize(("admin", "target", "allowed"), [r[1:] for r in REACH],
                         ids=[r[0] for r in REACH])
def test_a_tenant_admin_reaches_their_tenants_users_only(hub, tokens, admin, target,
                                                         allowed) -> None:
    model = as_user(hub, tokens, admin, "GET", f"/users/{target}")
    assert model.status_code == (200 if allowed else 404), model.text
    if allowed:
        assert model.json()["servers"][""]["ready"]  # and sees the server
    opened = open_server(hub, admin, target)
    assert opened.status_code == (200 if allowed else 403), (opened.url, opened.text[-500:])
    if allowed:
        assert opened.url.startswith(f"{hub.url}/user/{target}/") and "started" in opened.json()
    else:  # the hub refuses to hand out access to the server; the browser never gets in
        assert opened.url.startswith(f"{hub.url}/hub/api/oauth2/authorize"), opened.url


def test_a_tenant_admin_lists_their_tenant_only(hub, tokens) -> None:
    listed = as_user(hub, tokens, "ada", "GET", "/users")
    assert listed.status_code == 200
    assert {u["name"] for u in listed.json()} == {"vic"}  # not opal, an operator in vision


# (id, method, path, body): what a tenant admin must not do to another tenant, or to anyone
BEYOND = [
    ("stop-other-tenants-server", "DELETE", "/users/cleo/server", None),
    ("stop-an-operators-server-in-the-tenant", "DELETE", "/users/opal/server", None),
    ("token-for-other-tenants-user", "POST", "/users/cleo/tokens", {"note": "x"}),
    ("token-for-own-tenants-user", "POST", "/users/vic/tokens", {"note": "x"}),
    ("make-self-admin", "PATCH", "/users/ada", {"admin": True}),
    ("add-self-to-a-group", "POST", "/groups/students/users", {"users": ["ada"]}),
    ("create-a-user", "POST", "/users/mallory", None),
]


@pytest.mark.parametrize(("method", "path", "body"), [b[1:] for b in BEYOND],
                         ids=[b[0] for b in BEYOND])
def test_a_tenant_admin_cannot_act_beyond_their_tenants_servers(hub, tokens, method, path,
                                                                body) -> None:
    response = as_user(hub, tokens, "ada", method, path, json=body)
    assert response.status_code in (400, 403, 404), (response.status_code, response.text)
    assert running(hub, "cleo") and running(hub, "opal")
    assert hub.api("GET", "/users/ada").json()["admin"] is False
    assert hub.api("GET", "/users/mallory").status_code == 404


def wait_stopped(hub: HubProcess, name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while running(hub, name):
        assert time.monotonic() < deadline, f"{name}'s server did not stop"
        time.sleep(0.5)


def test_a_tenant_admin_stops_and_starts_their_tenants_server(hub, tokens) -> None:
    assert as_user(hub, tokens, "ada", "DELETE", "/users/vic/server").status_code in (202, 204)
    wait_stopped(hub, "vic")
    assert running(hub, "cleo")
    assert as_user(hub, tokens, "ada", "POST", "/users/vic/server").status_code in (201, 202)
    hub.wait_ready("vic")


def test_a_group_removed_in_the_users_file_refuses_the_next_spawn(hub, tokens) -> None:
    """No new login: the spawn refreshes cleo's groups from the file first."""
    add_user(hub.state / "users.yaml", "cleo", ["guests"], PASSWORD)
    assert hub.api("DELETE", "/users/cleo/server").status_code in (202, 204)
    wait_stopped(hub, "cleo")
    response = as_user(hub, tokens, "cleo", "POST", "/users/cleo/server")
    assert response.status_code == 403, response.text
    assert "not a member of any tenant" in response.json()["message"]
    assert hub.api("GET", "/users/cleo").json()["groups"] == ["guests"]
