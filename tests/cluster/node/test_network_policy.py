"""NetworkPolicy verdicts by real packets: the policies `workbench apply` renders for two
tenants and each job's own policy as the cluster engine makes it, enforced by kube-router's
policy controller on each of two real nodes (``real_node`` and ``second_node``): the rows
ending in "across-nodes" go from a pod on one node to a pod on the other.

Two tenants (namespaces rendered by ``bundle.namespace``, Pod Security ``restricted``)
each get a notebook pod (serving on the notebook port) and job pods: in tenant a, Ada's job1
(two pods), her colleague Bob's job3, and a job of Bob's that has the name of Ada's (a job of
another kind may); a hub namespace gets a hub and a proxy pod, labelled as Zero to JupyterHub
labels them. Every row is measured once before the policies exist (it must connect: nothing
else in the way) and then after they were applied as ``workbench apply`` applies them
(``apply.apply_objects``), with each job's own (``job_network_policy``). The source pod makes
the connection itself (``pod_client.dial``).

The API server is reached as a notebook's client reaches it, through the `kubernetes` Service
(on the node, a relay forwards it to the test plane's loopback-only API server; the policies
name the relay's address as the API server's, as an operator names the real one).

DNS is the `kube-dns` Service in front of the CoreDNS pod in kube-system, which the rendered
allow-dns policy names; a DNS row connects to it on port 53 and also resolves a Service name
through it.

The cloud instance-metadata address (169.254.169.254, port 80) answers for real: the
``metadata_service`` fixture makes it serve HTTP to pods of this node. The rendered policies
name it nowhere (default deny; the API server's ipBlocks except it where they contain it), so
it connects before the policies and is refused after, from a notebook and from a job pod.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import node_config as cfg
import pods
import pytest
import tenancy
from pod_client import POD_TIMEOUT, core_api, dial, running_pod
from real_node import NodeError, wait_for

from hub_config.cluster_policy import bundle, network
from hub_config.cluster_policy.apply import apply_objects
from workbench_contract import labels
from workbench_contract.job_network import job_network_policy

NOTEBOOK = {labels.LABEL_COMPONENT: labels.COMPONENT_NOTEBOOK}


def _job(job: str, user: str = "ada") -> dict[str, str]:
    """The labels the cluster engine gives the pods of `user`'s job `job`."""
    return {labels.LABEL_COMPONENT: labels.COMPONENT_JOB_WORKER, labels.LABEL_JOB: job,
            labels.LABEL_USER: user}


# (pod key, namespace key, labels, port): "a"/"b" are the tenants, "hub" the hub namespace.
# These run on the first node; FAR_PODS on the second (``second_node``).
PODS = {
    "a-notebook": ("a", NOTEBOOK, network.NOTEBOOK_PORT),
    "a-job1-0": ("a", _job("job1"), pods.PORT),
    "a-job1-1": ("a", _job("job1"), pods.PORT),
    "a-job3-0": ("a", _job("job3", "bob"), pods.PORT),
    "a-bobs-job1-0": ("a", _job("job1", "bob"), pods.PORT),
    "b-notebook": ("b", NOTEBOOK, network.NOTEBOOK_PORT),
    "b-job2-0": ("b", _job("job2"), pods.PORT),
    "hub": ("hub", {network.HUB_COMPONENT_LABEL: "hub"}, pods.PORT),
    "proxy": ("hub", {network.HUB_COMPONENT_LABEL: "proxy"}, pods.PORT),
}
FAR_PODS = {
    "a-job1-far": ("a", _job("job1"), pods.PORT),
    "a-job3-far": ("a", _job("job3", "bob"), pods.PORT),
    "b-job2-far": ("b", _job("job2"), pods.PORT),
    "a-notebook-far": ("a", NOTEBOOK, network.NOTEBOOK_PORT),
}
PODS.update(FAR_PODS)

