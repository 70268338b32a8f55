"""Talking to pods of the real node from the host: wait until one is Ready, then HTTP to its
address over the pod bridge (the host sits on it), or ask a test server to dial from inside.

Waits are generous (``POD_TIMEOUT``) because the machine may be busy; no test asserts on time.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

import pods
from real_node import wait_for

POD_TIMEOUT = 180


def core_api(plane: Any):
    """A CoreV1Api as the plane's admin."""
    from kubernetes import client

    return client.CoreV1Api(plane.api_client())


def running_pod(core, namespace: str, name: str):
    """Wait until the pod is Ready and return it; AssertionError with its status otherwise."""

    def ready():
        pod = core.read_namespaced_pod(name, namespace)
        conditions = pod.status.conditions or []
        return pod if any(c.type == "Ready" and c.status == "True" for c in conditions) else None

    try:
        return wait_for(ready, POD_TIMEOUT, f"pod {namespace}/{name} to be Ready")
    except Exception as exc:
        pod = core.read_namespaced_pod(name, namespace)
        raise AssertionError(f"{exc}\nstatus: {pod.status}") from None


def http(url: str, data: bytes | None = None) -> str:
    """GET (or POST ``data``) and return the body."""
    with urllib.request.urlopen(url, data=data, timeout=10) as resp:
        return resp.read().decode()


def dial(pod_ip: str, addr: str, port: int = pods.PORT) -> dict:
    """Ask the test server at ``pod_ip`` (serving on ``port``) to open a TCP connection to
    ``addr`` (name or IP, with port) from inside its pod: ``{"connected": bool, "error": str}``."""
    query = urllib.parse.urlencode({"addr": addr, "timeout": "5s"})
    return json.loads(http(f"http://{pod_ip}:{port}/dial?{query}"))
