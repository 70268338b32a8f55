"""Dependency floors: pyproject.toml excludes the versions with published advisories, the installed
environment satisfies every requirement of pyproject.toml (scripts/setup.sh upgrades what is
below), and the images' lock files pin versions above the same floors.

The floors are the first releases without a published advisory at the time of writing; raise
them here and in pyproject.toml together.
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as pip vendors it
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = REPO / "pyproject.toml"
LOCKS = sorted((REPO / "images").glob("*/requirements.lock"))

# package: (the first version without a published advisory, the release just before it)
ADVISORY_FLOORS = {
    "jupyterhub": ("5.5.1", "5.5.0"),
    "jupyterlab": ("4.5.7", "4.5.6"),
    "oauthenticator": ("17.4.0", "17.3.0"),
    "jupyter-server": ("2.20.0", "2.19.0"),
}


def requirements() -> list[Requirement]:
    """Every requirement pyproject.toml declares (dependencies and all extras), except the
    project's own extras."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts.extend(extra)
    return [r for r in map(Requirement, texts)
            if canonicalize_name(r.name) != canonicalize_name(project["name"])]


@pytest.mark.parametrize("package", sorted(ADVISORY_FLOORS))
def test_pyproject_excludes_versions_with_advisories(package: str) -> None:
    floor, before = ADVISORY_FLOORS[package]
    found = [r for r in requirements() if canonicalize_name(r.name) == package]
    assert found, f"pyproject.toml does not constrain {package}; add {package}>={floor}"
    for req in found:
        assert not req.specifier.contains(before, prereleases=True), (
            f"{req} allows {package} {before}, which has a published advisory; "
            f"require {package}>={floor}")
        assert req.specifier.contains(floor, prereleases=True), f"{req} excludes {floor}"


def test_the_installed_environment_satisfies_pyproject() -> None:
    wrong = []
    for req in requirements():
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            wrong.append(f"{req.name}: not installed")
            continue
        if not req.specifier.contains(version, prereleases=True):
            wrong.append(f"{req.name} {version}: needs {req.specifier}")
    assert not wrong, "run scripts/setup.sh (it upgrades what is below): " + "; ".join(wrong)


@pytest.mark.parametrize("lock", LOCKS, ids=[p.parent.name for p in LOCKS])
def test_the_images_pin_versions_above_the_floors(lock: Path) -> None:
    pins = _pins(lock)
    assert pins, f"{lock} pins nothing"
    for package, (floor, _) in ADVISORY_FLOORS.items():
        if package in pins:
            assert pins[package] >= Version(floor), (
                f"{lock} pins {package} {pins[package]}, below {floor}; re-lock (images/lock.sh)")


def _pins(lock: Path) -> dict[str, Version]:
    return {canonicalize_name(name): Version(version) for name, version in
            re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", lock.read_text(), re.MULTILINE)}


# What each image installs the project for: the notebook images run the kernel's magic and the
# cluster engines (the `notebook` extra); the hub image runs the hub (the `hub` extra).
IMAGE_EXTRAS = {"cpu": "notebook", "gpu": "notebook", "hub": "hub"}


@pytest.mark.parametrize("image", sorted(IMAGE_EXTRAS))
def test_each_image_locks_every_runtime_dependency_of_what_it_runs(image: str) -> None:
    """The images install the project with --no-deps, so a dependency missing from an image's
    requirements.in is missing at run time (a notebook pod's kernel without `kubernetes` cannot
    use the cluster engines)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    needed = [Requirement(t) for t in
              project["dependencies"] + project["optional-dependencies"][IMAGE_EXTRAS[image]]]
    pins = _pins(REPO / "images" / image / "requirements.lock")
    # the GPU image's Paddle comes from its base image (images/lock.sh leaves it out)
    missing = [str(r) for r in needed if canonicalize_name(r.name) not in pins]
    assert not missing, (f"images/{image}/requirements.lock lacks {missing}; add them to "
                         f"images/{image}/requirements.in and re-lock (images/lock.sh)")
    wrong = [f"{r.name} {pins[canonicalize_name(r.name)]} (needs {r.specifier})" for r in needed
             if not r.specifier.contains(pins[canonicalize_name(r.name)], prereleases=True)]
    assert not wrong, f"images/{image}/requirements.lock pins {wrong}; re-lock (images/lock.sh)"
