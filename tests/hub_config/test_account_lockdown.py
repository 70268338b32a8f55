"""Hub accounts locked down (`hub_config.account_lockdown`): the usermod command and the deny files
as data, and the deny files under concurrent writers.

Real accounts made by `ensure_account` are checked in `test_local_accounts.py`; that a locked-down
account's `crontab`, `at` and ssh login are refused for real, and that its terminals still give a
shell, is tried in `test_local_accounts_escapes.py`.
"""

from __future__ import annotations

import os
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from hub_config.account_lockdown import (
    EXPIRED,
    NOLOGIN,
    deny,
    expiry_day,
    listed,
    undeny,
    usermod_argv,
)

TODAY = 20_000


@pytest.mark.parametrize(("shell", "expires", "wanted"), [
    ("/bin/bash", None, ["--shell", NOLOGIN, "--expiredate", EXPIRED]),
    (NOLOGIN, None, ["--expiredate", EXPIRED]),
    (NOLOGIN, TODAY + 30, ["--expiredate", EXPIRED]),  # expires later: not good enough
    ("/bin/sh", 1, ["--shell", NOLOGIN]),
    (NOLOGIN, 1, None),
    (NOLOGIN, 500, None),  # expired long ago, some other way: left as it is
], ids=["old-account", "no-expiry", "expires-later", "shell-only", "done", "expired-otherwise"])
def test_usermod_gives_only_what_is_missing(shell, expires, wanted):
    argv = usermod_argv("jupyter-ann", shell, expires, today=TODAY)
    assert argv == (None if wanted is None else ["usermod", *wanted, "jupyter-ann"])


def test_the_expiry_is_read_from_the_shadow_file(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.write_text("root:*:19000:0:99999:7:::\njupyter-ann:!:19000:0:99999:7::1:\n"
                      "jupyter-bob:!:19000:0:99999:7:::\njupyter-cy:!:19000:0:99999:7::0:\n")
    assert expiry_day("jupyter-ann", shadow) == 1
    assert expiry_day("jupyter-bob", shadow) is None
    assert expiry_day("jupyter-cy", shadow) is None  # 0: "never" to some tools
    assert expiry_day("jupyter-nobody", shadow) is None


def test_a_name_counts_only_on_a_line_of_its_own():
    text = "daemon\n  jupyter-ann  \n# jupyter-bob\njupyter-cyril\n"
    assert listed(text, "jupyter-ann") and listed(text, "daemon")
    assert not listed(text, "jupyter-bob") and not listed(text, "jupyter-cy")


def test_a_deny_file_keeps_the_operators_lines(tmp_path):
    path = tmp_path / "at.deny"
    path.write_text("daemon\nwww-data")  # no newline at the end
    path.chmod(0o640)
    assert deny("jupyter-ann", path) is True
    assert deny("jupyter-ann", path) is False  # once
    assert path.read_text() == "daemon\nwww-data\njupyter-ann\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # the operator's mode stays
    assert undeny(["jupyter-ann", "jupyter-zed"], path) == ["jupyter-ann"]
    assert path.read_text() == "daemon\nwww-data\n"  # the gap it filled stays
    assert undeny(["jupyter-ann"], tmp_path / "missing") == []


def test_a_missing_deny_file_is_made_readable_whatever_the_umask(tmp_path):
    path = tmp_path / "cron.deny"
    old = os.umask(0o077)  # as the hub runs: an unreadable cron.deny refuses everyone
    try:
        deny("jupyter-ann", path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == "jupyter-ann\n"


def test_a_link_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    (tmp_path / "cron.deny").symlink_to(target)
    with pytest.raises(OSError):
        deny("jupyter-ann", tmp_path / "cron.deny")
    assert target.read_text() == "keep\n"


def _deny_many(path: str, names: list[str]) -> None:
    for name in names:
        deny(name, Path(path))


def test_concurrent_writers_lose_nothing_and_add_nothing_twice(tmp_path):
    """Several hubs (processes) adding accounts at once, some the same ones."""
    path = tmp_path / "cron.deny"
    path.write_text("operator-entry\n")
    batches = [[f"jupyter-{w}-{n}" for n in range(30)] + ["jupyter-shared"] for w in range(6)]
    with ProcessPoolExecutor(6) as pool:
        list(pool.map(_deny_many, [str(path)] * len(batches), batches))
    lines = path.read_text().splitlines()
    assert lines[0] == "operator-entry"
    assert sorted(lines[1:]) == sorted({name for batch in batches for name in batch})
