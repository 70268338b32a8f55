"""Talking to pods of the real node from the host: wait until one is Ready, then HTTP to its
address over the pod bridge (the host sits on it), ask a test server to dial from inside, or
run a command in a pod through the API server's exec.

Waits are generous (``POD_TIMEOUT``) because the machine may be busy; no test asserts on time.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

import node_config as cfg
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


_FETCH = ("import sys, urllib.request\n"
          "data = sys.stdin.buffer.read() or None\n"
          "with urllib.request.urlopen(sys.argv[1], data=data, timeout=10) as resp:\n"
          "    sys.stdout.write(resp.read().decode())\n")


def http(url: str, data: bytes | None = None) -> str:
    """GET (or POST ``data``) and return the body. A pod on a node after the first is asked
    from that node's machine (its network namespace), as a node's own kubelet asks it: from
    the host, another machine to that node, its NetworkPolicy controller refuses whatever a
    policy does not allow (the first node's pods are on the host's own machine)."""
    netns = cfg.netns_of(urllib.parse.urlsplit(url).hostname or "")
    if netns is None:
        with urllib.request.urlopen(url, data=data, timeout=10) as resp:
            return resp.read().decode()
    done = subprocess.run(cfg.in_netns(netns, [sys.executable, "-c", _FETCH, url]),
                          input=data or b"", capture_output=True, timeout=30)
    if done.returncode != 0:
        raise OSError(f"GET {url} from {netns}: {done.stderr.decode().strip()[-300:]}")
    return done.stdout.decode()


def dial(pod_ip: str, addr: str, port: int = pods.PORT) -> dict:
    """Ask the test server at ``pod_ip`` (serving on ``port``) to open a TCP connection to
    ``addr`` (name or IP, with port) from inside its pod: ``{"connected": bool, "error": str}``."""
    query = urllib.parse.urlencode({"addr": addr, "timeout": "5s"})
    return json.loads(http(f"http://{pod_ip}:{port}/dial?{query}"))


def exec_in(core, namespace: str, name: str, argv: list[str],
            timeout: float = 120) -> tuple[int, str]:
    """Run ``argv`` in the pod's first container through the API server's exec (the kubelet
    streams it, as for ``kubectl exec``): its exit code and its output (stdout, then stderr)."""
    from kubernetes.stream import stream

    resp = stream(core.connect_get_namespaced_pod_exec, name, namespace, command=argv,
                  stdout=True, stderr=True, stdin=False, tty=False, _preload_content=False)
    out, err = [], []
    deadline = time.monotonic() + timeout
    try:
        while resp.is_open() and time.monotonic() < deadline:
            resp.update(timeout=1)
            out.append(resp.read_stdout() if resp.peek_stdout() else "")
            err.append(resp.read_stderr() if resp.peek_stderr() else "")
        if resp.is_open():
            raise AssertionError(f"{argv} in {namespace}/{name} ran for over {timeout:.0f}s")
        return resp.returncode, "".join(out) + "".join(err)
    finally:
        resp.close()
