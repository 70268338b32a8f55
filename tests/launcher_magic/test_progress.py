"""Progress and ETA: the record, its writer (throttled, rank 0 only), the panel, a real job.

The writer's clock is injected, so nothing here depends on how fast the machine is; the real-kernel
test at the end trains on the CPU wheel and watches the panel's progress line on the way to 100 %.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import pytest

from launcher_magic.core import progress as progress_module
from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.progress import (
    FILENAME,
    Progress,
    ProgressWriter,
    eta_seconds,
    percent,
    progress_writer,
    read_progress,
)
from launcher_magic.core.spec import LaunchOptions, build_spec
from launcher_magic.core.status import JobState, JobStatus, RankState, RankStatus
from launcher_magic.kernel.panel import JobPanel, PanelView, render_html, render_text
from workbench_contract.environment import NotebookContext

from .support import only_job, read_status, requires_paddle, wait_until


class FakeClock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def no_writer(monkeypatch):
    """The process's shared writer starts empty and is put back after the test."""
    monkeypatch.setattr(progress_module, "_WRITER", None)
    for name in ("PADDLE_WORKBENCH_JOB_DIR", "PADDLE_TRAINER_ID"):
        monkeypatch.delenv(name, raising=False)


def _on_disk(path) -> dict:
    return json.loads(path.read_text())


# -- the record ------------------------------------------------------------------------------

def test_progress_round_trips_and_ignores_unknown_keys():
    progress = Progress(step=450, total=1000, started_at=10.0, updated_at=55.0,
                        steps_per_second=12.5, scalars={"loss": 0.25, "acc": 0.5}, first_step=100)
    data = json.loads(json.dumps(progress.to_dict()))
    assert Progress.from_dict({**data, "from_a_newer_version": 1}) == progress
    assert Progress.from_dict({"step": 3}) == Progress(step=3)


@pytest.mark.parametrize("step, total, expected", [
    (0, 40, 0.0), (10, 40, 25.0), (40, 40, 100.0), (41, 40, 100.0), (5, None, None), (5, 0, None),
], ids=["start", "quarter", "done", "past-total", "no-total", "zero-total"])
def test_percent(step, total, expected):
    assert percent(Progress(step=step, total=total)) == expected


@pytest.mark.parametrize("progress, now, expected", [
    (Progress(step=40, total=100, updated_at=50.0, steps_per_second=10.0), 50.0, 6.0),
    (Progress(step=40, total=100, updated_at=50.0, steps_per_second=10.0), 52.5, 3.5),
    (Progress(step=40, total=100, updated_at=50.0, steps_per_second=10.0), 90.0, 0.0),
    (Progress(step=40, total=None, updated_at=50.0, steps_per_second=10.0), 50.0, None),
    (Progress(step=40, total=100, updated_at=50.0, steps_per_second=None), 50.0, None),
    (Progress(step=100, total=100, updated_at=50.0, steps_per_second=10.0), 50.0, None),
], ids=["at-snapshot", "counts-down", "never-negative", "no-total", "no-rate", "done"])
def test_eta_seconds(progress, now, expected):
    assert eta_seconds(progress, now) == expected


@pytest.mark.parametrize("content", [
    None, "", '{"step": 4, "tot', "[1, 2]", '{"total": 4}', '{"step": "four"}',
    '{"step": 1, "scalars": 3}',
], ids=["missing", "empty", "half-written", "a-list", "no-step", "bad-step", "bad-scalars"])
def test_read_progress_is_none_for_a_missing_or_broken_file(tmp_path, content):
    if content is not None:
        (tmp_path / FILENAME).write_text(content)
    assert read_progress(tmp_path) is None


# -- the writer ------------------------------------------------------------------------------

