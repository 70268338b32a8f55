"""`workbench` as a user runs it: bad input gives exit code 2 and one clear line, never a traceback,
both through the installed entry point's `main` and through `python -m hub_config.cli.main` (where the
module runs as `__main__`, so the commands' error class must not be defined in it). With the base
install alone (no extras), the help works and a command that needs an extra names it in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hub_config.cli import main as cli

REPO = Path(__file__).resolve().parents[2]


def _bad_tenants(tmp_path: Path) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text("tenants:\n  - name: Vision\n")
    return path


# (id, argv after the file's placeholder is filled, what the one line must say)
CASES = [
    ("render-malformed-tenants", ["render", "--tenants", "{bad}"],
     ["workbench render: ", "{bad}: field 'tenants[0].name': 'Vision' is not a DNS-1123 label"]),
    ("render-missing-tenants", ["render", "--tenants", "{missing}"],
     ["workbench render: ", "{missing}: no such tenants file"]),
    ("images-missing-path", ["images", "check", "{missing}"],
     ["workbench images: ", "{missing} does not exist"]),
]


def _fill(items: list[str], tmp_path: Path) -> list[str]:
    names = {"bad": str(_bad_tenants(tmp_path)), "missing": str(tmp_path / "absent.yaml")}
    return [item.format(**names) for item in items]


# One subprocess per command module is enough to prove the class is shared; main() covers the rest.
SUBPROCESS_CASES = [c for c in CASES if c[0] != "render-missing-tenants"]


@pytest.mark.parametrize(("argv", "says"), [c[1:] for c in SUBPROCESS_CASES],
                         ids=[c[0] for c in SUBPROCESS_CASES])
def test_python_dash_m_reports_user_errors_in_one_line(tmp_path: Path, argv, says) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    result = subprocess.run([sys.executable, "-m", "hub_config.cli.main", *_fill(argv, tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for part in _fill(says, tmp_path):
        assert part in lines[0]
    assert result.stdout == ""


@pytest.mark.parametrize(("argv", "says"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_main_reports_user_errors_in_one_line(tmp_path: Path, capsys, argv, says) -> None:
    assert cli.main(_fill(argv, tmp_path)) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    for part in _fill(says, tmp_path):
        assert part in err


# What `pip install paddle-workbench` (no extras) lacks. A `sitecustomize` on the child's path
# makes these imports fail as they would there, before any workbench code runs.
EXTRAS_ONLY = ("jupyterhub", "tornado", "kubespawner", "oauthenticator", "kubernetes",
               "kubernetes_asyncio", "jupyter_server", "paddle", "visualdl")
NO_EXTRAS = f"""
import sys

BLOCKED = {set(EXTRAS_ONLY)!r}


class NoExtras:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, NoExtras())
for loaded in [m for m in sys.modules if m.partition(".")[0] in BLOCKED]:
    del sys.modules[loaded]
"""
COMMANDS = ("up", "images", "render", "apply")


def _without_extras(tmp_path: Path, *argv: str, **extra_env: str) -> subprocess.CompletedProcess:
    site = tmp_path / "no-extras"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_EXTRAS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), **extra_env}
    return subprocess.run([sys.executable, "-m", "hub_config.cli.main", *argv], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)


def test_the_simulation_really_hides_the_extras(tmp_path: Path) -> None:
    site = tmp_path / "no-extras"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_EXTRAS)
    env = {**os.environ, "PYTHONPATH": str(site)}
    probe = subprocess.run([sys.executable, "-c", "import tornado"], env=env,
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr


@pytest.mark.parametrize("argv", [["--help"], *([c, "--help"] for c in COMMANDS),
                                  ["images", "check", "--help"]],
                         ids=["workbench", *COMMANDS, "images-check"])
def test_help_works_with_the_base_install_alone(tmp_path: Path, argv) -> None:
    result = _without_extras(tmp_path, *argv)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("usage: workbench")
    if argv == ["--help"]:
        for command in COMMANDS:
            assert f"    {command} " in result.stdout, result.stdout


@pytest.mark.parametrize(("argv", "command"), [
    (["up", "--state-dir", "state"], "up"),
    (["apply", "--tenants", str(REPO / "hub_config" / "tenants.example.yaml")], "apply"),
], ids=["up", "apply"])
def test_a_command_that_needs_an_extra_names_it(tmp_path: Path, argv, command) -> None:
    result = _without_extras(tmp_path, *argv)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"workbench {command}: needs the hub extra: pip install 'paddle-workbench[hub]'"]
    assert not (tmp_path / "state").exists()  # refused before any state was written


def test_adding_a_local_user_needs_no_extra(tmp_path: Path) -> None:
    result = _without_extras(tmp_path, "up", "--state-dir", "state", "--add-user", "Ada",
                             "--groups", "students", "--tenants",
                             str(REPO / "hub_config" / "tenants.example.yaml"),
                             WORKBENCH_PASSWORD="pw")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Added ada (groups students)")
    assert "ada:" in (tmp_path / "state" / "users.yaml").read_text()
