"""The TrainJob kind: a job is a Kubeflow Trainer v2 `TrainJob` on the workbench's Paddle runtime.

The TrainJob names the workbench's Paddle `ClusterTrainingRuntime`
(deploy/k8s/trainer/paddle-runtime.yaml), which fixes what every Paddle job shares: the node
launcher (`launcher_magic.training.node_launch`) with the master at node 0's stable DNS name, the
rank from the pod's completion index, the attempt from JobSet's restart counter, restricted
security contexts and whole-job restarts. The TrainJob adds this job's part:

- `spec.trainer`: the image, the number of nodes, the resources per node, the launcher's
  arguments (log dir, processes per node, devices, the script in the job directory) and the
  environment (`PADDLE_NNODES`, the workbench's paths, the user's `--env` by `secretKeyRef`);
- a runtime patch (manager `PATCH_MANAGER`) with the workbench's labels on the JobSet and its
  pods, the user's uid/gid, the user's storage claim at the notebook's path, the node selector,
  the node-loss tolerations and, for GPU jobs, the GPU toleration (the spread of the job's pods
  over machines is the runtime's: a runtime patch cannot carry topologySpreadConstraints);
- with a Kueue queue, the queue label and `suspend: true`: it starts when Kueue admits it.

`--max-restarts`: JobSet's `failurePolicy.maxRestarts` is immutable and no runtime patch of
Trainer v2.3.0 reaches it, so there is one runtime copy per value (`cluster.runtime_name`), and a
TrainJob names the one of its spec's `max_restarts`.

Status: Trainer sets the TrainJob's conditions; the JobSet it makes (the adapter's `companion`)
counts whole-job restarts, and the JobSet's pods say which node runs, ended and how.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from traitlets import Unicode

from launcher_magic.core.commands import job_environment
from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import JobSpec, SpecError
from launcher_magic.core.status import JobState, JobStatus, NodeStatus, RankState
from launcher_magic.engines.base import UsageRecord
from launcher_magic.engines.cluster import objects
from launcher_magic.engines.cluster.adapter import JobKindAdapter, Observed
from launcher_magic.engines.cluster.objects import ClusterSettings, timestamp
from workbench_contract import environment as wbenv
from workbench_contract.cluster import (
    COMPLETION_INDEX_LABEL,
    JOBSET,
    JOBSET_NAME_LABEL,
    MAX_RESTARTS_LIMIT,
    QUEUE_LABEL,
    RESTART_ATTEMPT_LABEL,
    RUNTIME,
    TRAINING_RUNTIME,
    TRAINJOB,
    runtime_name,
)
from workbench_contract.jobkinds import TRAINJOB as TRAINJOB_KIND
from workbench_contract.labels import LABEL_JOB, LABEL_TENANT, LABEL_USER
from workbench_contract.pod_security import restricted_security_contexts
from workbench_contract.resources import GPU_RESOURCE, parse_quantity

CONTAINER = "node"  # Trainer's name for the trainer container of a runtime
REPLICATED_JOB = "node"
PATCH_MANAGER = "workbench.paddle.org/trainjob-engine"
# JobSet's reason (copied by Trainer into the TrainJob's Failed condition) when it was killed
# once more than its runtime's maxRestarts allows.
MAX_RESTARTS_REASON = "ReachedMaxRestarts"

# The runtime sets these for every node; a TrainJob must not carry its own copies.
RUNTIME_ENV = frozenset({"PADDLE_MASTER", "PADDLE_JOB_ID", "PYTHONUNBUFFERED",
                         wbenv.NODE_RANK, wbenv.ATTEMPT})
# Placeholders the kubelet expands from the runtime's environment.
NODE_REF, ATTEMPT_REF = f"$({wbenv.NODE_RANK})", f"$({wbenv.ATTEMPT})"


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
    env = job_environment(spec, job, master="")
    return objects.env_entries(spec, {k: v for k, v in env.items() if k not in RUNTIME_ENV})


def pod_patch(spec: JobSpec, cluster: ClusterSettings) -> dict[str, Any]:
    """The pod template patch: the user's identity, storage and placement."""
    pod_security, container_security = restricted_security_contexts(cluster.uid, cluster.gid)
    mounts, volumes = objects.storage_volume(cluster.storage)
    container: dict[str, Any] = {"name": CONTAINER, "securityContext": container_security,
                                 **({"volumeMounts": mounts} if mounts else {})}
    return {"securityContext": pod_security, "containers": [container],
            **({"volumes": volumes} if volumes else {}), **objects.pod_placement(spec, cluster)}


