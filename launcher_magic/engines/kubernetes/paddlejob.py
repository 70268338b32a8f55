"""Pure builders for the kubernetes engine: JobSpec -> PaddleJob, PaddleJob + pods -> JobStatus.

A job is a `kubeflow.org/v1 PaddleJob` in collective mode (Worker replicas = nodes). The
training-operator gives each worker pod `PADDLE_MASTER`, `PADDLE_NNODES`, `PADDLE_JOB_ID` and
`PYTHONUNBUFFERED`; every worker runs the same `paddle.distributed.launch <job dir>/main.py` as the
local engine, with the user's storage mounted at the notebook's path so the job directory is shared.

No value of the user's `--env` is written into the PaddleJob, which the tenant's other users may
read: they go into a Secret of the job (`env_secret`, named `<user>.<job-id>-env`, which the
tenant's admission policy lets only this user create and only this user's jobs read) and the
workers read them with `secretKeyRef`. After the PaddleJob is created it becomes the Secret's
owner (`owned_by`), so the Secret goes with the job.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from launcher_magic.core.commands import node_command
from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import JobSpec, SpecError
from launcher_magic.core.status import JobState, JobStatus, NodeStatus, RankState, RankStatus
from workbench_contract import environment as wbenv
from workbench_contract.environment import Storage
from workbench_contract.labels import (
    COMPONENT_JOB_WORKER,
    LABEL_COMPONENT,
    LABEL_JOB,
    LABEL_TENANT,
    LABEL_USER,
)
from workbench_contract.ownership import user_secret
from workbench_contract.pod_security import DEFAULT_GID, DEFAULT_UID, restricted_security_contexts
from workbench_contract.resources import GPU_RESOURCE, parse_quantity

GROUP, VERSION, PLURAL, KIND = "kubeflow.org", "v1", "paddlejobs", "PaddleJob"
CONTAINER = "paddle"  # the operator looks for a container of this name
GPU = GPU_RESOURCE
REPLICA_INDEX_LABEL = "training.kubeflow.org/replica-index"
JOB_NAME_LABEL = "training.kubeflow.org/job-name"

# The operator sets these itself; the spec must not carry its own copies.
OPERATOR_ENV = frozenset({"PADDLE_MASTER", "PADDLE_NNODES", "PADDLE_JOB_ID", "PYTHONUNBUFFERED"})


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how jobs run in the cluster: from the hub's `NotebookContext` (namespace, storage,
    uid/gid, node selector) and the engine's config (the rest)."""

    namespace: str
    image: str
    storage: Storage | None = None
    uid: int = DEFAULT_UID
    gid: int = DEFAULT_GID
    node_selector: Mapping[str, str] = field(default_factory=dict)
    ttl_seconds_after_finished: int = 86400
    clean_pod_policy: str = "Running"
    python: str = "python"
    pod_annotations: Mapping[str, str] = field(default_factory=dict)


def label_value(value: str) -> str:
    """A Kubernetes label value: at most 63 of [A-Za-z0-9-_.], alphanumeric at both ends."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "-" for c in value)[:63]
    return cleaned.strip("-_.") or "none"


def env_secret_name(spec: JobSpec) -> str:
    """The Secret holding the job's `--env` values: `<user>.<job-id>-env`. The API server lets a
    user create, and their jobs read, only Secrets that start with their user name and a dot
    (`hub_config.cli.admission`); the user is the hub's label-safe name, which this keeps."""
    owner = re.sub(r"[^a-z0-9-]", "-", label_value(spec.user).lower()).strip("-")
    return user_secret(owner, f"{spec.job_id}-env") if spec.user and owner else f"{spec.job_id}-env"


def env_secret(spec: JobSpec, cluster: ClusterSettings) -> dict[str, Any] | None:
    """The Secret of the job's `--env` values, labelled like the job; None without `--env`."""
    if not spec.env:
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": env_secret_name(spec), "namespace": cluster.namespace,
                         "labels": job_labels(spec)},
            "stringData": dict(spec.env)}


