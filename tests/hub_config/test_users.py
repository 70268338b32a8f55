"""The local users file of `workbench up` (hub_config.users): written atomically with mode 0600,
read back by the local authenticator, which re-reads it only when it changed."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hub_config.auth import LocalGroupsAuthenticator
from hub_config.tenants import FileCache
from hub_config.users import UsersFileError, add_user, load_users, verify_password


def test_add_user_replaces_the_file_atomically_and_privately(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    add_user(path, "ada", ["students"], "first")
    before = path.stat().st_ino
    add_user(path, "bob", ["vision-team"], "second")
    # A new file renamed over the old one: a reader never sees a half-written file.
    assert path.stat().st_ino != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.yaml"]  # no temp file left
    users = load_users(path)
    assert users["ada"]["groups"] == ["students"]
    assert verify_password("second", users["bob"]["password"])


def test_a_malformed_file_is_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users: [not, a, mapping]\n")
    with pytest.raises(UsersFileError, match="must have a 'users' mapping"):
        add_user(path, "ada", ["students"], "pw")
    assert path.read_text() == "users: [not, a, mapping]\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["users.yaml"]


def test_authenticator_rereads_the_users_file_only_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    add_user(path, "ada", ["students"], "pw")
    auth = LocalGroupsAuthenticator(users_file=str(path))
    first = auth.users()
    assert auth.users() is first  # unchanged: not parsed again
    add_user(path, "bob", ["students"], "pw")
    assert sorted(auth.users()) == ["ada", "bob"]
    auth.users_file = str(tmp_path / "absent.yaml")
    with pytest.raises(UsersFileError, match="no such users file"):
        auth.users()


def test_file_cache_loads_again_after_a_change(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("one")
    loads = []
    cache = FileCache(path, lambda p: loads.append(p) or p.read_text())
    assert cache.get() == cache.get() == "one"
    path.write_text("three")
    assert cache.get() == "three"
    assert len(loads) == 2
