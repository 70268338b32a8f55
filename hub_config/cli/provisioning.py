"""Tenant provisioning: the namespace bundle each tenant gets, as plain Kubernetes manifests.

`namespace_bundle(tenant)` returns, in apply order, everything a tenant's namespace needs before
the hub can spawn there and the magic can submit PaddleJobs there:

1. the Namespace, with Pod Security `restricted` enforced (and audited and warned);
2. the notebook ServiceAccount, its Role (`notebook_role_rules()`) and RoleBinding;
3. a Role and RoleBinding for the hub's service account (what KubeSpawner needs, nothing more);
4. the ResourceQuota (GPUs, CPU, memory, pods, PaddleJobs) and a LimitRange that gives
   containers without requests default ones, so that the quota still admits them;
5. NetworkPolicies: default deny both ways; notebooks reachable only from the hub and proxy;
   job pods reach each other; DNS; the API server; never the cloud metadata address.

Every builder is pure (tenant in, dict out) and every object carries `MANAGED_BY_LABEL` and the
tenant label, which is how `hub_config.cli.k8s_apply` finds what it may prune. Provisioning is an
operator's step (`workbench apply`): the hub itself needs no cluster-wide rights.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from hub_config.tenants import Tenant
from workbench_contract import labels
from workbench_contract.resources import GPU_RESOURCE, is_dns_label

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "paddle-workbench"
FIELD_MANAGER = "paddle-workbench"

PADDLEJOB_GROUP = "kubeflow.org"
PADDLEJOB_RESOURCE = "paddlejobs"

NOTEBOOK_ROLE = "workbench-notebook"
HUB_ROLE = "workbench-hub"
QUOTA_NAME = "workbench-quota"
LIMIT_RANGE_NAME = "workbench-defaults"

# Pod Security admission: enforce `restricted`, and audit and warn at the same level so that a
# rejected pod also leaves an audit record and kubectl users see why.
POD_SECURITY_LEVEL = "restricted"
POD_SECURITY_LABELS = {
    f"pod-security.kubernetes.io/{mode}{suffix}": value
    for mode in ("enforce", "audit", "warn")
    for suffix, value in (("", POD_SECURITY_LEVEL), ("-version", "latest"))
}

# Zero to JupyterHub labels its hub and proxy pods `component: hub` / `component: proxy`.
HUB_COMPONENT_LABEL = "component"
NOTEBOOK_PORT = 8888  # KubeSpawner's default single-user port
HUB_API_PORT = 8081  # the single-user server calls the hub's API here (activity, auth)
DNS_PORT = 53
# Where a notebook's Kubernetes client reaches the API server: in-cluster it dials the
# `kubernetes` Service on 443, which kube-proxy rewrites to the API server's own port (often
# 6443) before NetworkPolicy is evaluated, so both ports are allowed.
API_SERVER_PORTS = (443, 6443)
# Anywhere (minus the metadata address) until the operator names the API server's addresses.
DEFAULT_API_SERVER_CIDRS = ("0.0.0.0/0",)
# The cloud instance-metadata service hands out node credentials; no tenant pod may reach it.
METADATA_ADDRESS = "169.254.169.254/32"

# Requests given to a container that states none. The quota counts requests.cpu and
# requests.memory, and the API server refuses a pod without them in a quota'd namespace; with
# these defaults a bare container is still admitted (and counted). No default *limits*: a
# container that requests more than a default limit would be refused outright.
DEFAULT_CPU_REQUEST = "100m"
DEFAULT_MEMORY_REQUEST = "256Mi"


class ProvisioningError(ValueError):
    """A provisioning parameter is wrong; the message names it and says what to write."""


def bundle_labels(tenant: Tenant) -> dict[str, str]:
    """Labels on every object of a tenant's bundle (prune selects on them)."""
    return {MANAGED_BY_LABEL: MANAGED_BY, labels.LABEL_TENANT: tenant.name}


