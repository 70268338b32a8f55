"""Pure helpers for jobs queued by Kueue: the quota preflight and the Queued job's message.

Kueue makes one `Workload` per queued TrainJob (owned by it) in the tenant's namespace. While
the Workload waits, its `QuotaReserved` condition is False and says why (the flavor and resource
that is short, or that the request exceeds what the ClusterQueue can ever reach).

The position comes from Kueue's visibility API where the cluster serves it: the LocalQueue's
`pendingworkloads` (`visibility.kueue.x-k8s.io`, an aggregated API), Kueue's own order with each
workload's `positionInLocalQueue`, readable with a namespace Role. Where it is not served (no
APIService, or Kueue's VisibilityOnDemand gate off) the tenant's Workloads are put in the
order of the LocalQueue's BestEffortFIFO: higher priority first, then older first.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from launcher_magic.core.spec import JobSpec, SpecError
from launcher_magic.engines.kubernetes.paddlejob import GPU, _timestamp
from workbench_contract.resources import parse_quantity

GROUP, VERSION = "kueue.x-k8s.io", "v1beta2"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
VISIBILITY_GROUP, VISIBILITY_VERSION = "visibility.kueue.x-k8s.io", "v1beta2"


def pending_workloads_path(namespace: str, queue: str) -> str:
    """The visibility API's pending workloads of LocalQueue `queue` in `namespace`."""
    return (f"/apis/{VISIBILITY_GROUP}/{VISIBILITY_VERSION}/namespaces/{namespace}/localqueues/"
            f"{queue}/pendingworkloads")


def _needs(spec: JobSpec) -> dict[str, tuple[Decimal, str]]:
    gpus = spec.nodes * spec.resources.gpus_per_node
    needs: dict[str, tuple[Decimal, str]] = {
        f"requests.{GPU}": (Decimal(gpus), f"{gpus} GPUs ({spec.nodes} nodes x "
                                           f"{spec.resources.gpus_per_node})"),
        "count/trainjobs.trainer.kubeflow.org": (Decimal(1), "1 more TrainJob"),
        "pods": (Decimal(spec.nodes), f"{spec.nodes} pods"),
        "count/pods": (Decimal(spec.nodes), f"{spec.nodes} pods"),
    }
    for resource, raw in (("cpu", spec.resources.cpu), ("memory", spec.resources.memory)):
        if raw:
            total = parse_quantity(str(raw)) * spec.nodes
            needs[f"requests.{resource}"] = (total, f"{spec.nodes} x {raw} {resource}")
            needs[f"limits.{resource}"] = (total, f"{spec.nodes} x {raw} {resource}")
    return needs


def check_quota(spec: JobSpec, quotas: Iterable[Mapping[str, Any]], queued: bool) -> str:
    """Check `spec` against the namespace's ResourceQuotas.

    Returns "" when it fits now, or (only when `queued`) why it will wait for others to end.
    Raises:
        SpecError: the job can never fit (it needs more than the quota holds at all), or it does
            not fit now and there is no queue to wait in; the message has the numbers.
    """
    needs = _needs(spec)
    waits = []
    for quota in quotas:
        name = quota.get("metadata", {}).get("name", "?")
        status = quota.get("status") or {}
        hard, used = status.get("hard") or {}, status.get("used") or {}
        for key, (need, what) in needs.items():
            if key not in hard or need == 0:
                continue
            if need > parse_quantity(str(hard[key])):
                raise SpecError(
                    f"the job needs {what}, but your tenant's quota {name!r} has "
                    f"{key}={hard[key]} in all: it can never run; ask for less")
            left = parse_quantity(str(hard[key])) - parse_quantity(str(used.get(key, "0")))
            if need > left:
                said = (f"the job needs {what}, but your tenant's quota {name!r} has "
                        f"{key}={hard[key]} with {used.get(key, '0')} in use")
                if not queued:
                    raise SpecError(f"{said}; ask for less or wait for other jobs to finish")
                waits.append(said)
    return "; ".join(waits)


def is_queued(trainjob: Mapping[str, Any]) -> bool:
    """Whether the job waits for Kueue: it has a queue and is still suspended."""
    labels = (trainjob.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(QUEUE_LABEL)) and bool((trainjob.get("spec") or {}).get("suspend"))


def _condition(workload: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in (workload.get("status") or {}).get("conditions") or []
                 if c.get("type") == kind), None)


def is_pending(workload: Mapping[str, Any]) -> bool:
    """Waiting in its queue: no quota reserved and not finished."""
    reserved, finished = _condition(workload, "QuotaReserved"), _condition(workload, "Finished")
    return not (reserved and reserved.get("status") == "True") and not (
        finished and finished.get("status") == "True")


def owner_uid(workload: Mapping[str, Any]) -> str:
    refs = (workload.get("metadata") or {}).get("ownerReferences") or []
    return next((r.get("uid", "") for r in refs if r.get("kind") == "TrainJob"), "")


def queue_order(workloads: Iterable[Mapping[str, Any]], queue: str) -> list[Mapping[str, Any]]:
    """The pending Workloads of LocalQueue `queue`, first to be admitted first."""
    def key(w: Mapping[str, Any]) -> tuple[int, float]:
        priority = int((w.get("spec") or {}).get("priority") or 0)
        created = _timestamp((w.get("metadata") or {}).get("creationTimestamp")) or 0.0
        return -priority, created

    return sorted((w for w in workloads if (w.get("spec") or {}).get("queueName") == queue
                   and is_pending(w)), key=key)


def queue_message(trainjob: Mapping[str, Any], workloads: Iterable[Mapping[str, Any]],
                  pending: Mapping[str, Any] | None = None) -> str:
    """"position N of M in <queue>; <Kueue's reason>" for a suspended TrainJob (its state is
    Queued). `pending` is the visibility API's PendingWorkloadsSummary of the job's LocalQueue
    (None: not served; the Workloads are ordered here)."""
    queue = ((trainjob.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL, "")
    uid = (trainjob.get("metadata") or {}).get("uid", "")
    workloads = list(workloads)
    if pending is not None:
        order = sorted(pending.get("items") or [],
                       key=lambda w: int(w.get("positionInLocalQueue") or 0))
    else:
        order = queue_order(workloads, queue)
    mine = next((i for i, w in enumerate(order) if owner_uid(w) == uid), None)
    if mine is None:
        return f"in {queue}, waiting for Kueue to take the job in"
    mine_workload = next((w for w in workloads if owner_uid(w) == uid), {})
    reserved = _condition(mine_workload, "QuotaReserved") or {}
    why = reserved.get("message") or "waiting for quota"
    return f"position {mine + 1} of {len(order)} in {queue}; {why}"


def never_fits(workload: Mapping[str, Any]) -> str:
    """Kueue's message when the job exceeds what its ClusterQueue (with all it may borrow) can
    ever hold, else ""."""
    reserved = _condition(workload, "QuotaReserved") or {}
    message = reserved.get("message") or ""
    return message if reserved.get("status") == "False" and "maximum capacity" in message else ""
