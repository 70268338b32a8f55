"""The images' cache key (images/local/build.sh key) changes with what goes into an image and
with nothing else: a commit that touches only tests or docs reuses the images already built."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.images.conftest import REPO


def _run(argv: list[str], cwd: Path, **env: str) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                               "HOME": str(cwd.parent), **env})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path, image_tools) -> Path:
    """A clone of this repository, with an identity to commit as."""
    clone = tmp_path / "clone"
    _run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(clone)], tmp_path)
    _run(["git", "config", "user.email", "ci@example.invalid"], clone)
    _run(["git", "config", "user.name", "ci"], clone)
    # The build script under test is this checkout's, committed or not.
    script = "images/local/build.sh"
    (clone / script).write_text((REPO / script).read_text())
    _run(["git", "commit", "--quiet", "--allow-empty", "-am", "this checkout's build script"], clone)
    return clone


def _key(clone: Path) -> str:
    return _run(["bash", "images/local/build.sh", "key"], clone,
                IMAGE_CACHE=str(clone.parent / "image-cache")).splitlines()[-1]


def _commit(clone: Path, path: str, text: str) -> None:
    target = clone / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    _run(["git", "add", path], clone)
    _run(["git", "commit", "--quiet", "-m", f"change {path}"], clone)


def test_a_commit_outside_the_images_inputs_keeps_the_key(checkout: Path) -> None:
    before = _key(checkout)
    _commit(checkout, "tests/test_key_probe.py", "# a test-only change\n")
    _commit(checkout, "docs/key-probe.md", "a docs-only change\n")
    assert _key(checkout) == before


@pytest.mark.parametrize("path", ["launcher_magic/key_probe.py", "images/cpu/key-probe.txt"])
def test_a_commit_to_an_input_changes_the_key(checkout: Path, path: str) -> None:
    before = _key(checkout)
    _commit(checkout, path, "# a change to what goes into an image\n")
    assert _key(checkout) != before


def test_an_uncommitted_edit_to_an_input_changes_the_key(checkout: Path) -> None:
    before = _key(checkout)
    (checkout / "hub_config" / "key_probe.py").write_text("# not committed\n")
    assert _key(checkout) != before
