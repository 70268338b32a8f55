"""The PaddleJob kind: a job is a `kubeflow.org/v1 PaddleJob` (training-operator v1).

Collective mode: Worker replicas = nodes, no Master. The training-operator gives each worker pod
`PADDLE_MASTER`, `PADDLE_NNODES`, `PADDLE_JOB_ID` and `PYTHONUNBUFFERED`; every worker runs the
same `paddle.distributed.launch <job dir>/main.py` as the local engine, with the user's storage
mounted at the notebook's path so the job directory is shared, and the workers spread over
machines (`objects.node_spread`). The operator restarts a worker killed by a signal
(`restartPolicy: ExitCode`, exit codes 128 and up) and deletes a failed job's pods at once; its
`ExitedWithCode` and `SuccessfulCreatePod` events on the PaddleJob keep the exit codes and the
restart count, so the adapter reads them too (`watch_events`).

The builders and the status mapping are pure; `PaddleJobAdapter` hands them to the cluster engine.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from traitlets import Int, Unicode

from launcher_magic.core.commands import node_command
from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import JobSpec
from launcher_magic.core.status import JobState, JobStatus, NodeStatus, RankState
from launcher_magic.engines.base import UsageRecord
from launcher_magic.engines.cluster.adapter import JobKindAdapter, Observed
from launcher_magic.engines.cluster.objects import (
    ClusterSettings,
    container_exit,
    container_resources,
    env_entries,
    job_labels,
    node_spread,
    node_state,
    pod_placement,
    ranks_of,
    storage_volume,
    timestamp,
    with_lost_machine,
)
from workbench_contract import environment as wbenv
from workbench_contract.cluster import (
    PADDLEJOB,
    PADDLEJOB_NAME_LABEL,
    PADDLEJOB_REPLICA_INDEX_LABEL,
)
from workbench_contract.jobkinds import PADDLEJOB as PADDLEJOB_KIND
from workbench_contract.labels import LABEL_JOB, LABEL_TENANT, LABEL_USER
from workbench_contract.pod_security import restricted_security_contexts
from workbench_contract.resources import GPU_RESOURCE, parse_quantity

CONTAINER = "paddle"  # the operator looks for a container of this name

# The operator sets these itself; the spec must not carry its own copies.
OPERATOR_ENV = frozenset({"PADDLE_MASTER", "PADDLE_NNODES", "PADDLE_JOB_ID", "PYTHONUNBUFFERED"})


def build_paddlejob(spec: JobSpec, job: JobDir, cluster: ClusterSettings, *,
                    clean_pod_policy: str = "Running",
                    ttl_seconds_after_finished: int = 86400) -> dict[str, Any]:
    """The PaddleJob manifest for `spec`, whose job directory is `job` (same path in workers)."""
    node_ref = f"$({wbenv.NODE_RANK})"  # expanded by the kubelet from the env below
    argv, env = node_command(spec, job, node=node_ref, attempt=0, master="",
                             python=cluster.python,
                             devices=list(range(spec.resources.gpus_per_node)))
    env_list = env_entries(spec, {k: v for k, v in env.items()
                                  if k not in OPERATOR_ENV and k != wbenv.NODE_RANK})
    env_list.append({"name": wbenv.NODE_RANK, "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.labels['{PADDLEJOB_REPLICA_INDEX_LABEL}']"}}})
    pod_security, container_security = restricted_security_contexts(cluster.uid, cluster.gid)
    mounts, volumes = storage_volume(cluster.storage)
    container: dict[str, Any] = {
        "name": CONTAINER, "image": cluster.image, "imagePullPolicy": "IfNotPresent",
        "command": argv, "env": env_list, "workingDir": str(job.path),
        "securityContext": container_security,
        **({"resources": container_resources(spec)} if container_resources(spec) else {}),
        **({"volumeMounts": mounts} if mounts else {}),
    }
    pod_spec: dict[str, Any] = {
        "securityContext": pod_security,
        # Workers do not talk to the API server; they get no token.
        "automountServiceAccountToken": False,
        "containers": [container],
        **({"volumes": volumes} if volumes else {}),
        **pod_placement(spec, cluster),
        **node_spread(spec),
    }
    run_policy: dict[str, Any] = {"cleanPodPolicy": clean_pod_policy,
                                  "ttlSecondsAfterFinished": ttl_seconds_after_finished,
                                  "backoffLimit": spec.max_restarts}
    if spec.timeout_seconds:
        run_policy["activeDeadlineSeconds"] = spec.timeout_seconds
    labels = job_labels(spec)
    pod_metadata: dict[str, Any] = {"labels": labels}
    if cluster.pod_annotations:
        pod_metadata["annotations"] = dict(cluster.pod_annotations)
    return {
        "apiVersion": PADDLEJOB.api_version, "kind": PADDLEJOB.kind,
        "metadata": {"name": spec.job_id, "namespace": cluster.namespace, "labels": labels},
        "spec": {"runPolicy": run_policy, "paddleReplicaSpecs": {"Worker": {
            "replicas": spec.nodes,
            # Exit codes 128-255 (killed: evicted, node lost, OOM) restart the pod;
            # 1-127 (the training code failed) fail it.
            "restartPolicy": "ExitCode",
            "template": {"metadata": pod_metadata, "spec": pod_spec}}}},
    }


# -- status -------------------------------------------------------------------------------------

_CONDITION_STATES = {
    "Created": JobState.PENDING, "Running": JobState.RUNNING, "Restarting": JobState.RESTARTING,
    "Succeeded": JobState.SUCCEEDED, "Failed": JobState.FAILED, "Suspended": JobState.STOPPED,
}
_EXIT_EVENT = re.compile(r"Pod: [^.\s]+\.(?P<pod>\S+) exited with code (?P<code>-?\d+)")


def exits_from_events(job_id: str, events: Iterable[Mapping[str, Any]]) -> dict[int, int]:
    """Worker index -> its latest exit code, from the operator's `ExitedWithCode` events on the
    PaddleJob, ordered by when that exit happened.

    When a job fails for good the operator deletes its pods at once; its events still say which
    worker exited and how.
    """
    exits: dict[int, int] = {}
    prefix = f"{job_id}-worker-"
    for event in sorted(events, key=lambda e: timestamp(e.get("lastTimestamp")) or 0):
        match = _EXIT_EVENT.search(event.get("message") or "")
        if event.get("reason") == "ExitedWithCode" and match:
            pod = match.group("pod")
            if pod.startswith(prefix) and pod[len(prefix):].isdigit():
                index = int(pod[len(prefix):])
                exits.pop(index, None)  # keep the latest exit, in time order
                exits[index] = int(match.group("code"))
    return exits


def restarts_from_events(events: Iterable[Mapping[str, Any]]) -> int:
    """How many times the operator restarted the job, from its `SuccessfulCreatePod` events (a
    repeated event carries a count): a restarted worker is a new pod of the same name, whose
    restart count starts again at 0, so the worker made most often says it. A restart of the
    whole job (every worker made again, as after a lost machine) counts once, as a TrainJob's
    does.
    """
    made: Counter[str] = Counter()
    for event in events:
        if event.get("reason") == "SuccessfulCreatePod":
            made[event.get("message") or ""] += int(event.get("count") or 1)
    return max(0, max(made.values(), default=0) - 1)


def _condition_state(paddlejob: Mapping[str, Any]) -> tuple[JobState, str, float | None]:
    """(state, message, when it ended) from the PaddleJob's newest true condition."""
    conditions = [c for c in (paddlejob.get("status") or {}).get("conditions") or []
                  if c.get("status") == "True"]
    if not conditions:
        return JobState.PENDING, "waiting for the operator", None
    # Timestamps have one-second resolution; on a tie the later entry is the newer.
    latest = max(enumerate(conditions), key=lambda ic: (
        timestamp(ic[1].get("lastTransitionTime")) or 0, ic[0]))[1]
    state = _CONDITION_STATES.get(latest.get("type"), JobState.PENDING)
    ended = timestamp(latest.get("lastTransitionTime")) if state.is_terminal() else None
    return state, latest.get("message") or latest.get("reason") or "", ended


