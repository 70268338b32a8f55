"""The product's modules stay small enough to read: under 500 lines each, functions under 60.

Product code is every Python file of the project's packages, `deploy/` and `images/`; tests,
benchmarks and the vendored Zero to JupyterHub chart are not. A test fails naming each file or
function over its limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("workbench_contract", "hub_config", "launcher_magic", "extensions", "deploy", "images")
VENDORED = ("zero-to-jupyterhub-",)  # the chart's own files, kept as the chart ships them
MODULE_LINES, FUNCTION_LINES = 500, 60


def product_files() -> list[Path]:
    return [path for folder in PRODUCT for path in sorted((ROOT / folder).rglob("*.py"))
            if not any(part.startswith(VENDORED) for part in path.parts)]


def oversized(path: Path) -> list[str]:
    """What of `path` is over its limit, as "<file>: <what> has <n> lines"."""
    text = path.read_text()
    where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = []
    if len(text.splitlines()) >= MODULE_LINES:
        found.append(f"{where}: the module has {len(text.splitlines())} lines")
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length >= FUNCTION_LINES:
                found.append(f"{where}: {node.name}() has {length} lines")
    return found


def test_product_modules_and_functions_are_small():
    files = product_files()
    assert len(files) > 100  # the whole product was read, not an empty folder
    assert [problem for path in files for problem in oversized(path)] == []


@pytest.mark.parametrize("lines, kind", [(MODULE_LINES, "module"), (FUNCTION_LINES, "function")])
def test_the_check_catches_what_is_too_long(tmp_path, lines, kind):
    body = "\n".join(f"    x{n} = {n}" for n in range(lines))
    probe = tmp_path / "probe.py"
    probe.write_text(f"def long():\n{body}\n" if kind == "function"
                     else "\n".join(f"x{n} = {n}" for n in range(lines)) + "\n")
    (problem,) = oversized(probe)
    assert ("long() has" if kind == "function" else "the module has") in problem