def build_trainjob(spec: JobSpec, job: JobDir, cluster: ClusterSettings, queue: str = "",
                   runtime: str = RUNTIME) -> dict[str, Any]:
    """The TrainJob manifest for `spec`, whose job directory is `job` (same path in the pods).

    `queue` is the tenant's Kueue LocalQueue ("": not queued); `runtime` the base name of the
    ClusterTrainingRuntimes: the TrainJob names the copy for the spec's `max_restarts`.
    """
    labels = objects.job_labels(spec)
    pod_metadata: dict[str, Any] = {"labels": dict(labels)}
    if cluster.pod_annotations:
        pod_metadata["annotations"] = dict(cluster.pod_annotations)
    trainer: dict[str, Any] = {
        "image": cluster.image, "numNodes": spec.nodes, "args": launcher_args(spec, job),
        "env": trainer_env(spec, job),
    }
    resources = objects.container_resources(spec)
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
                                           "apiGroup": TRAINING_RUNTIME.group,
                                           "kind": TRAINING_RUNTIME.kind},
                            "trainer": trainer, "runtimePatches": [patch]}
    if queue:
        metadata["labels"][QUEUE_LABEL] = queue
        body["suspend"] = True  # Kueue resumes it once the tenant's queue admits it
    if spec.timeout_seconds:
        body["activeDeadlineSeconds"] = spec.timeout_seconds
    return {"apiVersion": TRAINJOB.api_version, "kind": TRAINJOB.kind, "metadata": metadata,
            "spec": body}


# -- status -------------------------------------------------------------------------------------

def _label_int(pod: Mapping[str, Any], key: str) -> int | None:
    meta = pod.get("metadata") or {}
    raw = (meta.get("labels") or {}).get(key, (meta.get("annotations") or {}).get(key))
    try:
        return int(raw)
    except (TypeError, ValueError):
        return None


def restarts_of(pods: Iterable[Mapping[str, Any]], jobset: Mapping[str, Any] | None) -> int:
    """Whole-job restarts so far: JobSet's counter where readable, else the newest attempt
    any pod belongs to."""
    counted = int(((jobset or {}).get("status") or {}).get("restarts") or 0)
    attempts = [a for a in (_label_int(p, RESTART_ATTEMPT_LABEL) for p in pods) if a is not None]
    return max([counted, *attempts])


def nodes_of(spec: JobSpec, pods: Iterable[Mapping[str, Any]],
             attempt: int) -> tuple[NodeStatus, ...]:
    """Each node's state and exit code in `attempt`, from its pod (Pending where none is)."""
    nodes: dict[int, NodeStatus] = {}
    for pod in pods:
        index = _label_int(pod, COMPLETION_INDEX_LABEL)
        if index is not None and (_label_int(pod, RESTART_ATTEMPT_LABEL) or 0) == attempt:
            nodes[index] = objects.node_state(pod, index, CONTAINER)
    return tuple(nodes.get(n, NodeStatus(node=n)) for n in range(spec.nodes))


def pod_of_node(pods: Iterable[Mapping[str, Any]], node: int) -> str | None:
    """The name of node `node`'s newest pod: the latest attempt's (JobSet names pods with a
    random suffix, and a whole-job restart makes new ones); None while it has none."""
    mine = [p for p in pods if _label_int(p, COMPLETION_INDEX_LABEL) == node]
    if not mine:
        return None
    newest = max(mine, key=lambda p: (_label_int(p, RESTART_ATTEMPT_LABEL) or 0, timestamp(
        (p.get("metadata") or {}).get("creationTimestamp")) or 0.0))
    return (newest.get("metadata") or {}).get("name")


def _state(spec: JobSpec, trainjob: Mapping[str, Any], nodes: tuple[NodeStatus, ...],
           restarts: int, failed_rank: int | None) -> tuple[JobState, str, float | None]:
    """(state, message, when it ended) from the TrainJob's conditions and its nodes."""
    conditions = {c.get("type"): c for c in (trainjob.get("status") or {}).get("conditions") or []
                  if c.get("status") == "True"}
    if "Complete" in conditions:
        done = conditions["Complete"]
        return (JobState.SUCCEEDED, done.get("message") or "completed",
                timestamp(done.get("lastTransitionTime")))
    if "Failed" in conditions:
        failure = conditions["Failed"]
        message = failure.get("message") or failure.get("reason") or ""
        failed = [n for n in nodes if n.state == RankState.FAILED]
        if failed:
            message = (f"node {failed[0].node} (rank {failed_rank}) exited with code "
                       f"{failed[0].exit_code}; {message}")
        if failure.get("reason") == MAX_RESTARTS_REASON:
            message += f"; no restart left: --max-restarts {spec.max_restarts}, {restarts} used"
        return JobState.FAILED, message, timestamp(failure.get("lastTransitionTime"))
    if "Suspended" in conditions or (trainjob.get("spec") or {}).get("suspend"):
        return JobState.QUEUED, "waiting for the tenant's queue to admit it", None
    if any(n.state in (RankState.RUNNING, RankState.SUCCEEDED) for n in nodes):
        # Nodes that finished first wait for the rest: the job still runs.
        return JobState.RUNNING, f"running (restart {restarts})" if restarts else "running", None
    if restarts:
        return JobState.RESTARTING, f"restarting the whole job (restart {restarts})", None
    return JobState.PENDING, "waiting for the nodes to start", None


