"""Where workbench pods run, and how long they stay on a machine that has stopped answering.

Notebook pods (the hub's spawner) and job pods (the notebook side's cluster engine) both take
their node-loss tolerations from here, and the job kinds their spread over machines, so the two
sides cannot drift apart. Standard library only: the notebook side imports this inside images.

**Node loss.** When a node stops reporting, the node lifecycle controller marks it NotReady or
Unknown after its `--node-monitor-grace-period` (40-50 s on most clusters) and taints it
`node.kubernetes.io/not-ready` or `unreachable` with effect NoExecute. A pod that names no
toleration for those taints is given one of 300 s by the API server (the DefaultTolerationSeconds
admission plugin), so a job or notebook on a dead machine would wait five minutes before anything
replaced it. Workbench pods name their own, with the tenant's `node_loss_toleration` (30 s by
default): about 80 s from power-off to eviction. Eviction only marks a pod for deletion: with no
kubelet left to confirm, it stays Terminating until the node comes back or an operator taints the
node `node.kubernetes.io/out-of-service` (Kubernetes' non-graceful node shutdown). Both sides read
a lost machine off the pod the same way (`lost_machine_condition`): a job restarts from its
checkpoint, and the hub calls a notebook server on a lost machine stopped.

**Spread.** `--nodes 2` means two machines: a job's pods are spread over nodes (`kubernetes.io/
hostname`) with `whenUnsatisfiable: ScheduleAnyway`. DoNotSchedule would keep a pod Pending
whenever placing it would put two of the job's pods on one machine while a busy node (one with no
room, which still counts as a domain) holds none: a user with one free machine could not run a
2-node job at all. ScheduleAnyway makes spreading the scheduler's strong preference instead, so
the job runs spread where machines are free and packed where they are not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

HOSTNAME_KEY = "kubernetes.io/hostname"
# The taints the node lifecycle controller puts on a node it has lost (NoExecute).
NODE_LOSS_TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
# Seconds a pod stays bound to a lost node before it is evicted: the tenants file's
# `node_loss_toleration`, and what a notebook told nothing by the hub uses.
DEFAULT_NODE_LOSS_TOLERATION = 30
# More than an hour is most likely a unit mistake (milliseconds); Kubernetes' own default is 300.
MAX_NODE_LOSS_TOLERATION = 3600
# The DisruptionTarget reasons that mean a pod's machine is gone: the taint eviction controller
# evicts pods from a node that stopped answering once their node-loss toleration has passed; the
# pod garbage collector removes them from a node taken out of service or deleted.
LOST_MACHINE_REASONS = ("DeletionByTaintManager", "DeletionByPodGC")


def node_loss_tolerations(seconds: int,
                          existing: Iterable[Mapping[str, Any]] = ()) -> list[dict[str, Any]]:
    """Tolerations of the node-loss taints for `seconds` (NoExecute, so the pod is evicted once
    they have passed), but for a taint one of the `existing` tolerations already names: an
    operator's own toleration of it (a profile's) is kept as the operator wrote it.

    Raises:
        ValueError: `seconds` is negative.
    """
    if seconds < 0:
        raise ValueError(f"a toleration time must not be negative, got {seconds}")
    named = {t.get("key") for t in existing}
    return [{"key": taint, "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": seconds} for taint in NODE_LOSS_TAINTS if taint not in named]


def lost_machine_condition(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The condition that says the pod's machine was lost (`pod` as the API server's JSON), or
    None: a pod evicted or removed for another reason (preempted, drained, deleted by a user)
    has not lost its machine."""
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if (condition.get("type") == "DisruptionTarget" and condition.get("status") == "True"
                and condition.get("reason") in LOST_MACHINE_REASONS):
            return condition
    return None


def spread_over_nodes(selector: Mapping[str, str],
                      match_label_keys: Iterable[str] = ()) -> dict[str, Any]:
    """A topology spread constraint that spreads the pods labelled `selector` over nodes, at
    most one more on any node than on another, as a preference (see the module docstring for
    why not a requirement). `match_label_keys`: where a template cannot name its job (a runtime
    shared by every job), the pod's own values of these labels narrow the selection to its job;
    the API server refuses a key that is in both."""
    keys = list(match_label_keys)
    return {"maxSkew": 1, "topologyKey": HOSTNAME_KEY, "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": dict(selector)},
            **({"matchLabelKeys": keys} if keys else {})}
