"""The local users file of `workbench up`: each user's salted password hash and groups.

`users.yaml` holds `users: {name: {password: <hash>, groups: [..]}}`; the groups decide the
tenant (see `hub_config.auth.LocalGroupsAuthenticator`, which reads this file at each login).
Standard library and PyYAML only, so `workbench up --add-user` works without the hub extra.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import yaml

_HASH_NAME = "pbkdf2_sha256"
_HASH_ITERATIONS = 200_000
_HEADER = "# Local users of `workbench up`: password hashes and groups (decide tenants).\n"


class UsersFileError(ValueError):
    """The local users file is wrong; the message names the file and the user."""


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


def load_users(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Read the local users file: `users: {name: {password: <hash>, groups: [..]}}`.

    Raises UsersFileError, naming the file (and the user), for a missing or malformed file.
    """
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
    """Add or replace a user in the local users file (mode 0600).

    The file is replaced atomically: the hub, reading it at a login meanwhile, sees the old
    users or the new ones, never a half-written file. Raises UsersFileError for a malformed
    existing file (which is left as it is).
    """
    path = Path(path)
    users = load_users(path) if path.exists() else {}
    users[name] = {"password": hash_password(password), "groups": list(groups)}
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600, in the same folder so that os.replace is a rename.
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(_HEADER)
            yaml.safe_dump({"users": users}, out, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
