"""The notebook side of the toy kind: a job is an Indexed `batch/v1` Job, one pod per node.

Each pod runs the node command every engine runs, with its node rank from the Job's completion
index; the Job controller counts failed pods against `backoffLimit` (the job's --max-restarts)
and ends the job at `activeDeadlineSeconds` (its --timeout).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from launcher_magic.core.commands import node_command
from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import JobSpec
from launcher_magic.core.status import JobState, JobStatus, NodeStatus
from launcher_magic.engines.base import UsageRecord
from launcher_magic.engines.cluster.adapter import JobKindAdapter, Observed
from launcher_magic.engines.cluster.objects import (
    ClusterSettings,
    container_resources,
    env_entries,
    job_labels,
    node_state,
    pod_placement,
    ranks_of,
    storage_volume,
    timestamp,
)
from toy_kind import TOY
from workbench_contract import environment as wbenv
from workbench_contract.cluster import COMPLETION_INDEX_LABEL
from workbench_contract.labels import LABEL_JOB, LABEL_USER
from workbench_contract.pod_security import restricted_security_contexts

CONTAINER = "node"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"  # the Job controller's, on every pod


def build_indexed_job(spec: JobSpec, job: JobDir, cluster: ClusterSettings) -> dict[str, Any]:
    argv, env = node_command(spec, job, node=f"$({wbenv.NODE_RANK})", attempt=0,
                             master=f"{spec.job_id}-0:36543", python=cluster.python)
    env_list = env_entries(spec, {k: v for k, v in env.items() if k != wbenv.NODE_RANK})
    env_list.append({"name": wbenv.NODE_RANK, "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_LABEL}']"}}})
    pod_security, container_security = restricted_security_contexts(cluster.uid, cluster.gid)
    mounts, volumes = storage_volume(cluster.storage)
    container = {"name": CONTAINER, "image": cluster.image, "command": argv, "env": env_list,
                 "securityContext": container_security,
                 **({"resources": container_resources(spec)} if container_resources(spec)
                    else {}), **({"volumeMounts": mounts} if mounts else {})}
    labels = job_labels(spec)
    pod_metadata: dict[str, Any] = {"labels": labels}
    if cluster.pod_annotations:
        pod_metadata["annotations"] = dict(cluster.pod_annotations)
    body: dict[str, Any] = {
        "completionMode": "Indexed", "completions": spec.nodes, "parallelism": spec.nodes,
        "backoffLimit": spec.max_restarts,
        "template": {"metadata": pod_metadata, "spec": {
            "restartPolicy": "Never", "securityContext": pod_security,
            "automountServiceAccountToken": False, "containers": [container],
            **({"volumes": volumes} if volumes else {}), **pod_placement(spec, cluster)}}}
    if spec.timeout_seconds:
        body["activeDeadlineSeconds"] = spec.timeout_seconds
    return {"apiVersion": TOY.api.api_version, "kind": TOY.api.kind,
            "metadata": {"name": spec.job_id, "namespace": cluster.namespace,
                         "labels": labels}, "spec": body}


def _index(pod: Mapping[str, Any]) -> int | None:
    meta = pod.get("metadata") or {}
    raw = (meta.get("labels") or {}).get(COMPLETION_INDEX_LABEL)
    return int(raw) if raw is not None and str(raw).isdigit() else None


def status_from_job(spec: JobSpec, job: Mapping[str, Any], pods: list[dict]) -> JobStatus:
    nodes: dict[int, NodeStatus] = {}
    for pod in sorted(pods, key=lambda p: timestamp(
            (p.get("metadata") or {}).get("creationTimestamp")) or 0.0):
        index = _index(pod)
        if index is not None:
            nodes[index] = node_state(pod, index, CONTAINER)  # the newest pod of each index
    node_list = tuple(nodes.get(n, NodeStatus(node=n)) for n in range(spec.nodes))
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []
                  if c.get("status") == "True"}
    state, message = JobState.PENDING, "waiting for the pods to start"
    if "Complete" in conditions:
        state, message = JobState.SUCCEEDED, "every index completed"
    elif "Failed" in conditions:
        state = JobState.FAILED
        message = conditions["Failed"].get("message") or conditions["Failed"].get("reason", "")
    elif status.get("active"):
        state, message = JobState.RUNNING, "running"
    return JobStatus(job_id=spec.job_id, state=state, message=message,
                     restarts=int(status.get("failed") or 0), nodes=node_list,
                     ranks=ranks_of(spec, node_list),
                     started_at=timestamp(status.get("startTime")),
                     finished_at=timestamp(status.get("completionTime")) if state.is_terminal()
                     else None)


class IndexedJobAdapter(JobKindAdapter):
    kind = TOY
    container = CONTAINER
    pod_job_label = JOB_NAME_LABEL

    def build(self, spec: JobSpec, job: JobDir, cluster: ClusterSettings,
              queue: str = "") -> dict[str, Any]:
        return build_indexed_job(spec, job, cluster)

    def status(self, spec: JobSpec, seen: Observed) -> JobStatus:
        return status_from_job(spec, seen.job or {}, seen.pods)

    def rank_pod(self, spec: JobSpec, rank: int, pods: Callable[[], list[dict]]) -> str | None:
        mine = [p for p in pods() if _index(p) == rank // spec.resources.nproc_per_node]
        return (mine[-1].get("metadata") or {}).get("name") if mine else None

    def usage(self, job_object: Mapping[str, Any]) -> UsageRecord:
        labels = (job_object.get("metadata") or {}).get("labels") or {}
        status = job_object.get("status") or {}
        return UsageRecord(job_id=labels.get(LABEL_JOB, ""), user=labels.get(LABEL_USER, ""),
                           nodes=int((job_object.get("spec") or {}).get("parallelism") or 1),
                           gpus_per_node=0, started_at=timestamp(status.get("startTime")),
                           finished_at=timestamp(status.get("completionTime")))