def status_from_paddlejob(spec: JobSpec, paddlejob: Mapping[str, Any] | None,
                          pods: Iterable[Mapping[str, Any]],
                          events: Iterable[Mapping[str, Any]] = ()) -> JobStatus:
    """The JobStatus that a PaddleJob (None: not found), its worker pods and the events on the
    PaddleJob amount to. Events matter because the operator deletes the pods of a restarted or
    failed job at once: they keep the exit codes and the restart count."""
    events = list(events)
    exits = exits_from_events(spec.job_id, events)
    nodes = {index: NodeStatus(node=index, state=RankState.SUCCEEDED if code == 0
                               else RankState.FAILED, exit_code=code)
             for index, code in exits.items()}
    restarts = restarts_from_events(events)
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        try:
            index = int(labels.get(PADDLEJOB_REPLICA_INDEX_LABEL, ""))
        except ValueError:
            continue
        restarts = max(restarts, container_exit(pod, CONTAINER)[1])
        nodes[index] = node_state(pod, index, CONTAINER)
    node_list = tuple(nodes.get(n, NodeStatus(node=n)) for n in range(spec.nodes))
    # The first worker to exit non-zero (events are in time order), else any failed pod.
    failed = [i for i, code in exits.items() if code != 0]
    failed += [n.node for n in node_list if n.state == RankState.FAILED]
    state, message, started, finished = JobState.PENDING, "waiting for the operator", None, None
    if paddlejob is not None:
        state, message, ended = _condition_state(paddlejob)
        started = timestamp((paddlejob.get("status") or {}).get("startTime"))
        finished = timestamp((paddlejob.get("status") or {}).get("completionTime")) or ended
    return with_lost_machine(JobStatus(
        job_id=spec.job_id, state=state, message=message, restarts=restarts, nodes=node_list,
        ranks=ranks_of(spec, node_list),
        failed_rank=failed[0] * spec.resources.nproc_per_node if failed else None,
        started_at=started, finished_at=finished))


