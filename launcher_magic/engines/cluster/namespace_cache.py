"""What a kernel caches of one namespace for its jobs of one kind, and how panels hear of changes.

`NamespaceCache` groups the shared informers (`informer.SharedInformer`) of one namespace and
user: one per kind of object the engine reads (the job objects, their pods and, for kinds whose
controller keeps exit codes in Events, the events on them), each a single stream for every job
of the kernel. It also keeps the jobs being followed and, for each, the `StatusFeed`s of the
panels showing it: the engine computes a job's status on every change that concerns it and puts
each new state into the feeds, so a panel draws every state the job went through, even two
within one refresh.

`namespace_cache(...)` builds one for a job kind from what its adapter says (the job API, the
label on its pods naming the job, whether events matter).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from launcher_magic.core.status import JobStatus
from launcher_magic.engines.base import StatusFeed
from launcher_magic.engines.cluster.informer import SharedInformer
from workbench_contract.cluster import Api
from workbench_contract.labels import LABEL_JOB, LABEL_USER

JOBS, PODS, EVENTS = "jobs", "pods", "events"


class NamespaceCache:
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

    def follow(self, job, status: JobStatus) -> None:
        """Keep `job` followed while its status is not terminal."""
        with self.lock:
            if status.state.is_terminal():
                self.followed.pop(job.job_id, None)
            else:
                self.followed[job.job_id] = job

    def affected(self, kind: str, obj: dict | None) -> list[object]:
        """The followed jobs that a change of `obj` (None: anything) may concern."""
        with self.lock:
            if obj is None:
                return list(self.followed.values())
            job_id = self.job_of(kind, obj)
            if job_id is None:
                return list(self.followed.values())
            return [self.followed[job_id]] if job_id in self.followed else []


def job_of(pod_job_label: str, kind: str, obj: dict) -> str | None:
    """The job an object of a cache belongs to: a job object by its name, a pod by the label its
    controller puts on it, an event by the object it is about."""
    metadata = obj.get("metadata") or {}
    if kind == JOBS:
        return metadata.get("name")
    if kind == PODS:
        return (metadata.get("labels") or {}).get(pod_job_label)
    if kind == EVENTS:
        return (obj.get("involvedObject") or {}).get("name")
    return None


def namespace_cache(core, custom, namespace: str, user_label: str, *, api: Api,
                    pod_job_label: str, events: bool, **options) -> NamespaceCache:
    """The informers for a job kind's objects in `namespace`: the workbench's job objects of
    `api` and the pods labelled `pod_job_label` (of `user_label`'s jobs where it is not ""), and
    with `events` the events on the job objects. `options`: `watch_seconds`, `request_timeout`,
    `on_change(kind, obj)` and `log`, as `SharedInformer` takes them. Not started."""
    mine = f",{LABEL_USER}={user_label}" if user_label else ""
    kinds: dict[str, tuple[Callable, str, str]] = {
        JOBS: (functools.partial(custom.list_namespaced_custom_object, api.group, api.version,
                                 namespace, api.plural), LABEL_JOB + mine, ""),
        PODS: (functools.partial(core.list_namespaced_pod, namespace),
               f"{pod_job_label},{LABEL_JOB}{mine}", ""),
    }
    if events:
        kinds[EVENTS] = (functools.partial(core.list_namespaced_event, namespace), "",
                         f"involvedObject.kind={api.kind}")
    on_change = options.pop("on_change")
    informers = {
        kind: SharedInformer(f"{kind} of namespace {namespace}", lister, label_selector=labels,
                             field_selector=fields, on_change=functools.partial(on_change, kind),
                             **options)
        for kind, (lister, labels, fields) in kinds.items()
    }
    return NamespaceCache(informers, functools.partial(job_of, pod_job_label))
