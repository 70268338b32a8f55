"""The pure parts of the cluster engine's watching: which job an object belongs to, which pod a
rank's log comes from, and the queue read that all queued jobs share (`informer.SharedRead`)."""

from __future__ import annotations

import threading

import pytest

from launcher_magic.engines.cluster.informer import SharedRead
from launcher_magic.engines.cluster.namespace_cache import job_of
from launcher_magic.engines.cluster.paddlejob import PaddleJobAdapter
from launcher_magic.engines.cluster.trainjob import TrainJobAdapter, pod_of_node


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pod(name: str, node: int, attempt: int | None, created: str) -> dict:
    labels = {"jobset.sigs.k8s.io/jobset-name": "job-1",
              "batch.kubernetes.io/job-completion-index": str(node)}
    if attempt is not None:
        labels["jobset.sigs.k8s.io/restart-attempt"] = str(attempt)
    return {"metadata": {"name": name, "labels": labels, "creationTimestamp": created}}


def test_many_callers_within_a_period_share_one_read():
    clock, answers = Clock(), iter(range(1, 100))
    shared = SharedRead(lambda: next(answers), every=10.0, clock=clock)
    assert [shared.get() for _ in range(50)] == [1] * 50  # fifty queued jobs, one read
    clock.now += 9.9
    assert shared.get() == 1
    clock.now += 0.1
    assert shared.get() == 2
    assert shared.reads == 2


def test_nobody_asking_costs_nothing_and_a_failed_read_is_not_retried_within_the_period():
    clock, calls = Clock(), []

    def read():
        calls.append(clock.now)
        if len(calls) == 2:
            raise OSError("the server is away")
        return len(calls)

    shared = SharedRead(read, every=10.0, clock=clock)
    assert calls == []  # made lazily, by the first caller
    assert shared.get() == 1
    clock.now += 60  # an hour of nobody asking would be one read too
    with pytest.raises(OSError):
        shared.get()
    assert shared.get() == 1  # the last answer, not a second try at a failing server
    clock.now += 10
    assert shared.get() == 3
    assert len(calls) == 3


def test_callers_of_other_threads_wait_for_the_read_in_progress():
    started, release, answers = threading.Event(), threading.Event(), []

    def slow_read():
        started.set()
        release.wait(10)
        return "queue"

    shared = SharedRead(slow_read, every=60.0)
    threads = [threading.Thread(target=lambda: answers.append(shared.get())) for _ in range(8)]
    threads[0].start()
    assert started.wait(10)
    for thread in threads[1:]:
        thread.start()
    release.set()
    for thread in threads:
        thread.join(10)
    assert answers == ["queue"] * 8 and shared.reads == 1


def test_a_ranks_log_comes_from_its_nodes_newest_attempt():
    pods = [_pod("job-1-node-0-0-aaaaa", 0, 0, "2026-01-01T00:00:00Z"),
            _pod("job-1-node-0-1-bbbbb", 1, 0, "2026-01-01T00:00:00Z"),
            _pod("job-1-node-0-1-ccccc", 1, 1, "2026-01-01T00:00:05Z"),
            _pod("job-1-node-0-1-ddddd", 1, 1, "2026-01-01T00:00:09Z")]
    assert pod_of_node(pods, 0) == "job-1-node-0-0-aaaaa"
    assert pod_of_node(pods, 1) == "job-1-node-0-1-ddddd"
    assert pod_of_node(pods, 2) is None  # not made yet: nothing to read
    assert pod_of_node([_pod("p", 0, None, "2026-01-01T00:00:00Z")], 0) == "p"


@pytest.mark.parametrize("kind, obj, job", [
    ("jobs", {"metadata": {"name": "job-1"}}, "job-1"),
    ("pods", _pod("job-1-node-0-0-aaaaa", 0, 0, "2026-01-01T00:00:00Z"), "job-1"),
    ("pods", {"metadata": {"name": "stray"}}, None),
    ("configmaps", {"metadata": {"name": "job-1"}}, None),
], ids=["trainjob", "its-pod", "unlabelled-pod", "unwatched-kind"])
def test_each_watched_object_names_its_job(kind, obj, job):
    assert job_of(TrainJobAdapter.pod_job_label, kind, obj) == job


def test_a_paddlejobs_pods_and_events_name_it_by_their_own_labels():
    label = PaddleJobAdapter.pod_job_label
    pod = {"metadata": {"labels": {label: "job-2"}}}
    assert job_of(label, "pods", pod) == "job-2"
    assert job_of(TrainJobAdapter.pod_job_label, "pods", pod) is None  # not a JobSet's pod
    assert job_of(label, "events", {"involvedObject": {"name": "job-2"}}) == "job-2"
