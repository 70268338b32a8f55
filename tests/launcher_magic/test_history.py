"""Job history with cost (`%paddle_jobs`) and a log follower that keeps going across restarts.

- GPU-hours are nodes x GPUs per node x runtime: pure rows and totals from synthetic specs; the
  same computation from a PaddleJob the real builder made; real local jobs in a real kernel show
  0.00 on this CPU machine and `--since` leaves out a job that ended before the period.
- The widget view builds, and its Stop button reaches the engine's `stop` through the magic.
- `Engine.follow_log` goes on into each new attempt's log and drains the last one (scripted
  engine), and `%paddle_logs --follow` follows a real job that crashes once and resumes.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from IPython.core.error import UsageError

from launcher_magic.core.jobdir import JobDir, JobHandle
from launcher_magic.core.spec import JobSpec, LaunchOptions, Resources, SpecError, build_spec
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.engines.base import Engine, TenantUsage, UsageRecord
from launcher_magic.engines.cluster.objects import ClusterSettings
from launcher_magic.engines.cluster.paddlejob import build_paddlejob, usage_from_paddlejob
from launcher_magic.engines.local.engine import LocalEngine
from launcher_magic.kernel import history
from workbench_contract.environment import NotebookContext

from .support import TRAIN_CELL, read_status, requires_paddle, wait_until

T0 = 1_700_000_000.0
HOUR = 3600.0


def _spec(job_id="big-a1b2c3", nodes=2, gpus=4, user="ada", created=T0) -> JobSpec:
    return JobSpec(job_id=job_id, name=job_id.rsplit("-", 1)[0], engine="local", nodes=nodes,
                   resources=Resources(nproc_per_node=max(gpus, 1), gpus_per_node=gpus),
                   user=user, tenant="vision", created_at=created)


def _row(job_id="big-a1b2c3", nodes=2, gpus=4, start=T0, end=T0 + 1.5 * HOUR, user="ada",
         state=JobState.SUCCEEDED, now=None) -> history.HistoryRow:
    status = JobStatus(job_id=job_id, state=state, started_at=start, finished_at=end)
    return history.HistoryRow.of(_spec(job_id, nodes, gpus, user, created=start or T0), status,
                                 checkpoint_step=8, now=now)


# -- pure: rows, periods, totals --------------------------------------------------------------

def test_gpu_hours_are_nodes_times_gpus_times_runtime():
    row = _row()
    assert row.duration == 1.5 * HOUR
    assert row.gpu_hours == 12.0
    cells = dict(zip(history.HEADER, history.cells(row), strict=True))
    assert cells["nodes x GPUs"] == "2 x 4"
    assert cells["GPU-hours"] == "12.00"
    assert cells["duration"] == "1:30:00"
    assert cells["checkpoint"] == "step 8"
    # A running job has held its GPUs until now; a CPU job holds none.
    assert _row(end=None, state=JobState.RUNNING, now=T0 + HOUR).gpu_hours == 8.0
    assert _row(gpus=0).gpu_hours == 0.0
    assert _row(start=None, end=T0, state=JobState.FAILED).gpu_hours == 0.0  # never started
    # Six seconds on two GPUs is not nothing.
    assert [history.format_hours(h) for h in (0, 2 * 6 / 3600, 0.005, 12)] == [
        "0.00", "<0.01", "0.01", "12.00"]


@pytest.mark.parametrize("raw, seconds", [("7d", 7 * 86400), ("24h", 86400), ("90m", 5400),
                                          ("600", 600)], ids=["days", "hours", "minutes", "secs"])
def test_since_is_a_period_before_now(raw, seconds):
    assert history.parse_since(raw, T0) == T0 - seconds


@pytest.mark.parametrize("raw", ["soon", "-1d", "0h", "7w"])
def test_since_refuses_what_is_not_a_period(raw):
    with pytest.raises(SpecError, match=f"--since '{raw}' is not a period"):
        history.parse_since(raw, T0)


def test_totals_count_only_what_was_held_in_the_period():
    now = T0 + 10 * 86400
    since = now - 7 * 86400
    records = [
        _row("old-000001", start=T0, end=T0 + HOUR).usage(),  # ended before the period
        _row("edge-000002", start=since - HOUR, end=since + 2 * HOUR).usage(),  # 2 h inside
        _row("bob-000003", user="bob", nodes=1, gpus=8, start=now - HOUR, end=None,
             state=JobState.RUNNING).usage(),  # running: counts until now
        _row("cpu-000004", gpus=0, start=now - HOUR, end=now).usage(),
    ]
    assert history.totals(records, since, now) == {"ada": 2 * 4 * 2.0, "bob": 8.0}
    assert history.totals(records, None, now) == {"ada": 8.0 + 2 * 4 * 3.0, "bob": 8.0}
    assert history.totals(records[:1], since, now) == {}
    # A CPU-only user is listed with zero, not left out.
    assert history.totals(records[3:], since, now) == {"ada": 0.0}


def test_rows_in_the_period():
    now = T0 + 10 * 86400
    since = now - 7 * 86400
    assert not _row(start=T0, end=T0 + HOUR).ran_since(since, now)
    assert _row(start=T0, end=T0 + HOUR).ran_since(None, now)
    assert _row(start=T0, end=None, state=JobState.RUNNING).ran_since(since, now)
    assert _row(start=since + 1, end=since + 2).ran_since(since, now)


def test_tenant_total_counts_each_job_once_and_says_what_it_covers():
    mine = [_row("big-a1b2c3"), _row("cpu-000004", gpus=0)]
    bob = UsageRecord("bob-000003", "bob", nodes=1, gpus_per_node=2, started_at=T0,
                      finished_at=T0 + 3 * HOUR)
    # The cluster lists ada's job too, with another end time; her job folder's counts.
    listed = TenantUsage("vision", (bob, UsageRecord("big-a1b2c3", "ada", 2, 4, T0, T0 + 99)),
                         caveat="a stopped job is deleted at once")
    summary = history.summarize(mine, listed, user="ada", since=None, now=T0 + 86400,
                                period="all time")
    assert summary.by_user == (("ada", 12.0), ("bob", 6.0))
    assert (summary.mine, summary.total) == (12.0, 18.0)
    text = history.render_text(mine, summary, per_user=True)
    assert "GPU-hours all time: you (ada) 12.00; tenant vision 18.00 (2 users)" in text
    assert "  ada  12.00\n  bob  6.00\n" in text and "a stopped job is deleted at once" in text

    # Rows are the user's own job folders, whatever user their specs recorded.
    summary = history.summarize(mine, None, user="", since=None, now=T0 + 86400,
                                period="all time")
    assert summary.by_user == (("", 12.0),) and summary.mine == 12.0

    local = history.summarize(mine, None, user="ada", since=None, now=T0 + 86400,
                              period="all time", caveat="the local engine cannot list others")
    text = history.render_text(mine, local)
    assert ("tenant total: 12.00, covering only your own jobs "
            "(the local engine cannot list others)") in text


def test_text_and_html_show_every_job_and_its_notes():
    rows = [_row(), history.HistoryRow.of(_spec("cpu-000004", gpus=0),
                                          JobStatus("cpu-000004", JobState.FAILED, started_at=T0,
                                                    finished_at=T0 + 61, restarts=1),
                                          None, notes=["--cpu not used by the local engine"])]
    summary = history.summarize(rows, None, user="ada", since=None, now=T0, period="all time")
    text = history.render_text(rows, summary)
    table = text.splitlines()
    assert table[0].split() == ["job", "engine", "state", "started", "duration", "nodes", "x",
                                "GPUs", "GPU-hours", "restarts", "checkpoint"]
    assert "1:01" in table[2] and "1 of 0" in table[2] and "0.00" in table[2]
    assert "note: cpu-000004: --cpu not used by the local engine" in text
    page = history.render_html(rows, summary)
    assert page.count("<tr>") == 3 and "12.00" in page and "--cpu not used" in page


# -- the PaddleJob kind's records ----------------------------------------------------------

def _paddlejob(status: dict, **metadata) -> dict:
    spec = _spec("cluster-abc123", nodes=2, gpus=4)
    manifest = build_paddlejob(spec, JobDir(f"/home/ada/jobs/{spec.job_id}"),
                               ClusterSettings(namespace="wb-vision", image="reg/paddle:1"))
    manifest["metadata"].update(metadata)
    return {**manifest, "status": status}


def test_a_paddlejobs_usage_is_what_its_manifest_asked_for():
    job = _paddlejob({"startTime": "2026-01-01T10:00:00Z",
                      "completionTime": "2026-01-01T11:30:00Z"})
    record = usage_from_paddlejob(job)
    assert (record.job_id, record.user, record.tenant) == ("cluster-abc123", "ada", "vision")
    assert (record.nodes, record.gpus_per_node) == (2, 4)
    assert record.finished_at - record.started_at == 1.5 * HOUR
    assert history.hours_in_period(record, None, record.finished_at + 1) == 12.0

    failed = usage_from_paddlejob(_paddlejob({"startTime": "2026-01-01T10:00:00Z", "conditions": [
        {"type": "Running", "status": "False", "lastTransitionTime": "2026-01-01T10:00:05Z"},
        {"type": "Failed", "status": "True", "lastTransitionTime": "2026-01-01T10:30:00Z"}]}))
    assert failed.finished_at - failed.started_at == 1800
    stopped = usage_from_paddlejob(_paddlejob({"startTime": "2026-01-01T10:00:00Z"},
                                              deletionTimestamp="2026-01-01T10:06:00Z"))
    assert stopped.finished_at - stopped.started_at == 360
    running = usage_from_paddlejob(_paddlejob({"startTime": "2026-01-01T10:00:00Z"}))
    assert running.finished_at is None


# -- following a log across restarts (scripted engine) ----------------------------------------

class ScriptedEngine(Engine):
    """Plays a job: each `status` call first applies the next step, a list of actions (append
    bytes to rank 0's log of an attempt, or become a status), so the follower meets each
    interleaving of writes and status changes in a set order."""

    name = "scripted"

    def __init__(self, steps, **kwargs):
        super().__init__(**kwargs)
        self.steps = list(steps)
        self.current = JobStatus("scripted", JobState.RUNNING, started_at=T0)

    def status(self, job):
        for action in self.steps.pop(0) if self.steps else []:
            if isinstance(action, JobStatus):
                self.current = action
                continue
            attempt, data = action
            path = job.dir.rank_log(attempt, 0, 1)
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as handle:
                handle.write(data)
        return self.current


def test_follow_goes_on_into_each_new_attempt_and_drains_the_last(jobs_root):
    spec = build_spec(LaunchOptions(nodes=1, max_restarts=2), "x = 1\n", NotebookContext())
    job = JobHandle(spec, JobDir.create(jobs_root, spec, "x = 1\n"))
    log = job.dir.rank_log(0, 0, 1)
    log.parent.mkdir(parents=True)
    log.write_text("shown by the tail, before the follow\n")
    restarted = JobStatus(spec.job_id, JobState.RUNNING, started_at=T0, restarts=2)
    ended = JobStatus(spec.job_id, JobState.SUCCEEDED, started_at=T0, restarts=2,
                      finished_at=T0 + 1)
    engine = ScriptedEngine([
        [],  # the follower's first look: where attempt 1's log ends now
        [(0, b"a0 one\n")], [(0, b"a0 \xc3")], [(0, b"\xbccode\n")],  # an u-umlaut cut in two
        [(1, b"a1 line\n")],  # attempt 2 has begun, but the status does not say so yet
        # The rank's last words, then two restarts seen at once: attempt 2 is still shown whole.
        [(0, b"a0 last\n"), restarted], [(2, b"a2 first\n")], [],
        # The job ends before its last line is read: that line is shown all the same.
        [(2, b"a2 last\n"), ended],
    ])
    text = "".join(engine.follow_log(job, 0, poll=0))
    assert text == ("a0 one\na0 \u00fccode\na0 last\n"
                    "== restart 1: attempt 2 ==\na1 line\n"
                    "== restart 2: attempt 3 ==\na2 first\na2 last\n")


# -- the magic, in this process ---------------------------------------------------------------

def _job_in(root, name, state=JobState.RUNNING, nodes=2):
    spec = build_spec(LaunchOptions(nodes=nodes, name=name), "x = 1\n", NotebookContext())
    job = JobHandle(spec, JobDir.create(root, spec, "x = 1\n"))
    job.dir.write_status(JobStatus(spec.job_id, state, started_at=time.time() - 60))
    return job


def test_since_that_is_not_a_period_is_a_usage_error(shell):
    with pytest.raises(UsageError, match="--since 'soon' is not a period"):
        shell.run_line_magic("paddle_jobs", "--since soon")


def test_widget_view_stop_button_stops_the_job_through_the_engine(shell, jobs_root, monkeypatch):
    import launcher_magic.kernel.magics as magics

    running = _job_in(jobs_root, "busy")
    stopped_ids = []

    def read_status(self, job):
        return job.dir.read_status()

    def stop(self, job):
        stopped_ids.append(job.job_id)
        status = job.dir.read_status().moved_to(JobState.STOPPED, "stopped by request")
        job.dir.write_status(status)
        return status

    monkeypatch.setattr(LocalEngine, "status", read_status)
    monkeypatch.setattr(LocalEngine, "stop", stop)
    monkeypatch.setattr(magics, "widgets_available", lambda: True)
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj, **kw: shown.append(obj))
    views = []
    monkeypatch.setattr(history, "HistoryView", _recording(history.HistoryView, views))
    shell.run_line_magic("paddle_jobs", "")

    (bundle,) = shown
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert running.job_id in bundle["text/plain"] and "Running" in bundle["text/plain"]
    assert running.job_id in bundle["text/html"]
    (view,) = views
    buttons = view.buttons[running.job_id]
    assert not buttons["Stop"].disabled
    buttons["Stop"].click()
    assert stopped_ids == [running.job_id]
    assert "Stopped" in view.state_cells[running.job_id].value
    assert read_status(None, running).state == JobState.STOPPED


def _recording(cls, made):
    def make(*args, **kwargs):
        made.append(cls(*args, **kwargs))
        return made[-1]

    return make


def test_widget_view_buttons_call_back_and_show_failures(capsys):
    calls = []

    def fail(job_id):
        raise RuntimeError("no such magic")

    actions = history.HistoryActions(on_logs=lambda j: calls.append(("logs", j)),
                                     on_attach=fail, on_stop=lambda j: JobState.STOPPED)
    rows = [_row(state=JobState.RUNNING, end=None, now=T0 + HOUR), _row("done-000002")]
    summary = history.summarize(rows, None, user="ada", since=None, now=T0 + HOUR,
                                period="all time")
    view = history.HistoryView(rows, summary, actions)
    assert view.buttons["done-000002"]["Stop"].disabled  # an ended job cannot be stopped
    view.buttons["big-a1b2c3"]["Logs"].click()
    view.buttons["big-a1b2c3"]["Attach"].click()
    assert calls == [("logs", "big-a1b2c3")]
    assert "Attach big-a1b2c3: no such magic" in capsys.readouterr().out


# -- real jobs in a real kernel (CPU wheel, local engine) --------------------------------------

def _table_rows(text: str) -> dict[str, list[str]]:
    """The history table's rows by job id, split into columns (two or more spaces apart)."""
    lines = text.splitlines()
    (start,) = [i for i, line in enumerate(lines) if line.startswith("job ")]
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("GPU-hours"):
            break
        cells = re.split(r"\s{2,}", line.strip())
        rows[cells[0]] = cells
    return rows


@requires_paddle
@pytest.mark.paddle
@pytest.mark.kernel
def test_history_of_real_jobs_shows_their_gpu_hours(kernel, jobs_root):
    for name in ("first", "second"):
        result = kernel.run(f"%%paddle_launch --nodes 2 --name {name}\nprint('hi')\n")
        assert result.error is None, result.text
    ids = {p.name.rsplit("-", 1)[0]: p.name for p in jobs_root.iterdir()}
    listing = kernel.run("%paddle_jobs")
    assert listing.error is None, listing.text
    rows = _table_rows(listing.text)
    column = dict(zip(history.HEADER, range(len(history.HEADER)), strict=True))
    for job_id in ids.values():
        status = read_status(jobs_root, job_id)
        assert rows[job_id][column["state"]] == "Succeeded"
        assert rows[job_id][column["nodes x GPUs"]] == "2 x 0"
        assert rows[job_id][column["GPU-hours"]] == "0.00"  # no GPU on this machine
        took = status["finished_at"] - status["started_at"]
        assert rows[job_id][column["duration"]] == history.format_elapsed(took)
    assert re.search(r"GPU-hours all time: you( \(\S+\))? 0\.00; tenant total: 0\.00, covering "
                     r"only your own jobs \(the local engine cannot list other users' jobs: these "
                     r"are yours on this machine", listing.text), listing.text

    # The first job becomes one of 2 nodes x 4 GPUs that ran 1.5 h, ten days ago.
    old = jobs_root / ids["first"]
    spec = json.loads((old / "spec.json").read_text())
    long_ago = time.time() - 10 * 86400
    spec["resources"]["gpus_per_node"], spec["created_at"] = 4, long_ago - 5400
    (old / "spec.json").write_text(json.dumps(spec))
    status = read_status(jobs_root, ids["first"])
    status["started_at"], status["finished_at"] = long_ago - 5400, long_ago
    (old / "status.json").write_text(json.dumps(status))

    listing = kernel.run("%paddle_jobs")
    rows = _table_rows(listing.text)
    assert rows[ids["first"]][column["GPU-hours"]] == "12.00"
    assert re.search(r"GPU-hours all time: you( \(\S+\))? 12\.00;", listing.text)
    recent = kernel.run("%paddle_jobs --since 7d")
    assert recent.error is None, recent.text
    assert set(_table_rows(recent.text)) == {ids["second"]}
    assert re.search(r"GPU-hours since \S+ \S+ \(7d\): you( \(\S+\))? 0\.00;", recent.text)


@requires_paddle
@pytest.mark.paddle
@pytest.mark.kernel
def test_follow_keeps_going_across_a_restart_until_the_job_ends(kernel, jobs_root):
    launch = kernel.run("%%paddle_launch --nodes 2 --name crash --max-restarts 1 --detach "
                        "--env CRASH_AT=6 --env STEP_SLEEP=0.1\n" + TRAIN_CELL)
    assert launch.error is None, launch.text
    followed = kernel.run("%paddle_logs crash --rank 1 --follow", timeout=300)
    assert followed.error is None, followed.text
    text = followed.text
    (job_id,) = [p.name for p in jobs_root.iterdir()]
    assert wait_until(lambda: read_status(jobs_root, job_id)["state"] == "Succeeded")
    assert read_status(jobs_root, job_id)["restarts"] == 1

    # Attempt 1 up to its crash, the restart, attempt 2 from its resume to the end, the end.
    separator = text.index("== restart 1: attempt 2 ==")
    assert text.count("== restart") == 1
    assert "step 6 loss" in text[:separator]
    after = text[separator:]
    resumed, done = after.index("resumed from step 4"), after.index("done world=2 rank=1")
    ended = after.index("== job ended: Succeeded ==")
    assert resumed < done < ended
    assert "step 3 loss" not in after  # attempt 2 started from the checkpoint
