"""Pure pieces every cluster job kind builds its objects and reads its status from.

- `ClusterSettings`: where and as whom a job runs (namespace, image, the user's storage, uid/gid,
  node selector, node-loss toleration), from the hub's `NotebookContext` and the engine's config.
- Names and labels: `label_value`, `job_labels`; the job's own NetworkPolicy (`job_network`),
  which lets the pods of that job, and of no other, reach each other.
- The job's `--env` Secret: no value of the user's `--env` is written into a job object, which
  the tenant's other users may read. The values go into a Secret of the job (`env_secret`, named
  `<user>.<job-id>-env`, which the tenant's admission policy lets only this user create and only
  this user's jobs read); pods read them with `secretKeyRef` (`env_entries`). Once the job object
  exists it becomes the Secret's owner (`owned_by`), so the Secret goes with the job.
- A node's pod: `container_resources` (requests = limits), `storage_volume` (the user's claim at
  the notebook's path, so the job directory is shared), `pod_placement` (node selector, GPU
  and node-loss tolerations), `node_spread` (a job's pods over machines, where the kind's pod
  template can name its job).
- Reading pods: `timestamp`, `container_exit`, `node_state`, `ranks_of`,
  `with_rank_records` (each rank's own record in the shared job directory), and a node whose
  machine was lost (`machine_lost_at`, `with_lost_machine`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import JobSpec
from launcher_magic.core.status import JobState, JobStatus, NodeStatus, RankState, RankStatus
from workbench_contract.environment import Storage
from workbench_contract.job_network import job_network_policy
from workbench_contract.labels import (
    COMPONENT_JOB_WORKER,
    LABEL_COMPONENT,
    LABEL_JOB,
    LABEL_TENANT,
    LABEL_USER,
)
from workbench_contract.ownership import user_secret
from workbench_contract.placement import (
    DEFAULT_NODE_LOSS_TOLERATION,
    lost_machine_condition,
    node_loss_tolerations,
    spread_over_nodes,
)
from workbench_contract.pod_security import DEFAULT_GID, DEFAULT_UID
from workbench_contract.resources import GPU_RESOURCE


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how jobs run in the cluster: from the hub's `NotebookContext` (namespace, storage,
    uid/gid, node selector, node-loss toleration) and the engine's config (the rest)."""

    namespace: str
    image: str
    storage: Storage | None = None
    uid: int = DEFAULT_UID
    gid: int = DEFAULT_GID
    node_selector: Mapping[str, str] = field(default_factory=dict)
    python: str = "python"
    pod_annotations: Mapping[str, str] = field(default_factory=dict)
    # Seconds a job's pod stays on a lost node before it is evicted (the tenant's setting).
    node_loss_toleration: int = DEFAULT_NODE_LOSS_TOLERATION


def label_value(value: str) -> str:
    """A Kubernetes label value: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in value)[:63]
    return cleaned.strip("-_.") or "none"


def job_labels(spec: JobSpec) -> dict[str, str]:
    """The workbench's labels on a job object, its pods and its Secret."""
    labels = {LABEL_JOB: spec.job_id, LABEL_COMPONENT: COMPONENT_JOB_WORKER}
    if spec.tenant:
        labels[LABEL_TENANT] = label_value(spec.tenant)
    if spec.user:
        labels[LABEL_USER] = label_value(spec.user)
    return labels


def job_network(spec: JobSpec, namespace: str) -> dict[str, Any]:
    """The job's own NetworkPolicy (`workbench_contract.job_network`): its pods, which carry
    `job_labels`, reach each other."""
    return job_network_policy(spec.job_id, namespace, job_labels(spec))


def env_secret_name(spec: JobSpec) -> str:
    """The Secret holding the job's `--env` values: `<user>.<job-id>-env`. The API server lets a
    user create, and their jobs read, only Secrets that start with their user name and a dot
    (the tenant's admission policy); the user is the hub's label-safe name, which this keeps."""
    owner = re.sub(r"[^a-z0-9-]", "-", label_value(spec.user).lower()).strip("-")
    return user_secret(owner, f"{spec.job_id}-env") if spec.user and owner else f"{spec.job_id}-env"


