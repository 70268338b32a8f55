"""Pure builders for the trainjob engine: JobSpec -> TrainJob, TrainJob + pods -> JobStatus.

A job is a Kubeflow Trainer v2 `trainer.kubeflow.org/v1alpha1 TrainJob` that names the
workbench's Paddle `ClusterTrainingRuntime` (deploy/k8s/trainer/paddle-runtime.yaml). The
runtime fixes what every Paddle job shares: `python -m paddle.distributed.launch` with the
master at node 0's stable DNS name, the rank from the pod's completion index, the attempt from
JobSet's restart counter, restricted security contexts and whole-job restarts. The TrainJob adds
this job's part:

- `spec.trainer`: the image, the number of nodes, the resources per node, the launcher's
  arguments (log dir, processes per node, devices, the script in the job directory) and the
  environment (`PADDLE_NNODES`, the workbench's paths, the user's `--env` by `secretKeyRef` from
  the job's Secret, as the paddlejob engine does);
- a runtime patch (manager `workbench.paddle.org/trainjob-engine`) with the workbench's labels on
  the JobSet and its pods, the user's uid/gid, the user's storage claim at the notebook's path,
  the node selector and, for GPU jobs, the GPU toleration;
- with a Kueue queue, the label `kueue.x-k8s.io/queue-name` and `suspend: true`: it starts when
  Kueue admits it.

`--max-restarts`: JobSet's `failurePolicy.maxRestarts` is immutable and no runtime patch of
Trainer v2.3.0 reaches it, so there is one runtime per value, `paddle-workbench-restarts-<n>`
for n = 0..MAX_RESTARTS_LIMIT, copies of the shipped runtime that differ only there
(`restart_runtimes`; `deploy/k8s/trainer/runtimes.py` prints them for `kubectl apply`). A
TrainJob names the one of its spec's `max_restarts`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

from launcher_magic.core.commands import job_environment
from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import JobSpec
from launcher_magic.core.status import JobState, JobStatus, NodeStatus, RankState, RankStatus
from launcher_magic.engines.base import UsageRecord
from launcher_magic.engines.kubernetes.paddlejob import (
    GPU,
    ClusterSettings,
    _timestamp,
    container_resources,
    env_secret_name,
    job_labels,
)
from workbench_contract import environment as wbenv
from workbench_contract.labels import LABEL_JOB, LABEL_TENANT, LABEL_USER
from workbench_contract.pod_security import restricted_security_contexts
from workbench_contract.resources import parse_quantity

GROUP, VERSION, PLURAL, KIND = "trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"
RUNTIME = "paddle-workbench"  # metadata.name in deploy/k8s/trainer/paddle-runtime.yaml
RUNTIME_MAX_RESTARTS = 3  # its JobSet failurePolicy.maxRestarts (tests hold the two equal)
# The largest --max-restarts with a runtime of its own (hub_config.cli.trainjob_admission allows
# the same names; tests hold the two equal).
MAX_RESTARTS_LIMIT = 10
CONTAINER = "node"  # Trainer's name for the trainer container of a runtime
REPLICATED_JOB = "node"
PATCH_MANAGER = "workbench.paddle.org/trainjob-engine"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOBSET_GROUP, JOBSET_VERSION, JOBSET_PLURAL = "jobset.x-k8s.io", "v1alpha2", "jobsets"
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
RESTART_ATTEMPT_LABEL = "jobset.sigs.k8s.io/restart-attempt"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
# JobSet's reason (copied by Trainer into the TrainJob's Failed condition) when it was killed
# once more than its runtime's maxRestarts allows.
MAX_RESTARTS_REASON = "ReachedMaxRestarts"

# The runtime sets these for every node; a TrainJob must not carry its own copies.
RUNTIME_ENV = frozenset({"PADDLE_MASTER", "PADDLE_JOB_ID", "PYTHONUNBUFFERED",
                         wbenv.NODE_RANK, wbenv.ATTEMPT})
# Placeholders the kubelet expands from the runtime's environment.
NODE_REF, ATTEMPT_REF = f"$({wbenv.NODE_RANK})", f"$({wbenv.ATTEMPT})"


def runtime_name(base: str, max_restarts: int) -> str:
    """The runtime whose JobSet restarts a killed job at most `max_restarts` times."""
    return f"{base}-restarts-{max_restarts}"


def restart_runtimes(base: Mapping[str, Any], limit: int = MAX_RESTARTS_LIMIT) -> list[dict]:
    """Copies of the runtime `base`, one per restart limit 0..`limit`, named by `runtime_name`."""
    runtimes = []
    for count in range(limit + 1):
        runtime = copy.deepcopy(dict(base))
        runtime["metadata"]["name"] = runtime_name(base["metadata"]["name"], count)
        runtime["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] = count
        runtimes.append(runtime)
    return runtimes


def launcher_args(spec: JobSpec, job: JobDir) -> list[str]:
    """What follows the runtime's `paddle.distributed.launch --master .. --nnodes .. --rank ..`:
    the same log dir, process count, devices and script as the other engines."""
    args = ["--log_dir", str(job.node_log_dir(ATTEMPT_REF, NODE_REF)),  # type: ignore[arg-type]
            "--nproc_per_node", str(spec.resources.nproc_per_node)]
    if spec.resources.gpus_per_node:
        args += ["--devices", ",".join(str(d) for d in range(spec.resources.gpus_per_node))]
    args.append(str(job.main_path))
    return args


def trainer_env(spec: JobSpec, job: JobDir) -> list[dict[str, Any]]:
    """The TrainJob's environment: the job contract's variables but the runtime's own; the
    user's `--env` values are read from the job's Secret, never written into the TrainJob."""
    secret = env_secret_name(spec)
    env = job_environment(spec, job, master="")
    return [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": k}}}
            if k in spec.env else {"name": k, "value": v}
            for k, v in sorted(env.items()) if k not in RUNTIME_ENV]


def pod_patch(spec: JobSpec, cluster: ClusterSettings) -> dict[str, Any]:
    """The pod template patch: the user's identity, storage and placement."""
    pod_security, container_security = restricted_security_contexts(cluster.uid, cluster.gid)
    container: dict[str, Any] = {"name": CONTAINER, "securityContext": container_security}
    pod: dict[str, Any] = {"securityContext": pod_security, "containers": [container]}
    if cluster.storage is not None:
        mount = {"name": "home", "mountPath": cluster.storage.mount_path}
        if cluster.storage.sub_path:
            mount["subPath"] = cluster.storage.sub_path
        container["volumeMounts"] = [mount]
        pod["volumes"] = [{"name": "home",
                           "persistentVolumeClaim": {"claimName": cluster.storage.claim}}]
    if cluster.node_selector:
        pod["nodeSelector"] = dict(cluster.node_selector)
    if spec.resources.gpus_per_node:
        pod["tolerations"] = [{"key": GPU, "operator": "Exists", "effect": "NoSchedule"}]
    return pod


