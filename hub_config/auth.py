"""Login: who you are decides your tenant, and what you may administer.

Two authenticators share one rule (`TenantAuthMixin`): the identity provider's groups become
JupyterHub groups (`manage_groups`), a user in no tenant is refused at login with a page that says
so (and the spawners refuse such users too, in case groups or tenants change later).

Who administers what:
- Members of a tenant's `admin_groups` administer that tenant only: `tenant_admin_roles` builds one
  JupyterHub role per tenant (`tenant-admin-<tenant>`) whose scopes are filtered to the tenant's
  member group (`admin:servers!group=workbench:members:<tenant>`, `access:servers!...`,
  `read:users!...`, `list:users!...`, plus the admin page itself), assigned to the tenant's admin
  groups. A user's member groups are set at each login and refresh (`hub_groups`): one per tenant
  the user is in, none for a full hub admin, so an operator who is also a member of a tenant is
  beyond that tenant's admins. The hub config puts the roles into `c.JupyterHub.load_roles`.
- Full hub admins are only the operator's admin groups (`extra_admin_groups`,
  `WORKBENCH_ADMIN_GROUPS`) and `admin_users`; the `admin` flag follows them at every login and
  refresh, so leaving the group revokes it.
- JupyterHub loads roles at start only. Group *membership* (member groups included) follows the
  identity provider at each refresh (below), so a change of a tenant's `groups` reaches the
  admins' reach at each user's next refresh; a change of `admin_groups` reaches the roles only at
  the next hub restart (the authenticator logs a warning naming the roles until then).

Freshness: groups are refreshed from the source of truth before every spawn (`refresh_pre_spawn`)
and whenever they are older than `auth_refresh_age` (300 s). A spawn is refused (403) when that
refresh fails (the provider revoked the user's tokens, or the users file is broken), even for API
requests, where JupyterHub would otherwise go on with the groups it had.

- `TenantOAuthenticator`: OAuthenticator's GenericOAuthenticator against an OIDC provider; the
  groups claim (`groups_claim`) is read from the userinfo response. Auth state is on (the tokens,
  encrypted with `JUPYTERHUB_CRYPT_KEY`, are what lets the hub ask the provider again without a
  login), and the username is the immutable `sub` claim unless the operator names another.
- `LocalGroupsAuthenticator`: for one machine and teaching (`workbench up`), no identity provider:
  a local users file maps each user to a salted password hash and groups; a refresh re-reads it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jupyterhub.auth import Authenticator
from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from traitlets import Bool, List, Unicode, default

from hub_config.spawn_policy import no_tenant_message, user_tenants
from hub_config.tenancy import Tenancy
from hub_config.tenants import FileCache, Tenant, Tenants, TenantsFileError

# The users file lives in `hub_config.users` (no hub dependencies, for `workbench up --add-user`);
# these names stay importable from here.
from hub_config.users import (
    UsersFileError,
    add_user,
    hash_password,
    load_users,
    verify_password,
)

__all__ = [
    "TENANT_ADMIN_ROLE_PREFIX",
    "TENANT_ADMIN_SCOPES",
    "LocalGroupsAuthenticator",
    "TenantAuthMixin",
    "TenantOAuthenticator",
    "UsersFileError",
    "add_user",
    "hash_password",
    "load_users",
    "roles_drift",
    "tenant_admin_roles",
    "verify_password",
]

TENANT_ADMIN_ROLE_PREFIX = "tenant-admin-"
# What a tenant's admins may do, each scope filtered to the tenant's members: see, list, start,
# stop and open the servers of the tenant's users. Not `admin:users` (which makes admins and
# reads auth state), not `tokens`, not `groups`: those would reach beyond the tenant.
TENANT_ADMIN_SCOPES = ("admin:servers", "access:servers", "read:users", "list:users")
# The JupyterHub groups of each tenant's members but hub admins (`hub_groups`), which the tenant
# admin roles are filtered to; a name no identity provider's group can take (they are dropped).
MEMBERS_GROUP_PREFIX = "workbench:members:"
# The admin page grants no action by itself; every call it makes is checked against the scopes.
_ADMIN_PAGE = "admin-ui"
# Shown when a spawn needs groups the source of truth could not confirm just now.
UNCONFIRMED_MESSAGE = (
    "{user}: your sign-in could not be confirmed with the identity provider just now, so no "
    "server can be started. Log out and sign in again."
)


def member_group(tenant: Tenant) -> str:
    """The JupyterHub group of a tenant's members who are not hub admins."""
    return f"{MEMBERS_GROUP_PREFIX}{tenant.name}"


