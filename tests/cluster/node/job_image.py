"""The CPU job image on the registry the real node pulls from.

The node's containerd sends every registry to the internal one on ``127.0.0.1:5000``
(``node_config.INTERNAL_REGISTRY``). ``InternalRegistry`` starts that registry with the images
tier's own script (``images/local/registry.sh``) unless one already answers there, and stops it
afterwards only if it started it. ``cpu_image()`` returns the CPU image's reference: built by
``images/local/build.sh image cpu`` (buildah, cached in the images tier's cache) and pushed to
that registry, or, when the registry already holds the image built from the same inputs (the
build script's ``key``: Dockerfiles, locks, the project's sources), that one, without a build.
The node never builds or pulls anything else.

The image is pushed with ``SCAN=off``: it runs on this loopback test node only, and the images
tier (``tests/images``) is where its vulnerability gate is tested.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
REGISTRY_SCRIPT = REPO / "images" / "local" / "registry.sh"
BUILD_SCRIPT = REPO / "images" / "local" / "build.sh"
REGISTRY_ADDR = "127.0.0.1:5000"
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")


class ImageError(RuntimeError):
    """The registry did not start or the image did not build; the message says why."""


def _cache() -> Path:
    root = os.environ.get("PADDLE_WORKBENCH_CACHE") or Path.home() / ".cache" / "paddle-workbench"
    return Path(root) / "node" / "cpu-image"


def _run(argv: list[str], what: str, timeout: float) -> str:
    env = {**os.environ, "REGISTRY_ADDR": REGISTRY_ADDR}
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ImageError(f"{what} ran for over {timeout:.0f}s") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise ImageError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done.stdout


class InternalRegistry:
    """The registry on ``REGISTRY_ADDR``: ``start()``, then ``stop()`` (only ours is stopped)."""

    def __init__(self) -> None:
        self.started = False

    def start(self) -> None:
        status = subprocess.run(["bash", str(REGISTRY_SCRIPT), "status"], capture_output=True,
                                env={**os.environ, "REGISTRY_ADDR": REGISTRY_ADDR})
        if status.returncode != 0:
            _run(["bash", str(REGISTRY_SCRIPT), "start"], "images/local/registry.sh start", 60)
            self.started = True

    def stop(self) -> None:
        if self.started:
            _run(["bash", str(REGISTRY_SCRIPT), "stop"], "images/local/registry.sh stop", 60)
            self.started = False


def holds(reference: str) -> bool:
    """Whether the registry serves the manifest ``workbench/NAME@sha256:...``."""
    name, digest = reference.split("@", 1)
    request = urllib.request.Request(f"http://{REGISTRY_ADDR}/v2/{name}/manifests/{digest}",
                                     method="HEAD", headers={"Accept": ", ".join(MANIFEST_TYPES)})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status == 200
    except OSError:
        return False


def cpu_image(timeout: float = 3600) -> str:
    """``127.0.0.1:5000/workbench/cpu@sha256:...``, built and pushed only when missing."""
    key = _run(["bash", str(BUILD_SCRIPT), "key"], "images/local/build.sh key", 300).strip()
    record = _cache() / key
    if record.is_file() and holds(record.read_text().strip()):
        return f"{REGISTRY_ADDR}/{record.read_text().strip()}"
    out = _run(["env", "SCAN=off", "bash", str(BUILD_SCRIPT), "image", "cpu"],
               "images/local/build.sh image cpu", timeout)
    refs = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("cpu="))
    if "cpu" not in refs:
        raise ImageError(f"images/local/build.sh printed no cpu= reference:\n{out[-2000:]}")
    reference = refs["cpu"].removeprefix(f"{REGISTRY_ADDR}/")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(reference + "\n")
    return refs["cpu"]
