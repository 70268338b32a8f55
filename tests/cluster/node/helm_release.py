"""The Zero to JupyterHub chart on the real node: its images and what its test needs around it.

- ``chart_images()``: the hub and proxy images (images/hub, images/proxy) on the internal
  registry the node pulls from, built by ``images/local/build.sh image NAME`` only when the
  registry lacks the ones built from the same inputs (as ``job_image.cpu_image`` does for the
  CPU image): ``{"hub": ref, "proxy": ref}``.
- ``OidcProvider``: the hub tests' OIDC mock on the node's address (the hub pod and the host
  reach it there), with ``register(redirect_uri)`` for the hub's client.
- ``site_values``/``write_values``: what an operator's own values file sets, for the test.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import job_image
import node_config as cfg
import yaml
from job_image import BUILD_SCRIPT, REGISTRY_ADDR, ImageError, holds
from placement import STORAGE_CLASS

BUILD_TIMEOUT = 3600


def _record(name: str, key: str) -> Path:
    root = os.environ.get("PADDLE_WORKBENCH_CACHE") or Path.home() / ".cache" / "paddle-workbench"
    return Path(root) / "node" / f"{name}-image" / key


def chart_image(name: str, key: str) -> str:
    """``127.0.0.1:5000/workbench/NAME@sha256:...``, built and pushed only when missing."""
    record = _record(name, key)
    if record.is_file() and holds(record.read_text().strip()):
        return f"{REGISTRY_ADDR}/{record.read_text().strip()}"
    out = job_image._run(["env", "SCAN=off", "bash", str(BUILD_SCRIPT), "image", name],
                         f"images/local/build.sh image {name}", BUILD_TIMEOUT)
    refs = dict(line.split("=", 1) for line in out.splitlines() if line.startswith(f"{name}="))
    if name not in refs:
        raise ImageError(f"images/local/build.sh printed no {name}= reference:\n{out[-2000:]}")
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(refs[name].removeprefix(f"{REGISTRY_ADDR}/") + "\n")
    return refs[name]


def chart_images() -> dict[str, str]:
    """The hub's and the proxy's references (the registry must be running)."""
    key = job_image._run(["bash", str(BUILD_SCRIPT), "key"], "images/local/build.sh key",
                         300).strip()
    return {name: chart_image(name, key) for name in ("hub", "proxy")}


ADMIN_SERVICE = "test-admin"
# Node ports the test picks from (the API server's default range ends at 32767).
NODE_PORTS = range(30100, 32700)


def node_port() -> int:
    """A node port from the API server's default range, chosen at random (a session's plane
    has few Services, so a clash is unlikely); kube-proxy serves it on the node's address."""
    return NODE_PORTS[secrets.randbelow(len(NODE_PORTS))]


def free_node_address_port() -> int:
    """A free TCP port on the node's address (the host's end of the pod bridge)."""
    with socket.socket() as sock:
        sock.bind((cfg.NODE_IP, 0))
        return sock.getsockname()[1]


@dataclass
class OidcProvider:
    """oidc-provider-mock (the hub tests' provider) on the node's address, so that both the hub
    pod (discovery, token, userinfo) and the test's browser on the host reach the same issuer.
    Its login page takes a subject: it stands in for the provider's own login step."""

    users: list[dict[str, Any]]
    log: Path
    port: int = field(default_factory=free_node_address_port)
    process: subprocess.Popen | None = None

    @property
    def issuer(self) -> str:
        return f"http://{cfg.NODE_IP}:{self.port}"

    def start(self, timeout: float = 60) -> None:
        import importlib.util

        if importlib.util.find_spec("oidc_provider_mock") is None:
            raise RuntimeError("the OIDC provider is oidc-provider-mock: install the test extra "
                               "(pip install -e .[test])")
        argv = [sys.executable, "-m", "oidc_provider_mock", "--host", cfg.NODE_IP,
                "--port", str(self.port), "--require-registration", "true"]
        for user in self.users:
            argv += ["--user-claims", json.dumps(user)]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the OIDC provider exited; see {self.log}")
            try:
                urllib.request.urlopen(f"{self.issuer}/.well-known/openid-configuration",
                                       timeout=2).read()
                return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"the OIDC provider did not answer in {timeout:.0f}s; see {self.log}")

    def register(self, redirect_uri: str) -> dict[str, str]:
        """A client for the hub (dynamic registration): its client_id and client_secret."""
        body = json.dumps({"redirect_uris": [redirect_uri],
                           "token_endpoint_auth_method": "client_secret_post"}).encode()
        request = urllib.request.Request(f"{self.issuer}/oauth2/clients", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.load(resp)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def site_values(*, issuer: str, client_id: str, callback: str, port: int,
                admin_token: str, cull_every: int | None = None) -> dict[str, Any]:
    """What the test sets over workbench-values.yaml and the images (the operator's site.yaml,
    here): the provider, the node (its taint tolerated, its label selected), the hub's database
    on a static local volume, the proxy on a node port, and an API-only service with admin
    scopes for the test's checks."""
    key, value = cfg.NODE_LABEL
    placement = {"nodeSelector": {key: value},
                 "tolerations": cfg.node_placement()["tolerations"]}
    return {
        "hub": {
            **placement,
            "extraEnv": {
                "WORKBENCH_OIDC_ISSUER": issuer,
                "WORKBENCH_OIDC_CLIENT_ID": client_id,
                "WORKBENCH_OIDC_CALLBACK_URL": callback,
                "WORKBENCH_ADMIN_GROUPS": "workbench-operators",
                "WORKBENCH_PROMETHEUS_URL": "",
                **({"WORKBENCH_CULL_EVERY": str(cull_every)} if cull_every else {}),
            },
            "db": {"pvc": {"storageClassName": STORAGE_CLASS}},
            "services": {ADMIN_SERVICE: {"apiToken": admin_token}},
            "loadRoles": {ADMIN_SERVICE: {
                "services": [ADMIN_SERVICE],
                "scopes": ["admin:users", "admin:servers", "admin:auth_state", "tokens",
                           "groups", "read:metrics"]}},
        },
        "proxy": {
            "chp": {**placement},
            "service": {"type": "NodePort", "nodePorts": {"http": port}},
        },
        "singleuser": {
            "storage": {"dynamic": {"storageClass": STORAGE_CLASS}},
        },
    }


def write_values(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    path.chmod(0o600)  # it holds the test service's token
    return path
