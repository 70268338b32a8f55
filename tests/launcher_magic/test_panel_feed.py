"""A panel draws every state an engine's feed reports, even states shorter than a refresh.

An engine that watches (the cluster engine's `status_feed`) hands the panel each state the job
went through; `kernel/live.py` draws them in order before the job's current state. Here an
engine's job goes through all its states before the panel's first refresh, which a poll of
`status` alone would see only the end of; the real engine's feed is tried on the control plane
(tests/cluster/test_watch.py).
"""

from __future__ import annotations

import json
import re
import threading

import pytest

from launcher_magic.core.jobdir import JobDir, JobHandle
from launcher_magic.core.spec import JobSpec, Resources
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.engines.base import Engine, StatusFeed
from launcher_magic.kernel import live

STATES = (JobState.PENDING, JobState.RUNNING, JobState.RESTARTING, JobState.RUNNING,
          JobState.FAILED)


class _Polled(Engine):
    """Its job has already gone through STATES when the panel first asks; `status` says where
    it is now, as a poll sees it."""

    name = "scripted"

    def status(self, job: JobHandle) -> JobStatus:
        return JobStatus(job_id=job.job_id, state=STATES[-1], restarts=1)

    def stop(self, job: JobHandle) -> JobStatus:
        return self.status(job)

    def log_lines(self, job, rank, count, status=None) -> list[str]:
        return []


class _Watched(_Polled):
    """The same job, with every state it went through in a feed, as a watching engine has."""

    def status_feed(self, job: JobHandle) -> StatusFeed:
        feed = StatusFeed()
        for n, state in enumerate(STATES):
            feed.put(JobStatus(job_id=job.job_id, state=state, restarts=int(n >= 3)))
        return feed


@pytest.fixture
def job(tmp_path) -> JobHandle:
    spec = JobSpec(job_id="flaky-0a1b2c", name="flaky", engine="scripted", nodes=2,
                   resources=Resources(nproc_per_node=1))
    return JobHandle(spec, JobDir.create(tmp_path / "jobs", spec, "x = 1\n"))


def _shown(text: str, job_id: str) -> list[str]:
    states = re.findall(rf"^Paddle job {re.escape(job_id)}: (\w+)", text, re.MULTILINE)
    return [s for n, s in enumerate(states) if n == 0 or states[n - 1] != s]


def _make_panel(job: JobHandle, engine: Engine):
    panel = live.make_panel(job, engine)
    panel.widgets = False
    return panel


def test_a_blocking_panel_draws_every_state_of_the_feed(job, capsys):
    engine = _Watched()
    # The job is over by the time the panel is made, so make_panel asks for no feed (a running
    # job gets one); hand it the feed as for a job still running.
    panel = _make_panel(job, engine)
    panel.feed = engine.status_feed(job)
    assert live.wait(panel, interval=0.01).state == JobState.FAILED
    assert _shown(capsys.readouterr().out, job.job_id) == [s.value for s in STATES]


def test_a_detached_panel_draws_every_state_of_the_feed(job, capsys):
    engine = _Watched()
    panel = _make_panel(job, engine)
    panel.feed = engine.status_feed(job)
    follower = threading.Thread(target=live._follow, args=(panel, 0.01))
    follower.start()
    follower.join(timeout=60)
    assert not follower.is_alive()
    assert _shown(capsys.readouterr().out, job.job_id) == [s.value for s in STATES]


def test_without_a_feed_a_poll_sees_only_where_the_job_is(job, capsys):
    """What the feed is for: polling `status` shows the state the job is in, not its path."""
    engine = _Polled()
    panel = _make_panel(job, engine)
    assert panel.feed is None
    assert live.wait(panel, interval=0.01).state == JobState.FAILED
    assert _shown(capsys.readouterr().out, job.job_id) == ["Failed"]


def test_a_feed_hands_out_each_status_once_in_order():
    feed = StatusFeed()
    assert feed.take() == [] and feed.wait(0) is False
    for state in STATES:
        feed.put(JobStatus(job_id="j", state=state))
    assert feed.wait(0) is True
    assert [s.state for s in feed.take()] == list(STATES)
    assert feed.take() == []


def test_a_lost_machine_stays_in_the_panel_after_the_job_moved_on(job, capsys):
    """Once the job restarted elsewhere its new pods no longer tell of the lost machine; the
    panel keeps what it was told, once, and says where the restarted attempt resumed."""
    from launcher_magic.core.progress import FILENAME, Progress
    from launcher_magic.core.status import NodeStatus

    lost = "node 1 lost its machine gpu-b at 10:05:00: it stopped answering"
    statuses = iter([
        JobStatus(job_id=job.job_id, state=JobState.RESTARTING, message=lost,
                  nodes=(NodeStatus(node=0), NodeStatus(node=1, host="gpu-b", lost_at=1.0))),
        JobStatus(job_id=job.job_id, state=JobState.RESTARTING, message=lost,
                  nodes=(NodeStatus(node=0), NodeStatus(node=1, host="gpu-b", lost_at=1.0))),
        JobStatus(job_id=job.job_id, state=JobState.SUCCEEDED, message="completed",
                  restarts=1, nodes=(NodeStatus(node=0), NodeStatus(node=1, host="gpu-a")))])
    panel = _make_panel(job, _Polled())
    panel.status_of = lambda: next(statuses)
    (job.dir.path / FILENAME).write_text(json.dumps(Progress(step=100, total=100,
                                                         first_step=40).to_dict()))
    for _ in range(3):
        panel.refresh(force=True)
    assert panel.history == (lost,)
    last = capsys.readouterr().out.split(f"Paddle job {job.job_id}: ")[-1]
    assert last.startswith("Succeeded - completed")
    assert f"note: {lost}" in last and "resumed from: step 40" in last


def test_a_panel_opened_after_the_restart_still_tells_of_the_lost_machine(job, capsys):
    """What one panel saw of a lost machine is kept in the job directory: a panel opened once
    the job already runs elsewhere (`%paddle_attach` later, another kernel) still tells it."""
    from launcher_magic.core.status import NodeStatus

    lost = "node 1 lost its machine gpu-b at 10:05:00: it stopped answering"
    first = _make_panel(job, _Polled())
    first.status_of = lambda: JobStatus(
        job_id=job.job_id, state=JobState.RESTARTING, message=lost,
        nodes=(NodeStatus(node=0), NodeStatus(node=1, host="gpu-b", lost_at=1.0)))
    first.refresh(force=True)
    later = _make_panel(job, _Polled())
    later.status_of = lambda: JobStatus(job_id=job.job_id, state=JobState.SUCCEEDED,
                                        message="completed", restarts=1,
                                        nodes=(NodeStatus(node=0), NodeStatus(node=1)))
    later.refresh(force=True)
    last = capsys.readouterr().out.split(f"Paddle job {job.job_id}: ")[-1]
    assert last.startswith("Succeeded - completed") and f"note: {lost}" in last, last
    assert job.dir.read_history() == (lost,)
