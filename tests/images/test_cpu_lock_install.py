"""The CPU image's lock file installs into a fresh virtual environment and the image works from it.

This is the image build without Docker: a new venv (like the image's Python), `pip install
--require-hashes --no-deps -r images/cpu/requirements.lock` (like its RUN), the project wheel with
--no-deps, the system-wide IPython config. Then the image's entry command and imports must work.
It downloads about 300 MB the first time (pip's cache in ~/.cache/pip makes re-runs quick), so it
runs once per session in one module-scoped fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "images" / "cpu" / "requirements.lock"
IPYTHON_CONFIG = REPO / "images" / "common" / "ipython_config.py"


def _run(argv: list[str], env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def image_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv holding what the CPU image holds; returns its prefix."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the CPU image runs Python 3.11 and the lock is resolved for it")
    root = tmp_path_factory.mktemp("cpu-image")
    prefix = root / "venv"
    venv.EnvBuilder(with_pip=True).create(prefix)
    python = str(prefix / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    installed = _run([*pip, "install", "--require-hashes", "--no-deps", "-r", str(LOCK)])
    if installed.returncode != 0 and "Could not fetch URL" in installed.stderr + installed.stdout:
        pytest.skip("PyPI cannot be reached from this machine")
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    wheels = root / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                  str(REPO)])
    assert built.returncode == 0, built.stderr[-3000:]
    project = _run([*pip, "install", "--no-deps", *map(str, wheels.glob("*.whl"))])
    assert project.returncode == 0, project.stderr[-3000:]
    # The image puts the config in /etc/ipython; a venv's <prefix>/etc/ipython is read the same way.
    config_dir = prefix / "etc" / "ipython"
    config_dir.mkdir(parents=True)
    (config_dir / "ipython_config.py").write_text(IPYTHON_CONFIG.read_text())
    return prefix


def _clean_env(prefix: Path, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "JUPYTER", "IPYTHON"))}
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), IPYTHONDIR=str(home / ".ipython"),
               PATH=f"{prefix / 'bin'}:{env.get('PATH', '')}", JUPYTER_PLATFORM_DIRS="1")
    return env


def test_lock_is_consistent(image_env: Path) -> None:
    checked = _run([str(image_env / "bin" / "python"), "-m", "pip", "check"])
    assert checked.returncode == 0, checked.stdout


def test_entry_command_runs(image_env: Path, tmp_path: Path) -> None:
    env = _clean_env(image_env, tmp_path / "home")
    command = str(image_env / "bin" / "jupyterhub-singleuser")
    result = _run([command, "--help"], env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    # --help is generic; --help-all shows the hub's single-user options mixed into the server.
    full = _run([command, "--help-all"], env=env, timeout=120)
    assert full.returncode == 0, full.stderr[-2000:]
    assert "--JupyterHubSingleUser." in full.stdout


def test_paddle_and_visualdl_import_and_work(image_env: Path, tmp_path: Path) -> None:
    code = (
        "import json, paddle, visualdl\n"
        "from visualdl import LogWriter\n"
        f"w = LogWriter(logdir={str(tmp_path / 'vdl')!r}); w.add_scalar('loss', 0.5, 1); w.close()\n"
        "x = paddle.to_tensor([1.0, 2.0]); print(json.dumps("
        "{'paddle': paddle.__version__, 'sum': float(x.sum())}))\n"
    )
    result = _run([str(image_env / "bin" / "python"), "-c", code],
                  env=_clean_env(image_env, tmp_path / "home"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["sum"] == 3.0
    assert list((tmp_path / "vdl").iterdir()), "VisualDL wrote no log"


def test_ipython_loads_the_workbench_magic_by_default(image_env: Path, tmp_path: Path) -> None:
    code = "print(sorted(get_ipython().extension_manager.loaded))"
    result = _run([str(image_env / "bin" / "ipython"), "--no-banner", "-c", code],
                  env=_clean_env(image_env, tmp_path / "home"), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "launcher_magic" in result.stdout, result.stdout + result.stderr[-2000:]
