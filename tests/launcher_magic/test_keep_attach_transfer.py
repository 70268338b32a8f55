"""Jobs that outlive their kernel and come back, a re-run that starts no second copy, and
variables in (`--push`) and results out (`--pull`): in real kernels with the CPU wheel.
"""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest

from launcher_magic.core.transfer import (
    TransferError,
    pack_push,
    read_pull,
    read_push,
    write_pull,
    write_push,
)

from .support import job_processes, read_status, requires_paddle, wait_until

SLOW_CELL = "import time\nfor i in range(60):\n    print('tick', i, flush=True)\n    time.sleep(0.25)\n"


# -- the transfer files, as data ---------------------------------------------------------------

def test_push_round_trips_and_says_what_cannot_travel(tmp_path):
    arr, cfg = np.arange(6).reshape(2, 3), {"lr": 0.1, "layers": [8, 1]}
    write_push(tmp_path, pack_push(("arr", "cfg"), {"arr": arr, "cfg": cfg, "other": 1}))
    pushed = read_push(tmp_path)
    assert set(pushed) == {"arr", "cfg"}
    np.testing.assert_array_equal(pushed["arr"], arr)
    with pytest.raises(TransferError, match=r"--push lock: a lock cannot be pickled"):
        pack_push(("lock",), {"lock": threading.Lock()})
    with pytest.raises(TransferError, match="--push ghost: no such variable"):
        pack_push(("ghost",), {})
    with pytest.raises(TransferError, match="over the limit of 1 MiB"):
        pack_push(("big",), {"big": np.zeros(2**18)}, limit=2**20)


def test_pull_says_which_names_rank_0_lacked(tmp_path):
    write_pull(tmp_path, ("params", "nothere", "lock"),
               {"params": {"w": [1.0]}, "lock": threading.Lock()})
    with pytest.raises(TransferError) as error:
        read_pull(tmp_path, ("params", "nothere", "lock"))
    assert "the cell defined no nothere on rank 0" in str(error.value)
    assert "lock is a lock cannot be pickled" in str(error.value)
    assert read_pull(tmp_path, ("params",)) == {"params": {"w": [1.0]}}
    with pytest.raises(TransferError, match="rank 0 wrote no results"):
        read_pull(tmp_path / "elsewhere", ("params",))


# -- in real kernels -----------------------------------------------------------------------------

@requires_paddle
def test_push_arrives_on_every_rank_and_pull_brings_rank_0s_values_back(kernel, jobs_root):
    setup = kernel.run("import numpy as np\narr = np.arange(12.0).reshape(3, 4)\n"
                       "cfg = {'lr': 0.05, 'tag': 'push-test'}\n")
    assert setup.error is None
    cell = (
        "import numpy as np, paddle, paddle.distributed as dist\n"
        "dist.init_parallel_env()\n"
        "rank = dist.get_rank()\n"
        "print('rank', rank, 'sum', float(arr.sum()), 'tag', cfg['tag'], flush=True)\n"
        "paddle.seed(3)\n"
        "model = paddle.DataParallel(paddle.nn.Linear(4, 1))\n"
        "opt = paddle.optimizer.SGD(learning_rate=cfg['lr'], parameters=model.parameters())\n"
        "x = paddle.to_tensor(arr.astype('float32'))\n"
        "for _ in range(3):\n"
        "    loss = (model(x) ** 2).mean(); loss.backward(); opt.step(); opt.clear_grad()\n"
        "params = {k: v.numpy() for k, v in model.state_dict().items()}\n"
        "if rank == 0:\n"
        "    np.savez('saved-by-rank0.npz', **params)\n"
    )
    result = kernel.run(f"%%paddle_launch --nodes 2 --name xfer --push arr,cfg --pull params\n"
                        f"{cell}", timeout=300)
    assert result.error is None, result.text
    assert "Pulled params from rank 0" in result.text
    job_id = next(p.name for p in jobs_root.iterdir() if p.name.startswith("xfer-"))
    for rank in (0, 1):
        log = (jobs_root / job_id / "logs" / "attempt-0" / f"node-{rank}" / "workerlog.0")
        assert f"rank {rank} sum 66.0 tag push-test" in log.read_text()
    check = kernel.run(
        f"saved = np.load({str(jobs_root / job_id / 'saved-by-rank0.npz')!r})\n"
        "assert sorted(saved.files) == sorted(params)\n"
        "assert all(np.array_equal(saved[k], params[k]) for k in saved.files)\n"
        "print('pulled params equal rank 0s')\n")
    assert check.error is None and "pulled params equal rank 0s" in check.text, check


