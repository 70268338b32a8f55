"""Pods that really run on the real node: restricted, as uid 1000, served, logged, probed.

Each test creates its pod in its own ``restricted_namespace`` and talks to it over the pod
network from the host (``pod_client``).
"""

from __future__ import annotations

import ipaddress
import time

import node_config as cfg
import pods
from node_figures import FIGURES
from pod_client import POD_TIMEOUT, core_api, http, running_pod
from real_node import wait_for


def test_pod_runs_restricted_as_uid_1000_and_its_log_comes_from_the_kubelet(
        control_plane, real_node, restricted_namespace):
    core = core_api(control_plane)
    began = time.monotonic()
    core.create_namespaced_pod(restricted_namespace, pods.server_pod("server"))
    pod = running_pod(core, restricted_namespace, "server")
    FIGURES["pod start, image cached (s)"] = time.monotonic() - began

    assert pod.spec.node_name == real_node.name
    assert pod.status.host_ip == cfg.NODE_IP
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(cfg.POD_SUBNET)
    body = http(f"http://{pod.status.pod_ip}:{pods.PORT}/")
    assert "uid=1000 gid=100" in body, body
    # The API server fetches the log from the kubelet, which reads what containerd kept (the
    # shim copies the container's output there a moment after it is written).
    log = _log_showing(core, restricted_namespace, "server", "testserver: GET / from")
    assert f"testserver: started on :{pods.PORT} as uid=1000 gid=100" in log, log


def test_a_pod_that_fails_its_liveness_probe_is_restarted(
        control_plane, real_node, restricted_namespace):
    core = core_api(control_plane)
    core.create_namespaced_pod(restricted_namespace, pods.server_pod("sick", liveness=True))
    pod = running_pod(core, restricted_namespace, "sick")
    base = f"http://{pod.status.pod_ip}:{pods.PORT}"
    assert http(f"{base}/healthz").strip() == "ok"

    http(f"{base}/sicken", data=b"")

    def restarted():
        got = core.read_namespaced_pod("sick", restricted_namespace)
        status = got.status.container_statuses[0]
        return got if status.restart_count >= 1 and status.ready else None

    pod = wait_for(restarted, POD_TIMEOUT, "the kubelet to restart the sick container")
    # A fresh process: healthy again, and the previous one's log shows why it was replaced.
    assert http(f"http://{pod.status.pod_ip}:{pods.PORT}/healthz").strip() == "ok"
    previous = core.read_namespaced_pod_log("sick", restricted_namespace, previous=True)
    assert "testserver: POST /sicken" in previous, previous

    def liveness_events():
        events = core.list_namespaced_event(restricted_namespace,
                                            field_selector="involvedObject.name=sick")
        return [(e.reason, e.message) for e in events.items
                if e.reason == "Unhealthy" and "Liveness probe failed" in e.message]

    # The kubelet posts events in the background; the one that explains the restart comes.
    assert wait_for(liveness_events, POD_TIMEOUT, "the kubelet's Liveness probe failed event")


def _log_showing(core, namespace: str, name: str, text: str) -> str:
    """The container's log (through the API server and the kubelet) once it shows ``text``."""

    def showing():
        log = core.read_namespaced_pod_log(name, namespace)
        return log if text in log else None

    return wait_for(showing, POD_TIMEOUT, f"{text!r} in the log of {namespace}/{name}")


def test_the_kubelets_api_answers_only_whom_the_api_server_allows(
        control_plane, real_node, restricted_namespace):
    """A process on the machine (a local user, a pod's stolen token) that calls the kubelet's
    API directly gets nothing: no anonymous request, and a service account's token is refused
    the pod list and a command in a pod. The API server's own path (logs) still works, and the
    cluster admin's certificate reaches the same endpoints, so the refusals are the kubelet's
    authentication and authorization, nothing else."""
    import requests

    core = core_api(control_plane)
    core.create_namespaced_pod(restricted_namespace, pods.server_pod("kept"))
    running_pod(core, restricted_namespace, "kept")
    base = f"https://127.0.0.1:{real_node.layout.kubelet_port}"
    ca = str(control_plane.ca_file)
    run = f"{base}/run/{restricted_namespace}/kept/server"

    anonymous = requests.get(f"{base}/pods", verify=ca, timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    assert requests.post(run, params={"cmd": "id"}, verify=ca, timeout=30).status_code == 401

    token = core.create_namespaced_service_account_token(
        "default", restricted_namespace,
        {"spec": {"expirationSeconds": 600}}).status.token
    bearer = {"Authorization": f"Bearer {token}"}
    listed = requests.get(f"{base}/pods", headers=bearer, verify=ca, timeout=30)
    assert listed.status_code == 403, listed.text
    assert "Forbidden" in listed.text
    ran = requests.post(run, params={"cmd": "id"}, headers=bearer, verify=ca, timeout=30)
    assert ran.status_code == 403, ran.text

    pki = control_plane.layout.pki
    admin = requests.get(f"{base}/pods", verify=ca, timeout=30,
                         cert=(str(pki / "admin.crt"), str(pki / "admin.key")))
    assert admin.status_code == 200, admin.text
    assert "kept" in {p["metadata"]["name"] for p in admin.json()["items"]}
    # The API server's kubelet client (system:kubelet-api-admin) still fetches logs.
    log = _log_showing(core, restricted_namespace, "kept", "testserver: started")
    assert "testserver: started" in log
