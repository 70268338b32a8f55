"""The engine contract and the launch service, each tried for real.

- A job whose ranks die before they report (Paddle missing in the ranks' Python) fails with the
  reason in the rank's error and in the log the panel shows; the preflight refuses such a Python.
- The local engine's kernel side never writes `status.json`; a killed supervisor still ends the job.
- A third engine, registered only by entry point, runs through the magic; a submit that fails part
  way (an exception, a Ctrl-C) leaves no job directory and has the engine stop what it started.
- `--detach` returns a handle that waits for and reports the job.
- The cluster engine's log follower shows each line once, however often its stream reopens.
"""

from __future__ import annotations

import os
import signal
import sys
from importlib.metadata import EntryPoint

import pytest
from IPython.core.error import UsageError

from launcher_magic.core.jobdir import JobDir, JobHandle
from launcher_magic.core.processes import StopTimeouts, group_members
from launcher_magic.core.spec import LaunchOptions, build_spec
from launcher_magic.core.status import JobState, JobStatus, RankState
from launcher_magic.engines import Engine, EngineError, EngineUnavailable
from launcher_magic.engines.cluster.informer import unseen_lines
from launcher_magic.engines.local.engine import LocalEngine
from launcher_magic.kernel.launch import Job, Launcher
from launcher_magic.kernel.panel import PanelView, render_text
from workbench_contract.environment import NotebookContext

from .support import requires_paddle, wait_until

CELL = "print('hello from the cell', flush=True)\n"


@pytest.fixture
def python_without_paddle(tmp_path):
    """This interpreter with its site-packages switched off (`-S`): Paddle cannot be imported."""
    wrapper = tmp_path / "python-no-site"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _job(root, cell=CELL, **options) -> JobHandle:
    spec = build_spec(LaunchOptions(**{"nodes": 2, **options}), cell, NotebookContext())
    return JobHandle(spec, JobDir.create(root, spec, cell))


def test_ranks_that_die_before_reporting_show_why(jobs_root, python_without_paddle):
    from launcher_magic.engines.local.supervisor import Supervisor

    job = _job(jobs_root)
    code = Supervisor(job.dir, timeouts=StopTimeouts(2, 2, 2), python=python_without_paddle).run()
    status = job.dir.read_status()
    assert code == 1 and status.state == JobState.FAILED
    assert status.failed_rank == 0
    rank = status.ranks[0]
    assert rank.state == RankState.FAILED and "No module named 'paddle'" in rank.error
    # The rank has no log of its own; what the panel shows is its node's launcher log.
    lines = LocalEngine(python=python_without_paddle).log_lines(job, 0, 20, status)
    assert any("No module named 'paddle'" in line for line in lines)
    view = PanelView(spec=job.spec, status=status, log_rank=0, log_lines=tuple(lines),
                     checkpoint_step=None, now=0.0)
    assert "rank 0 (node 0): Failed" in render_text(view)
    assert "No module named 'paddle'" in render_text(view)


def test_preflight_refuses_a_python_without_paddle(python_without_paddle):
    engine = LocalEngine(python=python_without_paddle)
    spec = build_spec(LaunchOptions(nodes=2), CELL, NotebookContext())
    with pytest.raises(EngineUnavailable, match="PaddlePaddle is not installed.*pip install"):
        engine.preflight(spec)


def test_local_engine_notes_what_it_ignores():
    engine = LocalEngine(context=NotebookContext(image="reg/nb@sha256:" + "a" * 64))
    plain = build_spec(LaunchOptions(nodes=1), CELL, engine.context)
    assert engine.notes(plain) == []
    sized = build_spec(LaunchOptions(nodes=1, cpu="2", memory="4Gi",
                                     image="reg/other@sha256:" + "b" * 64), CELL, engine.context)
    (note,) = engine.notes(sized)
    assert note.startswith("--image, --cpu, --memory not used by the local engine")


