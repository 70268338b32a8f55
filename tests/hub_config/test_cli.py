"""`workbench` as a user runs it: bad input gives exit code 2 and one clear line, never a traceback,
both through the installed entry point's `main` and through `python -m hub_config.cli.main` (where the
module runs as `__main__`, so the commands' error class must not be defined in it)."""

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