def owned_by(paddlejob: Mapping[str, Any]) -> dict[str, Any]:
    """A patch that makes the created `paddlejob` the owner of an object (its env Secret), so
    the garbage collector deletes the object with the job."""
    meta = paddlejob["metadata"]
    return {"metadata": {"ownerReferences": [{
        "apiVersion": paddlejob.get("apiVersion", f"{GROUP}/{VERSION}"),
        "kind": paddlejob.get("kind", KIND), "name": meta["name"], "uid": meta["uid"]}]}}


def job_labels(spec: JobSpec) -> dict[str, str]:
    labels = {LABEL_JOB: spec.job_id, LABEL_COMPONENT: COMPONENT_JOB_WORKER}
    if spec.tenant:
        labels[LABEL_TENANT] = label_value(spec.tenant)
    if spec.user:
        labels[LABEL_USER] = label_value(spec.user)
    return labels


def container_resources(spec: JobSpec) -> dict[str, dict[str, str]]:
    """Requests = limits of one node's container: the spec's CPU, memory and GPUs per node."""
    amounts: dict[str, str] = {}
    if spec.resources.cpu:
        amounts["cpu"] = spec.resources.cpu
    if spec.resources.memory:
        amounts["memory"] = spec.resources.memory
    if spec.resources.gpus_per_node:
        amounts[GPU] = str(spec.resources.gpus_per_node)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def build_paddlejob(spec: JobSpec, job: JobDir, cluster: ClusterSettings) -> dict[str, Any]:
    """The PaddleJob manifest for `spec`, whose job directory is `job` (same path in workers)."""
    node_ref = f"$({wbenv.NODE_RANK})"  # expanded by the kubelet from the env below
    devices = list(range(spec.resources.gpus_per_node))
    argv, env = node_command(spec, job, node=node_ref, attempt=0, master="",
                             python=cluster.python, devices=devices)
    secret = env_secret_name(spec)
    env_list = [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}}
                if k in spec.env else {"name": k, "value": v} for k, v in sorted(env.items())
                if k not in OPERATOR_ENV and k != wbenv.NODE_RANK]
    env_list.append({"name": wbenv.NODE_RANK, "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.labels['{REPLICA_INDEX_LABEL}']"}}})
    pod_security, container_security = restricted_security_contexts(cluster.uid, cluster.gid)
    labels = job_labels(spec)

    container: dict[str, Any] = {
        "name": CONTAINER, "image": cluster.image, "imagePullPolicy": "IfNotPresent",
        "command": argv, "env": env_list, "workingDir": str(job.path),
        "securityContext": container_security,
    }
    resources = container_resources(spec)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security,
        # Workers do not talk to the API server; they get no token.
        "automountServiceAccountToken": False,
        "containers": [container],
    }
    if cluster.storage is not None:
        mount = {"name": "home", "mountPath": cluster.storage.mount_path}
        if cluster.storage.sub_path:
            mount["subPath"] = cluster.storage.sub_path
        container["volumeMounts"] = [mount]
        pod_spec["volumes"] = [
            {"name": "home", "persistentVolumeClaim": {"claimName": cluster.storage.claim}}
        ]
    if cluster.node_selector:
        pod_spec["nodeSelector"] = dict(cluster.node_selector)
    if spec.resources.gpus_per_node:
        pod_spec["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]

    run_policy: dict[str, Any] = {
        "cleanPodPolicy": cluster.clean_pod_policy,
        "ttlSecondsAfterFinished": cluster.ttl_seconds_after_finished,
        "backoffLimit": spec.max_restarts,
    }
    if spec.timeout_seconds:
        run_policy["activeDeadlineSeconds"] = spec.timeout_seconds
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": spec.job_id, "namespace": cluster.namespace, "labels": labels},
        "spec": {
            "runPolicy": run_policy,
            "paddleReplicaSpecs": {
                "Worker": {
                    "replicas": spec.nodes,
                    # Exit codes 128-255 (killed: evicted, node lost, OOM) restart the pod;
                    # 1-127 (the training code failed) fail it.
                    "restartPolicy": "ExitCode",
                    "template": {
                        "metadata": {"labels": labels,
                                     **({"annotations": dict(cluster.pod_annotations)}
                                        if cluster.pod_annotations else {})},
                        "spec": pod_spec,
                    },
                }
            },
        },
    }


