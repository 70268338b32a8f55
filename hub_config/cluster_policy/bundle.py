"""Tenant provisioning: the namespace bundle each tenant gets, as plain Kubernetes manifests.

`namespace_bundle(tenant)` returns, in apply order, everything a tenant's namespace needs before
the hub can spawn there and a notebook can submit jobs there:

1. the Namespace, with Pod Security `restricted` enforced (and audited and warned);
2. the tenant's ValidatingAdmissionPolicies and their bindings (`admission`: images, nodes,
   GPUs, CPU and memory, deadline, cleanup, priority class, component, queue, owner, claim,
   Secrets, for every registered job kind; notebook pods made by the hub only), so the API
   server, not the user's kernel, holds every job to the tenant's limits; they come before
   anything that lets a user in;
3. the notebook Role (`notebook_role_rules()`), bound by the hub at each spawn to the user's own
   service account (`identities.user_identity`), so the API server can tell users apart; in a
   tenant with a queue it writes only the job kinds Kueue admits;
4. a Role and RoleBinding for the hub's service account (what KubeSpawner needs, plus making
   those per-user accounts and the Secret that holds the server's hub token);
5. the ResourceQuota (GPUs; CPU and memory, requests and limits; ephemeral storage; pods; the
   jobs of every kind) and a LimitRange with the tenant's default requests and limits (its
   first profile's) and maximums, GPUs per container and per pod included, so no container goes
   unlimited and no init container gets past a node's GPUs;
6. NetworkPolicies (`network`);
7. for a queued tenant, its Kueue objects (`kueue`).

What a notebook may do with jobs, and how many it may hold, is derived from the registered job
kinds (`workbench_contract.jobkinds`): a new kind needs no edit here. Every builder is pure
(tenant in, dict out) and every object carries the labels of `metadata.bundle_labels`, which is
how `apply` finds what it may prune. The per-user accounts the hub makes carry the tenant and
user labels but not `MANAGED_BY_LABEL`: prune never deletes them. Provisioning is an operator's
step (`workbench apply`): the hub itself needs no cluster-wide rights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub_config.cluster_policy import kueue
from hub_config.cluster_policy.admission import admission_policies
from hub_config.cluster_policy.admission.cel import service_account_username
from hub_config.cluster_policy.identities import NOTEBOOK_ROLE
from hub_config.cluster_policy.metadata import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    bundle_labels,
    check_name,
    object_meta,
)
from hub_config.cluster_policy.network import DEFAULT_API_SERVER_CIDRS, network_policies
from hub_config.tenants import Tenant
from workbench_contract import cluster
from workbench_contract.jobkinds import JobKind, job_kinds
from workbench_contract.resources import GPU_RESOURCE, parse_quantity

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

# Ephemeral storage (what a container writes outside its volumes) of a container that states
# none, and the most any container may have. The quota counts it too, so a full node's disk
# cannot be taken by one job; users keep their data on their claim.
DEFAULT_EPHEMERAL_REQUEST_GI = 1
DEFAULT_EPHEMERAL_LIMIT_GI = 10
EPHEMERAL = "ephemeral-storage"

JOB_VERBS = ["create", "get", "list", "watch", "delete"]
JOB_READ_VERBS = ["get", "list", "watch"]  # a job kind a queued tenant may not write
READ_VERBS = ["get", "list"]


def namespace(tenant: Tenant) -> dict[str, Any]:
    """The tenant's Namespace with Pod Security `restricted` enforced."""
    meta = object_meta(tenant, tenant.namespace, namespaced=False)
    meta["labels"] = {**meta["labels"], **POD_SECURITY_LABELS}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def job_rules(kinds: Sequence[JobKind], *, queued: bool = False) -> list[dict[str, Any]]:
    """The notebook Role's rules on jobs of `kinds`: each kind's own API (create, get, list,
    watch, delete), what it reads besides (get, list) and, when a kind is queued, its tenant's
    LocalQueue and Workloads (get, list) and the LocalQueue's pending workloads from Kueue's
    visibility API (get; its place in the queue, no cluster-wide right needed).

    In a tenant with a queue (`queued`) a kind that Kueue does not admit is only read (get,
    list, watch: its jobs from before the queue still show, and the engine's watches of every
    kind still start); its jobs would hold quota past the queue (the `queue` rule refuses them
    too, whoever asks)."""
    rules = [{"apiGroups": [k.api.group], "resources": [k.api.plural],
              "verbs": list(JOB_VERBS if k.queued or not queued else JOB_READ_VERBS)}
             for k in kinds]
    reads = list(dict.fromkeys(api for k in kinds for api in k.reads))
    rules += [{"apiGroups": [api.group], "resources": [api.plural], "verbs": list(READ_VERBS)}
              for api in reads]
    if any(k.queued for k in kinds):
        rules += [
            {"apiGroups": [cluster.KUEUE_GROUP],
             "resources": [cluster.LOCALQUEUE.plural, cluster.WORKLOAD.plural],
             "verbs": list(READ_VERBS)},
            {"apiGroups": [cluster.VISIBILITY_GROUP],
             "resources": [cluster.PENDING_WORKLOADS], "verbs": ["get"]},
        ]
    return rules


