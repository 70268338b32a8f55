"""The kubernetes engine: a job is a `kubeflow.org/v1 PaddleJob` in the tenant's namespace.

It submits with the notebook's own service account (in-cluster config; a kubeconfig outside a
cluster), reads status from the PaddleJob's conditions and its worker pods, follows logs from the
pods and stops a job by deleting it. It follows jobs by watching, not polling (`watch`): one
stream per kind (PaddleJobs, pods, events) for all of the kernel's jobs in a namespace
(`jobwatch`, `watcher`), and a panel's log tail through one follow stream per rank shown, so a
live panel costs the API server nothing between changes. Where and as whom workers run
(namespace, the user's storage claim and its mount, uid/gid, node selector) comes from the hub's
`NotebookContext`. Manifests and the status mapping are pure (`paddlejob`); this module is the
API I/O around them.

`status.json` has one writer: this engine, in the kernel (`status` and `stop`, and the watches'
thread, which brings a followed job's status up to date on each change).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from traitlets import Bool, Dict, Float, Int, Unicode, default
from urllib3.exceptions import HTTPError

from launcher_magic.core.jobdir import JobHandle
from launcher_magic.core.spec import JobSpec, SpecError
from launcher_magic.core.status import JobState, JobStatus, RankState, RankStatus
from launcher_magic.engines.base import (
    Engine,
    EngineError,
    EngineUnavailable,
    TenantUsage,
    UsageRecord,
)
from launcher_magic.engines.kubernetes.jobwatch import JobWatch, StatusFeed, paddlejob_watch
from launcher_magic.engines.kubernetes.paddlejob import (
    CONTAINER,
    GPU,
    GROUP,
    JOB_NAME_LABEL,
    KIND,
    PLURAL,
    VERSION,
    ClusterSettings,
    _timestamp,
    build_paddlejob,
    check_quota,
    env_secret,
    env_secret_name,
    label_value,
    owned_by,
    status_from_cluster,
)
from launcher_magic.engines.kubernetes.watcher import (
    LogTail,
    WatchStats,
    split_timestamp,
    unseen_lines,
)
from workbench_contract import environment as wbenv
from workbench_contract.labels import LABEL_JOB, LABEL_TENANT, LABEL_USER
from workbench_contract.pod_security import DEFAULT_GID, DEFAULT_UID
from workbench_contract.resources import parse_quantity

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
__all__ = ["KubernetesEngine", "split_timestamp", "unseen_lines", "usage_from_paddlejob"]


def _stream_lines(response) -> Iterator[str]:
    """Decoded lines of a streamed HTTP response, as they arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")


def _api_message(err) -> str:
    try:
        return json.loads(err.body or "{}").get("message") or ""
    except (TypeError, ValueError):
        return ""


def _policy_refusal(err) -> str:
    """What an admission policy said when it refused a request ("" for other refusals): the
    rule and what to change, without the API server's preamble."""
    _, found, said = _api_message(err).partition("denied request: ")
    return said.strip() if found else ""


def _webhook_refusal(err) -> str:
    """What an admission webhook (the training operator's, Trainer's, Kueue's) said when it
    refused a request ("" for other refusals)."""
    message = _api_message(err)
    return message.strip() if "admission webhook" in message and "denied" in message else ""


def usage_from_paddlejob(paddlejob: dict) -> UsageRecord:
    """What a PaddleJob of the workbench held: its Worker replicas, the GPU limit of their
    container, and its start and end as the operator (or its deletion) recorded them."""
    metadata = paddlejob.get("metadata") or {}
    labels = metadata.get("labels") or {}
    worker = ((paddlejob.get("spec") or {}).get("paddleReplicaSpecs") or {}).get("Worker") or {}
    containers = (((worker.get("template") or {}).get("spec") or {}).get("containers") or [])
    limits = next((((c.get("resources") or {}).get("limits") or {}) for c in containers
                   if c.get("name") == CONTAINER), {})
    status = paddlejob.get("status") or {}
    finished = _timestamp(status.get("completionTime"))
    for condition in status.get("conditions") or []:
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            finished = finished or _timestamp(condition.get("lastTransitionTime"))
    # A stopped job is deleted: it held its nodes until then.
    finished = finished or _timestamp(metadata.get("deletionTimestamp"))
    return UsageRecord(
        job_id=labels.get(LABEL_JOB) or metadata.get("name", ""),
        user=labels.get(LABEL_USER, ""), tenant=labels.get(LABEL_TENANT),
        nodes=int(worker.get("replicas") or 1),
        gpus_per_node=int(parse_quantity(str(limits.get(GPU, "0")))),
        started_at=_timestamp(status.get("startTime")), finished_at=finished)


