"""The trainjob engine: a job is a Kubeflow Trainer v2 TrainJob in the tenant's namespace.

It reuses the kubernetes engine's machinery (API access, error wording, the env Secret, log
following, settings from the hub's `NotebookContext`) and differs where the API does: it creates
a `TrainJob` that names the workbench's Paddle `ClusterTrainingRuntime` (`trainjob`, pure),
reads status from the TrainJob's conditions, its JobSet and the JobSet's pods, finds a rank's
pod by the JobSet's labels, and stops a job by deleting the TrainJob (its JobSet and pods go
with it).

It follows jobs as the kubernetes engine does, by watching (`watch`): one stream of TrainJobs and
one of their JobSets' pods for all of the kernel's jobs in a namespace (`jobwatch.trainjob_watch`),
a panel's status read from their cache and its log tail from one follow stream per rank shown.
A notebook may not watch JobSets; a job's JobSet (its restart counter) is read when the job's
TrainJob or pods change, never on a panel's refresh.

Queueing: where the tenant's namespace holds the workbench's Kueue LocalQueue (`workbench
apply` makes it when the tenant has a `queue`), the TrainJob carries its queue label and starts
suspended; Kueue resumes it once the tenant's ClusterQueue admits it. While it waits its state
is Queued and its message gives its position in the tenant's queue and Kueue's reason. The
quota preflight then warns that the job will wait instead of refusing it, and refuses only a
job that can never fit. The queue cannot be watched (the visibility API is an aggregated API
with no watch, and a notebook may not watch Workloads), so while a job is Queued its place is
read: at most once per `queue_refresh_seconds` per namespace, one read shared by all of the
kernel's queued jobs there, and not at all while none is queued.

`status.json` has one writer: this engine, in the kernel (`status` and `stop`, and the watches'
thread, which brings a followed job's status up to date on each change).
"""

from __future__ import annotations

import time
from dataclasses import replace

from traitlets import Float, Unicode

from launcher_magic.core.jobdir import JobHandle
from launcher_magic.core.spec import JobSpec, SpecError
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.engines.base import EngineError, UsageRecord
from launcher_magic.engines.kubernetes import queueing
from launcher_magic.engines.kubernetes.engine import KubernetesEngine, _with_rank_records
from launcher_magic.engines.kubernetes.jobwatch import JobWatch, trainjob_watch
from launcher_magic.engines.kubernetes.paddlejob import (
    env_secret,
    env_secret_name,
    owned_by,
)
from launcher_magic.engines.kubernetes.trainjob import (
    CONTAINER,
    GROUP,
    JOBSET_GROUP,
    JOBSET_NAME_LABEL,
    JOBSET_PLURAL,
    JOBSET_VERSION,
    MAX_RESTARTS_LIMIT,
    PLURAL,
    RUNTIME,
    VERSION,
    build_trainjob,
    pod_of_node,
    status_from_trainjob,
    usage_from_trainjob,
)
from launcher_magic.engines.kubernetes.watcher import SharedRead
from workbench_contract.resources import LOCAL_QUEUE