# Not pods: the API server, as a notebook's client reaches it (the `kubernetes` Service),
# cluster DNS (the `kube-dns` Service, TCP port 53) and the cloud metadata address.
API_SERVER = "api-server"
DNS = "dns"
METADATA = "cloud-metadata"
SERVICES = (API_SERVER, DNS, METADATA)

# (row id, from pod, to pod or API_SERVER, connection allowed?)
VERDICTS = [
    ("inside-one-job", "a-job1-0", "a-job1-1", True),
    ("job-to-colleagues-job", "a-job1-0", "a-job3-0", False),
    ("colleagues-job-to-job", "a-job3-0", "a-job1-0", False),
    ("job-to-colleagues-job-of-its-name", "a-job1-0", "a-bobs-job1-0", False),
    ("colleagues-job-of-its-name-to-job", "a-bobs-job1-0", "a-job1-1", False),
    ("job-to-other-tenants-job", "a-job1-0", "b-job2-0", False),
    ("job-to-other-tenants-notebook", "a-job1-0", "b-notebook", False),
    ("notebook-to-other-tenants-notebook", "a-notebook", "b-notebook", False),
    ("hub-to-notebook", "hub", "a-notebook", True),
    ("proxy-to-notebook", "proxy", "a-notebook", True),
    ("notebook-to-api-server", "a-notebook", API_SERVER, True),
    ("job-to-api-server", "a-job1-0", API_SERVER, False),
    ("job-to-dns", "a-job1-0", DNS, True),
    ("notebook-to-dns", "a-notebook", DNS, True),
    ("notebook-to-cloud-metadata", "a-notebook", METADATA, False),
    ("job-to-cloud-metadata", "a-job1-0", METADATA, False),
    # Across the two nodes: each node's policy controller filters its own pods' traffic.
    ("inside-one-job-across-nodes", "a-job1-0", "a-job1-far", True),
    ("inside-one-job-across-nodes-back", "a-job1-far", "a-job1-1", True),
    ("job-to-colleagues-job-across-nodes", "a-job1-0", "a-job3-far", False),
    ("colleagues-job-to-job-across-nodes", "a-job3-far", "a-job1-0", False),
    ("job-to-other-tenants-job-across-nodes", "a-job1-far", "b-job2-0", False),
    ("other-tenants-job-to-job-across-nodes", "b-job2-far", "a-job1-1", False),
    ("proxy-to-notebook-across-nodes", "proxy", "a-notebook-far", True),
    ("notebook-to-other-tenants-notebook-across-nodes", "a-notebook-far", "b-notebook", False),
    ("job-on-second-node-to-dns", "a-job1-far", DNS, True),
    ("job-on-second-node-to-api-server", "a-job1-far", API_SERVER, False),
    ("notebook-on-second-node-to-api-server", "a-notebook-far", API_SERVER, True),
]


@dataclass
class World:
    ips: dict[str, str]
    before: dict[str, bool]  # row id -> connected before any policy existed


def _connects(world_ips: dict[str, str], src: str, dst: str) -> bool:
    addr = world_ips[dst] if dst in SERVICES else f"{world_ips[dst]}:{PODS[dst][2]}"
    return dial(world_ips[src], addr, port=PODS[src][2])["connected"]


def _connects_eventually(world_ips: dict[str, str], src: str, dst: str) -> bool:
    """Whether ``src`` reaches ``dst`` within the pod timeout (a busy machine may drop one)."""
    try:
        return wait_for(lambda: _connects(world_ips, src, dst), POD_TIMEOUT, f"{src} -> {dst}")
    except NodeError:
        return False


