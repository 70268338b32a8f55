"""Fixtures of the Helm tests (tests/helm, and tests/cluster/test_helm_chart.py).

- `helm_bin` (session): the helm binary from deploy/helm/build.sh, built on first use (about
  5 minutes cold on two cores) and cached outside the clone. Where Go or the Go module proxy is
  missing the tests skip and say so; where they are there, a failed build fails the tests.
- `images_file` (session): the values file deploy/helm/image-values.py writes for `chart.REFS`.
- `rendered` (session): `helm template` of the chart with workbench-values.yaml and the images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helm import chart

BUILD_TIMEOUT_S = 3600
_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give the tests that may build Helm room for the build (setup is timed too)."""
    for item in items:
        if "helm_bin" in getattr(item, "fixturenames", ()) and _HERE in item.path.parents:
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return chart.helm_or_skip()


@pytest.fixture(scope="session")
def images_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return chart.image_values(tmp_path_factory.mktemp("helm-images"))


@pytest.fixture(scope="session")
def rendered(helm_bin: Path, images_file: Path) -> list[dict[str, Any]]:
    return chart.render(helm_bin, images_file)