def status_from_trainjob(spec: JobSpec, trainjob: Mapping[str, Any],
                         pods: Iterable[Mapping[str, Any]],
                         jobset: Mapping[str, Any] | None = None) -> JobStatus:
    """The JobStatus that a TrainJob, its JobSet (None: not readable or not made yet) and the
    JobSet's pods amount to. A failure names the first node that exited non-zero."""
    pods = list(pods)
    restarts = restarts_of(pods, jobset)
    nodes = nodes_of(spec, pods, restarts)
    failed = [n for n in nodes if n.state == RankState.FAILED]
    failed_rank = failed[0].node * spec.resources.nproc_per_node if failed else None
    state, message, finished = _state(spec, trainjob, nodes, restarts, failed_rank)
    started = min((t for t in (timestamp((p.get("status") or {}).get("startTime"))
                               for p in pods) if t is not None), default=None)
    return objects.with_lost_machine(JobStatus(
        job_id=spec.job_id, state=state, message=message, restarts=restarts, nodes=nodes,
        ranks=objects.ranks_of(spec, nodes), failed_rank=failed_rank, started_at=started,
        finished_at=finished))


def usage_from_trainjob(trainjob: Mapping[str, Any]) -> UsageRecord:
    """What a TrainJob of the workbench held: its nodes, the GPUs per node, and its start and
    end (a queued job that never started holds nothing)."""
    metadata = trainjob.get("metadata") or {}
    labels = metadata.get("labels") or {}
    trainer = (trainjob.get("spec") or {}).get("trainer") or {}
    limits = (trainer.get("resourcesPerNode") or {}).get("limits") or {}
    conditions = [c for c in (trainjob.get("status") or {}).get("conditions") or []
                  if c.get("status") == "True"]
    finished = next((timestamp(c.get("lastTransitionTime")) for c in conditions
                     if c.get("type") in ("Complete", "Failed")), None)
    started = timestamp(metadata.get("creationTimestamp"))
    if (trainjob.get("spec") or {}).get("suspend") and finished is None:
        started = None
    return UsageRecord(
        job_id=labels.get(LABEL_JOB) or metadata.get("name", ""),
        user=labels.get(LABEL_USER, ""), tenant=labels.get(LABEL_TENANT),
        nodes=int(trainer.get("numNodes") or 1),
        gpus_per_node=int(parse_quantity(str(limits.get(GPU_RESOURCE, "0")))),
        started_at=started,
        finished_at=finished or timestamp(metadata.get("deletionTimestamp")))


class TrainJobAdapter(JobKindAdapter):
    """TrainJobs on the workbench's Paddle runtime (see the module docstring)."""

    kind = TRAINJOB_KIND
    container = CONTAINER
    pod_job_label = JOBSET_NAME_LABEL
    # Background: the JobSet goes at once. Under Foreground it outlives its pods, and its
    # failure policy recreates every node that the deletion kills.
    delete_propagation = "Background"
    companion = JOBSET

    runtime = Unicode(
        RUNTIME, help="The base name of the ClusterTrainingRuntimes TrainJobs name: a job names "
                      "<runtime>-restarts-<its --max-restarts> (deploy/k8s/trainer/runtimes.py)."
    ).tag(config=True)

    def check(self, spec: JobSpec) -> None:
        if spec.max_restarts > MAX_RESTARTS_LIMIT:
            raise SpecError(f"--max-restarts {spec.max_restarts} is more than the cluster's Paddle "
                            f"runtimes allow: use at most {MAX_RESTARTS_LIMIT}")

    def build(self, spec: JobSpec, job: JobDir, cluster: ClusterSettings,
              queue: str = "") -> dict[str, Any]:
        return build_trainjob(spec, job, cluster, queue=queue, runtime=self.runtime)

    def status(self, spec: JobSpec, seen: Observed) -> JobStatus:
        return status_from_trainjob(spec, seen.job or {}, seen.pods, seen.companion)

    def rank_pod(self, spec: JobSpec, rank: int, pods: Callable[[], list[dict]]) -> str | None:
        # After a whole-job restart, the new attempt's pod.
        return pod_of_node(pods(), rank // spec.resources.nproc_per_node)

    def usage(self, job_object: Mapping[str, Any]) -> UsageRecord:
        return usage_from_trainjob(job_object)