@pytest.fixture(scope="module")
def world(control_plane, real_node, second_node, metadata_service):
    """The two tenants' pods and the hub's, first without policies, then with them."""
    from kubernetes import client

    api = control_plane.api_client()
    core = core_api(control_plane)
    tenant_a, tenant_b = tenancy.make_tenant("npa"), tenancy.make_tenant("npb")
    hub_ns = f"hub-{uuid.uuid4().hex[:6]}"
    namespaces = {"a": tenant_a.namespace, "b": tenant_b.namespace, "hub": hub_ns}
    core.create_namespace(bundle.namespace(tenant_a))
    core.create_namespace(bundle.namespace(tenant_b))
    core.create_namespace({"metadata": {"name": hub_ns}})
    try:
        for ns in namespaces.values():
            wait_for(lambda ns=ns: core.read_namespaced_service_account("default", ns), 60,
                     f"the default service account of {ns}")
        for name, (where, pod_labels, port) in PODS.items():
            node = second_node.name if name in FAR_PODS else real_node.name
            core.create_namespaced_pod(namespaces[where], pods.server_pod(
                name, port=port, labels=pod_labels, node=node))
        ips = {name: running_pod(core, namespaces[where], name).status.pod_ip
               for name, (where, _, _) in PODS.items()}
        service = core.read_namespaced_service("kubernetes", "default")
        ips[API_SERVER] = f"{service.spec.cluster_ip}:443"
        dns = core.read_namespaced_service(cfg.DNS_SERVICE, cfg.DNS_NAMESPACE)
        ips[DNS] = f"{dns.spec.cluster_ip}:53"
        ips[METADATA] = metadata_service
        before = {row: _connects_eventually(ips, src, dst) for row, src, dst, _ in VERDICTS}
        # The operator names the API server's address (`--api-server-cidr`): here the relay's.
        api_cidrs = [f"{cfg.NODE_IP}/32"]
        policies = [*network.network_policies(tenant_a, hub_namespace=hub_ns,
                                                   api_server_cidrs=api_cidrs),
                    *network.network_policies(tenant_b, hub_namespace=hub_ns,
                                                   api_server_cidrs=api_cidrs)]
        # Each job's own policy, as the engine makes it, named as the job: Bob's job of the
        # name of Ada's has none (the name is Ada's policy's), and needs none to try.
        jobs: dict[tuple[str, str], dict[str, str]] = {}
        for where, pod_labels, _ in PODS.values():
            if labels.LABEL_JOB in pod_labels:
                jobs.setdefault((namespaces[where], pod_labels[labels.LABEL_JOB]), pod_labels)
        policies += [job_network_policy(job, ns, pod_labels)
                     for (ns, job), pod_labels in jobs.items()]
        apply_objects(api, policies)
        yield World(ips, before)
    finally:
        for ns in namespaces.values():
            try:
                core.delete_namespace(ns)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise


@pytest.mark.parametrize(("row", "src", "dst", "allowed"), VERDICTS,
                         ids=[row for row, *_ in VERDICTS])
def test_network_policy_verdict(world, row, src, dst, allowed):
    # Without policies every row connects, so a refusal below is the policies' doing.
    assert world.before[row], f"{src} -> {dst} did not connect even before any policy"
    # kube-router applies policies a moment after they are created; wait for the verdict.
    verdict = "connects" if allowed else "is refused"
    assert wait_for(lambda: _connects(world.ips, src, dst) == allowed, POD_TIMEOUT,
                    f"{src} -> {dst} {verdict}")
    # And it stays that way (the policy controller resyncs; nothing flips back).
    assert all(_connects(world.ips, src, dst) == allowed for _ in range(3))


def test_a_job_pod_resolves_names_under_the_tenants_policies(world):
    """A query, not only a connection: the job pod looks up a Service name through kube-dns.
    A failed lookup says "lookup <name>"; a resolved one reaches the API server's address and is
    refused there by the job-to-api-server rule."""
    def resolved() -> dict | None:
        got = dial(world.ips["a-job1-0"], "kubernetes.default.svc.cluster.local:443",
                   port=PODS["a-job1-0"][2])
        return None if "lookup" in got["error"] else got

    got = wait_for(resolved, POD_TIMEOUT, "a name lookup from a job pod")
    assert not got["connected"], got