@requires_paddle
@pytest.mark.parametrize("case, cell, line, message", [
    ("unpicklable-push", "x = 1\n", "--push lock", "--push lock: a lock cannot be pickled"),
    ("unknown-pull", "x = 1\n", "--pull nothere", "the cell defined no nothere on rank 0"),
    ("pull-from-failed", "raise ValueError('boom')\n", "--pull x",
     "is Failed, so there is nothing to pull"),
], ids=lambda v: v if isinstance(v, str) and "-" in v and "\n" not in v else "")
def test_transfer_mistakes_are_one_clear_line(kernel, jobs_root, case, cell, line, message):
    assert kernel.run("import threading\nlock = threading.Lock()\n").error is None
    result = kernel.run(f"%%paddle_launch --nodes 1 --name {case} {line}\n{cell}", timeout=300)
    assert result.error and result.error.startswith("UsageError"), result
    assert message in result.error
    assert "Traceback" not in result.error
    if case == "unpicklable-push":  # refused before anything was created
        assert not any(p.name.startswith(case) for p in jobs_root.iterdir())


@requires_paddle
def test_a_rerun_of_a_running_job_starts_nothing_and_says_what_to_do(kernel, jobs_root):
    assert kernel.run(f"%%paddle_launch --nodes 1 --name twice --detach\n{SLOW_CELL}").error is None
    (first,) = [p.name for p in jobs_root.iterdir() if p.name.startswith("twice-")]
    again = kernel.run(f"%%paddle_launch --nodes 1 --name twice\n{SLOW_CELL}")
    assert again.error and again.error.startswith("UsageError")
    for words in (f"job {first} (twice) is still", f"%paddle_attach {first}",
                  f"%paddle_stop {first}", "--new"):
        assert words in again.error
    assert [p.name for p in jobs_root.iterdir() if p.name.startswith("twice-")] == [first]
    forced = kernel.run("%%paddle_launch --nodes 1 --name twice --new --detach\nx = 1\n")
    assert forced.error is None
    assert len([p for p in jobs_root.iterdir() if p.name.startswith("twice-")]) == 2
    assert "Stopped" in kernel.run(f"%paddle_stop {first}", timeout=120).text


@requires_paddle
def test_a_kept_job_outlives_its_kernel_and_is_reattached_from_a_new_one(kernel, jobs_root):
    started = kernel.run("%%paddle_launch --nodes 2 --name kept --keep\n"
                         "import time\ntime.sleep(8)\nprint('kept job done', flush=True)\n")
    assert started.error is None, started
    (job_id,) = [p.name for p in jobs_root.iterdir() if p.name.startswith("kept-")]
    assert wait_until(lambda: read_status(jobs_root, job_id)["state"] == "Running", timeout=120)

    kernel.manager.restart_kernel(now=True)  # the kernel that started it is gone
    kernel.client.wait_for_ready(timeout=120)
    assert kernel.run("%load_ext launcher_magic").error is None
    assert read_status(jobs_root, job_id)["state"] == "Running"  # it did not go with the kernel
    assert job_processes(jobs_root, job_id)

    attached = kernel.run("%env PADDLE_WORKBENCH_PANEL=text\n"
                          "job = %paddle_attach kept\n"
                          "final = job.wait(timeout=240)\n"
                          "print('final state', final.state.value)\n", timeout=300)
    assert attached.error is None, attached
    assert "final state Succeeded" in attached.text
    assert f"Paddle job {job_id}" in attached.text  # the live panel came back
    assert not job_processes(jobs_root, job_id)


def test_pickle_files_are_the_users_own(tmp_path):
    """Push and pull files are written whole (no half file to read) in the job directory."""
    write_push(tmp_path, pickle.dumps({"a": 1}))
    assert [p.name for p in tmp_path.iterdir()] == ["push.pkl"]