# -- quota ------------------------------------------------------------------------------------

def _quantity(raw: Any) -> Decimal:
    return parse_quantity(str(raw))


def check_quota(spec: JobSpec, quotas: Iterable[Mapping[str, Any]]) -> None:
    """Refuse a job that the namespace's ResourceQuotas cannot fit, before anything is created.

    Raises:
        SpecError: naming the quota, what the job needs and what is left.
    """
    gpus = spec.nodes * spec.resources.gpus_per_node
    needs: dict[str, tuple[Decimal, str]] = {
        f"requests.{GPU}": (Decimal(gpus), f"{gpus} GPUs ({spec.nodes} nodes x "
                                           f"{spec.resources.gpus_per_node})"),
        f"count/{PLURAL}.{GROUP}": (Decimal(1), "1 more PaddleJob"),
        "pods": (Decimal(spec.nodes), f"{spec.nodes} pods"),
        "count/pods": (Decimal(spec.nodes), f"{spec.nodes} pods"),
    }
    for resource, raw in (("cpu", spec.resources.cpu), ("memory", spec.resources.memory)):
        if raw:
            total = _quantity(raw) * spec.nodes
            needs[f"requests.{resource}"] = (total, f"{spec.nodes} x {raw} {resource}")
            needs[f"limits.{resource}"] = (total, f"{spec.nodes} x {raw} {resource}")
    for quota in quotas:
        name = quota.get("metadata", {}).get("name", "?")
        status = quota.get("status") or {}
        hard, used = status.get("hard") or {}, status.get("used") or {}
        for key, (need, what) in needs.items():
            if key not in hard or need == 0:
                continue
            left = _quantity(hard[key]) - _quantity(used.get(key, "0"))
            if need > left:
                raise SpecError(
                    f"the job needs {what}, but your tenant's quota {name!r} has "
                    f"{key}={hard[key]} with {used.get(key, '0')} in use; ask for less or "
                    "wait for other jobs to finish"
                )


# -- status -----------------------------------------------------------------------------------

_CONDITION_STATES = {
    "Created": JobState.PENDING, "Running": JobState.RUNNING, "Restarting": JobState.RESTARTING,
    "Succeeded": JobState.SUCCEEDED, "Failed": JobState.FAILED, "Suspended": JobState.STOPPED,
}
_PHASE_STATES = {
    "Pending": RankState.PENDING, "Running": RankState.RUNNING,
    "Succeeded": RankState.SUCCEEDED, "Failed": RankState.FAILED,
}


def _timestamp(raw: Any) -> float | None:
    if not raw:
        return None
    if isinstance(raw, int | float):
        return float(raw)
    if hasattr(raw, "timestamp"):
        return raw.timestamp()
    from datetime import datetime

    return datetime.fromisoformat(str(raw).replace("Z", "+00:00")).timestamp()


def _exit_code(pod: Mapping[str, Any]) -> tuple[int | None, int]:
    """The paddle container's last exit code and its restart count."""
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") != CONTAINER:
            continue
        state = status.get("state") or {}
        last = status.get("lastState") or {}
        terminated = state.get("terminated") or last.get("terminated") or {}
        return terminated.get("exitCode"), int(status.get("restartCount") or 0)
    return None, 0


_EXIT_EVENT = re.compile(r"Pod: [^.\s]+\.(?P<pod>\S+) exited with code (?P<code>-?\d+)")


