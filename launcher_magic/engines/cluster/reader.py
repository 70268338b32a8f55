"""Reading what the cluster holds of one job: its object, its pods, and what its kind adds.

`JobReader` reads from the namespace's caches where they run (`namespace_cache`: no request),
else from the API server. What it reads is what the kind's adapter says it needs: the job object
and the pods its controller labels with the job's name, the events on the job object (kinds with
`watch_events`), and a companion object of the job's name (kinds with a `companion`), which a
notebook may only get, so it is read again only when the job or its pods changed since.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from launcher_magic.core.spec import JobSpec
from launcher_magic.engines.base import EngineError
from launcher_magic.engines.cluster.adapter import JobKindAdapter, Observed
from launcher_magic.engines.cluster.api import ClusterApi
from launcher_magic.engines.cluster.namespace_cache import EVENTS, JOBS, PODS, NamespaceCache
from launcher_magic.engines.cluster.objects import pods_labelled
from workbench_contract.cluster import Api


class JobReader:
    """Reads jobs of `api`'s kind with `adapter`'s needs; `cache_of(spec)` is the running cache
    of the job's namespace (None: ask the API server)."""

    def __init__(self, api: ClusterApi, job_api: Api, adapter: JobKindAdapter,
                 cache_of: Callable[[JobSpec], NamespaceCache | None]):
        self.api, self.job_api, self.adapter, self.cache_of = api, job_api, adapter, cache_of
        # Each job's companion object (None: not found or not readable) as last read, and the
        # jobs whose object or pods changed since: their companion is read again.
        self._companions: dict[str, dict | None] = {}
        self._stale: set[str] = set()

    def read(self, spec: JobSpec, *, cached: bool = True, confirm: bool = True,
             full: bool = True) -> Observed:
        """What the cluster holds of the job: from the namespace's caches where they run (and
        `cached`), else from the API server. A job missing from the cache is asked for once
        more (`confirm`): one created a moment ago may not be in it yet. Without `full`, only
        the job object and its pods."""
        cache = self.cache_of(spec) if cached else None
        if cache is None:
            job = self.get(spec)
        else:
            job = cache[JOBS].get(spec.job_id)
            job = self.get(spec) if job is None and confirm else job
        events = self._events(spec, cache) if full and self.adapter.watch_events else []
        companion = self._companion(spec, cache is not None) \
            if full and job is not None and self.adapter.companion else None
        return Observed(job, self.pods(spec, cache, cached=cached), events, companion)

    def get(self, spec: JobSpec) -> dict | None:
        """The job object from the API server (None: not found)."""
        api = self.job_api
        return self.api.call(f"reading {api.kind} {spec.job_id}",
                             self.api.custom.get_namespaced_custom_object, api.group, api.version,
                             spec.namespace, api.plural, spec.job_id, missing_ok=True)

    def pods(self, spec: JobSpec, cache: NamespaceCache | None = None, *,
             cached: bool = True) -> list[dict]:
        """The job's pods: from `cache` (default, where `cached`: the namespace's, where it
        runs), else listed from the API server."""
        if cache is None and cached:
            cache = self.cache_of(spec)
        label = self.adapter.pod_job_label
        if cache is not None:
            return pods_labelled(cache[PODS].items(), label, spec.job_id)
        listed = self.api.call(f"listing the pods of {spec.job_id}",
                               self.api.core.list_namespaced_pod, spec.namespace,
                               label_selector=f"{label}={spec.job_id}")
        return [self.api.plain(p) for p in listed.items]

    def _events(self, spec: JobSpec, cache: NamespaceCache | None) -> list[dict]:
        if cache is not None:
            return cache[EVENTS].items(lambda event: (event.get("involvedObject") or {}).get(
                "name") == spec.job_id)
        listed = self.api.call(
            f"listing the events of {spec.job_id}", self.api.core.list_namespaced_event,
            spec.namespace, field_selector=f"involvedObject.kind={self.job_api.kind},"
                                           f"involvedObject.name={spec.job_id}")
        return [self.api.plain(e) for e in listed.items]

    def _companion(self, spec: JobSpec, cached: bool) -> dict | None:
        """The job's companion object, read again only when the job changed since (`cached`);
        None where it is gone or the account may not read it (the pods then say as much)."""
        if cached and spec.job_id in self._companions and spec.job_id not in self._stale:
            return self._companions[spec.job_id]
        self._stale.discard(spec.job_id)  # first: a change during the read marks it again
        api = self.adapter.companion
        try:
            found = self.api.call(f"reading {api.kind} {spec.job_id}",
                                  self.api.custom.get_namespaced_custom_object, api.group,
                                  api.version, spec.namespace, api.plural, spec.job_id,
                                  missing_ok=True)
        except EngineError:
            found = None
        if cached:
            self._companions[spec.job_id] = found
        return found

    def changed(self, job_ids: Iterable[str]) -> None:
        """These jobs' objects or pods changed: read their companions again."""
        self._stale.update(job_ids)

    def forget(self, job_id: str) -> None:
        """The job has ended: drop what is kept of it."""
        self._companions.pop(job_id, None)
        self._stale.discard(job_id)