def usage_from_paddlejob(paddlejob: Mapping[str, Any]) -> UsageRecord:
    """What a PaddleJob of the workbench held: its Worker replicas, the GPU limit of their
    container, and its start and end as the operator (or its deletion) recorded them."""
    metadata = paddlejob.get("metadata") or {}
    labels = metadata.get("labels") or {}
    worker = ((paddlejob.get("spec") or {}).get("paddleReplicaSpecs") or {}).get("Worker") or {}
    containers = (((worker.get("template") or {}).get("spec") or {}).get("containers") or [])
    limits = next((((c.get("resources") or {}).get("limits") or {}) for c in containers
                   if c.get("name") == CONTAINER), {})
    status = paddlejob.get("status") or {}
    finished = timestamp(status.get("completionTime"))
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            finished = finished or timestamp(condition.get("lastTransitionTime"))
    # A stopped job is deleted: it held its nodes until then.
    finished = finished or timestamp(metadata.get("deletionTimestamp"))
    return UsageRecord(
        job_id=labels.get(LABEL_JOB) or metadata.get("name", ""),
        user=labels.get(LABEL_USER, ""), tenant=labels.get(LABEL_TENANT),
        nodes=int(worker.get("replicas") or 1),
        gpus_per_node=int(parse_quantity(str(limits.get(GPU_RESOURCE, "0")))),
        started_at=timestamp(status.get("startTime")), finished_at=finished)


class PaddleJobAdapter(JobKindAdapter):
    """PaddleJobs (see the module docstring)."""

    kind = PADDLEJOB_KIND
    container = CONTAINER
    pod_job_label = PADDLEJOB_NAME_LABEL
    delete_propagation = "Foreground"
    watch_events = True

    ttl_seconds_after_finished = Int(
        86400, help="Seconds a finished PaddleJob (and its pods' logs) is kept."
    ).tag(config=True)
    clean_pod_policy = Unicode(
        "Running", help="PaddleJob cleanPodPolicy: which pods go when the job ends."
    ).tag(config=True)

    def build(self, spec: JobSpec, job: JobDir, cluster: ClusterSettings,
              queue: str = "") -> dict[str, Any]:
        return build_paddlejob(spec, job, cluster, clean_pod_policy=self.clean_pod_policy,
                               ttl_seconds_after_finished=self.ttl_seconds_after_finished)

    def status(self, spec: JobSpec, seen: Observed) -> JobStatus:
        return status_from_paddlejob(spec, seen.job, seen.pods, seen.events)

    def attempt(self, status: JobStatus) -> int:
        # The operator restarts a worker with the same command: every attempt records as 0.
        return 0

    def rank_pod(self, spec: JobSpec, rank: int, pods: Callable[[], list[dict]]) -> str | None:
        # The operator names worker pods by their index, and a restarted one keeps its name.
        return f"{spec.job_id}-worker-{rank // spec.resources.nproc_per_node}"

    def usage(self, job_object: Mapping[str, Any]) -> UsageRecord:
        return usage_from_paddlejob(job_object)