def hub_groups(tenants: Tenants, groups: Iterable[str], admin: bool) -> list[str]:
    """The JupyterHub groups of a user whose identity provider (or users file) says `groups`:
    those groups, minus any that claims to be a member group (nobody gets one from outside),
    plus, unless the user is a full hub admin, the member group of each tenant they are in.

    Tenant admin roles are filtered to member groups, so an operator who is also a member of a
    tenant is not administered (their server opened, stopped) by that tenant's admins."""
    own = sorted({g for g in groups if not g.startswith(MEMBERS_GROUP_PREFIX)})
    if admin:
        return own
    return own + [member_group(t) for t in user_tenants(tenants, own)]


def tenant_admin_roles(tenants: Tenants) -> list[dict[str, Any]]:
    """JupyterHub roles (`c.JupyterHub.load_roles` entries) that make each tenant's admin groups
    administrators of that tenant's users only.

    One role per tenant that has `admin_groups`, named `tenant-admin-<tenant>`, holding
    `TENANT_ADMIN_SCOPES` each filtered to the tenant's member group
    (`admin:servers!group=workbench:members:vision`, see `hub_groups`) and `admin-ui`, assigned
    to the tenant's admin groups. Those are JupyterHub groups kept in step with the identity
    provider (`manage_groups`), so who holds the role, and whom it reaches, follows the
    provider; the role's scopes follow the tenants file when the hub starts. A user in two
    tenants is administered by the admins of both; a hub admin by none. Pure: no I/O.
    """
    roles = []
    for tenant in tenants.tenants:
        if not tenant.admin_groups:
            continue
        filtered = [f"{scope}!group={member_group(tenant)}" for scope in TENANT_ADMIN_SCOPES]
        roles.append({
            "name": f"{TENANT_ADMIN_ROLE_PREFIX}{tenant.name}",
            "description": f"Administer the users and servers of tenant {tenant.name} only",
            "scopes": [_ADMIN_PAGE, *filtered],
            "groups": list(tenant.admin_groups),
        })
    return roles


def roles_drift(loaded: Iterable[Mapping[str, Any]],
                current: Iterable[Mapping[str, Any]]) -> list[str]:
    """Names of tenant admin roles that differ between the roles the hub loaded at start and
    those the tenants file gives now (added, removed, or other scopes or groups), sorted."""
    def by_name(roles: Iterable[Mapping[str, Any]]) -> dict[str, tuple]:
        return {
            r["name"]: (sorted(r.get("scopes") or []), sorted(r.get("groups") or []))
            for r in roles if str(r.get("name", "")).startswith(TENANT_ADMIN_ROLE_PREFIX)
        }

    before, now = by_name(loaded), by_name(current)
    return sorted(name for name in before.keys() | now.keys() if before.get(name) != now.get(name))


