"""Tenant provisioning: the namespace bundle each tenant gets, as plain Kubernetes manifests.

`namespace_bundle(tenant)` returns, in apply order, everything a tenant's namespace needs before
the hub can spawn there and the magic can submit PaddleJobs there:

1. the Namespace, with Pod Security `restricted` enforced (and audited and warned);
2. the tenant's ValidatingAdmissionPolicies and their bindings (`hub_config.cli.admission`:
   images, nodes, GPUs, CPU and memory, deadline, priority class, owner, claim, Secrets), so the
   API server, not the user's kernel, holds every job to the tenant's limits; they come before
   anything that lets a user in;
3. the notebook Role (`notebook_role_rules()`), bound by the hub at each spawn to the user's own
   service account (`user_identity`), so the API server can tell users apart;
4. a Role and RoleBinding for the hub's service account (what KubeSpawner needs, plus making
   those per-user accounts and the Secret that holds the server's hub token);
5. the ResourceQuota (GPUs; CPU and memory, requests and limits; ephemeral storage; pods;
   PaddleJobs) and a LimitRange with the tenant's default requests and limits (its first
   profile's) and maximums, so no container goes unlimited;
6. NetworkPolicies: default deny both ways; notebooks reachable only from the hub and proxy;
   job pods reach each other; DNS; the API server only at the addresses the operator names;
   never the cloud metadata address.

Every builder is pure (tenant in, dict out) and every object carries `MANAGED_BY_LABEL` and the
tenant label, which is how `hub_config.cli.k8s_apply` finds what it may prune (the admission
policies are cluster-scoped and found the same way). The per-user accounts the hub makes carry
the tenant and user labels but not `MANAGED_BY_LABEL`: prune never deletes them. Provisioning is
an operator's step (`workbench apply`): the hub itself needs no cluster-wide rights.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from hub_config.cli import kueue
from hub_config.cli.admission import admission_policies, user_account_prefix
from hub_config.tenants import Tenant
from workbench_contract import labels
from workbench_contract.resources import GPU_RESOURCE, is_dns_label, parse_quantity

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "paddle-workbench"
FIELD_MANAGER = "paddle-workbench"

PADDLEJOB_GROUP = "kubeflow.org"
PADDLEJOB_RESOURCE = "paddlejobs"
TRAINJOB_GROUP = "trainer.kubeflow.org"
TRAINJOB_RESOURCE = "trainjobs"

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
# Nowhere until the operator names the API server's addresses (`--api-server-cidr`): a default
# of "anywhere on 443" would open notebooks to the whole internet over TLS.
DEFAULT_API_SERVER_CIDRS: tuple[str, ...] = ()
# A narrower prefix than this is not "the API server's address" but a large part of the internet.
MIN_API_SERVER_PREFIX = 8
# The cloud instance-metadata service hands out node credentials; no tenant pod may reach it.
METADATA_ADDRESS = "169.254.169.254/32"

# Ephemeral storage (what a container writes outside its volumes) of a container that states
# none, and the most any container may have. The quota counts it too, so a full node's disk
# cannot be taken by one job; users keep their data on their claim.
DEFAULT_EPHEMERAL_REQUEST_GI = 1
DEFAULT_EPHEMERAL_LIMIT_GI = 10
EPHEMERAL = "ephemeral-storage"


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


def user_service_account(tenant: Tenant, user: str) -> str:
    """The name of `user`'s own service account in the tenant's namespace, which their notebook
    runs as; `user` is KubeSpawner's `{username}` (a DNS label, the value of the user label).
    The admission policies read the user back from this name (`admission.user_account_prefix`)."""
    return f"{user_account_prefix(tenant)}{user}"


def user_identity(tenant: Tenant, user: str) -> list[dict[str, Any]]:
    """`user`'s service account and the RoleBinding of the notebook Role to it, which the hub
    creates at a spawn (`hub_config.kube_spawner`). Labelled with the tenant and the user, not as
    ours: `workbench apply --prune` leaves them alone (they go with the namespace)."""
    account = user_service_account(tenant, user)
    meta = {"name": account, "namespace": tenant.namespace,
            "labels": {labels.LABEL_TENANT: tenant.name, labels.LABEL_USER: user}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": NOTEBOOK_ROLE},
         "subjects": [{"kind": "ServiceAccount", "name": account,
                       "namespace": tenant.namespace}]},
    ]


def notebook_role_rules() -> list[dict[str, Any]]:
    """What a notebook may do in its own namespace: run and watch PaddleJobs, nothing else.

    The kubernetes engine creates, lists, watches and deletes PaddleJobs, follows the pods the
    operator makes from them (status, logs, events) and reads the ResourceQuota for its
    preflight. It creates a Secret for a job's `--env` values, gives it the job as owner (patch)
    and deletes it when a submit fails; the admission policies hold each user to their own
    jobs and Secrets. It never reads a Secret (get, list, watch), creates no pod directly (jobs
    go through the operator, whose pods the quota, Pod Security and the policies still check),
    touches no RBAC object, and no rule is a wildcard. The trainjob engine does the same with
    TrainJobs, reads the JobSet the Trainer makes of one (its restart count) and, for a queued
    job, its tenant's LocalQueue and Workloads (Kueue's reason) and the LocalQueue's pending
    workloads from Kueue's visibility API (the position; no cluster-wide right needed).
    """
    return [
        {"apiGroups": [PADDLEJOB_GROUP], "resources": [PADDLEJOB_RESOURCE],
         "verbs": ["create", "get", "list", "watch", "delete"]},
        {"apiGroups": [TRAINJOB_GROUP], "resources": [TRAINJOB_RESOURCE],
         "verbs": ["create", "get", "list", "watch", "delete"]},
        {"apiGroups": ["jobset.x-k8s.io"], "resources": ["jobsets"], "verbs": ["get", "list"]},
        {"apiGroups": ["kueue.x-k8s.io"], "resources": ["localqueues", "workloads"],
         "verbs": ["get", "list"]},
        {"apiGroups": ["visibility.kueue.x-k8s.io"],
         "resources": ["localqueues/pendingworkloads"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch", "delete"]},
    ]


def hub_role_rules() -> list[dict[str, Any]]:
    """What the hub's KubeSpawner needs in a tenant namespace.

    Pods, home volumes and events, as KubeSpawner uses them; each user's service account and its
    RoleBinding (`user_identity`), where `bind` on the notebook Role alone lets the hub grant
    that Role and no other; and the Secret holding a server's hub token, which it creates and
    updates but never reads (get, list, watch). Services are left out: KubeSpawner makes them
    only with `internal_ssl` or `services_enabled`, which the workbench does not use.
    """
    return [
        {"apiGroups": [""], "resources": ["pods", "persistentvolumeclaims"],
         "verbs": ["get", "list", "watch", "create", "delete"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["create"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"],
         "verbs": ["create"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["bind"],
         "resourceNames": [NOTEBOOK_ROLE]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch"]},
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


def hub_role(tenant: Tenant) -> dict[str, Any]:
    return _role(tenant, HUB_ROLE, hub_role_rules())


def hub_role_binding(tenant: Tenant, hub_namespace: str, hub_service_account: str) -> dict[str, Any]:
    return _role_binding(tenant, HUB_ROLE, hub_namespace, hub_service_account)


def resource_quota(tenant: Tenant) -> dict[str, Any]:
    """The tenant's quota, on requests and on limits, so that neither can be overcommitted past
    it. Extended resources (GPUs) can only be quota'd as `requests.*`; the API server forbids
    overcommitting them, so their requests always equal their limits anyway. Ephemeral storage:
    every pod's worth of the default (a container may have no more, see `limit_range`)."""
    quota = tenant.quota
    hard = {
        # A queued tenant may hold what it borrows too (Kueue decides; at most kueue.gpu_ceiling).
        f"requests.{GPU_RESOURCE}": str(kueue.gpu_ceiling(tenant)),
        "requests.cpu": str(quota.cpu),
        "requests.memory": str(quota.memory),
        "limits.cpu": str(quota.cpu),
        "limits.memory": str(quota.memory),
        f"requests.{EPHEMERAL}": f"{quota.pods * DEFAULT_EPHEMERAL_REQUEST_GI}Gi",
        f"limits.{EPHEMERAL}": f"{quota.pods * DEFAULT_EPHEMERAL_LIMIT_GI}Gi",
        "pods": str(quota.pods),
        f"count/{PADDLEJOB_RESOURCE}.{PADDLEJOB_GROUP}": str(quota.jobs),
        f"count/{TRAINJOB_RESOURCE}.{TRAINJOB_GROUP}": str(quota.jobs),
    }
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": _meta(tenant, QUOTA_NAME), "spec": {"hard": hard}}