def build_trainjob(spec: JobSpec, job: JobDir, cluster: ClusterSettings, queue: str = "",
                   runtime: str = RUNTIME) -> dict[str, Any]:
    """The TrainJob manifest for `spec`, whose job directory is `job` (same path in the pods).

    `queue` is the tenant's Kueue LocalQueue ("": not queued); `runtime` the base name of the
    ClusterTrainingRuntimes: the TrainJob names the copy for the spec's `max_restarts`.
    """
    labels = job_labels(spec)
    pod_metadata: dict[str, Any] = {"labels": dict(labels)}
    if cluster.pod_annotations:
        pod_metadata["annotations"] = dict(cluster.pod_annotations)
    trainer: dict[str, Any] = {
        "image": cluster.image, "numNodes": spec.nodes, "args": launcher_args(spec, job),
        "env": trainer_env(spec, job),
    }
    resources = container_resources(spec)
    if resources:
        trainer["resourcesPerNode"] = resources
    patch = {"manager": PATCH_MANAGER, "trainingRuntimeSpec": {"template": {
        "metadata": {"labels": dict(labels)},
        "spec": {"replicatedJobs": [{"name": REPLICATED_JOB, "template": {
            "metadata": {"labels": dict(labels)},
            "spec": {"template": {"metadata": pod_metadata,
                                  "spec": pod_patch(spec, cluster)}}}}]}}}}
    metadata: dict[str, Any] = {"name": spec.job_id, "namespace": cluster.namespace,
                                "labels": dict(labels)}
    body: dict[str, Any] = {"runtimeRef": {"name": runtime_name(runtime, spec.max_restarts),
                                           "apiGroup": GROUP,
                                           "kind": "ClusterTrainingRuntime"},
                            "trainer": trainer, "runtimePatches": [patch]}
    if queue:
        metadata["labels"][QUEUE_LABEL] = queue
        body["suspend"] = True  # Kueue resumes it once the tenant's queue admits it
    if spec.timeout_seconds:
        body["activeDeadlineSeconds"] = spec.timeout_seconds
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata,
            "spec": body}


