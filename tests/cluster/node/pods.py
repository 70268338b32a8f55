"""Pods for the real node, as plain dicts (pure; nothing here talks to a cluster).

``server_pod`` runs deploy/node/cmd/testserver as the notebook images' user (uid 1000,
gid 100) with the Pod Security ``restricted`` contexts every workbench pod uses
(``workbench_contract.pod_security``), on the real node only (its taint tolerated, its label
selected). The image is imported, never pulled (``imagePullPolicy: Never``).
"""

from __future__ import annotations

from typing import Any

import node_config as cfg

from workbench_contract.pod_security import DEFAULT_GID, DEFAULT_UID, restricted_security_contexts

PORT = 8080


def server_pod(name: str, *, liveness: bool = False, port: int = PORT,
               labels: dict[str, str] | None = None, node: str = "") -> dict[str, Any]:
    """The test server's pod, serving on ``port``, labelled ``app: <name>`` and ``labels``;
    with ``liveness`` a probe on /healthz every second restarts the container two failures
    after ``POST /sicken``; with ``node`` on that node only (its hostname label)."""
    pod_context, container_context = restricted_security_contexts(DEFAULT_UID, DEFAULT_GID)
    container: dict[str, Any] = {
        "name": "server",
        "image": cfg.TESTSERVER_IMAGE,
        "imagePullPolicy": "Never",
        "args": [f"-listen=:{port}"],
        "ports": [{"containerPort": port, "name": "http"}],
        "securityContext": container_context,
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1},
    }
    if liveness:
        container["livenessProbe"] = {"httpGet": {"path": "/healthz", "port": port},
                                      "periodSeconds": 1, "failureThreshold": 2,
                                      "timeoutSeconds": 5}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name, **(labels or {})}},
        "spec": {
            "securityContext": pod_context,
            "containers": [container],
            **cfg.node_placement(node),
            "terminationGracePeriodSeconds": 1,
        },
    }