class TenantAuthMixin(Tenancy):
    """Tenant membership, operator admins and refresh bookkeeping, shared by both authenticators.

    A LoggingConfigurable (through `Tenancy`, which brings `tenants_file` and `tenants()`) so that
    its traitlets are real (configurable) traits on both subclasses. Mixed in before the
    Authenticator class: its `pre_spawn_start` and `run_post_auth_hook` call `super()`.
    """

    extra_admin_groups = List(
        Unicode(),
        help="""The operator's admin groups: their members are full hub admins (every tenant).
        A tenant's own admin_groups administer that tenant only (see `tenant_admin_roles`).""",
    ).tag(config=True)

    def admin_by_group(self, username: str, groups: Sequence[str]) -> bool:
        """Full hub admin: in one of the operator's admin groups, or in `admin_users`."""
        return bool(set(self.extra_admin_groups).intersection(groups)) or (
            username in self.admin_users
        )

    def check_tenant(self, username: str, groups: list[str], admin: bool) -> bool:
        """True for tenant members, tenant admins and hub admins; otherwise a 403 page that says
        why."""
        tenants = self.tenants()
        self.warn_if_roles_changed(tenants)
        if admin or user_tenants(tenants, groups) or tenants.admin_groups.intersection(groups):
            return True
        self.log.warning("Refusing login of %s: no tenant for groups %s", username, groups)
        error = web.HTTPError(403, "%s", no_tenant_message(username, groups))
        error.jupyterhub_message = no_tenant_message(username, groups)  # type: ignore[attr-defined]
        raise error

    def warn_if_roles_changed(self, tenants: Tenants) -> None:
        """Log once per change when the tenants file no longer gives the admin roles the hub
        loaded at start (JupyterHub loads roles at start only)."""
        loaded = getattr(self.parent, "load_roles", None)
        if loaded is None or tenants is getattr(self, "_roles_checked_for", None):
            return  # the tenants cache returns the same object until the file changes
        self._roles_checked_for = tenants
        changed = roles_drift(loaded, tenant_admin_roles(tenants))
        if changed and changed != getattr(self, "_roles_drift_warned", None):
            self.log.warning(
                "The tenants file %s changes the tenant admin roles %s; roles are loaded when the "
                "hub starts, so they still hold their old scopes and groups: restart the hub",
                self.tenants_file, ", ".join(changed),
            )
        self._roles_drift_warned = changed

    # --- refresh bookkeeping -------------------------------------------------------------------

    def _unconfirmed(self) -> set[str]:
        if not hasattr(self, "_unconfirmed_users"):
            self._unconfirmed_users: set[str] = set()
        return self._unconfirmed_users

    def note_refresh(self, username: str, refreshed: Any) -> Any:
        """Record whether the last refresh of a user confirmed them (anything but False), and
        return `refreshed` unchanged; `pre_spawn_start` refuses users it did not confirm."""
        if refreshed is False:
            self._unconfirmed().add(username)
        else:
            self._unconfirmed().discard(username)
        try:
            self.warn_if_roles_changed(self.tenants())
        except TenantsFileError:
            pass  # the spawn that follows reports a broken tenants file itself
        return refreshed

    async def run_post_auth_hook(self, handler, auth_model):
        # A completed login confirms the user afresh.
        self._unconfirmed().discard(auth_model["name"])
        return await super().run_post_auth_hook(handler, auth_model)

    def pre_spawn_start(self, user, spawner):
        """Refuse (403) a spawn whose forced refresh failed: JupyterHub goes on with the groups it
        had for API and cross-user requests, but a new server must rest on confirmed groups."""
        if user.name in self._unconfirmed():
            message = UNCONFIRMED_MESSAGE.format(user=user.name)
            self.log.warning("Refusing spawn for %s: the last refresh did not confirm them",
                             user.name)
            error = web.HTTPError(403, "%s", message)
            error.jupyterhub_message = message  # type: ignore[attr-defined]
            raise error
        return super().pre_spawn_start(user, spawner)