def test_writer_writes_at_most_every_interval_and_always_on_the_last_step(tmp_path):
    clock = FakeClock()
    writer = ProgressWriter(tmp_path / FILENAME, clock=clock, interval=0.5)
    writer.begin(0, 100)
    assert writer.writes == 1 and _on_disk(tmp_path / FILENAME)["step"] == 0
    for step in range(1, 4):  # 0.125 s apart (exact in binary): not due yet
        clock.now += 0.125
        writer.step(step, 100)
    assert writer.writes == 1 and _on_disk(tmp_path / FILENAME)["step"] == 0
    clock.now += 0.125
    writer.step(4, 100)  # 0.5 s since the last write
    assert writer.writes == 2 and _on_disk(tmp_path / FILENAME)["step"] == 4
    for step in range(5, 99):  # one write per 4 steps
        clock.now += 0.125
        writer.step(step, 100)
    assert writer.writes == 2 + 94 // 4 and _on_disk(tmp_path / FILENAME)["step"] == 96
    clock.now += 0.125
    writer.step(99, 100)
    assert _on_disk(tmp_path / FILENAME)["step"] == 96
    clock.now += 0.001
    writer.step(100, 100)  # the last step is never held back
    on_disk = read_progress(tmp_path)
    assert on_disk.step == 100 and percent(on_disk) == 100.0
    assert [p.name for p in tmp_path.iterdir()] == [FILENAME]  # no temporary file left behind


def test_writer_flushes_what_is_held_back_and_nothing_twice(tmp_path):
    clock = FakeClock()
    writer = ProgressWriter(tmp_path / FILENAME, clock=clock)
    writer.begin(0, 10)
    clock.now += 0.1
    writer.step(1, 10)
    writer.flush()
    assert writer.writes == 2 and read_progress(tmp_path).step == 1
    writer.flush()
    assert writer.writes == 2


def test_writer_rate_follows_the_speed_and_feeds_the_eta(tmp_path):
    clock = FakeClock()
    writer = ProgressWriter(tmp_path / FILENAME, clock=clock)
    writer.begin(0, 1000)
    step = 0
    for _ in range(200):  # 10 s at 20 steps per second
        clock.now += 0.05
        step += 1
        writer.step(step, 1000)
    assert read_progress(tmp_path).steps_per_second == pytest.approx(20.0)
    for _ in range(300):  # then 60 s at 5 steps per second: the rate follows
        clock.now += 0.2
        step += 1
        writer.step(step, 1000)
    settled = read_progress(tmp_path)
    assert settled.steps_per_second == pytest.approx(5.0, rel=0.05)
    assert eta_seconds(settled, clock.now) == pytest.approx((1000 - step) / 5.0, rel=0.05)
    # The first speed does not weigh on it for ever, as the mean since the start does.
    mean = (step - settled.first_step) / (settled.updated_at - settled.started_at)
    assert mean > 7.0


def test_writer_keeps_where_a_resumed_attempt_started(tmp_path):
    clock = FakeClock()
    writer = ProgressWriter(tmp_path / FILENAME, clock=clock)
    writer.begin(60, 100)  # resumed from the checkpoint of step 60
    first = read_progress(tmp_path)
    assert (first.step, first.first_step, percent(first)) == (60, 60, 60.0)
    assert first.steps_per_second is None and eta_seconds(first, clock.now) is None
    clock.now += 1.0
    writer.step(70, 100)
    assert read_progress(tmp_path).steps_per_second == pytest.approx(10.0)


def test_scalars_count_steps_only_where_no_loop_does(tmp_path):
    clock = FakeClock()
    alone = ProgressWriter(tmp_path / "alone.json", clock=clock)
    alone.scalars({"loss": 2.0}, step=0)
    clock.now += 1.0
    alone.scalars({"loss": 1.5, "acc": 0.25}, step=9)
    assert alone.progress.step == 10 and alone.progress.total is None
    assert alone.progress.scalars == {"loss": 1.5, "acc": 0.25}

    looped = ProgressWriter(tmp_path / "looped.json", clock=clock)
    looped.begin(0, 50)
    looped.scalars({"loss": float("nan")}, step=30)  # the loop owns the count
    assert looped.progress.step == 0 and math.isnan(looped.progress.scalars["loss"])


def test_a_failing_disk_never_fails_training(tmp_path):
    writer = ProgressWriter(tmp_path / "gone" / FILENAME, clock=FakeClock())
    writer.begin(0, 10)
    writer.step(10, 10)
    assert writer.writes == 0


@pytest.mark.parametrize("env, writes", [
    ({}, False),
    ({"PADDLE_TRAINER_ID": "0"}, False),
    ({"PADDLE_WORKBENCH_JOB_DIR": "{job}"}, True),
    ({"PADDLE_WORKBENCH_JOB_DIR": "{job}", "PADDLE_TRAINER_ID": "0"}, True),
    ({"PADDLE_WORKBENCH_JOB_DIR": "{job}", "PADDLE_TRAINER_ID": "1"}, False),
], ids=["outside-a-job", "rank-0-outside-a-job", "rank-unset", "rank-0", "rank-1"])
def test_only_rank_0_of_a_job_gets_the_writer(tmp_path, no_writer, env, writes):
    env = {k: v.format(job=tmp_path) for k, v in env.items()}
    writer = progress_writer(env)
    assert (writer is not None) == writes
    if writes:
        assert writer.path == tmp_path / FILENAME
        assert progress_writer(env) is writer  # one writer per process, shared by the helpers


