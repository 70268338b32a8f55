"""What a kernel watches of one namespace for its jobs, and how a panel hears of each change.

`JobWatch` groups the shared informers (`watcher.SharedInformer`) of one namespace and user: one
per kind an engine reads (for PaddleJobs: the jobs, their pods, the events on them), each a single
stream for every job of the kernel. It also keeps the jobs being followed and, for each, the
`StatusFeed`s of the panels showing it: the engine computes a job's status on every change that
concerns it and puts each new state into the feeds, so a panel draws every state the job went
through, even two within one refresh.

`paddlejob_watch` builds the PaddleJob engine's (PaddleJobs, pods, events), `trainjob_watch` the
trainjob engine's (TrainJobs and their JobSets' pods), both the same way.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from launcher_magic.core.status import JobStatus
from launcher_magic.engines.kubernetes import trainjob
from launcher_magic.engines.kubernetes.paddlejob import GROUP, JOB_NAME_LABEL, KIND, PLURAL, VERSION
from launcher_magic.engines.kubernetes.watcher import SharedInformer
from workbench_contract.labels import LABEL_JOB, LABEL_USER


class StatusFeed:
    """The statuses of one job, in the order the engine saw them, for one panel."""

    def __init__(self):
        self._queued: list[JobStatus] = []
        self._cond = threading.Condition()

    def put(self, status: JobStatus) -> None:
        with self._cond:
            self._queued.append(status)
            self._cond.notify_all()

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` for a status; True when one is queued."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._queued), timeout)

    def take(self) -> list[JobStatus]:
        """Every status queued since the last call, oldest first (at once, maybe none)."""
        with self._cond:
            taken, self._queued = self._queued, []
            return taken


class JobWatch:
    """The informers of one namespace and user, started together; `job_of(kind, obj)` says which
    job an object belongs to (None: it cannot tell)."""

    def __init__(self, informers: dict[str, SharedInformer],
                 job_of: Callable[[str, dict], str | None]):
        self.informers, self.job_of = informers, job_of
        self.feeds: dict[str, list[StatusFeed]] = {}
        self.followed: dict[str, object] = {}  # job id -> the engine's JobHandle
        self.lock = threading.Lock()

    def __getitem__(self, kind: str) -> SharedInformer:
        return self.informers[kind]

    def start(self, timeout: float) -> bool:
        """Start every informer and wait up to `timeout` for their first lists."""
        for informer in self.informers.values():
            informer.start()
        return self.synced_within(timeout)

    def synced_within(self, timeout: float) -> bool:
        return all(informer.wait_synced(timeout) for informer in self.informers.values())

    @property
    def synced(self) -> bool:
        return all(informer.synced for informer in self.informers.values())

    def stop(self) -> None:
        for informer in self.informers.values():
            informer.stop()

    def feed(self, job_id: str) -> StatusFeed:
        feed = StatusFeed()
        with self.lock:
            self.feeds.setdefault(job_id, []).append(feed)
        return feed

    def publish(self, job_id: str, status: JobStatus) -> None:
        with self.lock:
            feeds = list(self.feeds.get(job_id, ()))
        for feed in feeds:
            feed.put(status)

    def affected(self, kind: str, obj: dict | None) -> list[object]:
        """The followed jobs that a change of `obj` (None: anything) may concern."""
        with self.lock:
            if obj is None:
                return list(self.followed.values())
            job_id = self.job_of(kind, obj)
            if job_id is None:
                return list(self.followed.values())
            return [self.followed[job_id]] if job_id in self.followed else []


def paddlejob_job_of(kind: str, obj: dict) -> str | None:
    """The PaddleJob an object of the PaddleJob engine's informers belongs to."""
    metadata = obj.get("metadata") or {}
    if kind == "jobs":
        return metadata.get("name")
    if kind == "pods":
        return (metadata.get("labels") or {}).get(JOB_NAME_LABEL)
    if kind == "events":
        return (obj.get("involvedObject") or {}).get("name")
    return None


def trainjob_job_of(kind: str, obj: dict) -> str | None:
    """The TrainJob an object of the trainjob engine's informers belongs to (its JobSet, and so
    the JobSet's pods, bear the TrainJob's name)."""
    metadata = obj.get("metadata") or {}
    if kind == "jobs":
        return metadata.get("name")
    if kind == "pods":
        return (metadata.get("labels") or {}).get(trainjob.JOBSET_NAME_LABEL)
    return None


Kinds = dict[str, tuple[Callable, str, str]]  # kind -> (list method, label and field selector)


def _watch_of(namespace: str, kinds: Kinds, job_of: Callable[[str, dict], str | None], *,
              watch_seconds: int, request_timeout: float,
              on_change: Callable[[str, dict | None], None], log=None) -> JobWatch:
    informers = {
        kind: SharedInformer(f"{kind} of namespace {namespace}", lister, label_selector=labels,
                             field_selector=fields, watch_seconds=watch_seconds,
                             request_timeout=request_timeout,
                             on_change=functools.partial(on_change, kind), log=log)
        for kind, (lister, labels, fields) in kinds.items()
    }
    return JobWatch(informers, job_of)


def paddlejob_watch(core, custom, namespace: str, user_label: str, **options) -> JobWatch:
    """The PaddleJob engine's informers for `namespace`: the workbench's PaddleJobs and worker
    pods (of `user_label`'s jobs where it is not ""), and the events on PaddleJobs. `options`:
    `watch_seconds`, `request_timeout`, `on_change(kind, obj)` and `log`, as `SharedInformer`
    takes them."""
    mine = f",{LABEL_USER}={user_label}" if user_label else ""
    kinds = {
        "jobs": (functools.partial(custom.list_namespaced_custom_object, GROUP, VERSION,
                                   namespace, PLURAL), LABEL_JOB + mine, ""),
        "pods": (functools.partial(core.list_namespaced_pod, namespace),
                 f"{JOB_NAME_LABEL},{LABEL_JOB}{mine}", ""),
        "events": (functools.partial(core.list_namespaced_event, namespace), "",
                   f"involvedObject.kind={KIND}"),
    }
    return _watch_of(namespace, kinds, paddlejob_job_of, **options)


def trainjob_watch(core, custom, namespace: str, user_label: str, **options) -> JobWatch:
    """The trainjob engine's informers for `namespace`: the workbench's TrainJobs and the pods
    of their JobSets (of `user_label`'s jobs where it is not ""); `options` as for
    `paddlejob_watch`. JobSets are not watched (a notebook may only get and list them): the
    engine reads one when its TrainJob or pods change."""
    mine = f",{LABEL_USER}={user_label}" if user_label else ""
    kinds = {
        "jobs": (functools.partial(custom.list_namespaced_custom_object, trainjob.GROUP,
                                   trainjob.VERSION, namespace, trainjob.PLURAL),
                 LABEL_JOB + mine, ""),
        "pods": (functools.partial(core.list_namespaced_pod, namespace),
                 f"{trainjob.JOBSET_NAME_LABEL},{LABEL_JOB}{mine}", ""),
    }
    return _watch_of(namespace, kinds, trainjob_job_of, **options)
