"""The cluster engine: a job is an object of one job kind in the tenant's namespace.

One engine for every kind of cluster job (`workbench_contract.jobkinds`: PaddleJobs, TrainJobs,
and any kind registered later); what differs between kinds is the kind's adapter
(`adapter.JobKindAdapter`: the objects, how their status reads, which pod is a rank). The engine
owns the rest, the same for every kind:

- submit: the job's `--env` Secret, then the job object (in the tenant's Kueue queue where the
  kind is queued and the namespace has one), then the Secret handed to the job; on any failure
  (a refusal, a timeout, Ctrl-C) whatever was made is deleted again;
- watching, not polling (`watch`): one stream per kind of object (the job objects, their pods,
  and the events on them where the kind needs those) for all of the kernel's jobs in a namespace
  (`namespace_cache`), so a live panel costs the API server nothing between changes and hears of
  each new state at once (`status_feed`);
- settling: an end is for good, so a job that looks ended in the caches is read once more from
  the API server itself (the streams of pods and jobs resume apart after a drop, and one may lag
  behind the other);
- stop: delete the job object, wait for its pods to go, and keep a job that ended by itself
  while it was being deleted as it ended;
- logs from the pods (`logs`), the tenant's usage from the job objects, and errors that say what
  failed (`api`).

It submits with the notebook's own service account (in-cluster config; a kubeconfig outside a
cluster). Where and as whom pods run (namespace, the user's storage claim and its mount, uid/gid,
node selector) comes from the hub's `NotebookContext`.

`status.json` has one writer: this engine, in the kernel (`status` and `stop`, and the caches'
threads, which bring a followed job's status up to date on each change).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace

from traitlets import Bool, Dict, Float, Int, Unicode, default

from launcher_magic.core.jobdir import JobHandle
from launcher_magic.core.spec import JobSpec, SpecError
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.engines.base import Engine, EngineError, StatusFeed, TenantUsage
from launcher_magic.engines.cluster.adapter import JobKindAdapter
from launcher_magic.engines.cluster.api import ClusterApi
from launcher_magic.engines.cluster.informer import SharedInformer, WatchStats
from launcher_magic.engines.cluster.kueue import TenantQueue, is_queued
from launcher_magic.engines.cluster.logs import PodLogs
from launcher_magic.engines.cluster.namespace_cache import PODS, NamespaceCache, namespace_cache
from launcher_magic.engines.cluster.objects import (
    ClusterSettings,
    env_secret,
    env_secret_name,
    job_network,
    label_value,
    owned_by,
    with_rank_records,
)
from launcher_magic.engines.cluster.quota import check_quota
from launcher_magic.engines.cluster.reader import JobReader
from workbench_contract import environment as wbenv
from workbench_contract.cluster import LOCAL_QUEUE
from workbench_contract.jobkinds import DEFAULT, DEPRECATED_NAMES, JobKind, job_kind, load_object
from workbench_contract.labels import LABEL_JOB, LABEL_TENANT
from workbench_contract.placement import DEFAULT_NODE_LOSS_TOLERATION
from workbench_contract.pod_security import DEFAULT_GID, DEFAULT_UID


class ClusterEngine(Engine):
    """Jobs of one kind (`kind`, default TrainJobs) in the tenant's namespace, watched through
    the API server. Its name is the kind's."""

    poll_interval = 1.0

    kubeconfig = Unicode(
        help="Kubeconfig used outside a cluster (default: $KUBECONFIG). In a pod the service "
             "account's in-cluster credentials are used."
    ).tag(config=True)

    @default("kubeconfig")
    def _default_kubeconfig(self) -> str:
        return os.environ.get("KUBECONFIG", "")

    python = Unicode("python", help="The Python in the job image.").tag(config=True)
    pod_annotations = Dict(
        value_trait=Unicode(), help="Annotations for every job pod (e.g. for a mesh or a "
        "node-level agent)."
    ).tag(config=True)
    stop_timeout = Float(120.0, help="Seconds to wait for a deleted job's pods to go.").tag(
        config=True
    )
    request_timeout = Float(
        30.0, help="Seconds one request to the API server may take before it counts as failed."
    ).tag(config=True)
    watch = Bool(True, help="Follow jobs through watches shared per namespace (one stream per "
                 "kind for all of this kernel's jobs) and logs through one follow stream per "
                 "rank shown. False: ask the API server at every refresh.").tag(config=True)
    watch_seconds = Int(300, help="Seconds the API server keeps one watch open before the "
                        "engine resumes it (each resume is one request).").tag(config=True)
    log_idle_seconds = Float(
        30.0, help="Seconds a rank's log stream stays open after the panel last showed it."
    ).tag(config=True)
    queue = Unicode(
        LOCAL_QUEUE, help="The Kueue LocalQueue of the tenant's namespace that jobs of a queued "
        "kind are submitted to; used when it exists there ('' never queues)."
    ).tag(config=True)
    queue_refresh_seconds = Float(
        10.0, help="Seconds between two reads of the tenant's queue while one of this kernel's "
        "jobs waits in it (the position from Kueue's visibility API, Kueue's reason from the "
        "namespace's Workloads: two requests). One read per namespace, shared by all of its "
        "queued jobs; none while no job is queued."
    ).tag(config=True)

    def __init__(self, kind: JobKind | None = None, **kwargs):
        super().__init__(**kwargs)
        self.kind = kind or job_kind(DEFAULT)
        self.name = self.kind.name
        self.adapter: JobKindAdapter = load_object(self.kind.adapter)(parent=self)
        self._api: ClusterApi | None = None
        self._logs: PodLogs | None = None
        self._queue: TenantQueue | None = None
        self._caches: dict[tuple[str, str], NamespaceCache] = {}
        self._cache_lock = threading.Lock()
        self._status_lock = threading.RLock()  # status.json: computed and written by one at a time
        self._waits: dict[str, str] = {}  # job id -> why it will wait (preflight)
        self._queued: dict[str, str] = {}  # job id -> its place in the queue (last status)
        self._reader: JobReader | None = None

    # -- parts ----------------------------------------------------------------------------------

    @property
    def api(self) -> ClusterApi:
        if self._api is None:
            self._api = ClusterApi(self.name, self.kubeconfig, self.request_timeout)
        return self._api

    @property
    def reader(self) -> JobReader:
        if self._reader is None:
            self._reader = JobReader(self.api, self.kind.api, self.adapter, self._cache)
        return self._reader

    @property
    def logs(self) -> PodLogs:
        if self._logs is None:
            self._logs = PodLogs(self.api, self.adapter.container, self.log_idle_seconds,
                                 self.log)
        return self._logs

    @property
    def tenant_queue(self) -> TenantQueue | None:
        """The tenant's Kueue queue, for a queued kind (None for others)."""
        if self._queue is None and self.kind.queued:
            self._queue = TenantQueue(self.api, self.queue, self.queue_refresh_seconds, self.log)
        return self._queue

    def settings(self, spec: JobSpec) -> ClusterSettings:
        """Where and as whom the job's pods run. Raises SpecError without a namespace or image."""
        context = self.context
        if not spec.namespace:
            raise SpecError(
                f"the {self.name} engine needs your tenant's namespace ({wbenv.NAMESPACE}), which "
                "the hub sets; start your server from the hub or use --engine local")
        if not spec.image:
            raise SpecError(
                f"the {self.name} engine needs an image: pass --image or start your server from "
                f"the hub, which sets {wbenv.IMAGE}")
        node_loss = context.node_loss_toleration
        return ClusterSettings(
            namespace=spec.namespace, image=spec.image, storage=context.storage,
            uid=context.uid or DEFAULT_UID,
            gid=context.gid if context.gid is not None else DEFAULT_GID,
            node_selector=dict(context.node_selector), python=self.python,
            pod_annotations=dict(self.pod_annotations),
            node_loss_toleration=DEFAULT_NODE_LOSS_TOLERATION if node_loss is None else node_loss)

    # -- the contract ---------------------------------------------------------------------------

    def preflight(self, spec: JobSpec) -> None:
        """Refuse a job that can never fit the tenant's quota; one that does not fit now waits
        in the tenant's queue (with a note saying so) where there is one, else is refused."""
        self.adapter.check(spec)
        namespace = self.settings(spec).namespace
        listed = self.api.call(f"reading the quota of namespace {namespace}",
                               self.api.core.list_namespaced_resource_quota, namespace)
        queued = bool(self.tenant_queue and self.tenant_queue.name_in(namespace))
        wait = check_quota(spec, self.kind.api, [self.api.plain(q) for q in listed.items],
                           queued=queued)
        if wait:
            self.log.warning("Job %s will wait in the queue: %s", spec.job_id, wait)
            self._waits[spec.job_id] = wait

    def notes(self, spec: JobSpec) -> list[str]:
        """A deprecated engine name; why the job will wait (preflight) and, while it does, its
        place in the queue."""
        notes = []
        if spec.engine in DEPRECATED_NAMES:
            notes.append(f"the engine name {spec.engine!r} is deprecated: say --engine "
                         f"{self.name} ({self.kind.description})")
        wait, queued = self._waits.get(spec.job_id), self._queued.get(spec.job_id)
        notes += [f"it will wait in your tenant's queue: {wait}"] if wait else []
        return notes + ([queued] if queued else [])

    def submit(self, job: JobHandle) -> None:
        spec, api = job.spec, self.kind.api
        settings = self.settings(spec)
        queue = self.tenant_queue.name_in(settings.namespace) if self.tenant_queue else ""
        manifest = self.adapter.build(spec, job.dir, settings, queue=queue)
        try:
            # First what the pods need at start: the job's NetworkPolicy (without it the
            # tenant's default deny keeps its nodes apart) and its --env Secret.
            companions = self._create_companions(spec, settings.namespace)
            created = self.api.call(f"creating {api.kind} {spec.job_id}",
                                    self.api.custom.create_namespaced_custom_object, api.group,
                                    api.version, settings.namespace, api.plural, manifest)
            for what, patch, name in companions:  # they now go with the job
                self.api.call(f"giving {what} {name} to its {api.kind}", patch, name,
                              settings.namespace, owned_by(created))
        except BaseException:
            # A request that timed out may still have created the job: take it all back.
            self._delete(spec, quiet=True)
            raise
        self.log.info("Created %s %s/%s%s", api.kind, settings.namespace, spec.job_id,
                      f" in queue {queue}" if queue else "")
        job.dir.write_status(JobStatus(job_id=spec.job_id, state=JobState.QUEUED,
                                       message=f"in {queue}") if queue else
                             JobStatus(job_id=spec.job_id, message="submitted to the cluster"))

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
                self.reader.forget(job.job_id)
        return status

    def _current(self, job: JobHandle, last: JobStatus) -> JobStatus:
        """The job's status now, from what the cluster holds of it (and, while it is queued,
        its tenant's queue)."""
        seen = self.reader.read(job.spec)
        status = self.adapter.status(job.spec, seen) if seen.job is not None else None
        watched = self._cache(job.spec) is not None
        if status is not None and status.state.is_terminal() and watched:
            # An end is for good: it is read from the API server itself, as the streams of pods
            # and jobs resume apart after a drop and one may lag behind the other.
            seen = self.reader.read(job.spec, cached=False)
            status = self.adapter.status(job.spec, seen) if seen.job is not None else None
        if status is None:
            return last.moved_to(JobState.STOPPED, f"the {self.kind.api.kind} was deleted")
        status = self._with_queue(job, seen.job, status)
        return with_rank_records(status, job.dir, self.adapter.attempt(status))

    def _with_queue(self, job: JobHandle, obj, status: JobStatus) -> JobStatus:
        """A queued job's place in its tenant's queue; one that can never be admitted is
        deleted and Failed."""
        queue = self.tenant_queue
        if queue is None or status.state != JobState.QUEUED or not is_queued(obj):
            self._queued.pop(job.job_id, None)
            return status
        message, refusal = queue.standing(job.spec.namespace or "", obj)
        self._queued[job.job_id] = f"queued: {message}"
        status = replace(status, message=message)
        if not refusal:
            return status
        self.log.info("Deleting %s %s/%s: it can never be admitted", self.kind.api.kind,
                      job.spec.namespace, job.job_id)
        self._delete(job.spec, quiet=True)
        self._queued.pop(job.job_id, None)
        return status.moved_to(
            JobState.FAILED, f"refused by your tenant's queue: {refusal}; the job is larger "
            "than all the quota it could ever borrow, ask for less")

    def stop(self, job: JobHandle) -> JobStatus:
        """Delete the job object (queued or running); returns once it and its pods are gone.
        A job that ended by itself meanwhile keeps how it ended."""
        status = self.status(job)
        if status.state.is_terminal():
            return status
        self.log.info("Deleting %s %s/%s", self.kind.api.kind, job.spec.namespace, job.job_id)
        self._delete(job.spec)
        message = "stopped by request"
        if not self._wait_until_gone(job.spec):  # the cluster is slow: say so, not hide it
            self.log.warning("%s %s deleted; its pods were still terminating after %ss",
                             self.kind.api.kind, job.job_id, self.stop_timeout)
            message += "; its pods were still terminating (the cluster removes them)"
        with self._status_lock:
            last = job.dir.read_status() or status
            if last.state.is_terminal() and last.state != JobState.STOPPED:
                return last  # it ended on its own while it was being deleted
            stopped = status.moved_to(JobState.STOPPED, message)
            job.dir.write_status(stopped)
            self._follow(job, stopped, last)
            self.reader.forget(job.job_id)
        return stopped

    def _wait_until_gone(self, spec: JobSpec) -> bool:
        """Wait up to `stop_timeout` for a deleted job's object and pods to go; True once they
        have. Under Background deletion the job object goes first and its pods may outlive one
        empty read (seen once in three runs), so that takes two reads a second apart."""
        reads_needed = 1 if self.adapter.delete_propagation == "Foreground" else 2
        deadline, gone = time.monotonic() + self.stop_timeout, 0
        cache = self._cache(spec)
        while time.monotonic() < deadline:
            since = cache[PODS].version if cache is not None else 0
            seen = self.reader.read(spec, confirm=cache is None, full=False)
            gone = gone + 1 if seen.job is None and not seen.pods else 0
            if gone >= reads_needed:
                return True
            if cache is not None and not gone:  # the next change of its pods, not a poll
                cache[PODS].wait_for_change(since, min(1.0, deadline - time.monotonic()))
            else:
                time.sleep(0.5 if not gone else 1.0)
        return False

    def shutdown(self, jobs: Sequence[JobHandle]) -> None:
        """Delete each job (its pods follow); the kernel's exit does not wait for them to go.
        Then close the caches and log streams."""
        for job in jobs:
            self._delete(job.spec, quiet=True)
        with self._cache_lock:
            caches, self._caches = list(self._caches.values()), {}
        if self._logs is not None:
            self._logs.close()
        for cache in caches:
            cache.stop()

    def tenant_usage(self, since: float | None) -> TenantUsage | None:
        """The workbench's jobs of this kind in the tenant's namespace, which the notebook's
        service account may list. Others' jobs count while the cluster keeps them: a stopped
        job is deleted at once, a finished one when its kind's cleanup removes it."""
        namespace, tenant = self.context.namespace, self.context.tenant
        if not namespace:
            return None
        api = self.kind.api
        selector = LABEL_JOB + (f",{LABEL_TENANT}={label_value(tenant)}" if tenant else "")
        listed = self.api.call(f"listing the {api.kind}s of namespace {namespace}",
                               self.api.custom.list_namespaced_custom_object, api.group,
                               api.version, namespace, api.plural, label_selector=selector)
        records = [self.adapter.usage(item) for item in listed.get("items") or []]
        records = [r for r in records if since is None or r.finished_at is None
                   or r.finished_at >= since]
        return TenantUsage(tenant, tuple(records), caveat=(
            "other users' jobs count while the cluster keeps them: a stopped job is deleted at "
            "once, a finished one when the cluster cleans it up"))

    # -- logs -----------------------------------------------------------------------------------

    def rank_pod(self, job: JobHandle, rank: int) -> str | None:
        """The pod that runs `rank` now (None: none made yet). Raises EngineError where finding
        it asks the API server and that fails."""
        return self.adapter.rank_pod(job.spec, rank, lambda: self.reader.pods(job.spec))

    def log_lines(self, job: JobHandle, rank: int, count: int,
                  status: JobStatus | None = None) -> list[str]:
        try:
            pod = self.rank_pod(job, rank)
        except EngineError:
            return []  # finding the pod asked the API server, which did not answer
        if pod is None:
            return []  # no pod made yet
        namespace = job.spec.namespace or ""
        if self.watch and not (status or self.status(job)).state.is_terminal():
            # A live panel's tail comes from the rank's follow stream.
            return self.logs.tail(job.job_id, namespace, pod, count, finished=lambda: (
                (job.dir.read_status() or JobStatus(job.job_id)).state.is_terminal()))
        return self.logs.read(namespace, pod, count)

    def follow_log(self, job: JobHandle, rank: int, poll: float = 1.0) -> Iterator[str]:
        """One follow stream of the rank's pod, opened again (without repeating a line) when the
        container restarts or the connection drops; where the rank moves to another pod (a
        whole-job restart's), that pod's log from its top."""
        self.api.clients()
        return self.logs.follow(job.spec.namespace or "", lambda: self.rank_pod(job, rank),
                                lambda: self.status(job).state.is_terminal(), poll)

    def _create_companions(self, spec: JobSpec, namespace: str) -> list[tuple]:
        """Create the job's NetworkPolicy and, with `--env`, its Secret; returns (what, the
        patch method, name) of each, for handing them to the job once it exists."""
        networking, core = self.api.networking, self.api.core
        made = [("NetworkPolicy", networking.patch_namespaced_network_policy, spec.job_id)]
        self.api.call(f"creating the NetworkPolicy of {spec.job_id}",
                      networking.create_namespaced_network_policy, namespace,
                      job_network(spec, namespace))
        secret = env_secret(spec, namespace)
        if secret is not None:
            name = env_secret_name(spec)
            self.api.call(f"creating Secret {name}", core.create_namespaced_secret, namespace,
                          secret)
            made.append(("Secret", core.patch_namespaced_secret, name))
        return made

    def _delete(self, spec: JobSpec, quiet: bool = False) -> None:
        """Delete the job object (gone already is fine) and its `--env` Secret, which goes with
        the job unless the job never became its owner. `quiet`: log a failure, never raise."""
        api = self.kind.api
        try:
            self.api.call(f"deleting {api.kind} {spec.job_id}",
                          self.api.custom.delete_namespaced_custom_object, api.group, api.version,
                          spec.namespace, api.plural, spec.job_id,
                          propagation_policy=self.adapter.delete_propagation, missing_ok=True)
            # Its companions go with it, unless the job never became their owner.
            self.api.call(f"deleting the NetworkPolicy of {spec.job_id}",
                          self.api.networking.delete_namespaced_network_policy, spec.job_id,
                          spec.namespace, missing_ok=True)
            if spec.env:
                self.api.call(f"deleting Secret {env_secret_name(spec)}",
                              self.api.core.delete_namespaced_secret, env_secret_name(spec),
                              spec.namespace, missing_ok=True)
        except EngineError as err:
            if not quiet:
                raise
            self.log.warning("%s", err)

    # -- watching -------------------------------------------------------------------------------

    @staticmethod
    def _cache_key(spec: JobSpec) -> tuple[str, str]:
        return spec.namespace or "", label_value(spec.user) if spec.user else ""

    def _cache(self, spec: JobSpec) -> NamespaceCache | None:
        """The running caches of the job's namespace and user, started at the first call; None
        when watching is off or they could not list within `request_timeout` (then every read
        asks the API server, as a poll would)."""
        if not self.watch or not spec.namespace:
            return None
        key = self._cache_key(spec)
        with self._cache_lock:
            cache = self._caches.get(key)
            if cache is None:
                core, custom = self.api.clients()
                cache = namespace_cache(
                    core, custom, spec.namespace, key[1], api=self.kind.api,
                    pod_job_label=self.adapter.pod_job_label, events=self.adapter.watch_events,
                    watch_seconds=self.watch_seconds, request_timeout=self.request_timeout,
                    log=self.log, on_change=lambda kind, obj, key=key: self._changed(key, kind,
                                                                                      obj))
                self._caches[key] = cache
                self.log.info("Watching the %s of namespace %s", ", ".join(cache.informers),
                              spec.namespace)
                cache.start(self.request_timeout)
        return cache if cache.synced else None

    def _changed(self, key: tuple[str, str], kind: str, obj: dict | None) -> None:
        """From an informer's thread: bring the status of each followed job the change concerns
        up to date (status.json sees every state), and tell the panels showing it."""
        cache = self._caches.get(key)
        if cache is None:
            return
        jobs = cache.affected(kind, obj)
        self.reader.changed(job.job_id for job in jobs)
        for job in jobs:
            try:
                self.status(job)
            except EngineError as err:
                self.log.warning("Could not update the status of %s: %s", job.job_id, err)

    def _follow(self, job: JobHandle, status: JobStatus, last: JobStatus) -> None:
        """Keep a watched job's status current from its changes until it ends, and hand each new
        state to the panels showing it."""
        cache = self._caches.get(self._cache_key(job.spec))
        if cache is None:
            return
        cache.follow(job, status)
        if status.state != last.state or status.restarts != last.restarts:
            cache.publish(job.job_id, status)

    def status_feed(self, job: JobHandle) -> StatusFeed | None:
        cache = self._cache(job.spec)
        if cache is None:
            return None
        feed = cache.feed(job.job_id)
        feed.put(self.status(job))
        return feed

    def informers(self) -> list[SharedInformer]:
        """Every informer of the running caches (for tests and benchmarks)."""
        return [informer for cache in list(self._caches.values())
                for informer in cache.informers.values()]

    def watch_stats(self) -> dict[str, dict[str, WatchStats]]:
        """What each running cache asked of the API server: namespace -> kind -> counts."""
        return {f"{namespace}/{user}" if user else namespace:
                {kind: informer.stats for kind, informer in cache.informers.items()}
                for (namespace, user), cache in list(self._caches.items())}
