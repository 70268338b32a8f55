"""Login: who you are decides your tenant.

Two authenticators share one rule (`TenantAuthMixin`): the identity provider's groups become
JupyterHub groups (`manage_groups`), a user in no tenant is refused at login with a page that says
so (and the spawners refuse such users too, in case groups or tenants change later), and members
of any tenant's `admin_groups` (or of `extra_admin_groups`) are hub admins; leaving the group
revokes admin at the next login.

- `TenantOAuthenticator`: OAuthenticator's GenericOAuthenticator against an OIDC provider; the
  groups claim (`groups_claim`) is read from the userinfo response.
- `LocalGroupsAuthenticator`: for one machine and teaching (`workbench up`), no identity provider:
  a local users file maps each user to a salted password hash and groups.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from jupyterhub.auth import Authenticator
from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from traitlets import Bool, List, Unicode, default

from hub_config.policy import is_admin, no_tenant_message, user_tenants
from hub_config.tenancy import Tenancy
from hub_config.tenants import FileCache

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
    "LocalGroupsAuthenticator",
    "TenantAuthMixin",
    "TenantOAuthenticator",
    "UsersFileError",
    "add_user",
    "hash_password",
    "load_users",
    "verify_password",
]


class TenantAuthMixin(Tenancy):
    """Tenant membership and admin-by-group, shared by both authenticators.

    A LoggingConfigurable (through `Tenancy`, which brings `tenants_file` and `tenants()`) so that
    its traitlets are real (configurable) traits on both subclasses.
    """

    extra_admin_groups = List(
        Unicode(),
        help="""Groups whose members are hub admins in addition to every tenant's admin_groups.""",
    ).tag(config=True)

    def admin_by_group(self, username: str, groups: list[str]) -> bool:
        return is_admin(self.tenants(), groups, self.extra_admin_groups) or (
            username in self.admin_users
        )

    def check_tenant(self, username: str, groups: list[str], admin: bool) -> bool:
        """True for tenant members and admins; otherwise a 403 page that says why."""
        if admin or user_tenants(self.tenants(), groups):
            return True
        self.log.warning("Refusing login of %s: no tenant for groups %s", username, groups)
        error = web.HTTPError(403, "%s", no_tenant_message(username, groups))
        error.jupyterhub_message = no_tenant_message(username, groups)  # type: ignore[attr-defined]
        raise error


class TenantOAuthenticator(TenantAuthMixin, GenericOAuthenticator):
    """GenericOAuthenticator (OIDC) whose groups claim decides the tenant."""

    groups_claim = Unicode(
        "groups", help="""Claim of the userinfo response that lists the user's groups."""
    ).tag(config=True)

    @default("manage_groups")
    def _manage_groups_default(self) -> bool:
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
        return "preferred_username"

    async def get_user_groups(self, auth_state: dict) -> set[str]:
        # A provider that omits the claim for a user with no groups means "no groups", not an
        # error; a claim that is a single string is one group.
        groups = (auth_state.get("oauth_user") or {}).get(self.groups_claim)
        if groups is None:
            return set()
        if isinstance(groups, str):
            return {groups}
        return {str(g) for g in groups}

    async def update_auth_model(self, auth_model: dict[str, Any]) -> dict[str, Any]:
        auth_model = await super().update_auth_model(auth_model)
        groups = sorted(await self.get_user_groups(auth_model.get("auth_state") or {}))
        auth_model["admin"] = bool(auth_model.get("admin")) or self.admin_by_group(
            auth_model["name"], groups
        )
        return auth_model

    async def check_allowed(self, username: str, auth_model: dict[str, Any] | None) -> bool:
        if auth_model is None:
            return True
        return self.check_tenant(username, list(auth_model.get("groups") or []),
                                 bool(auth_model.get("admin")))


class LocalGroupsAuthenticator(TenantAuthMixin, Authenticator):
    """Password login against a local users file; the file's groups decide the tenant."""

    users_file = Unicode(
        "users.yaml", help="""Local users file: name -> password hash and groups."""
    ).tag(config=True)

    # The groups come from our file, so they are the source of truth for JupyterHub groups.
    manage_groups = Bool(True).tag(config=True)

    _users_cache: FileCache[dict[str, dict[str, Any]]] | None = None

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
        return {"name": username, "groups": groups, "admin": self.admin_by_group(username, groups)}

    def check_allowed(self, username: str, authentication: dict[str, Any] | None = None) -> bool:
        if authentication is None:
            return True
        return self.check_tenant(username, list(authentication.get("groups") or []),
                                 bool(authentication.get("admin")))
