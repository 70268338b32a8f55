"""The images built here (images/local/build.sh): in the internal registry by digest, labelled,
non-root, without package-manager caches, with an SBOM and a scan report each."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.images import registry_client
from tests.images.conftest import REPO, cache_root

# What goes into an image: its recipe, and the project's packages (the wheel) and metadata.
IMAGE_INPUTS = ("images", "launcher_magic", "hub_config", "workbench_contract", "extensions",
                "pyproject.toml")

# The user each image's Dockerfile ends with, and a package its SBOM must list.
EXPECTED = {
    "cpu": ("1000:100", "paddlepaddle"),
    "hub": ("1000:1000", "jupyterhub-kubespawner"),
    "proxy": ("65534:65534", "configurable-http-proxy"),
}


def _split(ref: str) -> tuple[str, str, str]:
    addr, rest = ref.split("/", 1)
    name, digest = rest.split("@")
    return addr, name, digest


def _config(ref: str) -> dict:
    addr, name, digest = _split(ref)
    manifest = registry_client.manifest(addr, name, digest)
    return manifest, json.loads(registry_client.blob(addr, name, manifest["config"]["digest"]))


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)


@pytest.mark.parametrize("name", ["base", "cpu", "hub", "proxy"])
def test_each_image_is_in_the_registry_by_digest(built_images, registry, name) -> None:
    ref = built_images[name]
    addr, repo_name, digest = _split(ref)
    assert addr == registry and repo_name == f"workbench/{name}"
    assert registry_client.has_manifest(addr, repo_name, digest), ref
    # The digest names exactly these bytes: another digest is not there.
    assert not registry_client.has_manifest(addr, repo_name, "sha256:" + "0" * 64)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_labels_name_the_commit_and_the_base(built_images, name) -> None:
    _, config = _config(built_images[name])
    labels = config["config"].get("Labels") or {}
    revision = labels.get("org.opencontainers.image.revision", "")
    assert len(revision) == 40, f"the label names no commit: {revision!r}"
    # A commit of this checkout's history whose image inputs are those of HEAD: the last one that
    # changed them, so commits that change nothing in the image reuse it.
    assert _git("merge-base", "--is-ancestor", revision, "HEAD").returncode == 0, revision
    changed = _git("diff", "--name-only", revision, "HEAD", "--", *IMAGE_INPUTS)
    assert changed.returncode == 0 and not changed.stdout.strip(), changed.stdout[-2000:]
    assert labels.get("org.opencontainers.image.title") == f"workbench-{name}"
    # The base by repository and digest: the registry's address is this run's, not the image's.
    _, base_name, base_digest = _split(built_images["base"])
    assert labels.get("org.opencontainers.image.base.name") == f"{base_name}@{base_digest}"
    assert labels.get("org.opencontainers.image.base.digest") == base_digest
    assert labels.get("org.opencontainers.image.created")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_image_user_is_a_fixed_non_root_uid(built_images, name) -> None:
    _, config = _config(built_images[name])
    assert config["config"]["User"] == EXPECTED[name][0]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_an_sbom_and_a_passed_scan_are_kept_for_each_image(built_images, name) -> None:
    sbom = json.loads((cache_root() / "out" / f"{name}.cdx.json").read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    components = {c.get("name") for c in sbom.get("components", [])}
    assert EXPECTED[name][1] in components, sorted(components)[:50]
    report = json.loads((cache_root() / "out" / f"{name}.scan.json").read_text())
    assert report["SchemaVersion"] == 2 and report["Metadata"]["OS"]["Family"] == "debian"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_no_package_manager_cache_is_left_in_the_image(runtime, built_images, name) -> None:
    rootfs = runtime.unpack(built_images[name]) / "rootfs"
    leftovers = []
    for folder in ("var/lib/apt/lists", "var/cache/apt", "root/.cache", "var/cache/pip",
                   "root/.npm", "tmp"):
        path = rootfs / folder
        if path.is_dir():
            leftovers += [str(p.relative_to(rootfs)) for p in path.iterdir()
                          if p.name not in {"partial", "lock"}]
    assert leftovers == []
