"""The kubernetes engine: a job is a `kubeflow.org/v1 PaddleJob` in the tenant's namespace.

It submits with the notebook's own service account (in-cluster config; a kubeconfig outside a
cluster), reads status from the PaddleJob's conditions and its worker pods, tails logs from the
pods and stops a job by deleting it. Manifests and status mapping are pure (launcher_magic.engines.kubernetes.paddlejob);
this module is the API I/O around them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from traitlets import Dict, Float, Int, Unicode, default
from urllib3.exceptions import HTTPError

from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import JobSpec, SpecError
from launcher_magic.core.status import JobState, JobStatus, RankState, RankStatus
from launcher_magic.engines.base import Engine, EngineUnavailable
from launcher_magic.engines.kubernetes.paddlejob import (
    CONTAINER,
    GROUP,
    JOB_NAME_LABEL,
    KIND,
    PLURAL,
    VERSION,
    ClusterSettings,
    build_paddlejob,
    check_quota,
    status_from_cluster,
)
from workbench_contract import environment as wbenv

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class KubernetesEngine(Engine):
    """PaddleJobs in the tenant's namespace, watched through the API server."""

    name = "kubernetes"
    poll_interval = 1.0

    kubeconfig = Unicode(
        help="Kubeconfig used outside a cluster (default: $KUBECONFIG). In a pod the service "
             "account's in-cluster credentials are used."
    ).tag(config=True)

    @default("kubeconfig")
    def _default_kubeconfig(self) -> str:
        return os.environ.get("KUBECONFIG", "")

    ttl_seconds_after_finished = Int(
        86400, help="Seconds a finished PaddleJob (and its pods' logs) is kept."
    ).tag(config=True)
    clean_pod_policy = Unicode(
        "Running", help="PaddleJob cleanPodPolicy: which pods go when the job ends."
    ).tag(config=True)
    python = Unicode("python", help="The Python in the job image.").tag(config=True)
    pod_annotations = Dict(
        value_trait=Unicode(), help="Annotations for every worker pod (e.g. for a mesh or a "
        "node-level agent)."
    ).tag(config=True)
    stop_timeout = Float(120.0, help="Seconds to wait for a deleted job's pods to go.").tag(
        config=True
    )

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._client = None

    # -- API access -----------------------------------------------------------------------------

    def _api(self):
        if self._client is not None:
            return self._client
        try:
            from kubernetes import client, config
        except ImportError:
            raise EngineUnavailable(
                "the kubernetes engine needs the `kubernetes` package: pip install kubernetes"
            ) from None
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_TOKEN.exists():
                config.load_incluster_config()
                api_client = client.ApiClient()
            elif self.kubeconfig:
                api_client = config.new_client_from_config(config_file=self.kubeconfig)
            else:
                raise EngineUnavailable(
                    "the kubernetes engine finds no cluster: run in a hub-spawned server in the "
                    "cluster, or set KUBECONFIG"
                )
        except config.ConfigException as err:
            raise EngineUnavailable(f"the kubernetes engine cannot load its config: {err}") from None
        self._client = (client.CoreV1Api(api_client), client.CustomObjectsApi(api_client))
        return self._client

    @staticmethod
    def _api_error(err, action: str) -> SpecError:
        status = getattr(err, "status", None)
        if status == 403:
            return SpecError(f"{action} was refused (403 Forbidden): your tenant's service "
                             "account may not do that; ask an operator to provision the tenant")
        reason = getattr(err, "reason", "") or str(err)
        return SpecError(f"{action} failed: {status} {reason}".strip())

    def settings(self, spec: JobSpec) -> ClusterSettings:
        if not spec.namespace:
            raise SpecError(
                f"the kubernetes engine needs your tenant's namespace ({wbenv.NAMESPACE}), which "
                "the hub sets; start your server from the hub or use --engine local"
            )
        if not spec.image:
            raise SpecError(
                "the kubernetes engine needs an image: pass --image or start your server from "
                f"the hub, which sets {wbenv.IMAGE}"
            )
        claim = os.environ.get(wbenv.STORAGE_CLAIM) or None
        return ClusterSettings(
            namespace=spec.namespace, image=spec.image, storage_claim=claim,
            storage_mount=os.environ.get(wbenv.STORAGE_MOUNT) or str(Path.home()),
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
            clean_pod_policy=self.clean_pod_policy, python=self.python,
            pod_annotations=dict(self.pod_annotations),
        )

    # -- the contract ---------------------------------------------------------------------------

    def preflight(self, spec: JobSpec) -> None:
        settings = self.settings(spec)
        core, _ = self._api()
        from kubernetes.client.exceptions import ApiException

        try:
            quotas = core.list_namespaced_resource_quota(settings.namespace)
        except ApiException as err:
            raise self._api_error(err, f"reading the quota of namespace {settings.namespace}"
                                  ) from None
        except HTTPError as err:  # no answer at all: a wrong address, a cluster that is down
            raise SpecError(f"cannot reach the Kubernetes API server at "
                            f"{core.api_client.configuration.host}: {err.__class__.__name__}; "
                            "check KUBECONFIG or the cluster") from None
        check_quota(spec, [core.api_client.sanitize_for_serialization(q) for q in quotas.items])

    def submit(self, spec: JobSpec, job: JobDir) -> None:
        settings = self.settings(spec)
        _, custom = self._api()
        from kubernetes.client.exceptions import ApiException

        manifest = build_paddlejob(spec, job, settings)
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, settings.namespace, PLURAL,
                                                   manifest)
        except ApiException as err:
            raise self._api_error(err, f"creating PaddleJob {spec.job_id}") from None
        self.log.info("Created PaddleJob %s/%s", settings.namespace, spec.job_id)
        job.write_status(JobStatus(job_id=spec.job_id, message="submitted to the cluster"))

    def _read(self, spec: JobSpec, events: bool = False):
        core, custom = self._api()
        from kubernetes.client.exceptions import ApiException

        try:
            paddlejob = custom.get_namespaced_custom_object(GROUP, VERSION, spec.namespace,
                                                            PLURAL, spec.job_id)
        except ApiException as err:
            if err.status != 404:
                raise
            paddlejob = None
        pods = core.list_namespaced_pod(spec.namespace,
                                        label_selector=f"{JOB_NAME_LABEL}={spec.job_id}")
        found = [core.api_client.sanitize_for_serialization(p) for p in pods.items]
        if not events:
            return paddlejob, found, []
        listed = core.list_namespaced_event(
            spec.namespace,
            field_selector=f"involvedObject.kind={KIND},involvedObject.name={spec.job_id}")
        return paddlejob, found, [core.api_client.sanitize_for_serialization(e)
                                  for e in listed.items]

    def status(self, job: JobDir) -> JobStatus:
        last = job.read_status() or JobStatus(job_id=job.job_id)
        if last.state.is_terminal():
            return last
        spec = job.read_spec()
        paddlejob, pods, events = self._read(spec, events=True)
        if paddlejob is None:
            status = last.moved_to(JobState.STOPPED, "the PaddleJob was deleted")
        else:
            status = _with_rank_records(status_from_cluster(spec, paddlejob, pods, events), job)
        if replace(status, updated_at=0) != replace(last, updated_at=0):
            job.write_status(status)
        return status

    def stop(self, job: JobDir) -> JobStatus:
        status = self.status(job)
        if status.state.is_terminal():
            return status
        spec = job.read_spec()
        _, custom = self._api()
        from kubernetes.client.exceptions import ApiException

        self.log.info("Deleting PaddleJob %s/%s", spec.namespace, spec.job_id)
        try:
            custom.delete_namespaced_custom_object(GROUP, VERSION, spec.namespace, PLURAL,
                                                   spec.job_id, propagation_policy="Foreground")
        except ApiException as err:
            if err.status != 404:
                raise self._api_error(err, f"deleting PaddleJob {spec.job_id}") from None
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline:
            paddlejob, pods, _ = self._read(spec)
            if paddlejob is None and not pods:
                break
            time.sleep(0.5)
        status = status.moved_to(JobState.STOPPED, "stopped by request")
        job.write_status(status)
        return status

    def log_lines(self, job: JobDir, rank: int, count: int,
                  status: JobStatus | None = None) -> list[str]:
        spec = job.read_spec()
        core, _ = self._api()
        from kubernetes.client.exceptions import ApiException

        pod = f"{spec.job_id}-worker-{rank // spec.resources.nproc_per_node}"
        try:
            text = core.read_namespaced_pod_log(pod, spec.namespace, container=CONTAINER,
                                                tail_lines=count)
        except ApiException:
            return []  # not scheduled yet, or already cleaned up
        return (text or "").splitlines()[-count:]

    def follow_log(self, job: JobDir, rank: int, poll: float = 1.0) -> Iterator[str]:
        seen: list[str] = []
        while True:
            lines = self.log_lines(job, rank, 200)
            new = lines[len(seen):] if lines[:len(seen)] == seen else lines
            if new:
                yield "\n".join(new) + "\n"
            seen = lines
            if self.status(job).state.is_terminal():
                return
            time.sleep(poll)


def _with_rank_records(status: JobStatus, job: JobDir) -> JobStatus:
    """Where the job directory is shared, each rank's own record is more precise than its pod."""
    records = job.read_rank_records(0)
    if not records:
        return status
    ranks = []
    for rank in status.ranks:
        record = records.get(rank.rank)
        if record:
            rank = RankStatus(rank=rank.rank, node=rank.node,
                              state=RankState(record.get("state", rank.state)),
                              exit_code=record.get("exit_code", rank.exit_code),
                              error=record.get("error"))
        ranks.append(rank)
    return replace(status, ranks=tuple(ranks))
