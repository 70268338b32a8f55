"""The trainjob engine: a job is a Kubeflow Trainer v2 TrainJob in the tenant's namespace.

It reuses the kubernetes engine's machinery (API access, error wording, the env Secret, log
following, settings from the hub's `NotebookContext`) and differs where the API does: it creates
a `TrainJob` that names the workbench's Paddle `ClusterTrainingRuntime` (`trainjob`, pure),
reads status from the TrainJob's conditions, its JobSet and the JobSet's pods, finds a rank's
pod by the JobSet's labels, and stops a job by deleting the TrainJob (its JobSet and pods go
with it).

Queueing: where the tenant's namespace holds the workbench's Kueue LocalQueue (`workbench
apply` makes it when the tenant has a `queue`), the TrainJob carries its queue label and starts
suspended; Kueue resumes it once the tenant's ClusterQueue admits it. While it waits its state
is Queued and its message gives its position in the tenant's queue and Kueue's reason. The
quota preflight then warns that the job will wait instead of refusing it, and refuses only a
job that can never fit.

`status.json` has one writer: this engine, in the kernel (`status` and `stop`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

from traitlets import Unicode
from urllib3.exceptions import HTTPError

from launcher_magic.core.jobdir import JobHandle
from launcher_magic.core.spec import JobSpec, SpecError
from launcher_magic.core.status import JobState, JobStatus, RankState, RankStatus
from launcher_magic.engines.base import EngineError, UsageRecord
from launcher_magic.engines.kubernetes import queueing
from launcher_magic.engines.kubernetes.engine import (
    KubernetesEngine,
    _stream_lines,
    unseen_lines,
)
from launcher_magic.engines.kubernetes.paddlejob import (
    env_secret,
    env_secret_name,
    owned_by,
)
from launcher_magic.engines.kubernetes.trainjob import (
    COMPLETION_INDEX,
    CONTAINER,
    GROUP,
    JOBSET_GROUP,
    JOBSET_NAME_LABEL,
    JOBSET_PLURAL,
    JOBSET_VERSION,
    MAX_RESTARTS_LIMIT,
    PLURAL,
    RESTART_ATTEMPT_LABEL,
    RUNTIME,
    VERSION,
    build_trainjob,
    status_from_trainjob,
    usage_from_trainjob,
)


class TrainJobEngine(KubernetesEngine):
    """TrainJobs on the workbench's Paddle runtime, queued by Kueue where the tenant has a queue."""

    name = "trainjob"
    job_kind, job_api = "TrainJob", (GROUP, VERSION, PLURAL)
    # Background: the JobSet goes at once. Under Foreground it outlives its pods, and its
    # failure policy recreates every node that the deletion kills.
    delete_propagation = "Background"

    runtime = Unicode(
        RUNTIME, help="The base name of the ClusterTrainingRuntimes TrainJobs name: a job names "
                      "<runtime>-restarts-<its --max-restarts> (deploy/k8s/trainer/runtimes.py)."
    ).tag(config=True)
    queue = Unicode(
        queueing.LOCAL_QUEUE,
        help="The Kueue LocalQueue of the tenant's namespace that jobs are submitted to; used "
             "when it exists there ('' never queues).",
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._queue_found: dict[str, bool] = {}
        self._waits: dict[str, str] = {}  # job id -> why it will wait (preflight)
        self._queued: dict[str, str] = {}  # job id -> its place in the queue (last status)
        self._visibility_served = True  # until a 404 says Kueue's visibility API is not

    # -- queueing -------------------------------------------------------------------------------

    def _queue_for(self, namespace: str) -> str:
        """The tenant's LocalQueue when the namespace has it, else "" (not queued)."""
        if not self.queue:
            return ""
        if namespace not in self._queue_found:
            _, custom = self._api()
            found = self._call(f"reading the LocalQueue {self.queue} of namespace {namespace}",
                               custom.get_namespaced_custom_object, queueing.GROUP,
                               queueing.VERSION, namespace, "localqueues", self.queue,
                               missing_ok=True)
            self._queue_found[namespace] = found is not None
        return self.queue if self._queue_found[namespace] else ""

    def preflight(self, spec: JobSpec) -> None:
        """Refuse a job that can never fit the tenant's quota; one that does not fit now waits
        in the tenant's queue (with a note saying so) where there is one, else is refused."""
        if spec.max_restarts > MAX_RESTARTS_LIMIT:
            raise SpecError(f"--max-restarts {spec.max_restarts} is more than the cluster's Paddle "
                            f"runtimes allow: use at most {MAX_RESTARTS_LIMIT}")
        namespace = self.settings(spec).namespace
        core, _ = self._api()
        listed = self._call(f"reading the quota of namespace {namespace}",
                            core.list_namespaced_resource_quota, namespace)
        quotas = [core.api_client.sanitize_for_serialization(q) for q in listed.items]
        queued = bool(self._queue_for(namespace))
        wait = queueing.check_quota(spec, quotas, queued=queued)
        if wait:
            self.log.warning("Job %s will wait in the queue: %s", spec.job_id, wait)
            self._waits[spec.job_id] = wait

    def notes(self, spec: JobSpec) -> list[str]:
        """Why the job will wait (preflight) and, while it does, its place in the queue."""
        wait, queued = self._waits.get(spec.job_id), self._queued.get(spec.job_id)
        notes = [f"it will wait in your tenant's queue: {wait}"] if wait else []
        return notes + ([queued] if queued else [])

    # -- submit, read, stop ---------------------------------------------------------------------

    def submit(self, job: JobHandle) -> None:
        spec = job.spec
        settings = self.settings(spec)
        core, custom = self._api()
        queue = self._queue_for(settings.namespace)
        manifest = build_trainjob(spec, job.dir, settings, queue=queue, runtime=self.runtime)
        secret, secret_name = env_secret(spec, settings), env_secret_name(spec)
        try:
            if secret is not None:  # first, so the nodes find their environment at start
                self._call(f"creating Secret {secret_name}", core.create_namespaced_secret,
                           settings.namespace, secret)
            created = self._call(f"creating TrainJob {spec.job_id}",
                                 custom.create_namespaced_custom_object, GROUP, VERSION,
                                 settings.namespace, PLURAL, manifest)
            if secret is not None:  # the Secret now goes with the job
                self._call(f"giving Secret {secret_name} to its TrainJob",
                           core.patch_namespaced_secret, secret_name, settings.namespace,
                           owned_by(created))
        except BaseException:
            # A request that timed out may still have created the job: take it all back.
            self._delete(spec, missing_ok=True, quiet=True)
            raise
        self.log.info("Created TrainJob %s/%s%s", settings.namespace, spec.job_id,
                      f" in queue {queue}" if queue else "")
        job.dir.write_status(JobStatus(job_id=spec.job_id, state=JobState.QUEUED,
                                       message=f"in {queue}") if queue else
                             JobStatus(job_id=spec.job_id, message="submitted to the cluster"))

    def _read_trainjob(self, spec: JobSpec):
        """(TrainJob or None, its JobSet or None, its pods as dicts)."""
        core, custom = self._api()
        trainjob = self._call(f"reading TrainJob {spec.job_id}",
                              custom.get_namespaced_custom_object, GROUP, VERSION,
                              spec.namespace, PLURAL, spec.job_id, missing_ok=True)
        jobset = None
        if trainjob is not None:
            try:  # the restart counter; pods say as much where the account may not read it
                jobset = self._call(f"reading JobSet {spec.job_id}",
                                    custom.get_namespaced_custom_object, JOBSET_GROUP,
                                    JOBSET_VERSION, spec.namespace, JOBSET_PLURAL,
                                    spec.job_id, missing_ok=True)
            except EngineError:
                jobset = None
        pods = self._call(f"listing the pods of {spec.job_id}", core.list_namespaced_pod,
                          spec.namespace, label_selector=f"{JOBSET_NAME_LABEL}={spec.job_id}")
        return trainjob, jobset, [core.api_client.sanitize_for_serialization(p)
                                  for p in pods.items]

    def status(self, job: JobHandle) -> JobStatus:
        last = job.dir.read_status() or JobStatus(job_id=job.job_id)
        if last.state.is_terminal():
            return last
        trainjob, jobset, pods = self._read_trainjob(job.spec)
        if trainjob is None:
            status = last.moved_to(JobState.STOPPED, "the TrainJob was deleted")
        else:
            status = status_from_trainjob(job.spec, trainjob, pods, jobset)
            if status.state == JobState.QUEUED and queueing.is_queued(trainjob):
                message, refusal = self._queue_message(job.spec, trainjob)
                status = replace(status, message=message)
                self._queued[job.job_id] = f"queued: {message}"
                if refusal:  # larger than all the queue could ever lend it: never runs
                    self.log.info("Deleting TrainJob %s/%s: it can never be admitted",
                                  job.spec.namespace, job.job_id)
                    self._delete(job.spec, quiet=True)
                    self._queued.pop(job.job_id, None)
                    status = status.moved_to(
                        JobState.FAILED, f"refused by your tenant's queue: {refusal}; the job "
                        "is larger than all the quota it could ever borrow, ask for less")
            else:
                self._queued.pop(job.job_id, None)
            status = _with_rank_records(status, job, status.restarts)
        if replace(status, updated_at=0) != replace(last, updated_at=0):
            job.dir.write_status(status)
        return status

    def _queue_message(self, spec: JobSpec, trainjob: dict) -> tuple[str, str]:
        """("position N of M in <queue>; <Kueue's reason>", Kueue's refusal or "")."""
        _, custom = self._api()
        try:
            listed = self._call(f"listing the Workloads of namespace {spec.namespace}",
                                custom.list_namespaced_custom_object, queueing.GROUP,
                                queueing.VERSION, spec.namespace, "workloads")
        except EngineError as err:
            self.log.debug("Cannot read the queue: %s", err)
            return "waiting for the tenant's queue to admit it", ""
        workloads = listed.get("items") or []
        uid = (trainjob.get("metadata") or {}).get("uid", "")
        mine = [w for w in workloads if queueing.owner_uid(w) == uid]
        refusal = queueing.never_fits(mine[0]) if mine else ""
        queue = ((trainjob.get("metadata") or {}).get("labels") or {}).get(
            queueing.QUEUE_LABEL, "")
        return (queueing.queue_message(trainjob, workloads,
                                       self._pending_workloads(spec.namespace, queue)), refusal)

    def _pending_workloads(self, namespace: str, queue: str) -> dict | None:
        """The LocalQueue's pending workloads from Kueue's visibility API, in Kueue's order;
        None where the cluster does not serve it (404: asked once) or did not answer this time
        (the Workloads are ordered instead)."""
        if not self._visibility_served:
            return None
        _, custom = self._api()
        try:
            summary = self._call(f"reading the pending workloads of LocalQueue {queue}",
                                 get_path, custom.api_client,
                                 queueing.pending_workloads_path(namespace, queue),
                                 missing_ok=True)
        except EngineError as err:  # e.g. 503 while Kueue restarts: ordered here this time
            self.log.debug("Kueue's visibility API: %s", err)
            return None
        if summary is None:
            self.log.info("Kueue's visibility API is not served here: ordering the tenant's "
                          "Workloads instead")
            self._visibility_served = False
        return summary

    def stop(self, job: JobHandle) -> JobStatus:
        """Delete the TrainJob (queued or running); returns once it and its pods are gone."""
        status = self.status(job)
        if status.state.is_terminal():
            return status
        self.log.info("Deleting TrainJob %s/%s", job.spec.namespace, job.job_id)
        self._delete(job.spec)
        deadline, gone = time.monotonic() + self.stop_timeout, 0
        while time.monotonic() < deadline:
            trainjob, _, pods = self._read_trainjob(job.spec)
            # Gone on two reads a second apart: once seen (flaky, 1 run in 3) pods of a deleted
            # TrainJob's JobSet outlived one empty listing.
            gone = gone + 1 if trainjob is None and not pods else 0
            if gone == 2:
                break
            time.sleep(0.5 if not gone else 1.0)
        message = "stopped by request"
        if gone < 2:  # the cluster is slow to collect the pods: say so rather than hide it
            self.log.warning("TrainJob %s deleted; its pods were still terminating after %ss",
                             job.job_id, self.stop_timeout)
            message += "; its pods were still terminating (the cluster removes them)"
        status = status.moved_to(JobState.STOPPED, message)
        job.dir.write_status(status)
        return status

    def shutdown(self, jobs: Sequence[JobHandle]) -> None:
        """Delete each job (its JobSet and pods follow); the kernel's exit does not wait."""
        for job in jobs:
            self._delete(job.spec, quiet=True)

    @staticmethod
    def _usage(job_object: dict) -> UsageRecord:
        return usage_from_trainjob(job_object)

    # -- logs -----------------------------------------------------------------------------------

    def _pod(self, job: JobHandle, rank: int) -> str:
        """The newest pod of the rank's node (JobSet names pods with a random suffix)."""
        core, _ = self._api()
        node = rank // job.spec.resources.nproc_per_node
        pods = self._call(f"finding the pod of rank {rank}", core.list_namespaced_pod,
                          job.spec.namespace,
                          label_selector=f"{JOBSET_NAME_LABEL}={job.job_id},"
                                         f"{COMPLETION_INDEX}={node}")
        if not pods.items:
            return f"{job.job_id}-node-0-{node}"  # not made yet: reading it finds nothing

        def attempt(pod) -> int:
            return int((pod.metadata.labels or {}).get(RESTART_ATTEMPT_LABEL) or 0)

        return max(pods.items, key=lambda p: (attempt(p), p.metadata.creation_timestamp)
                   ).metadata.name

    def log_lines(self, job: JobHandle, rank: int, count: int,
                  status: JobStatus | None = None) -> list[str]:
        core, _ = self._api()
        try:
            pod = self._pod(job, rank)
            text = self._call(f"reading the log of {pod}", core.read_namespaced_pod_log, pod,
                              job.spec.namespace, container=CONTAINER, tail_lines=count,
                              missing_ok=True)
        except EngineError:
            return []  # not scheduled yet, or its container has not started
        return (text or "").splitlines()[-count:]

    def follow_log(self, job: JobHandle, rank: int, poll: float = 1.0):
        """Follow the rank's pod; after a whole-job restart, the new attempt's pod."""
        core, _ = self._api()
        last, shown = None, None
        while True:
            try:
                pod = self._pod(job, rank)
                if pod != shown:  # a new attempt's pod writes its log from the top
                    last, shown = None, pod
                response = self._call(
                    f"following the log of {pod}", core.read_namespaced_pod_log, pod,
                    job.spec.namespace, container=CONTAINER, follow=True, timestamps=True,
                    _preload_content=False, _request_timeout=None, missing_ok=True)
            except EngineError:
                response = None
            if response is not None:
                try:
                    for line in _stream_lines(response):
                        fresh, last = unseen_lines([line], last)
                        if fresh:
                            yield fresh[0] + "\n"
                except (HTTPError, OSError):
                    pass  # the stream broke: open it again below
                finally:
                    response.release_conn()
            if self.status(job).state.is_terminal():
                return
            time.sleep(poll)


def get_path(api_client, path: str, _request_timeout=None) -> dict:
    """GET `path` (a resource the generated client has no method for, such as a subresource of
    an aggregated API) with the client's credentials; a refusal raises its ApiException."""
    request = api_client.param_serialize(method="GET", resource_path=path,
                                         header_params={"Accept": "application/json"},
                                         auth_settings=["BearerToken"])
    response = api_client.call_api(*request, _request_timeout=_request_timeout)
    response.read()
    return api_client.response_deserialize(response, {"200": "object"}).data


def _with_rank_records(status: JobStatus, job: JobHandle, attempt: int) -> JobStatus:
    """Each rank's own record of the current attempt (where the job directory is shared) is
    more precise than its pod."""
    records = job.dir.read_rank_records(attempt)
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
