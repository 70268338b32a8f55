"""Two real nodes: a second node joins the cluster from the first one's binaries, and pods on
the two reach each other over the pod network with their own addresses.

The second node (``second_node``) stands for a machine of its own: a network namespace with
its own containerd, kubelet, kube-proxy, kube-router, bridge and pod range, joined to the host
by a veth pair (see ``node_config`` and ``node_netns``). A test-server pod runs on each node;
``pod_client`` asks one to make requests from inside its pod.

A 2-node job of each kind then runs with ada's home on storage both nodes mount
(``placement.shared_volume``): its pods spread over the two nodes, train over the pod network
between them, and end with the parameters of the same job on one node.

Its cable carries more than pods' traffic: the node's kubelet listens on its address, and the
host relays the API server and the internal registry to the node's own components there. No pod
may open a connection to any of them (a pod reaching the registry could push images); the host
itself (the control plane) still reaches the kubelet.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
import urllib.parse
import uuid

import node_config as cfg
import numpy as np
import pods
import pytest
from node_figures import FIGURES
from node_jobs import JOB_TIMEOUT, NODE_CELL, job_id_of, params, start_kernel, states
from node_tenants import node_tenant_with
from pod_client import core_api, dial, http, running_pod

from tests.launcher_magic.support import TRAIN_CELL
from workbench_contract.labels import LABEL_JOB

NEAR, FAR = "near", "far"  # the first node's pod, the second node's


@pytest.fixture(scope="module")
def pair(control_plane, real_node, second_node):
    """A restricted namespace with a test server on each node: {"near": ip, "far": ip}."""
    from real_node import wait_for

    core = core_api(control_plane)
    namespace = f"pair-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": namespace, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})
    try:
        wait_for(lambda: core.read_namespaced_service_account("default", namespace), 60,
                 f"the default service account of {namespace}")
        for name, node in ((NEAR, real_node.name), (FAR, second_node.name)):
            core.create_namespaced_pod(namespace, pods.server_pod(name, node=node))
        ips = {name: running_pod(core, namespace, name).status.pod_ip for name in (NEAR, FAR)}
        yield namespace, ips
    finally:
        core.delete_namespace(namespace)


def fetch(from_ip: str, url: str) -> dict:
    """An HTTP GET made from inside the pod at ``from_ip``."""
    query = urllib.parse.urlencode({"url": url})
    return json.loads(http(f"http://{from_ip}:{pods.PORT}/fetch?{query}"))


def test_the_second_node_is_ready_at_its_own_address(control_plane, second_node):
    node = core_api(control_plane).read_node(second_node.name)
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)
    addresses = {a.type: a.address for a in node.status.addresses}
    assert addresses["InternalIP"] == second_node.layout.node_ip == second_node.name
    assert node.metadata.labels["kubernetes.io/hostname"] == second_node.name


def test_pods_on_two_nodes_reach_each_other_with_their_own_addresses(control_plane, pair,
                                                                      second_node):
    namespace, ips = pair
    core = core_api(control_plane)
    pod = core.read_namespaced_pod(FAR, namespace)
    assert pod.spec.node_name == second_node.name
    assert ipaddress.ip_address(ips[FAR]) in ipaddress.ip_network(second_node.layout.pod_subnet)
    assert ipaddress.ip_address(ips[NEAR]) in ipaddress.ip_network(cfg.POD_SUBNET)
    # Each side sees the other's own address: nothing masquerades between the nodes.
    for src, dst in ((NEAR, FAR), (FAR, NEAR)):
        got = fetch(ips[src], f"http://{ips[dst]}:{pods.PORT}/peer")
        assert got["status"] == 200 and got["body"].strip() == ips[src], (src, dst, got)
    # The second node's log reaches the API server (through its kubelet at its address).
    log = core.read_namespaced_pod_log(FAR, namespace)
    assert f"GET /peer from {ips[NEAR]}:" in log, log


def test_a_pod_on_the_second_node_uses_cluster_dns_and_the_api_server(pair):
    """Names resolve through the kube-dns pod on the first node, and the `kubernetes` Service
    leads to the API server (no policy in this namespace)."""
    _, ips = pair
    got = dial(ips[FAR], "kubernetes.default.svc.cluster.local:443")
    assert got["connected"], got


def test_no_pod_reaches_the_kubelet_or_the_relays_on_a_nodes_cable(pair, second_node):
    _, ips = pair
    lay = second_node.layout
    targets = {
        "the second node's kubelet": f"{lay.node_ip}:{lay.kubelet_port}",
        "the registry relay": f"{lay.host_ip}:{cfg.REGISTRY_PORT}",
        "the API server relay": f"{lay.host_ip}:{lay.relay_port}",
    }
    # They listen: the host (the control plane's side) reaches each of them.
    for addr in targets.values():
        host, port = addr.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    for src in (NEAR, FAR):
        for what, addr in targets.items():
            got = dial(ips[src], addr)
            assert not got["connected"], f"the {src} pod reached {what} at {addr}: {got}"


def _job_pods(control_plane, tenant, job_id: str) -> list:
    return core_api(control_plane).list_namespaced_pod(
        tenant.namespace, label_selector=f"{LABEL_JOB}={job_id}").items


@pytest.mark.parametrize("job_api", ["paddlejob", "trainjob"])
def test_a_two_node_job_trains_across_the_nodes_as_on_one(
        control_plane, real_node, second_node, paddle_runtime, cpu_image, notebook_kernel,
        tmp_path, job_api):
    """``--nodes 2`` puts the job's pods on two machines by default (the spread over
    hostnames), they train over the pod network between the nodes, and the parameters equal
    those of the same job with both pods on one node (the second node cordoned, as an operator
    does before maintenance; the spread is a preference, so the job still runs). Ada's home is
    on storage both nodes mount."""
    for node in (real_node, second_node):  # so that the times below count no image pull
        node.pull(cpu_image)
    with node_tenant_with(control_plane, cpu_image, tmp_path, job_api) as (tenant, home):
        kernel = start_kernel(notebook_kernel, tenant, home)
        ran, rate = {}, {}
        for name, cordoned in (("across", False), ("one", True)):
            if cordoned:
                core_api(control_plane).patch_node(second_node.name,
                                                   {"spec": {"unschedulable": True}})
            try:
                began = time.monotonic()
                result = kernel.run(NODE_CELL.replace("--name dp", f"--name {name}")
                                    + TRAIN_CELL, timeout=JOB_TIMEOUT)
                ran[name] = time.monotonic() - began
            finally:
                if cordoned:
                    core_api(control_plane).patch_node(second_node.name,
                                                       {"spec": {"unschedulable": False}})
            assert result.error is None and states(result.text, name)[-1] == "Succeeded", \
                result.text
            job_id = job_id_of(home, name)
            nodes = sorted(p.spec.node_name for p in _job_pods(control_plane, tenant, job_id))
            expected = [real_node.name] * 2 if cordoned else sorted(
                [real_node.name, second_node.name])
            assert nodes == expected, (name, nodes)
            rate[name] = json.loads((home / "jobs" / job_id / "progress.json").read_text())[
                "steps_per_second"]
            rank0, rank1 = params(home, job_id, 0), params(home, job_id, 1)
            assert rank0.size and np.array_equal(rank0, rank1), name
        across, one = job_id_of(home, "across"), job_id_of(home, "one")
        for rank in (0, 1):
            assert np.array_equal(params(home, across, rank), params(home, one, rank)), rank
        # Printed at the end of the session; never asserted.
        FIGURES[f"2-node job, {job_api}: cell wall time, pods on two nodes (s)"] = ran["across"]
        FIGURES[f"2-node job, {job_api}: cell wall time, pods on one node (s)"] = ran["one"]
        for name, where in (("across", "two nodes"), ("one", "one node")):
            if rate[name] is not None:
                FIGURES[f"2-node job, {job_api}: steps/s, pods on {where}"] = rate[name]
