"""A real kernel runs `%%paddle_launch` on real Paddle training (CPU wheel), end to end."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from .support import (
    TRAIN_CELL,
    job_processes,
    only_job,
    read_status,
    requires_paddle,
    wait_until,
)

pytestmark = [requires_paddle, pytest.mark.paddle, pytest.mark.kernel]


def _params(jobs_root, job_id, rank):
    return np.load(jobs_root / job_id / f"params-rank{rank}.npy")


def test_two_nodes_train_data_parallel_and_succeed(kernel, jobs_root):
    result = kernel.run("%%paddle_launch --nodes 2 --name dp\n" + TRAIN_CELL)
    assert result.error is None, result.text
    job_id = only_job(jobs_root)
    status = read_status(jobs_root, job_id)
    assert status["state"] == "Succeeded", status
    assert [r["state"] for r in status["ranks"]] == ["Succeeded", "Succeeded"]
    assert "Succeeded" in result.text  # the panel's summary says so in the cell output

    # Both ranks trained in one world of size 2 and ended with identical parameters.
    logs = [(jobs_root / job_id / f"logs/attempt-0/node-{n}/workerlog.0").read_text()
            for n in (0, 1)]
    assert "done world=2 rank=0" in logs[0]
    assert "done world=2 rank=1" in logs[1]
    np.testing.assert_array_equal(_params(jobs_root, job_id, 0), _params(jobs_root, job_id, 1))
    assert not np.allclose(_params(jobs_root, job_id, 0), 0)

    jobs = kernel.run("%paddle_jobs")
    assert job_id in jobs.text and "Succeeded" in jobs.text and "local" in jobs.text
    logs = kernel.run("%paddle_logs dp --rank 1 --tail 5")
    assert "done world=2 rank=1" in logs.text

    # The job directory holds what the design promises.
    spec = json.loads((jobs_root / job_id / "spec.json").read_text())
    assert spec["nodes"] == 2 and spec["engine"] == "local"
    assert (jobs_root / job_id / "cell.py").read_text().strip() == TRAIN_CELL.strip()
    assert (jobs_root / job_id / "checkpoints").is_dir()
    assert (jobs_root / job_id / "visualdl").is_dir()
    assert job_processes(jobs_root, job_id) == []


def test_crash_once_resumes_from_checkpoint_with_same_result(kernel, jobs_root):
    reference = kernel.run("%%paddle_launch --nodes 2 --name ref\n" + TRAIN_CELL)
    assert reference.error is None, reference.text
    crashed = kernel.run(
        "%%paddle_launch --nodes 2 --name crash --max-restarts 1 --env CRASH_AT=6\n" + TRAIN_CELL
    )
    assert crashed.error is None, crashed.text

    ids = {p.name.rsplit("-", 1)[0]: p.name for p in jobs_root.iterdir()}
    status = read_status(jobs_root, ids["crash"])
    assert status["state"] == "Succeeded", status
    assert status["restarts"] == 1
    job = jobs_root / ids["crash"]
    assert (job / "crashed-once").exists()
    first = (job / "logs/attempt-0/node-1/workerlog.0").read_text()
    assert "step 6 " in first and "done" not in first
    # The restart resumed from the checkpoint after step 4 instead of starting over.
    second = (job / "logs/attempt-1/node-0/workerlog.0").read_text()
    assert "resumed from step 4" in second
    assert "step 3 " not in second and "step 4 " in second
    for rank in (0, 1):
        np.testing.assert_array_equal(
            _params(jobs_root, ids["crash"], rank), _params(jobs_root, ids["ref"], rank)
        )


def test_failing_rank_fails_the_job_and_panel_names_it(kernel, jobs_root):
    cell = (
        "import os\n"
        "import paddle.distributed as dist\n"
        "dist.init_parallel_env()\n"
        "if dist.get_rank() == 1:\n"
        "    raise ValueError('bad batch on purpose')\n"
        "dist.barrier()\n"
    )
    result = kernel.run("%%paddle_launch --nodes 2 --name broken\n" + cell)
    assert result.error is None  # the job failed, the cell did not raise a traceback
    job_id = only_job(jobs_root)
    status = read_status(jobs_root, job_id)
    assert status["state"] == "Failed"
    assert status["failed_rank"] == 1
    assert "rank 1 failed" in status["message"]
    assert "ValueError: bad batch on purpose" in result.text  # the rank's error and log tail
    assert job_processes(jobs_root, job_id) == []


LONG_CELL_OPTS = "--env STEPS=100000 --env STEP_SLEEP=0.2"


def _wait_running(jobs_root):
    def running():
        jobs = [p for p in jobs_root.iterdir() if not p.name.startswith(".")]
        if not jobs:
            return None
        status = read_status(jobs_root, jobs[0].name)
        ranks_running = [r for r in status.get("ranks", []) if r["state"] == "Running"]
        return jobs[0].name if len(ranks_running) == 2 else None

    job_id = wait_until(running, timeout=120)
    assert job_id, "the job never got both ranks running"
    return job_id


def test_interrupting_the_kernel_stops_the_job(kernel, jobs_root):
    msg_id = kernel.execute_async(f"%%paddle_launch --nodes 2 {LONG_CELL_OPTS}\n" + TRAIN_CELL)
    job_id = _wait_running(jobs_root)
    assert job_processes(jobs_root, job_id)  # the check can see a live job
    kernel.manager.interrupt_kernel()
    reply = kernel.client.get_shell_msg(timeout=120)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert read_status(jobs_root, job_id)["state"] == "Stopped"
    assert job_processes(jobs_root, job_id) == []


def test_paddle_stop_ends_a_detached_job(kernel, jobs_root):
    result = kernel.run(f"%%paddle_launch --nodes 2 --detach {LONG_CELL_OPTS}\n" + TRAIN_CELL)
    assert result.error is None
    job_id = _wait_running(jobs_root)
    stopped = kernel.run(f"%paddle_stop {job_id}")
    assert "Stopped" in stopped.text
    assert read_status(jobs_root, job_id)["state"] == "Stopped"
    assert job_processes(jobs_root, job_id) == []


@pytest.mark.parametrize("how", ["shutdown", "kill"])
def test_kernel_going_away_stops_its_jobs(kernel, jobs_root, how):
    result = kernel.run(f"%%paddle_launch --nodes 2 --detach {LONG_CELL_OPTS}\n" + TRAIN_CELL)
    assert result.error is None
    job_id = _wait_running(jobs_root)
    if how == "shutdown":
        kernel.manager.shutdown_kernel(now=False)
    else:
        # SIGKILL: no atexit hook runs; the supervisor notices on its own.
        kernel.manager.signal_kernel(signal.SIGKILL)
    assert wait_until(lambda: not job_processes(jobs_root, job_id), timeout=60)
    assert read_status(jobs_root, job_id)["state"] == "Stopped"


def test_processes_per_node_and_files_beside_the_cell(kernel, jobs_root):
    data = jobs_root.parent / "shard.txt"
    data.write_text("42\n")
    cell = (
        "import paddle.distributed as dist\n"
        "dist.init_parallel_env()\n"
        "value = int(open('shard.txt').read())\n"
        "print(f'rank={dist.get_rank()} world={dist.get_world_size()} value={value}')\n"
    )
    result = kernel.run(f"%%paddle_launch --nproc-per-node 2 --files {data}\n" + cell)
    assert result.error is None, result.text
    job_id = only_job(jobs_root)
    status = read_status(jobs_root, job_id)
    assert status["state"] == "Succeeded"
    assert [(r["rank"], r["node"]) for r in status["ranks"]] == [(0, 0), (1, 0)]
    logs = kernel.run(f"%paddle_logs {job_id} --rank 1")
    assert "rank=1 world=2 value=42" in logs.text
