"""The CI rule in tests/conftest.py, tried on a real pytest run of small test files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

_TESTS = '''
import pytest

def test_passes():
    assert True

def test_needs_a_part():
    pytest.skip("chromium is not installed")

@pytest.mark.skipif(True, reason="needs an NVIDIA GPU and nvidia-smi")
def test_gpu():
    pass

@pytest.mark.xfail(reason="known")
def test_known():
    assert False
'''

_MODULE_SKIP = '''
import pytest
pytest.importorskip("a_module_that_is_not_installed", reason="install the extra")

def test_never_collected():
    pass
'''


def _run(tmp_path: Path, ci: str | None, source: str = _TESTS) -> subprocess.CompletedProcess:
    (tmp_path / "test_parts.py").write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider",
         "-p", "tests.conftest", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_in_ci_a_skip_fails_unless_it_is_a_gpu_check(tmp_path: Path) -> None:
    run = _run(tmp_path, "true")
    out = run.stdout
    assert run.returncode == 1, out
    assert "FAILED" in out and "test_needs_a_part" in out
    assert "skipped in CI, where only the GPU checks may skip: chromium is not installed" in out
    assert "SKIPPED" in out and "needs an NVIDIA GPU" in out
    assert "1 passed" in out and "1 xfailed" in out


def test_in_ci_a_module_skipped_at_collection_stops_the_run(tmp_path: Path) -> None:
    run = _run(tmp_path, "1", _MODULE_SKIP)
    assert run.returncode == 2, run.stdout  # pytest's "interrupted: errors during collection"
    assert "skipped in CI, where only the GPU checks may skip: install the extra" in run.stdout


def test_outside_ci_skips_stay_skips(tmp_path: Path) -> None:
    run = _run(tmp_path, None)
    assert run.returncode == 0, run.stdout
    assert "1 passed, 2 skipped, 1 xfailed" in run.stdout
    run = _run(tmp_path, "false", _MODULE_SKIP)
    assert run.returncode == 5 and "1 skipped" in run.stdout, run.stdout  # 5: nothing ran