def exits_from_events(job_id: str, events: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    """Worker index -> its latest exit code, from the operator's `ExitedWithCode` events on the
    PaddleJob, ordered by when that exit happened.

    When a job fails for good the operator deletes its pods at once; its events still say which
    worker exited and how.
    """
    exits: dict[int, int] = {}
    prefix = f"{job_id}-worker-"
    for event in sorted(events, key=lambda e: _timestamp(e.get("lastTimestamp")) or 0):
        match = _EXIT_EVENT.search(event.get("message") or "")
        if event.get("reason") == "ExitedWithCode" and match:
            pod = match.group("pod")
            if pod.startswith(prefix) and pod[len(prefix):].isdigit():
                index = int(pod[len(prefix):])
                exits.pop(index, None)  # keep the latest exit, in time order
                exits[index] = int(match.group("code"))
    return exits


def restarts_from_events(nodes: int, events: Iterable[Mapping[str, Any]]) -> int:
    """How many worker pods the operator made beyond the first `nodes`: each is a restart.

    Counted from its `SuccessfulCreatePod` events (a repeated event carries a count), since a
    restarted worker is a new pod whose restart count starts again at 0.
    """
    created = sum(int(e.get("count") or 1) for e in events
                  if e.get("reason") == "SuccessfulCreatePod")
    return max(0, created - nodes)


def status_from_cluster(spec: JobSpec, paddlejob: Mapping[str, Any] | None,
                        pods: Iterable[Mapping[str, Any]],
                        events: Iterable[Mapping[str, Any]] = ()) -> JobStatus:
    """The JobStatus that a PaddleJob (None: not found), its worker pods and the events on the
    PaddleJob amount to. Events matter because the operator deletes the pods of a restarted or
    failed job at once: they keep the exit codes and the restart count."""
    events = list(events)
    exits = exits_from_events(spec.job_id, events)
    nodes = {
        index: NodeStatus(node=index, state=RankState.SUCCEEDED if code == 0 else
                          RankState.FAILED, exit_code=code)
        for index, code in exits.items()
    }
    restarts = restarts_from_events(spec.nodes, events)
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        try:
            index = int(labels.get(REPLICA_INDEX_LABEL, ""))
        except ValueError:
            continue
        code, pod_restarts = _exit_code(pod)
        restarts = max(restarts, pod_restarts)
        phase = (pod.get("status") or {}).get("phase", "Pending")
        nodes[index] = NodeStatus(node=index, state=_PHASE_STATES.get(phase, RankState.PENDING),
                                  exit_code=code)
    node_list = tuple(nodes.get(n, NodeStatus(node=n)) for n in range(spec.nodes))
    nproc = spec.resources.nproc_per_node
    ranks = tuple(
        RankStatus(rank=r, node=r // nproc, state=node_list[r // nproc].state,
                   exit_code=node_list[r // nproc].exit_code)
        for r in range(spec.world_size)
    )
    # The first worker to exit non-zero (events are in time order), else any failed pod.
    failed = [i for i, code in exits.items() if code != 0]
    failed += [n.node for n in node_list if n.state == RankState.FAILED]
    failed_rank = failed[0] * nproc if failed else None

    state, message, started, finished = JobState.PENDING, "waiting for the operator", None, None
    if paddlejob is not None:
        job_status = paddlejob.get("status") or {}
        conditions = [c for c in job_status.get("conditions") or [] if c.get("status") == "True"]
        if conditions:
            # Timestamps have one-second resolution; on a tie the later entry is the newer.
            latest = max(enumerate(conditions), key=lambda ic: (
                _timestamp(ic[1].get("lastTransitionTime")) or 0, ic[0]))[1]
            state = _CONDITION_STATES.get(latest.get("type"), JobState.PENDING)
            message = latest.get("message") or latest.get("reason") or ""
        started = _timestamp(job_status.get("startTime"))
        finished = _timestamp(job_status.get("completionTime"))
        if state.is_terminal() and finished is None:
            finished = _timestamp(latest.get("lastTransitionTime"))
    return JobStatus(job_id=spec.job_id, state=state, message=message, restarts=restarts,
                     nodes=node_list, ranks=ranks, failed_rank=failed_rank,
                     started_at=started, finished_at=finished)
