"""Who administers what, as data (hub_config.auth): a tenant's admin groups get a JupyterHub role
confined to that tenant's groups, full admin is the operator's groups only, the hub config loads
the roles, and an edit of the tenants file that changes them is reported until a restart.
The real hub tries the roles for real in test_admin_scope.py.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from jupyterhub import scopes as hub_scopes
from jupyterhub.app import JupyterHub
from tornado import web
from traitlets.config import Config

from hub_config import jupyterhub_config
from hub_config.auth import (
    TENANT_ADMIN_SCOPES,
    LocalGroupsAuthenticator,
    add_user,
    hub_groups,
    roles_drift,
    tenant_admin_roles,
)
from hub_config.tenants import load_tenants

EXAMPLE = Path(__file__).resolve().parents[2] / "hub_config" / "tenants.example.yaml"
# Scopes that reach beyond one tenant, or that make admins; no tenant admin role may hold them.
EVERYWHERE = {"admin:users", "users", "tokens", "admin:groups", "groups", "admin:servers",
              "access:servers", "read:users", "list:users", "servers", "delete:servers",
              "admin:auth_state", "admin:services", "shutdown", "proxy", "inherit"}


@pytest.fixture
def roles() -> dict[str, dict]:
    return {r["name"]: r for r in tenant_admin_roles(load_tenants(EXAMPLE))}


def test_each_tenant_admin_role_is_filtered_to_its_tenants_members(roles) -> None:
    vision, classroom = roles["tenant-admin-vision"], roles["tenant-admin-classroom"]
    assert vision["groups"] == ["vision-admins"]
    assert classroom["groups"] == ["teachers"]
    assert set(vision["scopes"]) == {"admin-ui", *(f"{s}!group=workbench:members:vision"
                                                   for s in TENANT_ADMIN_SCOPES)}
    assert set(classroom["scopes"]) == {"admin-ui", *(f"{s}!group=workbench:members:classroom"
                                                      for s in TENANT_ADMIN_SCOPES)}
    for role in roles.values():
        assert not EVERYWHERE.intersection(role["scopes"]), role["scopes"]
        assert not [s for s in role["scopes"] if s.startswith(("tokens", "admin:users", "groups"))]


def test_the_roles_are_valid_for_this_jupyterhub(roles) -> None:
    for role in roles.values():
        hub_scopes._check_scopes_exist(role["scopes"], who_for=f"role {role['name']}")
    parsed = hub_scopes.parse_scopes(roles["tenant-admin-vision"]["scopes"])
    assert parsed["admin:servers"] == {"group": {"workbench:members:vision"}}


@pytest.mark.parametrize("groups, admin, member_of", [
    (["vision-team"], False, ["vision"]),
    (["students", "teachers"], False, ["classroom"]),
    (["ops", "vision-team"], True, []),  # an operator in a tenant: no tenant admin reaches them
    (["vision-admins"], False, []),  # a tenant's admin who is not a member of it
    (["workbench:members:vision"], False, []),  # a provider's group cannot claim membership
], ids=["member", "member-of-two-groups", "operator-member", "admin-only", "forged"])
def test_hub_groups_put_members_but_operators_in_their_tenants_group(groups, admin, member_of):
    made = hub_groups(load_tenants(EXAMPLE), groups, admin)
    assert [g for g in made if g.startswith("workbench:members:")] == [
        f"workbench:members:{name}" for name in member_of]
    assert sorted(g for g in made if not g.startswith("workbench:")) == sorted(
        g for g in groups if not g.startswith("workbench:"))


def test_a_tenant_without_admin_groups_gets_no_role(tmp_path: Path) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["tenants"][0].pop("admin_groups")
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    assert [r["name"] for r in tenant_admin_roles(load_tenants(path))] == [
        "tenant-admin-classroom"]


def _config(tmp_path: Path, **env: str) -> Config:
    tenants = tmp_path / "tenants.yaml"
    shutil.copyfile(EXAMPLE, tenants)
    config = Config()
    jupyterhub_config.configure(config, {
        "WORKBENCH_STATE_DIR": str(tmp_path / "state"), "WORKBENCH_TENANTS_FILE": str(tenants),
        "WORKBENCH_PROXY_COMMAND": "/bin/true", **env,
    })
    return config


@pytest.mark.parametrize(("culler", "culler_roles"), [("0", set()), ("1", {
    "idle-culler-vision", "idle-culler-classroom"})], ids=["culler-off", "culler-on"])
def test_the_hub_config_loads_the_tenant_admin_roles(tmp_path: Path, culler: str,
                                                     culler_roles: set[str]) -> None:
    config = _config(tmp_path, WORKBENCH_CULLER=culler, WORKBENCH_ADMIN_GROUPS="ops")
    names = {r["name"] for r in config.JupyterHub.load_roles}
    assert names == {"tenant-admin-vision", "tenant-admin-classroom", *culler_roles}
    # No role of ours is JupyterHub's all-powerful `admin`; full admin is the operator's groups.
    assert "admin" not in names
    assert config.LocalGroupsAuthenticator.extra_admin_groups == ["ops"]


@pytest.mark.parametrize(("groups", "admin"), [
    (["vision-admins"], False), (["teachers"], False), (["ops"], True), (["students"], False),
], ids=["tenant-admin", "tenant-admin-and-member", "operator-group", "member"])
def test_full_admin_is_the_operators_groups_only(groups: list[str], admin: bool) -> None:
    auth = LocalGroupsAuthenticator(tenants_file=str(EXAMPLE), extra_admin_groups=["ops"])
    assert auth.admin_by_group("someone", groups) is admin


@pytest.mark.parametrize("groups", [["vision-admins"], ["students"], ["ops"]],
                         ids=["tenant-admin-only", "member", "operator"])
def test_tenant_admins_members_and_operators_may_log_in(groups: list[str]) -> None:
    auth = LocalGroupsAuthenticator(tenants_file=str(EXAMPLE), extra_admin_groups=["ops"])
    assert auth.check_tenant("someone", groups, auth.admin_by_group("someone", groups))


def test_a_user_in_no_tenant_is_refused() -> None:
    auth = LocalGroupsAuthenticator(tenants_file=str(EXAMPLE))
    with pytest.raises(web.HTTPError) as err:
        auth.check_tenant("carol", ["guests"], False)
    assert err.value.status_code == 403


# (id, change to the vision tenant, drifted role names)
DRIFT = [
    ("unchanged", {}, []),
    ("admin-group-replaced", {"admin_groups": ["vision-leads"]}, ["tenant-admin-vision"]),
    # The roles reach the tenant's member group, which logins and refreshes keep current: a
    # tenant's groups can change without a restart.
    ("tenant-group-added", {"groups": ["vision-team", "interns"]}, []),
    ("admin-groups-removed", {"admin_groups": []}, ["tenant-admin-vision"]),
]


@pytest.mark.parametrize(("change", "drifted"), [c[1:] for c in DRIFT], ids=[c[0] for c in DRIFT])
def test_roles_drift(tmp_path: Path, change: dict, drifted: list[str]) -> None:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["tenants"][0].update(change)
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    loaded = tenant_admin_roles(load_tenants(EXAMPLE)) + [{"name": "idle-culler-vision",
                                                           "scopes": ["list:users"]}]
    assert roles_drift(loaded, tenant_admin_roles(load_tenants(path))) == drifted


def test_an_edit_that_changes_the_roles_is_reported_once_until_restart(tmp_path: Path,
                                                                       caplog) -> None:
    tenants = tmp_path / "tenants.yaml"
    shutil.copyfile(EXAMPLE, tenants)
    users = tmp_path / "users.yaml"
    add_user(users, "ada", ["vision-admins"], "pw")
    # The hub app is the authenticator's parent; its load_roles are the roles as loaded at start.
    hub = JupyterHub(load_roles=tenant_admin_roles(load_tenants(tenants)))
    auth = LocalGroupsAuthenticator(parent=hub, tenants_file=str(tenants), users_file=str(users))
    auth.log = logging.getLogger("test-auth-roles")
    user = SimpleNamespace(name="ada")
    with caplog.at_level(logging.WARNING, logger="test-auth-roles"):
        asyncio.run(auth.refresh_user(user))
        assert "tenant admin roles" not in caplog.text
        data = yaml.safe_load(tenants.read_text())
        data["tenants"][0]["admin_groups"] = []
        tenants.write_text(yaml.safe_dump(data))
        asyncio.run(auth.refresh_user(user))
        asyncio.run(auth.refresh_user(user))
    warnings = [r.getMessage() for r in caplog.records if "tenant admin roles" in r.getMessage()]
    assert len(warnings) == 1
    assert "tenant-admin-vision" in warnings[0] and "restart the hub" in warnings[0]


def test_a_hub_without_a_tenants_file_refuses_to_start(tmp_path: Path) -> None:
    """Finding 8: no silent fallback to the shipped example, whose admin groups would be real."""
    with pytest.raises(jupyterhub_config.HubConfigError, match="no tenants file at .*"
                       "WORKBENCH_TENANTS_FILE") as err:
        jupyterhub_config.configure(Config(), {
            "WORKBENCH_STATE_DIR": str(tmp_path / "state"), "WORKBENCH_PROXY_COMMAND": "/bin/true"})
    assert str(tmp_path / "state" / "tenants.yaml") in str(err.value)
