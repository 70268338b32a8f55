"""Fixtures of the monitoring tests.

- `promtool`: path of Debian's promtool (package `prometheus`); the test skips when it is missing.
- `monitoring`: the deploy/monitoring folder.
- `build`: deploy/monitoring/build.py imported as a module (it is a script, not a package).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"


@pytest.fixture(scope="session")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not found: install Debian's prometheus package (scripts/setup.sh does)")
    return path


@pytest.fixture(scope="session")
def monitoring() -> Path:
    return MONITORING


@pytest.fixture(scope="session")
def build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("workbench_monitoring_build",
                                                  MONITORING / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module