def test_checkpointer_steps_report_from_the_resumed_step_to_the_total(tmp_path, monkeypatch,
                                                                      no_writer):
    from launcher_magic.training.checkpoint import Checkpointer

    job = tmp_path / "job"
    job.mkdir()
    monkeypatch.setenv("PADDLE_WORKBENCH_JOB_DIR", str(job))
    # Paddle itself is not needed to count steps: restore from step 3, save nothing.
    monkeypatch.setattr(Checkpointer, "restore", lambda self: 3)
    monkeypatch.setattr(Checkpointer, "save", lambda self, step: None)
    ckpt = Checkpointer(model=None, directory=tmp_path / "ckpt")
    seen = []
    for step in ckpt.steps(12):
        seen.append(step)
        if step == 3:
            started = read_progress(job)
            assert (started.step, started.total, started.first_step) == (3, 12, 3)
    assert seen == list(range(3, 12))
    done = read_progress(job)
    assert (done.step, done.total, done.first_step) == (12, 12, 3)

    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv("PADDLE_WORKBENCH_JOB_DIR", str(other))
    assert list(ckpt.steps(5)) == [3, 4]
    assert read_progress(other) is None  # other ranks report nothing


def test_checkpointer_outside_a_job_reports_nothing(tmp_path, monkeypatch, no_writer):
    from launcher_magic.training.checkpoint import Checkpointer

    monkeypatch.setattr(Checkpointer, "restore", lambda self: 0)
    monkeypatch.setattr(Checkpointer, "save", lambda self, step: None)
    assert list(Checkpointer(model=None, directory=tmp_path).steps(3)) == [0, 1, 2]
    assert progress_module._WRITER is None and not (tmp_path / FILENAME).exists()


@pytest.mark.parametrize("rank, reported", [("0", True), ("1", False)], ids=["rank-0", "rank-1"])
def test_scalar_logger_hands_its_last_scalars_to_the_writer(tmp_path, no_writer, rank, reported):
    pytest.importorskip("visualdl", reason="visualdl is not installed (notebook extra)")
    from launcher_magic.training.metrics import ScalarLogger

    env = {"PADDLE_WORKBENCH_JOB_DIR": str(tmp_path), "PADDLE_TRAINER_ID": rank,
           "PADDLE_TRAINERS_NUM": "2"}
    with ScalarLogger(tmp_path / "visualdl", batch_size=8, env=env) as scalars:
        for step in range(5):
            scalars.log(step, loss=1.0 / (step + 1), accuracy=0.2 * step)
    progress = read_progress(tmp_path)
    if not reported:
        assert progress is None
        return
    # The user's scalars only (not the derived step time), the last of each; steps counted.
    assert progress.scalars == {"loss": pytest.approx(0.2), "accuracy": pytest.approx(0.8)}
    assert progress.step == 5 and progress.total is None


# -- the panel -------------------------------------------------------------------------------

def _spec():
    return build_spec(LaunchOptions(nodes=2, name="prog"), "x", NotebookContext(), suffix="p1")


def _view(state=JobState.RUNNING, progress: Progress | None = None, now=200.0) -> PanelView:
    spec = _spec()
    finished = 190.0 if state.is_terminal() else None
    status = JobStatus(job_id=spec.job_id, state=state, started_at=100.0, finished_at=finished)
    return PanelView(spec=spec, status=status, log_rank=0, log_lines=(), checkpoint_step=None,
                     now=now, progress=progress)


RUNNING = Progress(step=450, total=1000, started_at=150.0, updated_at=200.0,
                   steps_per_second=11.0, scalars={"accuracy": 0.5, "loss": 0.12341})
FINISHED = Progress(step=1000, total=1000, started_at=150.0, updated_at=190.0,
                    steps_per_second=12.5, scalars={"loss": 0.0421})


