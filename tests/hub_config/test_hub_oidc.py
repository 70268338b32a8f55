"""OAuth login through a real OIDC provider: the groups claim becomes JupyterHub groups, decides
the tenant and what a user administers, a user without a tenant is refused, the username is the
immutable `sub` claim, and what the provider changes later (groups taken away, tokens revoked)
stops the next spawn without a new login.

The provider is `oidc-provider-mock` (PyPI, maintained; Authlib-based authorization-code flow with
signed ID tokens, discovery, dynamic client registration and per-user claims), started by the
fixture as its own process. Its login page takes a subject instead of a password: it stands in
for the identity provider's login step, while everything the hub does is the real OAuth flow.
Its `PUT /users/<sub>` replaces a user's claims and `POST /users/<sub>/revoke-tokens` revokes
their tokens, as an administrator of the identity provider would.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time

import pytest

from .conftest import HubProcess, free_port, requests

pytest.importorskip("oidc_provider_mock", reason="oidc-provider-mock is not installed (test extra)")
pytestmark = pytest.mark.timeout(600)

USERS = [
    {"sub": "olivia", "preferred_username": "olivia", "groups": ["students"]},
    {"sub": "tina", "preferred_username": "tina", "groups": ["teachers"]},
    {"sub": "oscar", "preferred_username": "oscar", "groups": ["guests"]},
    {"sub": "rita", "preferred_username": "rita", "groups": ["students"]},
    {"sub": "dora", "preferred_username": "dora", "groups": ["students"]},
    # A provider that lets users edit their profile: this one calls themself "tina".
    {"sub": "u-8c1f", "preferred_username": "tina", "groups": ["students"]},
]


@pytest.fixture(scope="module")
def provider(tmp_path_factory):
    """The OIDC provider on a free port; yields its issuer URL."""
    port = free_port()
    argv = [sys.executable, "-m", "oidc_provider_mock", "--port", str(port),
            "--require-registration"]
    for user in USERS:
        argv += ["--user-claims", json.dumps(user)]
    log = open(tmp_path_factory.mktemp("oidc") / "provider.log", "wb")  # noqa: SIM115
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    issuer = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{issuer}/.well-known/openid-configuration", timeout=2).ok:
                    break
            except requests.RequestException:
                time.sleep(0.3)
        else:
            pytest.fail("the OIDC provider did not start")
        yield issuer
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def hub(provider, tmp_path_factory, proxy_available):
    port = free_port()
    callback = f"http://127.0.0.1:{port}/hub/oauth_callback"
    client = requests.post(f"{provider}/oauth2/clients", json={
        "redirect_uris": [callback],
        # OAuthenticator posts the client secret in the form body by default (basic_auth off).
        "token_endpoint_auth_method": "client_secret_post",
    },
                           timeout=30).json()
    hub = HubProcess(state=tmp_path_factory.mktemp("hub-oidc"), port=port, env={
        "WORKBENCH_AUTH": "oidc",
        "WORKBENCH_CULLER": "0",
        "WORKBENCH_OIDC_ISSUER": provider,
        "WORKBENCH_OIDC_CLIENT_ID": client["client_id"],
        "WORKBENCH_OIDC_CLIENT_SECRET": client["client_secret"],
        # Auth state (the user's tokens, to refresh their groups) is encrypted with it.
        "JUPYTERHUB_CRYPT_KEY": secrets.token_hex(32),
    })
    try:
        yield hub.start()
    finally:
        hub.stop()


def oauth_login(hub: HubProcess, sub: str) -> tuple[requests.Session, requests.Response]:
    """Hub login button -> provider's authorize page -> choose the subject -> hub callback."""
    session = requests.Session()
    page = session.get(f"{hub.url}/hub/oauth_login", timeout=60)
    assert page.status_code == 200 and "/oauth2/authorize" in page.url, page.url
    final = session.post(page.url, data={"sub": sub}, timeout=120)
    return session, final


