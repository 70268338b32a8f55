"""Kueue objects of a queued tenant: its ResourceFlavor, ClusterQueue and LocalQueue.

A tenant with a `queue` setting gets (all pure builders, applied by `workbench apply` as part of
its namespace bundle, `bundle.namespace_bundle`):

- a `ResourceFlavor` for the kind of GPU its profiles ask for (the node label
  `nvidia.com/gpu.product`, named after it, e.g. `gpu-nvidia-h100`; `default-flavor` for a
  tenant without GPUs). Tenants whose GPUs are of one kind share the flavor, so they can lend
  each other quota. It carries no tenant label: it is shared, and pruning one tenant must not
  delete it.
- a `ClusterQueue` `workbench-<tenant>`: nominal quota = the tenant's GPU, CPU and memory quota,
  in the tenant's cohort (idle quota is lent to the cohort's other queues and reclaimed,
  preempting the borrower, when the lender needs it: `reclaimWithinCohort: Any`); only the
  tenant's namespace may submit to it (`namespaceSelector`); `borrowingLimit` on GPUs where
  the tenant sets one.
- a `LocalQueue` `workbench` (`workbench_contract.cluster.LOCAL_QUEUE`) in the tenant's
  namespace pointing at it. Queued job kinds submit there; the tenant's admission policy refuses
  a queued job that names any other queue, or none.
"""

from __future__ import annotations

import re
from typing import Any

from hub_config.cluster_policy.metadata import in_namespace
from hub_config.tenants import Tenant
from workbench_contract.cluster import CLUSTERQUEUE, LOCAL_QUEUE, LOCALQUEUE, RESOURCE_FLAVOR
from workbench_contract.resources import GPU_RESOURCE

GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
DEFAULT_FLAVOR = "default-flavor"
EPHEMERAL = "ephemeral-storage"


def cluster_queue_name(tenant: Tenant) -> str:
    return f"workbench-{tenant.name}"


def gpu_kind(tenant: Tenant) -> str:
    """The GPU product the tenant's GPU profiles select ("" when none names one)."""
    kinds = sorted({p.node_selector[GPU_PRODUCT_LABEL] for p in tenant.profiles
                    if p.gpus and GPU_PRODUCT_LABEL in p.node_selector})
    return kinds[0] if kinds else ""


def flavor_name(kind: str) -> str:
    """`gpu-<product>` as a DNS label, or the default flavor for no GPU kind."""
    if not kind:
        return DEFAULT_FLAVOR
    return ("gpu-" + re.sub(r"[^a-z0-9-]+", "-", kind.lower())).strip("-")[:63].rstrip("-")


def resource_flavor(tenant: Tenant, managed_labels: dict[str, str]) -> dict[str, Any]:
    kind = gpu_kind(tenant)
    spec: dict[str, Any] = {"nodeLabels": {GPU_PRODUCT_LABEL: kind}} if kind else {}
    return {"apiVersion": RESOURCE_FLAVOR.api_version, "kind": RESOURCE_FLAVOR.kind,
            "metadata": {"name": flavor_name(kind), "labels": dict(managed_labels)},
            "spec": spec}


def cluster_queue(tenant: Tenant, object_labels: dict[str, str],
                  ephemeral_storage: str) -> dict[str, Any]:
    """The tenant's ClusterQueue (the tenant must have a queue). `ephemeral_storage`: what the
    namespace's quota holds of it (every pod gets the LimitRange's default, and Kueue counts
    that as the pods' request)."""
    assert tenant.queue is not None
    quota = tenant.quota
    gpu: dict[str, Any] = {"name": GPU_RESOURCE, "nominalQuota": str(quota.gpus)}
    if tenant.queue.borrowing_limit_gpus is not None:
        gpu["borrowingLimit"] = str(tenant.queue.borrowing_limit_gpus)
    return {
        "apiVersion": CLUSTERQUEUE.api_version, "kind": CLUSTERQUEUE.kind,
        "metadata": {"name": cluster_queue_name(tenant), "labels": dict(object_labels)},
        "spec": {
            "cohortName": tenant.queue.cohort,
            "namespaceSelector": in_namespace(tenant.namespace),
            "queueingStrategy": "BestEffortFIFO",
            # Take lent quota back when this tenant needs it; never preempt its own jobs.
            "preemption": {"reclaimWithinCohort": "Any", "withinClusterQueue": "Never"},
            "resourceGroups": [{
                "coveredResources": ["cpu", "memory", GPU_RESOURCE, EPHEMERAL],
                "flavors": [{"name": flavor_name(gpu_kind(tenant)), "resources": [
                    # CPU and memory are lent but not borrowed: the namespace's ResourceQuota
                    # holds them at the tenant's own quota.
                    {"name": "cpu", "nominalQuota": str(quota.cpu), "borrowingLimit": "0"},
                    {"name": "memory", "nominalQuota": str(quota.memory),
                     "borrowingLimit": "0"},
                    gpu,
                    {"name": EPHEMERAL, "nominalQuota": ephemeral_storage,
                     "borrowingLimit": "0"}]}]}],
        },
    }


def local_queue(tenant: Tenant, object_labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": LOCALQUEUE.api_version, "kind": LOCALQUEUE.kind,
            "metadata": {"name": LOCAL_QUEUE, "namespace": tenant.namespace,
                         "labels": dict(object_labels)},
            "spec": {"clusterQueue": cluster_queue_name(tenant)}}


def queue_objects(tenant: Tenant, object_labels: dict[str, str], shared_labels: dict[str, str],
                  ephemeral_storage: str) -> list[dict[str, Any]]:
    """The tenant's Kueue objects in apply order ([] for a tenant without a queue).

    `object_labels` go on the tenant's own objects, `shared_labels` (no tenant) on the flavor.
    """
    if tenant.queue is None:
        return []
    return [resource_flavor(tenant, shared_labels),
            cluster_queue(tenant, object_labels, ephemeral_storage),
            local_queue(tenant, object_labels)]


def gpu_ceiling(tenant: Tenant) -> int:
    """The most GPUs the tenant's namespace may hold at once: its own quota plus the most it
    can borrow (its borrowing limit, and never more than the cohort's other tenants have)."""
    if tenant.queue is None:
        return tenant.quota.gpus
    return tenant.quota.gpus + tenant.queue.borrowable_gpus
