"""`workbench registry` and `workbench images build`: the operator's commands around the scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub_config.cli.main import main

REPO = Path(__file__).resolve().parents[2]


def _workbench(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub_config.cli.main", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


@pytest.mark.parametrize("addr", ["0.0.0.0:5000", "10.0.0.5:5000", "registry.example.com:443",
                                  "127.0.0.1"], ids=["any", "private", "remote", "no-port"])
def test_the_registry_listens_only_on_loopback(addr: str, tmp_path: Path) -> None:
    done = _workbench("registry", "start", "--addr", addr, cwd=REPO,
                      env={"IMAGE_CACHE": str(tmp_path)})
    assert done.returncode == 2
    assert "not a loopback host:port" in done.stderr
    assert not (tmp_path / "registry" / "pid").exists()


def test_the_commands_say_where_to_run_them(tmp_path: Path, capsys) -> None:
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert main(["registry", "status"]) == 2
        assert main(["images", "build"]) == 2
    finally:
        os.chdir(cwd)
    err = capsys.readouterr().err
    assert "run `workbench registry` in the repository's checkout" in err
    assert "run `workbench images build` in the repository's checkout" in err
    assert "Traceback" not in err


def test_the_registry_status_of_a_stopped_registry_is_1(tmp_path: Path) -> None:
    done = _workbench("registry", "status", "--addr", "127.0.0.1:1", cwd=REPO,
                      env={"IMAGE_CACHE": str(tmp_path)})
    assert done.returncode == 1