class TenantOAuthenticator(TenantAuthMixin, GenericOAuthenticator):
    """GenericOAuthenticator (OIDC) whose groups claim decides the tenant.

    Defaults that differ from OAuthenticator's: `enable_auth_state` (the hub needs the user's
    tokens to ask the provider again; JupyterHub refuses to start without `JUPYTERHUB_CRYPT_KEY`
    then), `refresh_pre_spawn`, `manage_groups`, and `username_claim = "sub"`: the subject is the
    one claim OIDC promises never to change or reassign, where `preferred_username` or `email`
    may be editable by the user at some providers (and so let one user become another).
    """

    groups_claim = Unicode(
        "groups", help="""Claim of the userinfo response that lists the user's groups."""
    ).tag(config=True)

    @default("manage_groups")
    def _manage_groups_default(self) -> bool:
        return True

    @default("enable_auth_state")
    def _enable_auth_state_default(self) -> bool:
        return True

    @default("refresh_pre_spawn")
    def _refresh_pre_spawn_default(self) -> bool:
        return True

    @default("auth_state_groups_key")
    def _groups_key_default(self):
        # `oauth_user` is where OAuthenticator keeps the userinfo response in auth_state.
        return f"oauth_user.{self.groups_claim}"

    @default("scope")
    def _scope_default(self) -> list[str]:
        return ["openid", "profile", "email", "groups"]

    @default("username_claim")
    def _username_claim_default(self) -> str:
        return "sub"

    def provider_groups(self, auth_state: dict) -> set[str]:
        """The groups claim as the provider sent it. A provider that omits the claim for a user
        with no groups means "no groups", not an error; a claim that is a single string is one
        group."""
        groups = (auth_state.get("oauth_user") or {}).get(self.groups_claim)
        if groups is None:
            return set()
        if isinstance(groups, str):
            return {groups}
        return {str(g) for g in groups}

    async def get_user_groups(self, auth_state: dict) -> set[str]:
        """The user's JupyterHub groups (`hub_groups`): the provider's, and their tenants'
        member groups unless they are a full hub admin."""
        groups = self.provider_groups(auth_state)
        user_info = auth_state.get("oauth_user") or {}
        name = self.normalize_username(str(user_info.get(self.username_claim, "")))
        return set(hub_groups(self.tenants(), groups, self.admin_by_group(name, groups)))

    async def update_auth_model(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        auth_model = await super().update_auth_model(auth_model)
        groups = sorted(self.provider_groups(auth_model.get("auth_state") or {}))
        auth_model["admin"] = bool(auth_model.get("admin")) or self.admin_by_group(
            auth_model["name"], groups
        )
        return auth_model

    async def check_allowed(self, username: str, auth_model: dict[str, Any] | None) -> bool:
        if auth_model is None:
            return True
        return self.check_tenant(username, list(auth_model.get("groups") or []),
                                 bool(auth_model.get("admin")))

    async def refresh_user(self, user, handler=None, **kwargs):
        """OAuthenticator's refresh (userinfo with the stored access token, else the refresh
        token): a dict with the user's current groups and admin flag, or False when the provider
        no longer vouches for the user. Recorded for `pre_spawn_start`."""
        refreshed = await super().refresh_user(user, handler, **kwargs)
        return self.note_refresh(user.name, refreshed)


class LocalGroupsAuthenticator(TenantAuthMixin, Authenticator):
    """Password login against a local users file; the file's groups decide the tenant.

    A refresh (before each spawn, and after `auth_refresh_age`) re-reads the user's groups from the
    file, so an edit of the file takes effect without a new login; a user no longer in the file
    has no groups.
    """

    users_file = Unicode(
        "users.yaml", help="""Local users file: name -> password hash and groups."""
    ).tag(config=True)

    # The groups come from our file, so they are the source of truth for JupyterHub groups.
    manage_groups = Bool(True).tag(config=True)

    _users_cache: FileCache[dict[str, dict[str, Any]]] | None = None

    @default("refresh_pre_spawn")
    def _refresh_pre_spawn_default(self) -> bool:
        return True

    def users(self) -> dict[str, dict[str, Any]]:
        """The users file, re-read only when it changed (by mtime and size); raises
        UsersFileError naming the file when it is missing or malformed."""
        if self._users_cache is None or self._users_cache.path != Path(self.users_file):
            self._users_cache = FileCache(self.users_file, load_users)
        return self._users_cache.get()

    async def authenticate(self, handler, data: dict[str, str]) -> dict[str, Any] | None:
        username = self.normalize_username(str(data.get("username", "")))
        password = str(data.get("password", ""))
        entry = self.users().get(username)
        # PBKDF2 is deliberately slow; in a thread (hashlib releases the GIL) it does not stall
        # the hub's event loop, which serves every other request meanwhile.
        if entry is None or not await asyncio.to_thread(
            verify_password, password, entry["password"]
        ):
            self.log.warning("Failed login for %s", username or "(empty name)")
            return None
        groups = entry["groups"]
        admin = self.admin_by_group(username, groups)
        return {"name": username, "groups": hub_groups(self.tenants(), groups, admin),
                "admin": admin}

    def check_allowed(self, username: str, authentication: dict[str, Any] | None = None) -> bool:
        if authentication is None:
            return True
        return self.check_tenant(username, list(authentication.get("groups") or []),
                                 bool(authentication.get("admin")))

    async def refresh_user(self, user, handler=None):
        """The user's groups and admin flag as the users file says now (no groups when the user
        is no longer in it); False, recorded for `pre_spawn_start`, when the file is broken."""
        try:
            entry = self.users().get(user.name)
        except UsersFileError as err:
            self.log.error("Cannot refresh the groups of %s: %s", user.name, err)
            return self.note_refresh(user.name, False)
        groups = list(entry["groups"]) if entry else []
        admin = self.admin_by_group(user.name, groups)
        groups = hub_groups(self.tenants(), groups, admin)
        if _hub_has(user, groups, admin):
            # Confirmed and unchanged: True spares the hub rewriting the user (groups, roles,
            # auth state) and a database commit before every spawn.
            return self.note_refresh(user.name, True)
        return self.note_refresh(user.name, {"groups": groups, "admin": admin})


def _hub_has(user: Any, groups: Sequence[str], admin: bool) -> bool:
    """Whether the hub's record of `user` already has exactly these groups and admin flag."""
    hub_groups = getattr(user, "groups", None)
    if hub_groups is None or getattr(user, "admin", None) is not admin:
        return False
    return sorted(g.name for g in hub_groups) == sorted(groups)