class TrainJobEngine(KubernetesEngine):
    """TrainJobs on the workbench's Paddle runtime, queued by Kueue where the tenant has a queue."""

    name = "trainjob"
    job_kind, job_api = "TrainJob", (GROUP, VERSION, PLURAL)
    # Background: the JobSet goes at once. Under Foreground it outlives its pods, and its
    # failure policy recreates every node that the deletion kills.
    delete_propagation = "Background"
    container = CONTAINER

    runtime = Unicode(
        RUNTIME, help="The base name of the ClusterTrainingRuntimes TrainJobs name: a job names "
                      "<runtime>-restarts-<its --max-restarts> (deploy/k8s/trainer/runtimes.py)."
    ).tag(config=True)
    queue = Unicode(
        LOCAL_QUEUE,
        help="The Kueue LocalQueue of the tenant's namespace that jobs are submitted to; used "
             "when it exists there ('' never queues).",
    ).tag(config=True)
    queue_refresh_seconds = Float(
        10.0, help="Seconds between two reads of the tenant's queue while one of this kernel's "
        "jobs waits in it (the position from Kueue's visibility API, Kueue's reason from the "
        "namespace's Workloads: two requests). One read per namespace, shared by all of its "
        "queued jobs; none while no job is queued."
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._queue_found: dict[str, bool] = {}
        self._waits: dict[str, str] = {}  # job id -> why it will wait (preflight)
        self._queued: dict[str, str] = {}  # job id -> its place in the queue (last status)
        self._visibility_served = True  # until a 404 says Kueue's visibility API is not
        # (namespace, queue) -> the read of that queue, shared by its queued jobs
        self._queue_reads: dict[tuple[str, str], SharedRead] = {}
        # Each watched job's JobSet (None: not found or not readable) as last read, and the
        # jobs whose TrainJob or pods changed since: their JobSet is read again.
        self._jobsets: dict[str, dict | None] = {}
        self._jobsets_stale: set[str] = set()

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

    # -- watching -------------------------------------------------------------------------------

    def _new_watch(self, core, custom, namespace: str, user_label: str, **options) -> JobWatch:
        return trainjob_watch(core, custom, namespace, user_label, **options)

    def _changed(self, key: tuple[str, str], kind: str, obj: dict | None) -> None:
        """A TrainJob or pod changed: the JobSets of the jobs it concerns are read again (a
        restart shows in the JobSet's counter before any pod of the new attempt exists)."""
        watch = self._watches.get(key)
        if watch is not None:
            self._jobsets_stale.update(job.job_id for job in watch.affected(kind, obj))
        super()._changed(key, kind, obj)

    def _get_trainjob(self, spec: JobSpec) -> dict | None:
        _, custom = self._api()
        return self._call(f"reading TrainJob {spec.job_id}", custom.get_namespaced_custom_object,
                          GROUP, VERSION, spec.namespace, PLURAL, spec.job_id, missing_ok=True)

    def _get_jobset(self, spec: JobSpec) -> dict | None:
        """The job's JobSet (its restart counter); None where it is gone or the account may not
        read it (the pods then say as much)."""
        _, custom = self._api()
        try:
            return self._call(f"reading JobSet {spec.job_id}",
                              custom.get_namespaced_custom_object, JOBSET_GROUP, JOBSET_VERSION,
                              spec.namespace, JOBSET_PLURAL, spec.job_id, missing_ok=True)
        except EngineError:
            return None

    def _watched_jobset(self, spec: JobSpec) -> dict | None:
        """The JobSet as last read, read again only when the job changed since."""
        if spec.job_id in self._jobsets and spec.job_id not in self._jobsets_stale:
            return self._jobsets[spec.job_id]
        self._jobsets_stale.discard(spec.job_id)  # first: a change during the read marks it again
        self._jobsets[spec.job_id] = jobset = self._get_jobset(spec)
        return jobset

    def _list_pods(self, spec: JobSpec, cached: bool = True) -> list[dict]:
        """The pods of the job's JobSet, as dicts: from the namespace's watch where it runs (and
        `cached`)."""
        watch = self._job_watch(spec) if cached else None
        if watch is not None:
            return watch["pods"].items(lambda pod: ((pod.get("metadata") or {}).get("labels")
                                                    or {}).get(JOBSET_NAME_LABEL) == spec.job_id)
        core, _ = self._api()
        pods = self._call(f"listing the pods of {spec.job_id}", core.list_namespaced_pod,
                          spec.namespace, label_selector=f"{JOBSET_NAME_LABEL}={spec.job_id}")
        return [core.api_client.sanitize_for_serialization(p) for p in pods.items]

    def _read_trainjob(self, spec: JobSpec, confirm: bool = True, jobset: bool = True,
                       cached: bool = True):
        """(TrainJob or None, its JobSet or None, its pods as dicts): from the namespace's
        watches where they run (and `cached`), else from the API server. A TrainJob missing
        from the cache is asked for once more (`confirm`): one created a moment ago may not be
        in it yet."""
        watch = self._job_watch(spec) if cached else None
        if watch is None:
            trainjob = self._get_trainjob(spec)
            found = self._get_jobset(spec) if trainjob is not None and jobset else None
            return trainjob, found, self._list_pods(spec, cached=False)
        trainjob = watch["jobs"].get(spec.job_id)
        if trainjob is None and confirm:
            trainjob = self._get_trainjob(spec)
        found = self._watched_jobset(spec) if trainjob is not None and jobset else None
        return trainjob, found, self._list_pods(spec)

    def status(self, job: JobHandle) -> JobStatus:
        with self._status_lock:
            last = job.dir.read_status() or JobStatus(job_id=job.job_id)
            if last.state.is_terminal():
                return last
            status = self._current(job, last)
            if replace(status, updated_at=0) != replace(last, updated_at=0):
                job.dir.write_status(status)
            self._follow(job, status, last)
            if status.state.is_terminal():
                self._jobsets.pop(job.job_id, None)
        return status

    def _current(self, job: JobHandle, last: JobStatus) -> JobStatus:
        """The job's status now, from its TrainJob, JobSet and pods (and, while it is queued,
        its tenant's queue)."""
        trainjob, jobset, pods = self._read_trainjob(job.spec)
        if trainjob is None:
            return last.moved_to(JobState.STOPPED, "the TrainJob was deleted")
        status = status_from_trainjob(job.spec, trainjob, pods, jobset)
        if status.state.is_terminal() and self._job_watch(job.spec) is not None:
            # An end is for good: it is read from the API server itself, as the streams of
            # pods and TrainJobs resume apart after a drop and the pods' may lag behind (the
            # failed node's exit code, the restarts).
            trainjob, jobset, pods = self._read_trainjob(job.spec, cached=False)
            if trainjob is None:
                return last.moved_to(JobState.STOPPED, "the TrainJob was deleted")
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
        return status

    def _queue_message(self, spec: JobSpec, trainjob: dict) -> tuple[str, str]:
        """("position N of M in <queue>; <Kueue's reason>", Kueue's refusal or "")."""
        queue = ((trainjob.get("metadata") or {}).get("labels") or {}).get(
            queueing.QUEUE_LABEL, "")
        with self._watch_lock:
            shared = self._queue_reads.get((spec.namespace, queue))
            if shared is None:
                shared = SharedRead(lambda: self._read_queue(spec.namespace, queue),
                                    self.queue_refresh_seconds)
                self._queue_reads[(spec.namespace, queue)] = shared
        workloads, pending = shared.get()
        if workloads is None:
            return "waiting for the tenant's queue to admit it", ""
        uid = (trainjob.get("metadata") or {}).get("uid", "")
        mine = [w for w in workloads if queueing.owner_uid(w) == uid]
        refusal = queueing.never_fits(mine[0]) if mine else ""
        return queueing.queue_message(trainjob, workloads, pending), refusal

    def _read_queue(self, namespace: str, queue: str) -> tuple[list | None, dict | None]:
        """(the namespace's Workloads, the LocalQueue's pending workloads from the visibility
        API or None); (None, None) when the Workloads could not be read."""
        _, custom = self._api()
        try:
            listed = self._call(f"listing the Workloads of namespace {namespace}",
                                custom.list_namespaced_custom_object, queueing.GROUP,
                                queueing.VERSION, namespace, "workloads")
        except EngineError as err:
            self.log.debug("Cannot read the queue: %s", err)
            return None, None
        return listed.get("items") or [], self._pending_workloads(namespace, queue)

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
        watch = self._job_watch(job.spec)
        while time.monotonic() < deadline:
            since = watch["pods"].version if watch is not None else 0
            trainjob, _, pods = self._read_trainjob(job.spec, confirm=watch is None,
                                                    jobset=False)
            # Gone on two reads a second apart: once seen (flaky, 1 run in 3) pods of a deleted
            # TrainJob's JobSet outlived one empty listing.
            gone = gone + 1 if trainjob is None and not pods else 0
            if gone == 2:
                break
            if watch is not None and not gone:  # the next change of its pods, not a poll
                watch["pods"].wait_for_change(since, min(1.0, deadline - time.monotonic()))
            else:
                time.sleep(0.5 if not gone else 1.0)
        message = "stopped by request"
        if gone < 2:  # the cluster is slow to collect the pods: say so rather than hide it
            self.log.warning("TrainJob %s deleted; its pods were still terminating after %ss",
                             job.job_id, self.stop_timeout)
            message += "; its pods were still terminating (the cluster removes them)"
        with self._status_lock:
            last = job.dir.read_status() or status
            if last.state.is_terminal() and last.state != JobState.STOPPED:
                return last  # it ended on its own while it was being deleted
            stopped = status.moved_to(JobState.STOPPED, message)
            job.dir.write_status(stopped)
            self._follow(job, stopped, last)
            self._jobsets.pop(job.job_id, None)
        return stopped

    @staticmethod
    def _usage(job_object: dict) -> UsageRecord:
        return usage_from_trainjob(job_object)

    # -- logs -----------------------------------------------------------------------------------

    def _pod(self, job: JobHandle, rank: int) -> str | None:
        """The newest pod of the rank's node (after a whole-job restart, the new attempt's)."""
        return pod_of_node(self._list_pods(job.spec), rank // job.spec.resources.nproc_per_node)


def get_path(api_client, path: str, _request_timeout=None) -> dict:
    """GET `path` (a resource the generated client has no method for, such as a subresource of
    an aggregated API) with the client's credentials; a refusal raises its ApiException."""
    request = api_client.param_serialize(method="GET", resource_path=path,
                                         header_params={"Accept": "application/json"},
                                         auth_settings=["BearerToken"])
    response = api_client.call_api(*request, _request_timeout=_request_timeout)
    response.read()
    return api_client.response_deserialize(response, {"200": "object"}).data
