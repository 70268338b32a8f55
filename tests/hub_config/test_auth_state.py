"""Auth state and refresh (hub_config.auth, hub_config.jupyterhub_config): the OIDC login keeps
encrypted auth state and refuses to start without JUPYTERHUB_CRYPT_KEY, the username is the `sub`
claim, groups are refreshed before each spawn, and a spawn whose refresh failed is refused.
The real identity provider is exercised in test_hub_oidc.py; the local users file here and in
test_admin_scope.py.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from tornado import web
from traitlets.config import Config

from hub_config import auth as auth_module
from hub_config import jupyterhub_config
from hub_config.auth import LocalGroupsAuthenticator, TenantOAuthenticator, add_user

from .conftest import HubProcess

EXAMPLE = Path(__file__).resolve().parents[2] / "hub_config" / "tenants.example.yaml"
OIDC = {
    "WORKBENCH_AUTH": "oidc", "WORKBENCH_CULLER": "0", "WORKBENCH_PROXY_COMMAND": "/bin/true",
    "WORKBENCH_TENANTS_FILE": str(EXAMPLE),
    # Nothing listens here: configure() reads the discovery document only after its own checks.
    "WORKBENCH_OIDC_ISSUER": "http://127.0.0.1:9", "WORKBENCH_OIDC_CLIENT_ID": "hub",
    "WORKBENCH_OIDC_CLIENT_SECRET": "secret",
}


@pytest.mark.parametrize("key", ["", "   "], ids=["unset", "blank"])
def test_oidc_without_a_crypt_key_names_the_variable(tmp_path: Path, key: str) -> None:
    with pytest.raises(jupyterhub_config.HubConfigError) as err:
        jupyterhub_config.configure(Config(), {**OIDC, "WORKBENCH_STATE_DIR": str(tmp_path),
                                               "JUPYTERHUB_CRYPT_KEY": key})
    assert "JUPYTERHUB_CRYPT_KEY is not set" in str(err.value)
    assert "openssl rand -hex 32" in str(err.value)


def test_with_a_crypt_key_the_config_goes_on_to_the_provider(tmp_path: Path) -> None:
    with pytest.raises(jupyterhub_config.HubConfigError, match="WORKBENCH_OIDC_ISSUER"):
        jupyterhub_config.configure(Config(), {**OIDC, "WORKBENCH_STATE_DIR": str(tmp_path),
                                               "JUPYTERHUB_CRYPT_KEY": "ab" * 32})


def test_the_hub_refuses_to_start_without_the_key(tmp_path: Path, proxy_available) -> None:
    hub = HubProcess(state=tmp_path, env={**OIDC, "JUPYTERHUB_CRYPT_KEY": ""})
    try:
        with pytest.raises(RuntimeError, match="the hub exited early"):
            hub.start(timeout=60)
        assert "JUPYTERHUB_CRYPT_KEY is not set" in hub.log_text()
    finally:
        hub.stop()


def test_the_oidc_authenticator_keeps_auth_state_refreshes_and_names_users_by_sub() -> None:
    auth = TenantOAuthenticator(tenants_file=str(EXAMPLE))
    assert auth.enable_auth_state is True
    assert auth.refresh_pre_spawn is True
    assert auth.manage_groups is True
    assert auth.auth_refresh_age > 0  # JupyterHub's 300 s: groups are re-read after that too
    assert auth.username_claim == "sub"
    # The operator may name another (immutable) claim.
    config = Config()
    config.TenantOAuthenticator.username_claim = "oid"
    assert TenantOAuthenticator(config=config).username_claim == "oid"


# A member's hub groups: the file's, and their tenant's member group (the admin roles' filter).
VIC_GROUPS = ["vision-team", "workbench:members:vision"]


def _user(name: str) -> SimpleNamespace:
    return SimpleNamespace(name=name)


@pytest.fixture
def local(tmp_path: Path) -> LocalGroupsAuthenticator:
    users = tmp_path / "users.yaml"
    add_user(users, "vic", ["vision-team"], "pw")
    return LocalGroupsAuthenticator(tenants_file=str(EXAMPLE), users_file=str(users),
                                    extra_admin_groups=["ops"])


def test_local_refresh_reads_the_groups_the_file_has_now(local) -> None:
    assert local.refresh_pre_spawn is True
    assert asyncio.run(local.refresh_user(_user("vic"))) == {"groups": VIC_GROUPS,
                                                             "admin": False}
    add_user(local.users_file, "vic", ["ops"], "pw")
    assert asyncio.run(local.refresh_user(_user("vic"))) == {"groups": ["ops"], "admin": True}


def test_a_user_removed_from_the_file_keeps_no_groups(local) -> None:
    assert asyncio.run(local.refresh_user(_user("ghost"))) == {"groups": [], "admin": False}


def test_a_spawn_whose_refresh_failed_is_refused_until_the_next_login(local) -> None:
    Path(local.users_file).write_text("users: [broken")
    assert asyncio.run(local.refresh_user(_user("vic"))) is False
    with pytest.raises(web.HTTPError) as err:
        local.pre_spawn_start(_user("vic"), spawner=None)
    assert err.value.status_code == 403
    assert "sign in again" in err.value.log_message % err.value.args
    local.pre_spawn_start(_user("olivia"), spawner=None)  # others are not affected
    # A completed login confirms the user afresh.
    asyncio.run(local.run_post_auth_hook(None, {"name": "vic", "groups": [], "admin": False}))
    local.pre_spawn_start(_user("vic"), spawner=None)


def _hub_user(name: str, groups: list[str], admin: bool = False) -> SimpleNamespace:
    """A hub user as JupyterHub hands it to `refresh_user`: its groups are ORM groups."""
    return SimpleNamespace(name=name, admin=admin,
                           groups=[SimpleNamespace(name=g) for g in groups])


def test_a_refresh_that_changes_nothing_confirms_the_user_as_they_are(local) -> None:
    # True: confirmed, nothing for the hub to rewrite (no group sync, no commit before a spawn).
    assert asyncio.run(local.refresh_user(_hub_user("vic", VIC_GROUPS))) is True
    # The hub's record differs from the file: the file wins, as before.
    assert asyncio.run(local.refresh_user(_hub_user("vic", ["students"]))) == {
        "groups": VIC_GROUPS, "admin": False}
    assert asyncio.run(local.refresh_user(_hub_user("vic", VIC_GROUPS, admin=True))) == {
        "groups": VIC_GROUPS, "admin": False}
    # An edit of the file is seen at the next refresh.
    add_user(local.users_file, "vic", ["ops"], "pw")
    assert asyncio.run(local.refresh_user(_hub_user("vic", VIC_GROUPS))) == {
        "groups": ["ops"], "admin": True}
    assert asyncio.run(local.refresh_user(_hub_user("vic", ["ops"], admin=True))) is True
    # A confirmed refresh clears an earlier failed one: the user may spawn again.
    Path(local.users_file).write_text("users: [broken")
    assert asyncio.run(local.refresh_user(_hub_user("vic", ["ops"], admin=True))) is False
    Path(local.users_file).unlink()
    add_user(local.users_file, "vic", ["ops"], "pw")
    assert asyncio.run(local.refresh_user(_hub_user("vic", ["ops"], admin=True))) is True
    local.pre_spawn_start(_user("vic"), spawner=None)


def test_the_password_check_does_not_hold_up_other_requests(local, monkeypatch) -> None:
    """The hash check runs off the event loop: here it can only finish once another coroutine
    on the loop has run meanwhile (on the loop it would wait in vain and the login would fail)."""
    other_ran = threading.Event()
    real_verify = auth_module.verify_password

    def verify_after_other_request(password: str, stored: str) -> bool:
        return other_ran.wait(timeout=10) and real_verify(password, stored)

    monkeypatch.setattr(auth_module, "verify_password", verify_after_other_request)

    async def login_beside_another_request(password: str):
        login = asyncio.ensure_future(local.authenticate(None, {"username": "vic",
                                                                "password": password}))
        await asyncio.sleep(0)  # the other request's turn on the loop
        other_ran.set()
        return await login

    assert asyncio.run(login_beside_another_request("pw")) == {
        "name": "vic", "groups": VIC_GROUPS, "admin": False}
    other_ran.clear()
    assert asyncio.run(login_beside_another_request("nope")) is None  # still checked
