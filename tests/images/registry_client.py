"""A few calls of the OCI distribution API, for the tests' registry (plain HTTP on loopback).

The images themselves go in and out with skopeo; this pushes what skopeo does not carry (Trivy's
database, an OCI artifact) and asks what the registry holds.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
# What Trivy looks for in the image it pulls from --db-repository.
TRIVY_DB_LAYER = "application/vnd.aquasec.trivy.db.layer.v1.tar+gzip"
TRIVY_DB_CONFIG = "application/vnd.aquasec.trivy.config.v1+json"


def _request(method: str, url: str, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def has_manifest(addr: str, name: str, reference: str) -> bool:
    """Whether the registry at `addr` holds `name` at `reference` (a tag or a digest)."""
    status, _, _ = _request("HEAD", f"http://{addr}/v2/{name}/manifests/{reference}",
                            headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
    return status == 200


def manifest(addr: str, name: str, reference: str) -> dict:
    status, _, body = _request("GET", f"http://{addr}/v2/{name}/manifests/{reference}",
                               headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
    assert status == 200, f"GET manifest {name}:{reference}: HTTP {status} {body[:200]!r}"
    return json.loads(body)


def blob(addr: str, name: str, digest: str) -> bytes:
    status, _, body = _request("GET", f"http://{addr}/v2/{name}/blobs/{digest}")
    assert status == 200, f"GET blob {digest}: HTTP {status}"
    return body


def _push_blob(addr: str, name: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, body = _request("POST", f"http://{addr}/v2/{name}/blobs/uploads/")
    assert status == 202, f"start upload: HTTP {status} {body[:200]!r}"
    location = headers.get("Location") or headers.get("location")
    if location.startswith("/"):
        location = f"http://{addr}{location}"
    joiner = "&" if "?" in location else "?"
    status, _, body = _request("PUT", f"{location}{joiner}digest={digest}", data=data,
                               headers={"Content-Type": "application/octet-stream"})
    assert status == 201, f"upload {digest}: HTTP {status} {body[:200]!r}"
    return digest


def push_artifact(addr: str, name: str, tag: str, layer: bytes, layer_type: str,
                  config_type: str, title: str) -> str:
    """Push a one-layer OCI artifact (`title`: the layer's file name, as oras names it);
    returns its manifest digest."""
    config = b"{}"
    manifest_doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": _push_blob(addr, name, config),
                   "size": len(config)},
        "layers": [{"mediaType": layer_type, "digest": _push_blob(addr, name, layer),
                    "size": len(layer),
                    "annotations": {"org.opencontainers.image.title": title}}],
    }
    body = json.dumps(manifest_doc).encode()
    status, headers, reply = _request("PUT", f"http://{addr}/v2/{name}/manifests/{tag}",
                                      data=body, headers={"Content-Type": OCI_MANIFEST})
    assert status == 201, f"PUT manifest: HTTP {status} {reply[:200]!r}"
    return headers.get("Docker-Content-Digest", "sha256:" + hashlib.sha256(body).hexdigest())


def trivy_db_layer(db_dir: Path) -> bytes:
    """The gzipped tar Trivy expects: trivy.db and metadata.json at its root."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("trivy.db", "metadata.json"):
            tar.add(db_dir / name, arcname=name)
    return buffer.getvalue()
