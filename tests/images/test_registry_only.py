"""Nothing is pulled from anywhere but the internal registry: the build's and the runtime's
configuration (images/local/registries.conf.in, policy.json.in) refuse every other registry.

"Another registry" is a second docker-registry on loopback holding a copy of the base (so the
refusal is the policy's, not a network error); a short name such as `python:3.11` resolves
nowhere."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.images.conftest import REGISTRY, _env, _free_port, cache_root


@pytest.fixture(scope="module")
def other_registry(built_images, tmp_path_factory) -> Iterator[str]:
    """A registry that is not the internal one, holding the base image under a tag."""
    addr = f"127.0.0.1:{_free_port()}"
    cache = tmp_path_factory.mktemp("other-registry")
    env = _env(addr, IMAGE_CACHE=str(cache))
    started = subprocess.run(["bash", str(REGISTRY), "start"], env=env, capture_output=True,
                             text=True, timeout=60)
    assert started.returncode == 0, started.stderr
    permissive = cache / "permissive.json"
    permissive.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    copied = subprocess.run(
        ["skopeo", "--policy", str(permissive), "copy", "--quiet", "--src-tls-verify=false",
         "--dest-tls-verify=false", f"docker://{built_images['base']}",
         f"docker://{addr}/library/python:3.11"], capture_output=True, text=True, timeout=300)
    try:
        assert copied.returncode == 0, copied.stderr
        yield addr
    finally:
        subprocess.run(["bash", str(REGISTRY), "stop"], env=env, capture_output=True, timeout=60)


def _build(build_conf: Path, tmp_path: Path, image: str) -> subprocess.CompletedProcess:
    """buildah bud of a one-line Dockerfile with the build's configuration."""
    (tmp_path / "Dockerfile").write_text(f"FROM {image}\nUSER 1000:100\n")
    cache = cache_root()
    return subprocess.run(
        ["buildah", "--root", str(cache / "storage"), "--runroot", str(cache / "run"),
         "--storage-driver", "overlay", "bud", "--isolation", "chroot",
         "--signature-policy", str(build_conf / "policy.json"), "--tls-verify=false",
         "-t", "workbench/refused:test", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
        env=_env(CONTAINERS_REGISTRIES_CONF=str(build_conf / "registries.conf")))


def test_the_build_refuses_a_base_from_another_registry(build_conf, other_registry,
                                                        tmp_path) -> None:
    built = _build(build_conf, tmp_path, f"{other_registry}/library/python:3.11")
    assert built.returncode != 0
    assert "rejected by policy" in built.stderr, built.stderr[-2000:]


def test_the_build_refuses_a_short_name(build_conf, tmp_path) -> None:
    built = _build(build_conf, tmp_path, "python:3.11")
    assert built.returncode != 0
    # No search registry; and where the system aliases the name, that registry is blocked.
    assert "unqualified-search" in built.stderr or "is blocked in" in built.stderr, \
        built.stderr[-2000:]
    assert "pinging container registry" not in built.stderr  # refused before any network


def test_the_runtime_refuses_a_pull_from_another_registry(runtime, other_registry) -> None:
    pulled = runtime.pull(f"{other_registry}/library/python:3.11")
    assert pulled.returncode != 0
    assert "rejected by policy" in pulled.stderr, pulled.stderr[-2000:]


def test_the_runtime_pulls_from_the_internal_registry_by_digest(runtime, built_images) -> None:
    pulled = runtime.pull(built_images["base"])
    assert pulled.returncode == 0, pulled.stderr[-2000:]