def env_secret(spec: JobSpec, namespace: str) -> dict[str, Any] | None:
    """The Secret of the job's `--env` values, labelled like the job; None without `--env`."""
    if not spec.env:
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": env_secret_name(spec), "namespace": namespace,
                         "labels": job_labels(spec)},
            "stringData": dict(spec.env)}


def env_entries(spec: JobSpec, env: Mapping[str, str]) -> list[dict[str, Any]]:
    """A container's `env` for the variables `env`: the user's `--env` ones read from the job's
    Secret, the rest as values, in name order."""
    secret = env_secret_name(spec)
    return [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}}
            if k in spec.env else {"name": k, "value": v} for k, v in sorted(env.items())]


def owned_by(created: Mapping[str, Any]) -> dict[str, Any]:
    """A patch that makes the `created` job object the owner of another (its env Secret), so
    the garbage collector deletes that object with the job."""
    meta = created["metadata"]
    return {"metadata": {"ownerReferences": [{
        "apiVersion": created["apiVersion"], "kind": created["kind"], "name": meta["name"],
        "uid": meta["uid"]}]}}


def container_resources(spec: JobSpec) -> dict[str, dict[str, str]]:
    """Requests = limits of one node's container: the spec's CPU, memory and GPUs per node."""
    amounts: dict[str, str] = {}
    if spec.resources.cpu:
        amounts["cpu"] = spec.resources.cpu
    if spec.resources.memory:
        amounts["memory"] = spec.resources.memory
    if spec.resources.gpus_per_node:
        amounts[GPU_RESOURCE] = str(spec.resources.gpus_per_node)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def storage_volume(storage: Storage | None) -> tuple[list[dict], list[dict]]:
    """(the container's volumeMounts, the pod's volumes) for the user's claim at the notebook's
    path; both empty without storage."""
    if storage is None:
        return [], []
    mount = {"name": "home", "mountPath": storage.mount_path}
    if storage.sub_path:
        mount["subPath"] = storage.sub_path
    return [mount], [{"name": "home", "persistentVolumeClaim": {"claimName": storage.claim}}]


