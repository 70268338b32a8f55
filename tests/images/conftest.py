"""Fixtures for the real-image tier: images built daemonlessly, a local registry, Trivy, runc.

Session fixtures (each builds or starts once, caches outside the clone, cleans up what it started):

- ``image_tools``: fails (never skips) when a tool is missing: buildah, skopeo, mmdebstrap, umoci,
  runc and docker-registry come from scripts/system-packages.txt (scripts/setup.sh installs them
  as root), Go from /usr/local/go. The build needs root (buildah's chroot isolation, runc).
- ``registry``: Debian's docker-registry on a free loopback port, started by
  images/local/registry.sh over the cache's registry data; stopped at teardown.
- ``trivy``: the trivy and trivy-db binaries from scripts/build-trivy.sh (cached).
- ``trivy_db``: a vulnerability database made by trivy-db's own builder from the fixture advisory
  in fixtures/vuln-list (GHSA-wbfx-0000-0001: the made-up package ``wbfixture`` before 1.0.1,
  CRITICAL), pushed to the registry as ``trivy-db:2``, where the scans read it
  (``--db-repository``). It knows no real advisory: the real images pass the gate against it.
- ``built_images``: ``images/local/build.sh all`` (base, cpu, hub, proxy: built, scanned, pushed
  by digest); returns {name: "host:port/workbench/name@sha256:..."}. The cache
  (~/.cache/paddle-workbench/images, or $PADDLE_WORKBENCH_CACHE/images) is keyed by a hash of the
  inputs, so a warm session only checks that the registry holds them.
- ``build_conf``: the registries.conf and policy.json the build wrote (only the internal registry).
- ``runtime``: ``oci_runtime.Runtime``: pulls by digest, unpacks (cached per digest), runs with
  runc; every container is deleted at teardown.

The first session pays for a cold build (see images/README.md for the figures), so tests that use
these fixtures get a long pytest timeout (``pytest_collection_modifyitems``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BUILD = REPO / "images" / "local" / "build.sh"
REGISTRY = REPO / "images" / "local" / "registry.sh"
BUILD_TRIVY = REPO / "scripts" / "build-trivy.sh"
FIXTURES = HERE / "fixtures"
BUILD_TIMEOUT_S = 3600
TOOLS = {"buildah": "buildah", "skopeo": "skopeo", "mmdebstrap": "mmdebstrap", "umoci": "umoci",
         "runc": "runc", "docker-registry": "docker-registry"}
_BUILT_FIXTURES = ("built_images", "trivy", "trivy_db", "runtime", "gate_images")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Room for the first (cold) build in the tests that need built images."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & set(_BUILT_FIXTURES) and HERE in item.path.parents:
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))


def cache_root() -> Path:
    base = os.environ.get("PADDLE_WORKBENCH_CACHE") or str(Path.home() / ".cache" /
                                                          "paddle-workbench")
    return Path(base) / "images"


def _env(registry: str | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "IMAGE_CACHE": str(cache_root()), "PYTHON": sys.executable,
           "PATH": os.environ.get("PATH", "") + ":/usr/local/go/bin"}
    if registry:
        env["REGISTRY_ADDR"] = registry
    env.update(extra)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def image_tools() -> None:
    missing = [pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None
               and not Path(f"/usr/bin/{tool}").exists()]
    if missing:
        pytest.fail(f"the image tests need the Debian packages {', '.join(missing)} "
                    "(listed in scripts/system-packages.txt; run scripts/setup.sh as root)",
                    pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the image tests build with buildah (chroot isolation) and run runc: "
                    "run them as root", pytrace=False)


@pytest.fixture(scope="session")
def registry(image_tools) -> Iterator[str]:
    addr = f"127.0.0.1:{_free_port()}"
    started = subprocess.run(["bash", str(REGISTRY), "start"], capture_output=True, text=True,
                             env=_env(addr), timeout=60)
    if started.returncode != 0:
        pytest.fail(f"the registry did not start: {started.stderr[-2000:]}", pytrace=False)
    try:
        yield addr
    finally:
        subprocess.run(["bash", str(REGISTRY), "stop"], capture_output=True, env=_env(addr),
                       timeout=60)


@pytest.fixture(scope="session")
def trivy(image_tools) -> Path:
    """The trivy binary (trivy-db lies next to it)."""
    built = subprocess.run(["bash", str(BUILD_TRIVY)], capture_output=True, text=True,
                           env=_env(), timeout=BUILD_TIMEOUT_S)
    if built.returncode != 0:
        pytest.fail(f"scripts/build-trivy.sh failed: {built.stderr[-3000:]}", pytrace=False)
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def trivy_db(trivy: Path, registry: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The fixture database, built by trivy-db and pushed to the registry; returns its repository."""
    from tests.images import registry_client

    work = tmp_path_factory.mktemp("trivy-db")
    vuln_list = work / "vuln-list"
    shutil.copytree(FIXTURES / "vuln-list", vuln_list)
    (vuln_list / "cocoapods-specs" / "Specs").mkdir(parents=True)  # the GHSA source reads it
    out = work / "out"
    built = subprocess.run([str(trivy.parent / "trivy-db"), "build", "--cache-dir", str(vuln_list),
                            "--output-dir", str(out), "--only-update", "ghsa",
                            "--update-interval", "8760h"],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    layer = registry_client.trivy_db_layer(out)
    registry_client.push_artifact(registry, "trivy-db", "2", layer,
                                  registry_client.TRIVY_DB_LAYER, registry_client.TRIVY_DB_CONFIG,
                                  "db.tar.gz")
    # Scans of this session read this database, not one a previous session left in the cache.
    shutil.rmtree(cache_root() / "trivy" / "db", ignore_errors=True)
    return f"{registry}/trivy-db:2"


def build_env(registry: str, trivy: Path, **extra: str) -> dict[str, str]:
    """The environment of images/local/build.sh in this session."""
    return _env(registry, TRIVY=str(trivy), **extra)


def run_build(registry: str, trivy: Path, *args: str) -> subprocess.CompletedProcess:
    """images/local/build.sh ARGS against the session's registry and Trivy."""
    return subprocess.run(["bash", str(BUILD), *args], capture_output=True, text=True,
                          env=build_env(registry, trivy), timeout=BUILD_TIMEOUT_S, cwd=REPO)


def parse_refs(stdout: str) -> dict[str, str]:
    refs = {}
    for line in stdout.splitlines():
        name, sep, ref = line.strip().partition("=")
        if sep and "@sha256:" in ref:
            refs[name] = ref
    return refs


@pytest.fixture(scope="session")
def built_images(registry: str, trivy: Path, trivy_db: str) -> dict[str, str]:
    built = run_build(registry, trivy, "all")
    if built.returncode != 0:
        pytest.fail(f"images/local/build.sh all failed:\n{built.stderr[-4000:]}", pytrace=False)
    refs = parse_refs(built.stdout)
    assert set(refs) == {"base", "cpu", "hub", "proxy"}, built.stdout
    return refs


@pytest.fixture(scope="session")
def build_conf(built_images, registry: str) -> Path:
    # build.sh keeps one configuration per registry address (images/local/build.sh, `conf`).
    return cache_root() / "conf" / registry.replace(":", "_")


@pytest.fixture(scope="session")
def runtime(built_images, build_conf: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from tests.images import oci_runtime

    unpacked = cache_root() / "unpacked"
    keep = {ref.rsplit("@", 1)[1].replace(":", "-") for ref in built_images.values()}
    if unpacked.is_dir():  # the bundles of older builds: each is an image's size
        for old in unpacked.iterdir():
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)
    rt = oci_runtime.Runtime(tmp_path_factory.mktemp("runc"), unpacked,
                             build_conf / "policy.json", build_conf / "registries.conf")
    try:
        yield rt
    finally:
        rt.close()
