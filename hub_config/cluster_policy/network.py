"""A tenant's NetworkPolicies: default deny both ways, then the few flows the workbench needs.

- notebooks are reachable only from the hub and proxy pods, and reach the hub's API;
- every pod reaches DNS; a job's pods reach each other, and no other job's, through the job's
  own policy, which the cluster engine makes with the job (`workbench_contract.job_network`);
- notebooks reach the API server only at the addresses the operator names
  (`--api-server-cidr`, checked here: a network address, IPv4, no wider than a /8, never the
  cloud metadata address, which is cut out of any range that holds it).

Pure builders: tenant in, dicts out; a malformed CIDR is a `ProvisioningError`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from hub_config.cluster_policy.metadata import ProvisioningError, in_namespace, object_meta
from hub_config.tenants import Tenant
from workbench_contract import labels

# Zero to JupyterHub labels its hub and proxy pods `component: hub` / `component: proxy`.
HUB_COMPONENT_LABEL = "component"
NOTEBOOK_PORT = 8888  # KubeSpawner's default single-user port
HUB_API_PORT = 8081  # the single-user server calls the hub's API here (activity, auth)
DNS_PORT = 53
# Where a notebook's Kubernetes client reaches the API server: in-cluster it dials the
# `kubernetes` Service on 443, which kube-proxy rewrites to the API server's own port (often
# 6443) before NetworkPolicy is evaluated, so both ports are allowed.
API_SERVER_PORTS = (443, 6443)
# Nowhere until the operator names the API server's addresses (`--api-server-cidr`): a default
# of "anywhere on 443" would open notebooks to the whole internet over TLS.
DEFAULT_API_SERVER_CIDRS: tuple[str, ...] = ()
# A narrower prefix than this is not "the API server's address" but a large part of the internet.
MIN_API_SERVER_PREFIX = 8
# The cloud instance-metadata service hands out node credentials; no tenant pod may reach it.
METADATA_ADDRESS = "169.254.169.254/32"


def _network_policy(tenant: Tenant, name: str, pod_selector: dict[str, Any],
                    policy_types: list[str], **rules: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": policy_types, **rules}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": object_meta(tenant, name), "spec": spec}


def api_server_network(cidr: str) -> ipaddress.IPv4Network:
    """`cidr` as the network of an API server notebooks may reach.

    Raises:
        ProvisioningError: not a network address, not IPv4, wider than a
            /`MIN_API_SERVER_PREFIX`, or the cloud metadata address itself.
    """
    try:
        network = ipaddress.ip_network(cidr, strict=True)
    except ValueError:
        raise ProvisioningError(
            f"api server CIDR {cidr!r} is not a network address; write it like 10.0.0.1/32"
        ) from None
    if network.version != 4:
        raise ProvisioningError(f"api server CIDR {cidr!r}: only IPv4 CIDRs are supported")
    if network.prefixlen < MIN_API_SERVER_PREFIX:
        raise ProvisioningError(
            f"api server CIDR {cidr!r} would open notebooks to a large part of the "
            f"internet; give the API server's own address (a /{MIN_API_SERVER_PREFIX} or "
            "narrower network, like 10.0.0.1/32)"
        )
    if network == ipaddress.ip_network(METADATA_ADDRESS):
        raise ProvisioningError(
            f"api server CIDR {cidr!r} is the cloud metadata address, which tenant pods must "
            "never reach; give the API server's own address"
        )
    return network


def ip_blocks(cidrs: Sequence[str]) -> list[dict[str, Any]]:
    """ipBlock peers for `cidrs`, each excluding the metadata address where it contains it.

    Raises:
        ProvisioningError: a CIDR `api_server_network` refuses.
    """
    metadata = ipaddress.ip_network(METADATA_ADDRESS)
    peers = []
    for cidr in cidrs:
        network = api_server_network(cidr)
        block: dict[str, Any] = {"cidr": str(network)}
        if network.supernet_of(metadata):
            block["except"] = [METADATA_ADDRESS]
        peers.append({"ipBlock": block})
    return peers


def network_policies(tenant: Tenant, *, hub_namespace: str,
                     api_server_cidrs: Sequence[str] = DEFAULT_API_SERVER_CIDRS
                     ) -> list[dict[str, Any]]:
    """Default deny, then the few flows the workbench needs (NetworkPolicies only add allows).
    Notebooks reach the API server only where `api_server_cidrs` say (none: not at all).

    Raises:
        ProvisioningError: a CIDR `api_server_network` refuses.
    """
    notebook = {"matchLabels": {labels.LABEL_COMPONENT: labels.COMPONENT_NOTEBOOK}}

    def hub_pods(*components: str) -> dict[str, Any]:
        return {"namespaceSelector": in_namespace(hub_namespace), "podSelector": {
            "matchExpressions": [{"key": HUB_COMPONENT_LABEL, "operator": "In",
                                  "values": list(components)}]}}

    return [
        _network_policy(tenant, "default-deny", {}, ["Ingress", "Egress"]),
        _network_policy(tenant, "allow-dns", {}, ["Egress"], egress=[{
            "to": [{"namespaceSelector": in_namespace("kube-system"),
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": p, "port": DNS_PORT} for p in ("UDP", "TCP")],
        }]),
        _network_policy(tenant, "notebook-from-hub", notebook, ["Ingress", "Egress"],
                        ingress=[{"from": [hub_pods("hub", "proxy")],
                                  "ports": [{"protocol": "TCP", "port": NOTEBOOK_PORT}]}],
                        egress=[{"to": [hub_pods("hub")],
                                 "ports": [{"protocol": "TCP", "port": HUB_API_PORT}]}]),
        *([_network_policy(tenant, "notebook-to-api-server", notebook, ["Egress"], egress=[{
            "to": ip_blocks(api_server_cidrs),
            "ports": [{"protocol": "TCP", "port": p} for p in API_SERVER_PORTS],
        }])] if api_server_cidrs else []),
        # Pods of one job reach each other through the job's own policy, which the cluster
        # engine makes with the job (`workbench_contract.job_network`): nothing here lets a
        # job's pods reach another job's.
    ]