# -- status -----------------------------------------------------------------------------------

_PHASE_STATES = {
    "Pending": RankState.PENDING, "Running": RankState.RUNNING,
    "Succeeded": RankState.SUCCEEDED, "Failed": RankState.FAILED,
}


def _label_int(pod: Mapping[str, Any], key: str) -> int | None:
    meta = pod.get("metadata") or {}
    raw = (meta.get("labels") or {}).get(key, (meta.get("annotations") or {}).get(key))
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def _exit_code(pod: Mapping[str, Any]) -> int | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER:
            state = status.get("state") or {}
            terminated = state.get("terminated") or (status.get("lastState") or {}).get(
                "terminated") or {}
            return terminated.get("exitCode")
    return None


def restarts_of(pods: Iterable[Mapping[str, Any]], jobset: Mapping[str, Any] | None) -> int:
    """Whole-job restarts so far: JobSet's counter where readable, else the newest attempt
    any pod belongs to."""
    counted = int(((jobset or {}).get("status") or {}).get("restarts") or 0)
    attempts = [a for a in (_label_int(p, RESTART_ATTEMPT_LABEL) for p in pods) if a is not None]
    return max([counted, *attempts])


def nodes_of(spec: JobSpec, pods: Iterable[Mapping[str, Any]], attempt: int) -> tuple[NodeStatus,
                                                                                    ...]:
    """Each node's state and exit code in `attempt`, from its pod (Pending where none is)."""
    nodes: dict[int, NodeStatus] = {}
    for pod in pods:
        index = _label_int(pod, COMPLETION_INDEX)
        if index is None or (_label_int(pod, RESTART_ATTEMPT_LABEL) or 0) != attempt:
            continue
        phase = (pod.get("status") or {}).get("phase", "Pending")
        nodes[index] = NodeStatus(node=index, state=_PHASE_STATES.get(phase, RankState.PENDING),
                                  exit_code=_exit_code(pod))
    return tuple(nodes.get(n, NodeStatus(node=n)) for n in range(spec.nodes))


def pod_of_node(pods: Iterable[Mapping[str, Any]], node: int) -> str | None:
    """The name of node `node`'s newest pod: the latest attempt's (JobSet names pods with a
    random suffix, and a whole-job restart makes new ones); None while it has none."""
    mine = [p for p in pods if _label_int(p, COMPLETION_INDEX) == node]
    if not mine:
        return None
    newest = max(mine, key=lambda p: (_label_int(p, RESTART_ATTEMPT_LABEL) or 0, _timestamp(
        (p.get("metadata") or {}).get("creationTimestamp")) or 0.0))
    return (newest.get("metadata") or {}).get("name")