class KubernetesEngine(Engine):
    """PaddleJobs in the tenant's namespace, watched through the API server."""

    name = "kubernetes"
    poll_interval = 1.0
    # The job object this engine makes: its kind, and its API group, version and plural.
    job_kind, job_api = "PaddleJob", (GROUP, VERSION, PLURAL)
    # How a stop deletes the job object's dependents (see the trainjob engine for Background).
    delete_propagation = "Foreground"
    container = CONTAINER  # the container of a job's pods whose log is shown

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
    request_timeout = Float(
        30.0, help="Seconds one request to the API server may take before it counts as failed."
    ).tag(config=True)
    watch = Bool(
        True, help="Follow jobs through watches shared per namespace (one stream per kind for all "
        "of this kernel's jobs) and logs through one follow stream per rank shown. False: ask "
        "the API server at every refresh (four requests a second per live panel)."
    ).tag(config=True)
    watch_seconds = Int(
        300, help="Seconds the API server keeps one watch open before the engine resumes it "
        "(each resume is one request)."
    ).tag(config=True)
    log_idle_seconds = Float(
        30.0, help="Seconds a rank's log stream stays open after the panel last showed it."
    ).tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._client = None
        self._watches: dict[tuple[str, str], JobWatch] = {}
        self._tails: dict[tuple[str, str], LogTail] = {}
        self._watch_lock = threading.Lock()
        self._status_lock = threading.RLock()  # status.json: computed and written by one at a time

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

    def _call(self, action: str, method, *args, missing_ok: bool = False, **kwargs):
        """One API request; its failures become an EngineError that says what failed and why.

        Returns None for a 404 when `missing_ok`.
        """
        from kubernetes.client.exceptions import ApiException

        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            return method(*args, **kwargs)
        except ApiException as err:
            if missing_ok and err.status == 404:
                return None
            policy = _policy_refusal(err)
            if policy:  # the tenant's admission policy: its rule says what to change
                raise EngineError(f"{action} was refused by your tenant's policy ({err.status}): "
                                  f"{policy}") from None
            webhook = _webhook_refusal(err)
            if webhook:  # e.g. Trainer's: the runtime the job names is not installed
                raise EngineError(f"{action} was refused ({err.status}): {webhook}") from None
            if err.status == 403:
                raise EngineError(
                    f"{action} was refused (403 Forbidden): your tenant's service account may not "
                    "do that; ask an operator to provision the tenant") from None
            reason = getattr(err, "reason", "") or str(err)
            raise EngineError(f"{action} failed: {err.status} {reason}".strip()) from None
        except (HTTPError, OSError) as err:  # no answer: a wrong address, a cluster that is down
            host = self._api()[0].api_client.configuration.host
            raise EngineError(
                f"{action}: no answer from the Kubernetes API server at {host} "
                f"({err.__class__.__name__}); check KUBECONFIG or the cluster") from None

    def settings(self, spec: JobSpec) -> ClusterSettings:
        context = self.context
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
        return ClusterSettings(
            namespace=spec.namespace, image=spec.image, storage=context.storage,
            uid=context.uid or DEFAULT_UID,
            gid=context.gid if context.gid is not None else DEFAULT_GID,
            node_selector=dict(context.node_selector),
            ttl_seconds_after_finished=self.ttl_seconds_after_finished,
            clean_pod_policy=self.clean_pod_policy, python=self.python,
            pod_annotations=dict(self.pod_annotations),
        )

    # -- the contract ---------------------------------------------------------------------------

    def preflight(self, spec: JobSpec) -> None:
        namespace = self.settings(spec).namespace
        core, _ = self._api()
        quotas = self._call(f"reading the quota of namespace {namespace}",
                            core.list_namespaced_resource_quota, namespace)
        check_quota(spec, [core.api_client.sanitize_for_serialization(q) for q in quotas.items])

    def submit(self, job: JobHandle) -> None:
        spec = job.spec
        settings = self.settings(spec)
        core, custom = self._api()
        manifest = build_paddlejob(spec, job.dir, settings)
        secret, secret_name = env_secret(spec, settings), env_secret_name(spec)
        try:
            if secret is not None:  # first, so the workers find their environment at start
                self._call(f"creating Secret {secret_name}", core.create_namespaced_secret,
                           settings.namespace, secret)
            created = self._call(f"creating PaddleJob {spec.job_id}",
                                 custom.create_namespaced_custom_object, GROUP, VERSION,
                                 settings.namespace, PLURAL, manifest)
            if secret is not None:  # the Secret now goes with the job
                self._call(f"giving Secret {secret_name} to its PaddleJob",
                           core.patch_namespaced_secret, secret_name, settings.namespace,
                           owned_by(created))
        except BaseException:
            # A request that timed out may still have created the job: take it all back.
            self._delete(spec, missing_ok=True, quiet=True)
            raise
        self.log.info("Created PaddleJob %s/%s", settings.namespace, spec.job_id)
        job.dir.write_status(JobStatus(job_id=spec.job_id, message="submitted to the cluster"))

    # -- watching -------------------------------------------------------------------------------

    def _job_watch(self, spec: JobSpec) -> JobWatch | None:
        """The running watches of the job's namespace and user, started at the first call; None
        when watching is off or they could not list within `request_timeout` (then every read
        asks the API server, as a poll would)."""
        if not self.watch or not spec.namespace:
            return None
        key = (spec.namespace, label_value(spec.user) if spec.user else "")
        with self._watch_lock:
            watch = self._watches.get(key)
            if watch is None:
                core, custom = self._api()
                watch = self._new_watch(
                    core, custom, spec.namespace, key[1], watch_seconds=self.watch_seconds,
                    request_timeout=self.request_timeout, log=self.log,
                    on_change=lambda kind, obj, key=key: self._changed(key, kind, obj))
                self._watches[key] = watch
                self.log.info("Watching the %s of namespace %s", ", ".join(watch.informers),
                              spec.namespace)
                watch.start(self.request_timeout)
        return watch if watch.synced else None

    def _new_watch(self, core, custom, namespace: str, user_label: str, **options) -> JobWatch:
        """The informers this engine reads its jobs from (`jobwatch`), not started yet."""
        return paddlejob_watch(core, custom, namespace, user_label, **options)

    def _changed(self, key: tuple[str, str], kind: str, obj: dict | None) -> None:
        """From an informer's thread: bring the status of each followed job the change concerns
        up to date (status.json sees every state), and tell the panels showing it."""
        watch = self._watches.get(key)
        if watch is None:
            return
        for job in watch.affected(kind, obj):
            try:
                self.status(job)
            except EngineError as err:
                self.log.warning("Could not update the status of %s: %s", job.job_id, err)

    def watch_stats(self) -> dict[str, dict[str, WatchStats]]:
        """What each running watch asked of the API server: namespace -> kind -> counts."""
        return {f"{namespace}/{user}" if user else namespace:
                {kind: informer.stats for kind, informer in watch.informers.items()}
                for (namespace, user), watch in list(self._watches.items())}

    def status_feed(self, job: JobHandle) -> StatusFeed | None:
        """The job's statuses as they change, in order (each new state once), for a panel; None
        when the engine does not watch (the panel then polls `status`)."""
        watch = self._job_watch(job.spec)
        if watch is None:
            return None
        feed = watch.feed(job.job_id)
        feed.put(self.status(job))
        return feed

    def _read(self, spec: JobSpec, events: bool = False, confirm: bool = True):
        """The PaddleJob (None: not found), its pods and (with `events`) the events on it: from
        the namespace's watches where they run. A job missing from the cache is asked for once
        more (`confirm`): one created a moment ago may not be in it yet."""
        watch = self._job_watch(spec)
        if watch is not None:
            paddlejob = watch["jobs"].get(spec.job_id)
            if paddlejob is None and confirm:
                _, custom = self._api()
                paddlejob = self._call(f"reading PaddleJob {spec.job_id}",
                                       custom.get_namespaced_custom_object, GROUP, VERSION,
                                       spec.namespace, PLURAL, spec.job_id, missing_ok=True)
            pods = watch["pods"].items(lambda pod: ((pod.get("metadata") or {}).get("labels")
                                                    or {}).get(JOB_NAME_LABEL) == spec.job_id)
            found = watch["events"].items(lambda event: (event.get("involvedObject") or {}).get(
                "name") == spec.job_id) if events else []
            return paddlejob, pods, found
        core, custom = self._api()
        paddlejob = self._call(f"reading PaddleJob {spec.job_id}",
                               custom.get_namespaced_custom_object, GROUP, VERSION,
                               spec.namespace, PLURAL, spec.job_id, missing_ok=True)
        pods = self._call(f"listing the pods of {spec.job_id}", core.list_namespaced_pod,
                          spec.namespace, label_selector=f"{JOB_NAME_LABEL}={spec.job_id}")
        found = [core.api_client.sanitize_for_serialization(p) for p in pods.items]
        if not events:
            return paddlejob, found, []
        listed = self._call(
            f"listing the events of {spec.job_id}", core.list_namespaced_event, spec.namespace,
            field_selector=f"involvedObject.kind={KIND},involvedObject.name={spec.job_id}")
        return paddlejob, found, [core.api_client.sanitize_for_serialization(e)
                                  for e in listed.items]

    def status(self, job: JobHandle) -> JobStatus:
        with self._status_lock:
            last = job.dir.read_status() or JobStatus(job_id=job.job_id)
            if last.state.is_terminal():
                return last
            paddlejob, pods, events = self._read(job.spec, events=True)
            if paddlejob is None:
                status = last.moved_to(JobState.STOPPED, "the PaddleJob was deleted")
            else:
                status = _with_rank_records(
                    status_from_cluster(job.spec, paddlejob, pods, events), job)
            if replace(status, updated_at=0) != replace(last, updated_at=0):
                job.dir.write_status(status)
            self._follow(job, status, last)
        return status

    def _follow(self, job: JobHandle, status: JobStatus, last: JobStatus) -> None:
        """Keep a watched job's status current from its changes until it ends, and hand each new
        state to the panels showing it."""
        watch = self._watches.get((job.spec.namespace or "",
                                   label_value(job.spec.user) if job.spec.user else ""))
        if watch is None:
            return
        with watch.lock:
            if status.state.is_terminal():
                watch.followed.pop(job.job_id, None)
            else:
                watch.followed[job.job_id] = job
        if status.state != last.state or status.restarts != last.restarts:
            watch.publish(job.job_id, status)

    def _delete(self, spec: JobSpec, missing_ok: bool = True, quiet: bool = False) -> None:
        _, custom = self._api()
        try:
            group, version, plural = self.job_api
            self._call(f"deleting {self.job_kind} {spec.job_id}",
                       custom.delete_namespaced_custom_object, group, version, spec.namespace,
                       plural, spec.job_id, propagation_policy=self.delete_propagation,
                       missing_ok=missing_ok)
            if spec.env:  # gone with its job, unless the job never became its owner
                core, _ = self._api()
                self._call(f"deleting Secret {env_secret_name(spec)}",
                           core.delete_namespaced_secret, env_secret_name(spec), spec.namespace,
                           missing_ok=True)
        except EngineError as err:
            if not quiet:
                raise
            self.log.warning("%s", err)

    def stop(self, job: JobHandle) -> JobStatus:
        status = self.status(job)
        if status.state.is_terminal():
            return status
        self.log.info("Deleting PaddleJob %s/%s", job.spec.namespace, job.job_id)
        self._delete(job.spec)
        deadline = time.monotonic() + self.stop_timeout
        watch = self._job_watch(job.spec)
        while time.monotonic() < deadline:
            since = watch["pods"].version if watch is not None else 0
            paddlejob, pods, _ = self._read(job.spec, confirm=watch is None)
            if paddlejob is None and not pods:
                break
            if watch is not None:  # the next change of its pods, not a poll
                watch["pods"].wait_for_change(since, min(5.0, deadline - time.monotonic()))
            else:
                time.sleep(0.5)
        with self._status_lock:
            last = job.dir.read_status() or status
            if not last.state.is_terminal():
                last = status.moved_to(JobState.STOPPED, "stopped by request")
                job.dir.write_status(last)
        return last

    def shutdown(self, jobs: Sequence[JobHandle]) -> None:
        """Delete each job (its pods follow); the kernel's exit does not wait for them to go.
        Then close the watches and log streams."""
        for job in jobs:
            self._delete(job.spec, quiet=True)
        with self._watch_lock:
            watches, self._watches = list(self._watches.values()), {}
            tails, self._tails = list(self._tails.values()), {}
        for tail in tails:
            tail.stop()
        for watch in watches:
            watch.stop()

    def tenant_usage(self, since: float | None) -> TenantUsage | None:
        """The workbench's PaddleJobs in the tenant's namespace, which the notebook's service
        account may list. Others' jobs count while the cluster keeps them: a stopped job is
        deleted at once, a finished one `ttl_seconds_after_finished` after it ends."""
        namespace, tenant = self.context.namespace, self.context.tenant
        if not namespace:
            return None
        selector = LABEL_JOB + (f",{LABEL_TENANT}={label_value(tenant)}" if tenant else "")
        _, custom = self._api()
        group, version, plural = self.job_api
        listed = self._call(f"listing the {self.job_kind}s of namespace {namespace}",
                            custom.list_namespaced_custom_object, group, version, namespace,
                            plural, label_selector=selector)
        records = [self._usage(item) for item in listed.get("items") or []]
        records = tuple(r for r in records if since is None or r.finished_at is None
                        or r.finished_at >= since)
        hours = self.ttl_seconds_after_finished / 3600
        return TenantUsage(tenant, records, caveat=(
            "other users' jobs count while the cluster keeps them: a stopped job is deleted at "
            f"once, a finished one {hours:g} h after it ends"))

    @staticmethod
    def _usage(job_object: dict) -> UsageRecord:
        """What one of this engine's job objects held."""
        return usage_from_paddlejob(job_object)

    def _pod(self, job: JobHandle, rank: int) -> str | None:
        """The pod that runs `rank` (None: none made yet); raises EngineError where finding it
        asks the API server and that fails."""
        return f"{job.job_id}-worker-{rank // job.spec.resources.nproc_per_node}"

    def log_lines(self, job: JobHandle, rank: int, count: int,
                  status: JobStatus | None = None) -> list[str]:
        core, _ = self._api()
        try:
            pod = self._pod(job, rank)
        except EngineError:
            return []  # finding the pod asked the API server, which did not answer
        if pod is None:
            return []  # no pod made yet
        if self.watch and not (status or self.status(job)).state.is_terminal():
            # A live panel's tail comes from the rank's follow stream once it is open; the first
            # call (and a longer tail than the stream keeps) asks once.
            tail, new = self._tail(job, pod)
            if not new and count <= tail.keep:
                return tail.lines(count)
        try:
            text = self._call(f"reading the log of {pod}", core.read_namespaced_pod_log, pod,
                              job.spec.namespace, container=self.container, tail_lines=count,
                              missing_ok=True)
        except EngineError:
            return []  # not scheduled yet, or its container has not started
        return (text or "").splitlines()[-count:]

    def _tail(self, job: JobHandle, pod: str) -> tuple[LogTail, bool]:
        """The follow stream of a rank's pod that a panel reads its tail from, opened at the
        first call and closed by itself once nobody asked for `log_idle_seconds`; and whether
        it was opened by this call."""
        core, _ = self._api()
        with self._watch_lock:
            for key, idle in [(k, t) for k, t in self._tails.items() if t.idle or not t.alive]:
                idle.stop()  # a rank no panel shows any more
                del self._tails[key]
            tail = self._tails.get((job.job_id, pod))
            if tail is None or not tail.alive:
                def open_stream(lines: int):
                    return core.read_namespaced_pod_log(
                        pod, job.spec.namespace, container=self.container, follow=True,
                        timestamps=True, tail_lines=lines, _preload_content=False,
                        # A quiet rank's stream is opened again after an hour (one request).
                        _request_timeout=(self.request_timeout, 3600.0))

                def finished() -> bool:
                    last = job.dir.read_status()
                    return last is not None and last.state.is_terminal()

                tail = LogTail(f"log of pod {pod}", open_stream, finished=finished,
                               idle_seconds=self.log_idle_seconds, log=self.log)
                self._tails[(job.job_id, pod)] = tail
                return tail, True
        return tail, False

    def follow_log(self, job: JobHandle, rank: int, poll: float = 1.0) -> Iterator[str]:
        """One follow stream of the rank's pod, opened again (without repeating a line) when the
        container restarts or the connection drops, until the job ends; where the rank moves to
        another pod (a whole-job restart's), that pod's log from its top."""
        core, _ = self._api()
        last, shown = None, None
        while True:
            try:
                pod = self._pod(job, rank)
                if pod != shown:  # a new pod writes its log from the top
                    last, shown = None, pod
                response = None if pod is None else self._call(
                    f"following the log of {pod}", core.read_namespaced_pod_log, pod,
                    job.spec.namespace, container=self.container, follow=True, timestamps=True,
                    _preload_content=False, _request_timeout=None, missing_ok=True)
            except EngineError:
                response = None  # not scheduled yet, or its container has not started
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


def _with_rank_records(status: JobStatus, job: JobHandle, attempt: int = 0) -> JobStatus:
    """Where the job directory is shared, each rank's own record of `attempt` is more precise
    than its pod."""
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
