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
import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Any

import yaml
from jupyterhub.auth import Authenticator
from oauthenticator.generic import GenericOAuthenticator
from tornado import web
from traitlets import Bool, List, Unicode, default
from traitlets.config import LoggingConfigurable

from hub_config.policy import is_admin, no_tenant_message, user_tenants
from hub_config.tenants import Tenants, shared_cache

_HASH_NAME = "pbkdf2_sha256"
_HASH_ITERATIONS = 200_000


class TenantAuthMixin(LoggingConfigurable):
    """Tenant membership and admin-by-group, shared by both authenticators.

    A LoggingConfigurable so that its traitlets are real (configurable) traits on both subclasses.
    """

    tenants_file = Unicode(
        "tenants.yaml", help="""Path of the tenants file (see hub_config/tenants.example.yaml)."""
    ).tag(config=True)

    extra_admin_groups = List(
        Unicode(),
        help="""Groups whose members are hub admins in addition to every tenant's admin_groups.""",
    ).tag(config=True)

    def tenants(self) -> Tenants:
        return shared_cache(self.tenants_file).get()

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


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A salted PBKDF2 hash in the form `pbkdf2_sha256$<iterations>$<salt>$<hash>` (base64)."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _HASH_ITERATIONS)
    encode = base64.b64encode
    return f"{_HASH_NAME}${_HASH_ITERATIONS}${encode(salt).decode()}${encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether `password` matches a `hash_password` result (constant-time compare)."""
    try:
        name, iterations, salt, digest = stored.split("$")
        if name != _HASH_NAME:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.pbkdf2_hmac(
            "sha256", password.encode(), base64.b64decode(salt), int(iterations)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


class UsersFileError(ValueError):
    """The local users file is wrong; the message names the file and the user."""


def load_users(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read the local users file: `users: {name: {password: <hash>, groups: [..]}}`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UsersFileError(f"{path}: no such users file; `workbench up` creates one") from None
    except yaml.YAMLError:
        raise UsersFileError(f"{path}: not valid YAML; fix the syntax") from None
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict):
        raise UsersFileError(f"{path}: must have a 'users' mapping of name -> password, groups")
    out = {}
    for name, entry in users.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("password"), str):
            raise UsersFileError(f"{path}: user {name!r}: field 'password' must be a hash string")
        groups = entry.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise UsersFileError(f"{path}: user {name!r}: field 'groups' must be a list of names")
        out[str(name)] = {"password": entry["password"], "groups": list(groups)}
    return out


def add_user(path: str | os.PathLike[str], name: str, groups: list[str], password: str) -> None:
    """Add or replace a user in the local users file (created with mode 0600 if missing)."""
    path = Path(path)
    users = load_users(path) if path.exists() else {}
    users[name] = {"password": hash_password(password), "groups": list(groups)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("# Local users of `workbench up`: password hashes and groups (decide tenants).\n")
        yaml.safe_dump({"users": users}, out, sort_keys=True)


class LocalGroupsAuthenticator(TenantAuthMixin, Authenticator):
    """Password login against a local users file; the file's groups decide the tenant."""

    users_file = Unicode(
        "users.yaml", help="""Local users file: name -> password hash and groups."""
    ).tag(config=True)

    # The groups come from our file, so they are the source of truth for JupyterHub groups.
    manage_groups = Bool(True).tag(config=True)

    _users_cache: tuple[tuple[int, int], dict[str, dict[str, Any]]] | None = None

    def users(self) -> dict[str, dict[str, Any]]:
        """The users file, re-read only when it changed (by mtime and size)."""
        try:
            stat = os.stat(self.users_file)
        except OSError:
            return load_users(self.users_file)  # raises UsersFileError naming the file
        key = (stat.st_mtime_ns, stat.st_size)
        if self._users_cache is None or self._users_cache[0] != key:
            self._users_cache = (key, load_users(self.users_file))
        return self._users_cache[1]

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