def test_panel_text_shows_progress_rate_eta_and_loss_while_running():
    text = render_text(_view(progress=RUNNING))
    assert "  progress: 450/1000 (45%), 11.0 steps/s, ETA 0:50, loss 0.1234, accuracy 0.5" \
        in text.splitlines()
    assert "elapsed: 1:40" in text


def test_panel_of_a_finished_job_keeps_the_final_figures_without_eta():
    view = _view(JobState.SUCCEEDED, FINISHED)
    assert "  progress: 1000/1000 (100%), 12.5 steps/s, loss 0.0421" in render_text(view)
    page = render_html(view)
    assert 'aria-valuenow="100"' in page and "width:100.0%" in page
    assert "1000/1000 (100%) &middot; 12.5 steps/s &middot; loss 0.0421" in page
    assert "ETA" not in page and "<script" not in page


def test_panel_of_a_failed_job_says_how_far_it_got():
    view = _view(JobState.FAILED, RUNNING)
    assert "progress: 450/1000 (45%), 11.0 steps/s, loss" in render_text(view)
    assert "ETA" not in render_text(view)
    assert "width:45.0%" in render_html(view) and "#dc2626" in render_html(view)


def test_panel_without_progress_shows_elapsed_time_only():
    view = _view(progress=None)
    assert "progress" not in render_text(view) and "elapsed: 1:40" in render_text(view)
    assert "paddle-job-progress" not in render_html(view)


def test_panel_without_a_total_shows_steps_and_rate_but_no_bar():
    view = _view(progress=Progress(step=12, steps_per_second=2.0, scalars={"loss": 1.5},
                                   updated_at=200.0))
    assert "  progress: step 12, 2.00 steps/s, loss 1.5" in render_text(view)
    assert "paddle-job-progress" in render_html(view) and "progressbar" not in render_html(view)


def test_panel_html_escapes_scalar_names():
    view = _view(progress=Progress(step=1, total=2, scalars={"<b>x</b>": 1.0}))
    assert "&lt;b&gt;x&lt;/b&gt; 1" in render_html(view) and "<b>x</b>" not in render_html(view)


def test_rank_rows_name_the_machine_each_rank_runs_on_where_a_cluster_said():
    """A cluster job's rows say which machine (Kubernetes node) each rank is on, blank while a
    pod waits for one; a local job's rows, all on this machine, have no machine at all."""
    placed = (RankStatus(rank=0, node=0, state=RankState.RUNNING, host="gpu-a"),
              RankStatus(rank=1, node=1, state=RankState.PENDING))
    view = replace(_view(), status=replace(_view().status, ranks=placed))
    lines = render_text(view).splitlines()
    assert "  rank 0 (node 0 on gpu-a): Running" in lines
    assert "  rank 1 (node 1): Pending" in lines
    table = render_html(view)
    assert "<th>node</th><th>machine</th><th>state</th>" in table
    assert "<tr><td>0</td><td>0</td><td>gpu-a</td>" in table
    assert "<tr><td>1</td><td>1</td><td></td>" in table
    local = (RankStatus(rank=0, node=0, state=RankState.RUNNING),)
    view = replace(view, status=replace(view.status, ranks=local))
    assert "  rank 0 (node 0): Running" in render_text(view).splitlines()
    assert "machine" not in render_html(view) and "<tr><td>0</td><td>0</td><td style" in (
        render_html(view))
    escaped = (RankStatus(rank=0, node=0, host="<b>n</b>"),)
    assert "&lt;b&gt;n&lt;/b&gt;" in render_html(replace(view, status=replace(
        view.status, ranks=escaped)))


def test_panel_reads_progress_from_the_job_directory(tmp_path):
    job = JobDir(tmp_path / "prog-p1")
    job.path.mkdir()
    tail = lambda rank, lines: []  # noqa: E731
    status = JobStatus(job_id="prog-p1", state=JobState.RUNNING)
    assert PanelView.read(_spec(), job, status, tail).progress is None
    (job.path / FILENAME).write_text(json.dumps(RUNNING.to_dict()))
    assert PanelView.read(_spec(), job, status, tail).progress == RUNNING