def _meta(tenant: Tenant, name: str, *, namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": bundle_labels(tenant)}
    if namespaced:
        meta["namespace"] = tenant.namespace
    return meta


def namespace(tenant: Tenant) -> dict[str, Any]:
    """The tenant's Namespace with Pod Security `restricted` enforced."""
    meta = _meta(tenant, tenant.namespace, namespaced=False)
    meta["labels"] = {**meta["labels"], **POD_SECURITY_LABELS}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def notebook_service_account(tenant: Tenant) -> dict[str, Any]:
    """The account notebook pods run as (the hub mounts its token for the kubernetes engine)."""
    return {"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": _meta(tenant, tenant.service_account)}


def notebook_role_rules() -> list[dict[str, Any]]:
    """What a notebook may do in its own namespace: run and watch PaddleJobs, nothing else.

    The kubernetes engine creates, lists, watches and deletes PaddleJobs, follows the pods the
    operator makes from them (status, logs, events) and reads the ResourceQuota for its
    preflight. No secrets, no direct pod creation (jobs go through the operator, whose pods the
    quota and Pod Security still check), no RBAC objects, and never a wildcard.
    """
    return [
        {"apiGroups": [PADDLEJOB_GROUP], "resources": [PADDLEJOB_RESOURCE],
         "verbs": ["create", "get", "list", "watch", "delete"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["get", "list"]},
    ]


def hub_role_rules() -> list[dict[str, Any]]:
    """What the hub's KubeSpawner needs in a tenant namespace (pods, home volumes, events).

    Services and secrets are left out: KubeSpawner makes them only with `internal_ssl` or
    `services_enabled`, which the workbench does not use; granting secrets would let the hub
    read anything stored in the tenant's namespace.
    """
    return [
        {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims"],
         "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
    ]


def _role(tenant: Tenant, name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": _meta(tenant, name), "rules": rules}


def _role_binding(tenant: Tenant, role: str, subject_namespace: str,
                  subject_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": _meta(tenant, role),
        # A Role (never a ClusterRole): the grant cannot reach past this namespace.
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": subject_name,
                      "namespace": subject_namespace}],
    }


def notebook_role(tenant: Tenant) -> dict[str, Any]:
    return _role(tenant, NOTEBOOK_ROLE, notebook_role_rules())


def notebook_role_binding(tenant: Tenant) -> dict[str, Any]:
    return _role_binding(tenant, NOTEBOOK_ROLE, tenant.namespace, tenant.service_account)


def hub_role(tenant: Tenant) -> dict[str, Any]:
    return _role(tenant, HUB_ROLE, hub_role_rules())


def hub_role_binding(tenant: Tenant, hub_namespace: str, hub_service_account: str) -> dict[str, Any]:
    return _role_binding(tenant, HUB_ROLE, hub_namespace, hub_service_account)


def resource_quota(tenant: Tenant) -> dict[str, Any]:
    """The tenant's quota. Extended resources (GPUs) can only be quota'd as `requests.*`; the
    API server forbids overcommitting them, so requests always equal limits anyway."""
    quota = tenant.quota
    hard = {
        f"requests.{GPU_RESOURCE}": str(quota.gpus),
        "requests.cpu": str(quota.cpu),
        "requests.memory": str(quota.memory),
        "pods": str(quota.pods),
        f"count/{PADDLEJOB_RESOURCE}.{PADDLEJOB_GROUP}": str(quota.jobs),
    }
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": _meta(tenant, QUOTA_NAME), "spec": {"hard": hard}}


def limit_range(tenant: Tenant) -> dict[str, Any]:
    """Default requests for containers that state none (see DEFAULT_CPU_REQUEST)."""
    return {
        "apiVersion": "v1", "kind": "LimitRange", "metadata": _meta(tenant, LIMIT_RANGE_NAME),
        "spec": {"limits": [{"type": "Container", "defaultRequest": {
            "cpu": DEFAULT_CPU_REQUEST, "memory": DEFAULT_MEMORY_REQUEST}}]},
    }


def _network_policy(tenant: Tenant, name: str, pod_selector: dict[str, Any],
                    policy_types: list[str], **rules: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": pod_selector, "policyTypes": policy_types, **rules}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": _meta(tenant, name), "spec": spec}


def _in_namespace(name: str) -> dict[str, Any]:
    # Every namespace carries this label (set by the API server), so it cannot be forged by
    # labelling some other namespace.
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def _ip_blocks(cidrs: Sequence[str]) -> list[dict[str, Any]]:
    """ipBlock peers for `cidrs`, each excluding the metadata address where it contains it."""
    metadata = ipaddress.ip_network(METADATA_ADDRESS)
    peers = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=True)
        except ValueError:
            raise ProvisioningError(
                f"api server CIDR {cidr!r} is not a network address; write it like 10.0.0.1/32"
            ) from None
        if network.version != 4:
            raise ProvisioningError(f"api server CIDR {cidr!r}: only IPv4 CIDRs are supported")
        if network == metadata:
            raise ProvisioningError(
                f"api server CIDR {cidr!r} is the cloud metadata address, which tenant pods must "
                "never reach; give the API server's own address"
            )
        block: dict[str, Any] = {"cidr": str(network)}
        if network.supernet_of(metadata):
            block["except"] = [METADATA_ADDRESS]
        peers.append({"ipBlock": block})
    return peers


def network_policies(tenant: Tenant, *, hub_namespace: str,
                     api_server_cidrs: Sequence[str] = DEFAULT_API_SERVER_CIDRS
                     ) -> list[dict[str, Any]]:
    """Default deny, then the few flows the workbench needs (NetworkPolicies only add allows)."""
    notebook = {"matchLabels": {labels.LABEL_COMPONENT: labels.COMPONENT_NOTEBOOK}}
    job_pods = {"matchExpressions": [{"key": labels.LABEL_JOB, "operator": "Exists"}]}

    def hub_pods(*components: str) -> dict[str, Any]:
        return {"namespaceSelector": _in_namespace(hub_namespace), "podSelector": {
            "matchExpressions": [{"key": HUB_COMPONENT_LABEL, "operator": "In",
                                  "values": list(components)}]}}

    return [
        _network_policy(tenant, "default-deny", {}, ["Ingress", "Egress"]),
        _network_policy(tenant, "allow-dns", {}, ["Egress"], egress=[{
            "to": [{"namespaceSelector": _in_namespace("kube-system"),
                    "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
            "ports": [{"protocol": p, "port": DNS_PORT} for p in ("UDP", "TCP")],
        }]),
        _network_policy(tenant, "notebook-from-hub", notebook, ["Ingress", "Egress"],
                        ingress=[{"from": [hub_pods("hub", "proxy")],
                                  "ports": [{"protocol": "TCP", "port": NOTEBOOK_PORT}]}],
                        egress=[{"to": [hub_pods("hub")],
                                 "ports": [{"protocol": "TCP", "port": HUB_API_PORT}]}]),
        _network_policy(tenant, "notebook-to-api-server", notebook, ["Egress"], egress=[{
            "to": _ip_blocks(api_server_cidrs),
            "ports": [{"protocol": "TCP", "port": p} for p in API_SERVER_PORTS],
        }]),
        # A NetworkPolicy cannot say "the same value of a label", so pods of one job reach pods
        # of the tenant's other jobs too; the tenant boundary (namespace) still holds.
        _network_policy(tenant, "job-pods-to-each-other", job_pods, ["Ingress", "Egress"],
                        ingress=[{"from": [{"podSelector": job_pods}]}],
                        egress=[{"to": [{"podSelector": job_pods}]}]),
    ]


def _check_name(value: str, what: str) -> str:
    if not is_dns_label(value):
        raise ProvisioningError(
            f"{what} {value!r} is not a DNS-1123 label; use lowercase letters, digits and '-'"
        )
    return value


def namespace_bundle(tenant: Tenant, *, hub_namespace: str = "jupyterhub",
                     hub_service_account: str = "hub",
                     api_server_cidrs: Sequence[str] = DEFAULT_API_SERVER_CIDRS
                     ) -> list[dict[str, Any]]:
    """Every object of one tenant's namespace, in apply order (the Namespace first).

    `hub_namespace`/`hub_service_account` name the hub's service account (it gets a RoleBinding
    here) and the namespace whose `component: hub|proxy` pods may reach notebooks.
    `api_server_cidrs` are where notebooks may open TLS connections to the API server.
    Raises ProvisioningError for a malformed parameter.
    """
    _check_name(hub_namespace, "hub namespace")
    _check_name(hub_service_account, "hub service account")
    if not api_server_cidrs:
        raise ProvisioningError("api server CIDRs must name at least one network")
    return [
        namespace(tenant),
        notebook_service_account(tenant),
        notebook_role(tenant),
        notebook_role_binding(tenant),
        hub_role(tenant),
        hub_role_binding(tenant, hub_namespace, hub_service_account),
        resource_quota(tenant),
        limit_range(tenant),
        *network_policies(tenant, hub_namespace=hub_namespace, api_server_cidrs=api_server_cidrs),
    ]