def notebook_role_rules(*, queued: bool = False) -> list[dict[str, Any]]:
    """What a notebook may do in its own namespace: run and watch its jobs, nothing else.

    The cluster engine creates, lists, watches and deletes jobs of every registered kind
    (`job_rules`; in a tenant with a queue, `queued`, creates and deletes only those of the
    kinds Kueue admits), follows the pods made of them (status, logs, events) and reads the
    ResourceQuota for its preflight. It creates a job's own NetworkPolicy and a Secret for a
    job's `--env` values, gives them the job as owner (patch) and deletes them when a submit
    fails; the admission policies hold each user to their own jobs, Secrets and NetworkPolicies
    of the one shape that lets a job's pods reach each other. It never reads a Secret (get, list, watch),
    creates no pod directly (jobs go through their operators, whose pods the quota, Pod
    Security and the policies still check), touches no RBAC object, and no rule is a wildcard.
    """
    return [
        *job_rules(tuple(job_kinds().values()), queued=queued),
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["resourcequotas"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "patch", "delete"]},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"],
         "verbs": ["create", "patch", "delete"]},
    ]


def hub_role_rules() -> list[dict[str, Any]]:
    """What the hub's KubeSpawner needs in a tenant namespace.

    Pods, home volumes and events, as KubeSpawner uses them; each user's service account and its
    RoleBinding (`identities.user_identity`), where `bind` on the notebook Role alone lets the
    hub grant that Role and no other; and the Secret holding a server's hub token, which it
    creates and updates but never reads (get, list, watch). Services are left out: KubeSpawner
    makes them only with `internal_ssl` or `services_enabled`, which the workbench does not use.
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
            "metadata": object_meta(tenant, name), "rules": rules}


def notebook_role(tenant: Tenant) -> dict[str, Any]:
    return _role(tenant, NOTEBOOK_ROLE, notebook_role_rules(queued=tenant.queue is not None))


def hub_role(tenant: Tenant) -> dict[str, Any]:
    return _role(tenant, HUB_ROLE, hub_role_rules())


def hub_role_binding(tenant: Tenant, hub_namespace: str, hub_service_account: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": object_meta(tenant, HUB_ROLE),
        # A Role (never a ClusterRole): the grant cannot reach past this namespace.
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": HUB_ROLE},
        "subjects": [{"kind": "ServiceAccount", "name": hub_service_account,
                      "namespace": hub_namespace}],
    }


def resource_quota(tenant: Tenant) -> dict[str, Any]:
    """The tenant's quota, on requests and on limits, so that neither can be overcommitted past
    it. Extended resources (GPUs) can only be quota'd as `requests.*`; the API server forbids
    overcommitting them, so their requests always equal their limits anyway. Ephemeral storage:
    every pod's worth of the default (a container may have no more, see `limit_range`). Jobs:
    `quota.jobs` of each registered kind."""
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
        **{f"count/{kind.api.resource}": str(quota.jobs) for kind in job_kinds().values()},
    }
    return {"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": object_meta(tenant, QUOTA_NAME), "spec": {"hard": hard}}


def gpus_per_pod(tenant: Tenant) -> int:
    """The most GPUs one pod of the tenant may have: a job's node (`max_gpus_per_node`) or a
    notebook of its largest profile, whichever has more."""
    return max([tenant.job_limits.max_gpus_per_node, *(p.gpus for p in tenant.profiles)])


def _at_most(value: str, cap: str) -> str:
    return value if parse_quantity(value) <= parse_quantity(cap) else cap


def container_defaults(tenant: Tenant) -> dict[str, dict[str, str]]:
    """The LimitRange's `default` (limits), `defaultRequest` and `max` for a container.

    The defaults are the tenant's own: its first profile's (the one a spawn without a choice
    gets), never more than its quota; a container may have at most the whole quota, and at most
    `gpus_per_pod` GPUs. A job's workers without `--cpu`/`--memory` get these, so no container
    goes unlimited. GPUs default to none: the API server would otherwise give every container
    that states none the maximum.
    """
    profile, quota = tenant.profiles[0], tenant.quota
    cpu = _at_most(profile.cpu.limit, quota.cpu)
    memory = _at_most(profile.memory.limit, quota.memory)
    return {
        "default": {"cpu": cpu, "memory": memory, EPHEMERAL: f"{DEFAULT_EPHEMERAL_LIMIT_GI}Gi",
                    GPU_RESOURCE: "0"},
        "defaultRequest": {"cpu": _at_most(profile.cpu.guarantee, cpu),
                           "memory": _at_most(profile.memory.guarantee, memory),
                           EPHEMERAL: f"{DEFAULT_EPHEMERAL_REQUEST_GI}Gi", GPU_RESOURCE: "0"},
        "max": {"cpu": quota.cpu, "memory": quota.memory,
                EPHEMERAL: f"{DEFAULT_EPHEMERAL_LIMIT_GI}Gi",
                GPU_RESOURCE: str(gpus_per_pod(tenant))},
    }


def limit_range(tenant: Tenant) -> dict[str, Any]:
    """Default requests and limits for containers that state none, and maximums (see
    `container_defaults`): with the quota on limits, nothing in the namespace is unlimited. A
    pod, its init containers counted as the API server counts them, has at most
    `gpus_per_pod` GPUs: the admission rules hold jobs to less, this holds every pod."""
    pod_max = {"type": "Pod", "max": {GPU_RESOURCE: str(gpus_per_pod(tenant))}}
    return {
        "apiVersion": "v1", "kind": "LimitRange",
        "metadata": object_meta(tenant, LIMIT_RANGE_NAME),
        "spec": {"limits": [{"type": "Container", **container_defaults(tenant)}, pod_max]},
    }


def tenant_admission_policies(tenant: Tenant, *, hub_namespace: str, hub_service_account: str,
                              priority_classes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The tenant's ValidatingAdmissionPolicies and bindings (cluster-scoped, our labels); the
    hub's service account is the one that may make notebook pods."""
    defaults = container_defaults(tenant)["default"]
    return admission_policies(tenant, object_labels=bundle_labels(tenant),
                              hub=service_account_username(hub_namespace, hub_service_account),
                              default_cpu=defaults["cpu"], default_memory=defaults["memory"],
                              priority_classes=priority_classes)