def test_groups_claim_puts_the_user_in_a_tenant_and_spawns_there(hub):
    session, final = oauth_login(hub, "olivia")
    assert final.status_code == 200 and final.url.startswith(hub.url), (final.status_code, final.url)
    model = hub.api("GET", "/users/olivia").json()
    # The provider's group, and her tenant's member group (what its admins' roles reach).
    assert sorted(model["groups"]) == ["students", "workbench:members:classroom"]
    assert model["admin"] is False
    assert hub.api("POST", "/users/olivia/server").status_code in (201, 202)
    model = hub.wait_ready("olivia")
    pid = model["servers"][""]["state"]["pid"]
    env = dict(
        item.split("=", 1)
        for item in open(f"/proc/{pid}/environ", "rb").read().decode().split("\0") if "=" in item
    )
    assert env["PADDLE_WORKBENCH_TENANT"] == "classroom"
    assert env["PADDLE_WORKBENCH_USER"] == "olivia"
    # the browser session reaches the new server
    lab = session.get(f"{hub.url}/user/olivia/lab", timeout=120)
    assert lab.status_code == 200 and lab.url.startswith(f"{hub.url}/user/olivia/")


def groups(hub: HubProcess, name: str) -> list[str]:
    """A user's hub groups, sorted: the hub's REST API lists them in no set order."""
    return sorted(hub.api("GET", f"/users/{name}").json()["groups"])


def user_token(hub: HubProcess, name: str) -> str:
    response = hub.api("POST", f"/users/{name}/tokens", json={"note": "test"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def test_a_tenants_admin_group_administers_that_tenant_not_the_hub(hub):
    _, final = oauth_login(hub, "tina")
    assert final.status_code == 200
    assert hub.api("GET", "/users/tina").json()["admin"] is False
    # teachers is classroom's admin group: tina reads classroom's users (olivia, students)...
    oauth_login(hub, "olivia")
    assert hub.api("GET", "/users/olivia", token=user_token(hub, "tina")).status_code == 200


def test_the_username_is_the_sub_claim_not_the_name_a_user_may_edit(hub):
    oauth_login(hub, "tina")
    _, final = oauth_login(hub, "u-8c1f")  # preferred_username "tina"
    assert final.status_code == 200
    assert groups(hub, "u-8c1f") == [
        "students", "workbench:members:classroom"]
    # The real tina is untouched: still her groups, and not the account u-8c1f signed in to.
    assert groups(hub, "tina") == [
        "teachers", "workbench:members:classroom"]


def set_claims(provider: str, claims: dict) -> None:
    """What an administrator of the identity provider does: replace a user's claims."""
    response = requests.put(f"{provider}/users/{claims['sub']}", json=claims, timeout=30)
    assert response.status_code == 204, response.text


def test_groups_removed_at_the_provider_refuse_the_next_spawn(hub, provider):
    """No new login: the spawn refreshes rita's groups from the provider first."""
    _, final = oauth_login(hub, "rita")
    assert final.status_code == 200
    assert groups(hub, "rita") == [
        "students", "workbench:members:classroom"]
    token = user_token(hub, "rita")
    set_claims(provider, {"sub": "rita", "preferred_username": "rita", "groups": []})
    response = hub.api("POST", "/users/rita/server", token=token)
    assert response.status_code == 403, response.text
    assert "not a member of any tenant" in response.json()["message"]
    model = hub.api("GET", "/users/rita").json()
    assert model["groups"] == [] and not model["servers"]


def test_tokens_revoked_at_the_provider_refuse_the_next_spawn(hub, provider):
    """The provider no longer vouches for dora (an account disabled there): her API token still
    authenticates at the hub, but no new server starts on the groups the hub remembers."""
    _, final = oauth_login(hub, "dora")
    assert final.status_code == 200
    token = user_token(hub, "dora")
    revoked = requests.post(f"{provider}/users/dora/revoke-tokens", timeout=30)
    assert revoked.status_code == 204
    response = hub.api("POST", "/users/dora/server", token=token)
    assert response.status_code == 403, response.text
    assert "sign in again" in response.json()["message"]
    assert not hub.api("GET", "/users/dora").json()["servers"]
    # Signing in again confirms her afresh.
    _, final = oauth_login(hub, "dora")
    assert final.status_code == 200


def test_user_without_tenant_gets_a_clear_page_and_no_account(hub):
    _, final = oauth_login(hub, "oscar")
    assert final.status_code == 403
    assert "not a member of any tenant" in final.text and "guests" in final.text
    assert hub.api("GET", "/users/oscar").status_code == 404