def test_panel_widgets_show_a_bar_and_the_summary_keeps_the_final_figures(tmp_path,
                                                                          monkeypatch):
    import IPython.display

    shown = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda bundle, **kw: shown.append(bundle) or _Handle(shown))
    spec = _spec()
    job = JobDir(tmp_path / spec.job_id)
    job.path.mkdir()
    current = {"status": JobStatus(job_id=spec.job_id, state=JobState.RUNNING, started_at=100.0)}
    panel = JobPanel(spec, job, lambda: current["status"], tail=lambda rank, lines, status: [],
                     widgets=True)
    panel.refresh(force=True)
    assert panel._progress_box.layout.display == "none"  # nothing reported yet

    (job.path / FILENAME).write_text(json.dumps(RUNNING.to_dict()))
    panel.refresh()
    assert panel._progress_box.layout.display is None
    assert (panel._bar.value, panel._bar.max) == (450, 1000)
    assert panel._bar_label.value.startswith("progress: 450/1000 (45%), 11.0 steps/s, ETA ")

    (job.path / FILENAME).write_text(json.dumps(FINISHED.to_dict()))
    current["status"] = current["status"].moved_to(JobState.SUCCEEDED, "all ranks finished")
    panel.refresh()
    assert (panel._bar.value, panel._bar.bar_style) == (1000, "success")
    final = shown[-1]
    assert "progress: 1000/1000 (100%), 12.5 steps/s, loss 0.0421" in final["text/plain"]
    assert 'aria-valuenow="100"' in final["text/html"]


class _Handle:
    """What `display(..., display_id=True)` returns: later updates land in the same list."""

    def __init__(self, shown: list):
        self.shown = shown

    def update(self, bundle, **kw):
        self.shown.append(bundle)


# -- a real kernel, a real job ---------------------------------------------------------------

PROGRESS_CELL = '''
import time
import paddle
import paddle.distributed as dist
from launcher_magic.checkpoint import Checkpointer
from launcher_magic.metrics import ScalarLogger

dist.init_parallel_env()
paddle.seed(3)
model = paddle.DataParallel(paddle.nn.Linear(4, 1))
opt = paddle.optimizer.SGD(learning_rate=0.05, parameters=model.parameters())
ckpt = Checkpointer(model, opt, every=20)
scalars = ScalarLogger()
for step in ckpt.steps(40):
    x = paddle.full([8, 4], 0.5)
    loss = ((model(x) - 1.0) ** 2).mean()
    loss.backward()
    opt.step()
    opt.clear_grad()
    scalars.log(step, loss=float(loss))
    time.sleep(0.15)
scalars.close()
'''

PANEL_TEXT = '''
from launcher_magic.core.jobdir import JobHandle
from launcher_magic.kernel.panel import PanelView, render_text
_job = JobHandle.open({path!r})
print(render_text(PanelView.read(_job.spec, _job.dir, _job.dir.read_status(), lambda r, n: []),
                  with_log=False))
'''

PROGRESS_LINE = re.compile(r"progress: (\d+)/(\d+) \((\d+)%\)(.*)")


@requires_paddle
@pytest.mark.paddle
@pytest.mark.kernel
def test_real_job_progress_reaches_100_percent_with_an_eta_on_the_way(kernel, jobs_root):
    assert kernel.run("%env PADDLE_WORKBENCH_PANEL=text").error is None
    launched = kernel.run("%%paddle_launch --nodes 2 --detach --name prog\n" + PROGRESS_CELL)
    assert launched.error is None, launched.text
    job_id = only_job(jobs_root)
    panel_text = PANEL_TEXT.format(path=str(jobs_root / job_id))

    seen: list[tuple[int, int, str]] = []  # (step, total, the rest of the line) per poll

    def ended() -> bool:
        result = kernel.run(panel_text, timeout=60)
        assert result.error is None, result.text
        match = PROGRESS_LINE.search(result.text)
        if match:
            seen.append((int(match.group(1)), int(match.group(2)), match.group(4)))
        return JobState(read_status(jobs_root, job_id)["state"]).is_terminal()

    assert wait_until(ended, timeout=300, interval=0.1)
    assert read_status(jobs_root, job_id)["state"] == "Succeeded"
    on_the_way = [s for s in seen if s[0] < s[1] and "ETA " in s[2]]
    assert on_the_way, seen  # the panel showed an ETA before the end

    final = kernel.run(panel_text).text
    step, total, percent_, rest = PROGRESS_LINE.search(final).groups()
    assert (step, total, percent_) == ("40", "40", "100"), final
    assert "steps/s" in rest and "loss " in rest and "ETA" not in rest
    written = read_progress(jobs_root / job_id)
    assert (written.step, written.total, written.first_step) == (40, 40, 0)
    assert written.steps_per_second and written.steps_per_second > 0
