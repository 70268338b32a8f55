"""The pieces the local engine is made of: rendezvous master, process groups, checkpoints, panel."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.processes import StopTimeouts, group_members, stop_groups
from launcher_magic.core.spec import LaunchOptions, build_spec
from launcher_magic.core.status import JobState, JobStatus, RankState, RankStatus
from launcher_magic.engines.local.rendezvous import RendezvousServer
from launcher_magic.kernel.panel import JobPanel, PanelView, render_html, render_text
from workbench_contract.environment import NotebookContext

from .support import requires_paddle


@requires_paddle
def test_rendezvous_speaks_paddles_master_protocol():
    # Paddle's own client, as `paddle.distributed.launch` uses it.
    from paddle.distributed.launch.utils.kv_client import KVClient

    server = RendezvousServer().start()
    try:
        client = KVClient(server.endpoint)
        assert client.wait_server_ready(timeout=5)
        assert client.put("/job/info/podb/1", "endpoint-b")
        assert client.put("/job/info/poda/0", "endpoint-a")
        assert client.get_prefix("/job/info") == {
            "/job/info/podb/1": "endpoint-b", "/job/info/poda/0": "endpoint-a"}
        assert client.get_prefix("/other") is None
        assert client.delete("/job/info/podb/1")
        assert not client.delete("/job/info/podb/1")
    finally:
        server.stop()


def _group(script: str) -> subprocess.Popen:
    """`script` as the leader of a new group, once its traps are set (it prints "ready").

    SIGINT starts at its default: a shell cannot trap a signal it inherited as ignored, which
    is how a test run started in the background would otherwise pass it on.
    """
    leader = subprocess.Popen(
        ["bash", "-c", script.replace("; ", "; echo ready; ", 1)],
        start_new_session=True, stdout=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert leader.stdout.readline().strip() == "ready"
    return leader


def test_stop_escalates_to_sigkill_for_a_group_that_ignores_signals():
    # The leader and a child both ignore SIGINT and SIGTERM.
    leader = _group("trap '' INT TERM; (trap '' INT TERM; sleep 300) & sleep 300; wait")
    time.sleep(0.3)  # the subshell sets its own traps
    assert len(group_members(leader.pid)) >= 2
    assert stop_groups([leader.pid], StopTimeouts(0.3, 0.3, 5), [leader])
    assert group_members(leader.pid) == []
    assert leader.returncode == -9


def test_stop_is_gentle_first():
    leader = _group("trap 'exit 0' INT; sleep 300 & wait")
    assert stop_groups([leader.pid], StopTimeouts(5, 5, 5), [leader])
    assert leader.returncode == 0  # it handled SIGINT itself; nothing stronger was needed
    assert group_members(leader.pid) == []


@requires_paddle
def test_checkpointer_saves_atomically_keeps_the_last_and_restores(tmp_path, monkeypatch):
    import numpy as np
    import paddle

    from launcher_magic.training.checkpoint import Checkpointer, latest_step, list_checkpoints

    monkeypatch.setenv("PADDLE_TRAINER_ID", "0")
    paddle.seed(1)
    model = paddle.nn.Linear(3, 2)
    opt = paddle.optimizer.Adam(parameters=model.parameters())
    ckpt = Checkpointer(model, opt, every=2, keep=2, directory=tmp_path)
    (tmp_path / ".step-000000099.123").mkdir()  # a half-written checkpoint is never read
    for _step in ckpt.steps(7):
        loss = model(paddle.ones([1, 3])).sum()
        loss.backward()
        opt.step()
        opt.clear_grad()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [6, 7]
    assert latest_step(tmp_path) == 7
    saved = model.weight.numpy().copy()

    fresh = paddle.nn.Linear(3, 2)
    fresh_opt = paddle.optimizer.Adam(parameters=fresh.parameters())
    assert Checkpointer(fresh, fresh_opt, directory=tmp_path).restore() == 7
    np.testing.assert_array_equal(fresh.weight.numpy(), saved)

    monkeypatch.setenv("PADDLE_TRAINER_ID", "1")  # only rank 0 writes
    assert Checkpointer(fresh, fresh_opt, directory=tmp_path).save(8) is None
    assert latest_step(tmp_path) == 7


def test_checkpointer_outside_a_job_says_what_to_set(monkeypatch):
    from launcher_magic.training.checkpoint import Checkpointer

    monkeypatch.delenv("PADDLE_WORKBENCH_CHECKPOINT_DIR", raising=False)
    with pytest.raises(ValueError, match="pass directory="):
        Checkpointer(model=None)


def _view(tmp_path, state=JobState.FAILED):
    spec = build_spec(LaunchOptions(nodes=2, name="demo", max_restarts=2), "x", NotebookContext(), suffix="x1")
    status = JobStatus(
        job_id=spec.job_id, state=state, message="rank 1 failed (exit code 1)", restarts=1,
        failed_rank=1, started_at=100.0, finished_at=165.0,
        ranks=(RankStatus(rank=0, node=0, state=RankState.STOPPED, exit_code=143),
               RankStatus(rank=1, node=1, state=RankState.FAILED, exit_code=1,
                          error="ValueError: <bad> & worse")),
    )
    return spec, status, PanelView(spec=spec, status=status, log_rank=1,
                                   log_lines=("Traceback", "ValueError: <bad> & worse"),
                                   checkpoint_step=40, now=200.0)


def test_panel_text_says_state_ranks_restarts_checkpoint_and_log(tmp_path):
    _, _, view = _view(tmp_path)
    text = render_text(view)
    assert text.splitlines()[0] == "Paddle job demo-x1: Failed - rank 1 failed (exit code 1)"
    assert "elapsed: 1:05" in text and "restarts: 1 of 2" in text and "checkpoint: step 40" in text
    assert "rank 1 (node 1): Failed exit 1 (ValueError: <bad> & worse)" in text
    assert "last lines of rank 1:" in text


def test_panel_html_escapes_what_the_job_wrote(tmp_path):
    _, _, view = _view(tmp_path)
    page = render_html(view)
    assert "&lt;bad&gt; &amp; worse" in page
    assert "<bad>" not in page and "<script" not in page


def test_panel_widgets_show_ranks_and_stop_button_calls_the_engine(tmp_path):
    spec, status, _ = _view(tmp_path, state=JobState.RUNNING)
    job = JobDir(tmp_path / spec.job_id)
    stopped = []
    current = {"status": status.moved_to(JobState.RUNNING, "running")}
    panel = JobPanel(spec, job, lambda: current["status"],
                     tail=lambda rank, lines, status: [f"log of rank {rank}"],
                     on_stop=lambda: stopped.append(True), widgets=True)
    panel.refresh(force=True)
    assert "Running" in panel._header.value
    assert panel._rank_picker.options == (("rank 0", 0), ("rank 1", 1))
    assert "log of rank 1" in panel._log.value  # the failed rank's log is shown first
    panel._stop.click()
    assert stopped == [True] and panel._stop.disabled
    current["status"] = current["status"].moved_to(JobState.STOPPED, "stopped by request")
    panel.refresh()
    assert "Stopped" in panel._header.value and panel._stop.description == "Stopped"


@requires_paddle
def test_supervisor_enforces_the_time_limit(tmp_path):
    from launcher_magic.engines.local.supervisor import Supervisor

    spec = build_spec(LaunchOptions(nodes=1, timeout="2"), "import time\ntime.sleep(120)\n", NotebookContext())
    job = JobDir.create(tmp_path, spec, "import time\ntime.sleep(120)\n")
    code = Supervisor(job, timeouts=StopTimeouts(2, 2, 2), python=sys.executable).run()
    status = job.read_status()
    assert code == 1
    assert status.state == JobState.FAILED
    assert "time limit of 2 s" in status.message
    assert all(not group_members(n.pid) for n in status.nodes)
