"""Cluster DNS and Services on the real node: a pod finds another by its Service name.

The client is a second test server: ``pod_client.dial`` makes it resolve and connect from
inside its pod, through CoreDNS (on the node's address) and kube-proxy's Service rules.
"""

from __future__ import annotations

import pods
from pod_client import POD_TIMEOUT, core_api, dial, running_pod
from real_node import wait_for


def test_a_pod_reaches_another_by_its_service_name_and_no_name_outside_resolves(
        control_plane, real_node, restricted_namespace):
    core = core_api(control_plane)
    ns = restricted_namespace
    core.create_namespaced_pod(ns, pods.server_pod("server"))
    core.create_namespaced_service(ns, {
        "metadata": {"name": "server"},
        "spec": {"selector": {"app": "server"},
                 "ports": [{"port": 80, "targetPort": pods.PORT, "protocol": "TCP"}]}})
    core.create_namespaced_pod(ns, pods.server_pod("client"))
    running_pod(core, ns, "server")
    client_ip = running_pod(core, ns, "client").status.pod_ip

    # EndpointSlices and kube-proxy's rules follow the pod's readiness a moment later.
    wait_for(lambda: dial(client_ip, "server:80")["connected"], POD_TIMEOUT,
             "the client to reach the server by its Service name")
    full = dial(client_ip, f"server.{ns}.svc.cluster.local:80")
    assert full["connected"], full
    # A name that does not resolve fails at the lookup (NXDOMAIN inside cluster.local; CoreDNS
    # refuses every other zone, since it has no forwarder: no query leaves the machine).
    for name in ("no-such-service", "example.com"):
        got = dial(client_ip, f"{name}:80")
        assert not got["connected"] and f"lookup {name}" in got["error"], got