@requires_paddle
def test_kernel_side_never_writes_status_and_survives_a_killed_supervisor(
        jobs_root, monkeypatch):
    engine = LocalEngine(interrupt_timeout=2, terminate_timeout=2)
    job = _job(jobs_root, cell="import time\ntime.sleep(300)\n")

    def refuse(self, status):
        raise AssertionError("the kernel side wrote status.json")

    engine.submit(job)
    monkeypatch.setattr(JobDir, "write_status", refuse)  # from here on only the supervisor writes
    running = wait_until(lambda: engine.status(job).state == JobState.RUNNING
                         and len(engine.status(job).nodes) == 2, timeout=60)
    assert running, engine.status(job)
    nodes = [n.pid for n in engine.status(job).nodes]
    pid = int((job.dir.path / "supervisor.pid").read_text().split()[0])
    os.kill(pid, signal.SIGKILL)
    status = wait_until(lambda: (s := engine.status(job)).state.is_terminal() and s, timeout=30)
    assert status.state == JobState.FAILED
    assert "supervisor exited unexpectedly" in status.message
    assert not any(group_members(pgid) for pgid in nodes)  # nothing of the job is left
    assert engine.stop(job).state == JobState.FAILED  # a terminal state stays


class _RecordingEngine(Engine):
    """A third engine, known only through its entry point: it records what the launcher asks."""

    name = "recording"
    calls: list[str] = []
    fail_with: BaseException | None = None

    def submit(self, job):
        self.calls.append(f"submit {job.job_id}")
        (job.dir.path / "started-elsewhere").touch()
        if self.fail_with is not None:
            raise self.fail_with

    def status(self, job):
        return job.dir.read_status() or JobStatus(job_id=job.job_id)

    def stop(self, job):
        self.calls.append(f"stop {job.job_id}")
        return self.status(job).moved_to(JobState.STOPPED, "stopped")


@pytest.fixture
def third_engine(monkeypatch):
    import launcher_magic.engines as engines

    point = EntryPoint(name="recording", group=engines.ENTRY_POINT_GROUP,
                       value=f"{__name__}:_RecordingEngine")
    real = engines.entry_points
    monkeypatch.setattr(engines, "entry_points",
                        lambda group: [*real(group=group), point])
    _RecordingEngine.calls = []
    _RecordingEngine.fail_with = None
    return _RecordingEngine


@pytest.mark.parametrize("error", [TimeoutError("the API server did not answer"),
                                   KeyboardInterrupt()], ids=["timeout", "ctrl-c"])
def test_a_failed_submit_leaves_nothing(jobs_root, third_engine, error):
    third_engine.fail_with = error
    launcher = Launcher(env={"PADDLE_WORKBENCH_JOBS_DIR": str(jobs_root)})
    with pytest.raises(type(error)):
        launcher.launch(LaunchOptions(nodes=1, engine="recording", name="half"), CELL)
    (submitted,) = [c for c in third_engine.calls if c.startswith("submit")]
    assert third_engine.calls == [submitted, submitted.replace("submit", "stop")]
    assert list(jobs_root.iterdir()) == []
    assert launcher.session_jobs == {}


def test_an_engine_error_is_one_line_in_the_magic(shell, jobs_root, third_engine):
    third_engine.fail_with = EngineError("creating the job failed: 500 Internal Server Error")
    with pytest.raises(UsageError, match="creating the job failed: 500"):
        shell.run_cell_magic("paddle_launch", "--engine recording", CELL)
    assert list(jobs_root.iterdir()) == []


@requires_paddle
def test_detach_returns_a_handle_that_waits(shell, monkeypatch):
    monkeypatch.setenv("PADDLE_WORKBENCH_PANEL", "text")
    job = shell.run_cell_magic("paddle_launch", "--detach --nodes 1 --name handle", CELL)
    assert isinstance(job, Job) and job.job_id.startswith("handle-")
    status = job.wait(timeout=180)
    assert status.state == JobState.SUCCEEDED
    assert "hello from the cell" in job.logs(rank=0)
    assert repr(job) == f"<Job {job.job_id} (local): Succeeded>"


def test_a_reopened_log_stream_repeats_no_line():
    # 300 lines: more than any tail window, which is where the old follower repeated itself.
    log = [f"2026-12-03T10:00:{i // 100:02d}.{i % 100:06d}000Z line {i}" for i in range(300)]
    first, last = unseen_lines(log[:250], None)
    again, last = unseen_lines(log, last)  # the stream was opened again from the top
    assert first + again == [f"line {i}" for i in range(300)]
    assert unseen_lines(log, last) == ([], last)