def _at_most(value: str, cap: str) -> str:
    return value if parse_quantity(value) <= parse_quantity(cap) else cap


def container_defaults(tenant: Tenant) -> dict[str, dict[str, str]]:
    """The LimitRange's `default` (limits), `defaultRequest` and `max` for a container.

    The defaults are the tenant's own: its first profile's (the one a spawn without a choice
    gets), never more than its quota; a container may have at most the whole quota. A job's
    workers without `--cpu`/`--memory` get these, so no container goes unlimited.
    """
    profile, quota = tenant.profiles[0], tenant.quota
    cpu = _at_most(profile.cpu.limit, quota.cpu)
    memory = _at_most(profile.memory.limit, quota.memory)
    return {
        "default": {"cpu": cpu, "memory": memory, EPHEMERAL: f"{DEFAULT_EPHEMERAL_LIMIT_GI}Gi"},
        "defaultRequest": {"cpu": _at_most(profile.cpu.guarantee, cpu),
                           "memory": _at_most(profile.memory.guarantee, memory),
                           EPHEMERAL: f"{DEFAULT_EPHEMERAL_REQUEST_GI}Gi"},
        "max": {"cpu": quota.cpu, "memory": quota.memory,
                EPHEMERAL: f"{DEFAULT_EPHEMERAL_LIMIT_GI}Gi"},
    }


