"""A read that must not trust the caches (`cached=False`: an end is read from the API server
itself) takes the job and its pods from the API server, not the job from the server and its
pods from a stream that may lag behind. The control-plane tier drops the streams for real
(tests/cluster/test_trainjob_watch.py); here the stale cache is planted."""

from __future__ import annotations

from types import SimpleNamespace

from launcher_magic.core.spec import JobSpec, Resources
from launcher_magic.engines.cluster.namespace_cache import JOBS, PODS
from launcher_magic.engines.cluster.reader import JobReader
from workbench_contract.cluster import Api

LABEL = "workbench.paddle.org/job"
SPEC = JobSpec(job_id="dp-0a1b2c", name="dp", engine="trainjob", nodes=1, namespace="team",
               resources=Resources(nproc_per_node=1))


def _pod(phase: str) -> dict:
    return {"metadata": {"name": "dp-0", "labels": {LABEL: SPEC.job_id}},
            "status": {"phase": phase}}


class _Store:
    def __init__(self, objects: dict):
        self.objects = objects

    def get(self, name):
        return self.objects.get(name)

    def items(self, where=None):
        return [o for o in self.objects.values() if where is None or where(o)]


class _Api:
    """What the API server holds now: the job ended, its pod Failed."""

    def __init__(self):
        self.asked: list[str] = []
        self.custom = SimpleNamespace(get_namespaced_custom_object=lambda *a: {"failed": True})
        self.core = SimpleNamespace(list_namespaced_pod=lambda *a, **k: SimpleNamespace(
            items=[_pod("Failed")]))

    def call(self, action, method, *args, missing_ok=False, **kwargs):
        self.asked.append(action)
        return method(*args, **kwargs)

    @staticmethod
    def plain(obj):
        return obj


def test_an_uncached_read_takes_the_pods_from_the_api_server_too():
    api = _Api()
    stale = {JOBS: _Store({SPEC.job_id: {"failed": False}}), PODS: _Store({"dp-0": _pod("Running")})}
    adapter = SimpleNamespace(pod_job_label=LABEL, watch_events=False, companion=None)
    reader = JobReader(api, Api("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"),
                       adapter, lambda spec: stale)

    cached = reader.read(SPEC)
    assert cached.job == {"failed": False} and cached.pods[0]["status"]["phase"] == "Running"
    assert api.asked == []
    fresh = reader.read(SPEC, cached=False)
    assert fresh.job == {"failed": True}
    assert [p["status"]["phase"] for p in fresh.pods] == ["Failed"]
    assert len(api.asked) == 2