def status_from_trainjob(spec: JobSpec, trainjob: Mapping[str, Any],
                         pods: Iterable[Mapping[str, Any]],
                         jobset: Mapping[str, Any] | None = None) -> JobStatus:
    """The JobStatus that a TrainJob, its JobSet (None: not readable or not made yet) and the
    JobSet's pods amount to. A failure names the first node that exited non-zero."""
    pods = list(pods)
    restarts = restarts_of(pods, jobset)
    node_list = nodes_of(spec, pods, restarts)
    nproc = spec.resources.nproc_per_node
    ranks = tuple(RankStatus(rank=r, node=r // nproc, state=node_list[r // nproc].state,
                             exit_code=node_list[r // nproc].exit_code)
                  for r in range(spec.world_size))
    failed = [n for n in node_list if n.state == RankState.FAILED]
    failed_rank = failed[0].node * nproc if failed else None

    status = trainjob.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []
                  if c.get("status") == "True"}
    started = min((t for t in (_timestamp((p.get("status") or {}).get("startTime"))
                               for p in pods) if t is not None), default=None)
    finished = None
    if "Complete" in conditions:
        state, message = JobState.SUCCEEDED, conditions["Complete"].get("message") or "completed"
        finished = _timestamp(conditions["Complete"].get("lastTransitionTime"))
    elif "Failed" in conditions:
        state = JobState.FAILED
        message = conditions["Failed"].get("message") or conditions["Failed"].get("reason") or ""
        if failed:
            message = (f"node {failed[0].node} (rank {failed_rank}) exited with code "
                       f"{failed[0].exit_code}; {message}")
        if conditions["Failed"].get("reason") == MAX_RESTARTS_REASON:
            message += f"; no restart left: --max-restarts {spec.max_restarts}, {restarts} used"
        finished = _timestamp(conditions["Failed"].get("lastTransitionTime"))
    elif "Suspended" in conditions or (trainjob.get("spec") or {}).get("suspend"):
        state, message = JobState.QUEUED, "waiting for the tenant's queue to admit it"
    elif any(n.state in (RankState.RUNNING, RankState.SUCCEEDED) for n in node_list):
        # Nodes that finished first wait for the rest: the job still runs.
        message = f"running (restart {restarts})" if restarts else "running"
        state = JobState.RUNNING
    elif restarts:
        state, message = JobState.RESTARTING, f"restarting the whole job (restart {restarts})"
    else:
        state, message = JobState.PENDING, "waiting for the nodes to start"
    return JobStatus(job_id=spec.job_id, state=state, message=message, restarts=restarts,
                     nodes=node_list, ranks=ranks, failed_rank=failed_rank,
                     started_at=started, finished_at=finished)


def usage_from_trainjob(trainjob: Mapping[str, Any]) -> UsageRecord:
    """What a TrainJob of the workbench held: its nodes, the GPUs per node, and its start and
    end (a queued job that never started holds nothing)."""
    metadata = trainjob.get("metadata") or {}
    labels = metadata.get("labels") or {}
    trainer = (trainjob.get("spec") or {}).get("trainer") or {}
    limits = (trainer.get("resourcesPerNode") or {}).get("limits") or {}
    conditions = [c for c in (trainjob.get("status") or {}).get("conditions") or []
                  if c.get("status") == "True"]
    finished = next((_timestamp(c.get("lastTransitionTime")) for c in conditions
                     if c.get("type") in ("Complete", "Failed")), None)
    started = _timestamp(metadata.get("creationTimestamp"))
    if (trainjob.get("spec") or {}).get("suspend") and finished is None:
        started = None
    return UsageRecord(
        job_id=labels.get(LABEL_JOB) or metadata.get("name", ""),
        user=labels.get(LABEL_USER, ""), tenant=labels.get(LABEL_TENANT),
        nodes=int(trainer.get("numNodes") or 1),
        gpus_per_node=int(parse_quantity(str(limits.get(GPU, "0")))),
        started_at=started,
        finished_at=finished or _timestamp(metadata.get("deletionTimestamp")))