def pod_placement(spec: JobSpec, cluster: ClusterSettings) -> dict[str, Any]:
    """The pod spec's node selector and tolerations: the GPU nodes' for GPU jobs, and the
    node-loss taints' for `cluster.node_loss_toleration` seconds (`workbench_contract.placement`),
    so a job on a machine that died is evicted and restarted within that bound, not after
    Kubernetes' five minutes. Fields every kind's pod patch accepts (Trainer's included)."""
    placement: dict[str, Any] = {}
    if cluster.node_selector:
        placement["nodeSelector"] = dict(cluster.node_selector)
    tolerations = ([{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]
                   if spec.resources.gpus_per_node else [])
    placement["tolerations"] = tolerations + node_loss_tolerations(cluster.node_loss_toleration)
    return placement


def node_spread(spec: JobSpec) -> dict[str, Any]:
    """For a job of more than one node, the pod spec's spread of its pods (those labelled with
    its `LABEL_JOB`) over machines, one pod more on a machine than on another at most, as a
    preference: `whenUnsatisfiable: ScheduleAnyway`, so a user with one machine free still runs
    (why: `workbench_contract.placement`). {} for one node.

    For a kind whose pod template is the job's own (PaddleJob). A TrainJob's runtime patch
    cannot carry topologySpreadConstraints (Trainer v2.3.0's PodSpecPatch has no such field),
    so the Paddle runtime spreads every TrainJob's pods itself, by JobSet's per-job labels
    (deploy/k8s/trainer/paddle-runtime.yaml)."""
    if spec.nodes <= 1:
        return {}
    return {"topologySpreadConstraints": [spread_over_nodes({LABEL_JOB: spec.job_id})]}


# -- reading pods -------------------------------------------------------------------------------

PHASE_STATES = {
    "Pending": RankState.PENDING, "Running": RankState.RUNNING,
    "Succeeded": RankState.SUCCEEDED, "Failed": RankState.FAILED,
}


def timestamp(raw: Any) -> float | None:
    """Seconds since the epoch of an API timestamp (RFC 3339 text, a datetime or a number)."""
    if not raw:
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if hasattr(raw, "timestamp"):
        return raw.timestamp()
    return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()


def container_exit(pod: Mapping[str, Any], container: str) -> tuple[int | None, int]:
    """(the last exit code, the restart count) of the pod's container named `container`."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != container:
            continue
        terminated = ((status.get("state") or {}).get("terminated")
                      or (status.get("lastState") or {}).get("terminated") or {})
        return terminated.get("exitCode"), int(status.get("restartCount") or 0)
    return None, 0


def machine_lost_at(pod: Mapping[str, Any]) -> float | None:
    """When the pod's machine was found lost (its DisruptionTarget condition's time), or None
    (`placement.lost_machine_condition`)."""
    condition = lost_machine_condition(pod)
    if condition is None:
        return None
    return timestamp(condition.get("lastTransitionTime")) or 0.0


def node_state(pod: Mapping[str, Any], index: int, container: str) -> NodeStatus:
    """Node `index` as its pod says: the pod's phase, its container's exit code, the machine
    (Kubernetes node) it was scheduled to (None until it is) and when that machine was lost."""
    phase = (pod.get("status") or {}).get("phase", "Pending")
    return NodeStatus(node=index, state=PHASE_STATES.get(phase, RankState.PENDING),
                      exit_code=container_exit(pod, container)[0],
                      host=(pod.get("spec") or {}).get("nodeName") or None,
                      lost_at=machine_lost_at(pod))


def lost_machine_message(nodes: Iterable[NodeStatus]) -> str:
    """What a data scientist reads while a job's node has lost its machine ("" when none has):
    which node, which machine, when, and what happens next."""
    lost = [n for n in nodes if n.lost_at is not None]
    if not lost:
        return ""
    first = min(lost, key=lambda n: n.lost_at or 0.0)
    when = time.strftime("%H:%M:%S", time.localtime(first.lost_at)) if first.lost_at else ""
    return (f"node {first.node} lost its machine {first.host or '(unknown)'}"
            + (f" at {when}" if when else "") + ": it stopped answering, so the job restarts "
            "on the machines left, from its last checkpoint")


def with_lost_machine(status: JobStatus) -> JobStatus:
    """`status` restarting, in words, where a node of a running job has lost its machine (the
    kind's controller restarts the job once Kubernetes has removed the lost pod)."""
    message = lost_machine_message(status.nodes)
    if not message or status.state.is_terminal():
        return status
    return replace(status, state=JobState.RESTARTING, message=message)


def ranks_of(spec: JobSpec, nodes: tuple[NodeStatus, ...]) -> tuple[RankStatus, ...]:
    """Every rank, in the state of the node it runs on."""
    nproc = spec.resources.nproc_per_node
    return tuple(RankStatus(rank=r, node=r // nproc, state=nodes[r // nproc].state,
                            exit_code=nodes[r // nproc].exit_code, host=nodes[r // nproc].host)
                 for r in range(spec.world_size))


def pods_labelled(pods: Iterable[Mapping[str, Any]], label: str, value: str) -> list[dict]:
    """The pods whose label `label` is `value`."""
    return [dict(p) for p in pods
            if ((p.get("metadata") or {}).get("labels") or {}).get(label) == value]


def with_rank_records(status: JobStatus, job: JobDir, attempt: int) -> JobStatus:
    """Where the job directory is shared, each rank's own record of `attempt` is more precise
    than its pod."""
    records = job.read_rank_records(attempt)
    if not records:
        return status
    ranks = []
    for rank in status.ranks:
        record = records.get(rank.rank)
        if record:
            rank = replace(rank, state=RankState(record.get("state", rank.state)),
                           exit_code=record.get("exit_code", rank.exit_code),
                           error=record.get("error"))
        ranks.append(rank)
    return replace(status, ranks=tuple(ranks))