def namespace_bundle(tenant: Tenant, *, hub_namespace: str = "jupyterhub",
                     hub_service_account: str = "hub",
                     api_server_cidrs: Sequence[str] = DEFAULT_API_SERVER_CIDRS,
                     priority_classes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Every object of one tenant's namespace, in apply order (the Namespace first, then the
    admission policies, before anything that lets a user in).

    `hub_namespace`/`hub_service_account` name the hub's service account (it gets a RoleBinding
    here, and is the only one that may make notebook pods) and the namespace whose
    `component: hub|proxy` pods may reach notebooks.
    `api_server_cidrs` are where notebooks may open TLS connections to the API server (none: no
    notebook reaches it, and no cluster engine can submit). `priority_classes` are the priority
    classes the tenant's jobs and pods may use (none by default).

    Raises:
        ProvisioningError: a malformed parameter (the message names it).
    """
    check_name(hub_namespace, "hub namespace")
    check_name(hub_service_account, "hub service account")
    for name in priority_classes:
        check_name(name, "priority class")
    return [
        namespace(tenant),
        *tenant_admission_policies(tenant, hub_namespace=hub_namespace,
                                   hub_service_account=hub_service_account,
                                   priority_classes=priority_classes),
        notebook_role(tenant),
        hub_role(tenant),
        hub_role_binding(tenant, hub_namespace, hub_service_account),
        resource_quota(tenant),
        limit_range(tenant),
        *network_policies(tenant, hub_namespace=hub_namespace, api_server_cidrs=api_server_cidrs),
        *kueue.queue_objects(tenant, bundle_labels(tenant), {MANAGED_BY_LABEL: MANAGED_BY},
                             f"{tenant.quota.pods * DEFAULT_EPHEMERAL_REQUEST_GI}Gi"),
    ]
