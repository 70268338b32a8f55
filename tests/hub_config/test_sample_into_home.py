"""`python -m hub_config.samples`: the notebook pod's postStart hook puts the sample notebook
into a home that lacks it, never over what is there, and never fails the container."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from hub_config.samples.__main__ import SAMPLE

from .conftest import REPO, public_dir


def hook(home: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub_config.samples", *([home] if home else [])],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", **env},
                          cwd=REPO)


def test_a_new_home_gets_the_sample(tmp_path: Path) -> None:
    done = hook(str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / SAMPLE.name).read_bytes() == SAMPLE.read_bytes()
    # HOME is the default, as in the pod
    other = tmp_path / "other"
    other.mkdir()
    assert hook("", HOME=str(other)).returncode == 0
    assert (other / SAMPLE.name).is_file()


def test_the_users_own_notebook_of_that_name_is_kept(tmp_path: Path) -> None:
    mine = tmp_path / SAMPLE.name
    mine.write_text('{"cells": [], "mine": true}')
    assert hook(str(tmp_path)).returncode == 0
    assert mine.read_text() == '{"cells": [], "mine": true}'


def test_a_link_of_that_name_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.txt"
    target.write_text("untouched")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / SAMPLE.name).symlink_to(target)
    assert hook(str(tmp_path / "home")).returncode == 0
    assert target.read_text() == "untouched"


def test_a_problem_is_said_and_the_hook_still_succeeds(tmp_path: Path) -> None:
    missing = hook(str(tmp_path / "no-such-home"))
    assert missing.returncode == 0
    assert "was not copied" in missing.stderr and "no-such-home" in missing.stderr
    unset = hook("")
    assert unset.returncode == 0 and "HOME is unset" in unset.stderr


def test_a_home_it_may_not_write_is_said_and_the_hook_still_succeeds() -> None:
    """As another uid than the home's owner (root here would write anyway)."""
    import os
    import shutil

    if os.geteuid() == 0:
        root = public_dir("wb-sample-")
        locked = root / "locked"
        locked.mkdir(mode=0o555)
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    else:
        root = Path(tempfile.mkdtemp())
        locked = root / "locked"
        locked.mkdir(mode=0o555)
        argv = []
    try:
        done = subprocess.run([*argv, sys.executable, "-m", "hub_config.samples", str(locked)],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stderr
        assert not (locked / SAMPLE.name).exists()
        assert "was not copied" in done.stderr and "Permission denied" in done.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)