def limit_range(tenant: Tenant) -> dict[str, Any]:
    """Default requests and limits for containers that state none, and maximums (see
    `container_defaults`): with the quota on limits, nothing in the namespace is unlimited."""
    return {
        "apiVersion": "v1", "kind": "LimitRange", "metadata": _meta(tenant, LIMIT_RANGE_NAME),
        "spec": {"limits": [{"type": "Container", **container_defaults(tenant)}]},
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
        if network.prefixlen < MIN_API_SERVER_PREFIX:
            raise ProvisioningError(
                f"api server CIDR {cidr!r} would open notebooks to a large part of the "
                f"internet; give the API server's own address (a /{MIN_API_SERVER_PREFIX} or "
                "narrower network, like 10.0.0.1/32)"
            )
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
    """Default deny, then the few flows the workbench needs (NetworkPolicies only add allows).
    Notebooks reach the API server only where `api_server_cidrs` say (none: not at all)."""
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
        *([_network_policy(tenant, "notebook-to-api-server", notebook, ["Egress"], egress=[{
            "to": _ip_blocks(api_server_cidrs),
            "ports": [{"protocol": "TCP", "port": p} for p in API_SERVER_PORTS],
        }])] if api_server_cidrs else []),
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


def tenant_admission_policies(tenant: Tenant, priority_classes: Sequence[str] = ()
                              ) -> list[dict[str, Any]]:
    """The tenant's ValidatingAdmissionPolicies and bindings (cluster-scoped, our labels)."""
    defaults = container_defaults(tenant)["default"]
    return admission_policies(tenant, object_labels=bundle_labels(tenant),
                              default_cpu=defaults["cpu"], default_memory=defaults["memory"],
                              priority_classes=priority_classes)


def namespace_bundle(tenant: Tenant, *, hub_namespace: str = "jupyterhub",
                     hub_service_account: str = "hub",
                     api_server_cidrs: Sequence[str] = DEFAULT_API_SERVER_CIDRS,
                     priority_classes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every object of one tenant's namespace, in apply order (the Namespace first, then the
    admission policies, before anything that lets a user in).

    `hub_namespace`/`hub_service_account` name the hub's service account (it gets a RoleBinding
    here) and the namespace whose `component: hub|proxy` pods may reach notebooks.
    `api_server_cidrs` are where notebooks may open TLS connections to the API server (none: no
    notebook reaches it, and the kubernetes engine cannot submit). `priority_classes` are the
    priority classes the tenant's jobs and pods may use (none by default).
    Raises ProvisioningError for a malformed parameter.
    """
    _check_name(hub_namespace, "hub namespace")
    _check_name(hub_service_account, "hub service account")
    for name in priority_classes:
        _check_name(name, "priority class")
    return [
        namespace(tenant),
        *tenant_admission_policies(tenant, priority_classes),
        notebook_role(tenant),
        hub_role(tenant),
        hub_role_binding(tenant, hub_namespace, hub_service_account),
        resource_quota(tenant),
        limit_range(tenant),
        *network_policies(tenant, hub_namespace=hub_namespace, api_server_cidrs=api_server_cidrs),
        *kueue.queue_objects(tenant, bundle_labels(tenant), {MANAGED_BY_LABEL: MANAGED_BY},
                             f"{tenant.quota.pods * DEFAULT_EPHEMERAL_REQUEST_GI}Gi"),
    ]
