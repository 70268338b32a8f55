"""Jobs queued by Kueue: where a queued job stands in its tenant's queue, and why.

Where the tenant's namespace holds the workbench's LocalQueue (`workbench apply` makes it when
the tenant has a `queue`), a job of a queued kind carries the queue label and starts suspended;
Kueue makes one `Workload` for it (owned by it) and resumes it once the tenant's ClusterQueue
admits it. While the Workload waits, its `QuotaReserved` condition is False and says why (the
flavor and resource that is short, or that the request exceeds what the ClusterQueue can ever
reach).

The position comes from Kueue's visibility API where the cluster serves it: the LocalQueue's
`pendingworkloads` (an aggregated API), Kueue's own order with each workload's
`positionInLocalQueue`, readable with a namespace Role. Where it is not served (no APIService,
or Kueue's VisibilityOnDemand gate off) the tenant's Workloads are put in the order of the
LocalQueue's BestEffortFIFO: higher priority first, then older first.

The queue cannot be watched (the visibility API has no watch, and a notebook may not watch
Workloads), so `TenantQueue` reads it at most once per `refresh_seconds` per namespace, one
read shared by all of the kernel's queued jobs there, and not at all while none is queued.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from launcher_magic.engines.base import EngineError
from launcher_magic.engines.cluster.api import ClusterApi
from launcher_magic.engines.cluster.informer import SharedRead
from launcher_magic.engines.cluster.objects import timestamp
from workbench_contract.cluster import (
    LOCALQUEUE,
    QUEUE_LABEL,
    WORKLOAD,
    pending_workloads_path,
)


def is_queued(job: Mapping[str, Any]) -> bool:
    """Whether the job waits for Kueue: it has a queue and is still suspended."""
    labels = (job.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(QUEUE_LABEL)) and bool((job.get("spec") or {}).get("suspend"))


def _condition(workload: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in (workload.get("status") or {}).get("conditions") or []
                 if c.get("type") == kind), None)


def is_pending(workload: Mapping[str, Any]) -> bool:
    """Waiting in its queue: no quota reserved and not finished."""
    reserved, finished = _condition(workload, "QuotaReserved"), _condition(workload, "Finished")
    return not (reserved and reserved.get("status") == "True") and not (
        finished and finished.get("status") == "True")


def owner_uid(workload: Mapping[str, Any]) -> str:
    """The uid of the job object that owns the Workload ("" when none does)."""
    refs = (workload.get("metadata") or {}).get("ownerReferences") or []
    return next((r.get("uid", "") for r in refs if r.get("controller", True)), "")


def queue_order(workloads: Iterable[Mapping[str, Any]], queue: str) -> list[Mapping[str, Any]]:
    """The pending Workloads of LocalQueue `queue`, first to be admitted first."""
    def key(w: Mapping[str, Any]) -> tuple[int, float]:
        priority = int((w.get("spec") or {}).get("priority") or 0)
        created = timestamp((w.get("metadata") or {}).get("creationTimestamp")) or 0.0
        return -priority, created

    return sorted((w for w in workloads if (w.get("spec") or {}).get("queueName") == queue
                   and is_pending(w)), key=key)


def queue_message(job: Mapping[str, Any], workloads: Iterable[Mapping[str, Any]],
                  pending: Mapping[str, Any] | None = None) -> str:
    """"position N of M in <queue>; <Kueue's reason>" for a suspended job (its state is
    Queued). `pending` is the visibility API's PendingWorkloadsSummary of the job's LocalQueue
    (None: not served; the Workloads are ordered here)."""
    queue = ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL, "")
    uid = (job.get("metadata") or {}).get("uid", "")
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


class TenantQueue:
    """The tenant's queue as one kernel sees it: whether a namespace has it, and where each of
    the kernel's queued jobs stands in it.

    Args:
        api: the engine's API access.
        queue: the LocalQueue's name ("": never queue).
        refresh_seconds: the least time between two reads of one namespace's queue.
    """

    def __init__(self, api: ClusterApi, queue: str, refresh_seconds: float,
                 log: logging.Logger):
        self.api, self.queue, self.refresh_seconds, self.log = api, queue, refresh_seconds, log
        self._found: dict[str, bool] = {}
        self._reads: dict[tuple[str, str], SharedRead] = {}
        self._visibility_served = True  # until a 404 says Kueue's visibility API is not
        self._lock = threading.Lock()

    @property
    def reads(self) -> int:
        """How many times the queue was read, all namespaces together (tests, benchmarks)."""
        with self._lock:
            return sum(shared.reads for shared in self._reads.values())

    def name_in(self, namespace: str) -> str:
        """The tenant's LocalQueue when the namespace has it, else "" (not queued)."""
        if not self.queue:
            return ""
        if namespace not in self._found:
            found = self.api.call(
                f"reading the LocalQueue {self.queue} of namespace {namespace}",
                self.api.custom.get_namespaced_custom_object, LOCALQUEUE.group,
                LOCALQUEUE.version, namespace, LOCALQUEUE.plural, self.queue, missing_ok=True)
            self._found[namespace] = found is not None
        return self.queue if self._found[namespace] else ""

    def standing(self, namespace: str, job: Mapping[str, Any]) -> tuple[str, str]:
        """("position N of M in <queue>; <Kueue's reason>", Kueue's refusal or "") of a
        queued job object in `namespace`."""
        queue = ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL, "")
        with self._lock:
            shared = self._reads.get((namespace, queue))
            if shared is None:
                shared = SharedRead(lambda: self._read(namespace, queue), self.refresh_seconds)
                self._reads[(namespace, queue)] = shared
        workloads, pending = shared.get()
        if workloads is None:
            return "waiting for the tenant's queue to admit it", ""
        uid = (job.get("metadata") or {}).get("uid", "")
        mine = [w for w in workloads if owner_uid(w) == uid]
        refusal = never_fits(mine[0]) if mine else ""
        return queue_message(job, workloads, pending), refusal

    def _read(self, namespace: str, queue: str) -> tuple[list | None, dict | None]:
        """(the namespace's Workloads, the LocalQueue's pending workloads from the visibility
        API or None); (None, None) when the Workloads could not be read."""
        try:
            listed = self.api.call(f"listing the Workloads of namespace {namespace}",
                                   self.api.custom.list_namespaced_custom_object,
                                   WORKLOAD.group, WORKLOAD.version, namespace, WORKLOAD.plural)
        except EngineError as err:
            self.log.debug("Cannot read the queue: %s", err)
            return None, None
        return listed.get("items") or [], self._pending(namespace, queue)

    def _pending(self, namespace: str, queue: str) -> dict | None:
        """The LocalQueue's pending workloads from Kueue's visibility API, in Kueue's order;
        None where the cluster does not serve it (404: asked once) or did not answer this time
        (the Workloads are ordered instead)."""
        if not self._visibility_served:
            return None
        try:
            summary = self.api.call(f"reading the pending workloads of LocalQueue {queue}",
                                    self.api.get_path, pending_workloads_path(namespace, queue),
                                    missing_ok=True)
        except EngineError as err:  # e.g. 503 while Kueue restarts: ordered here this time
            self.log.debug("Kueue's visibility API: %s", err)
            return None
        if summary is None:
            self.log.info("Kueue's visibility API is not served here: ordering the tenant's "
                          "Workloads instead")
            self._visibility_served = False
        return summary
