"""The job directory, the node command contract and GPU assignment."""

from __future__ import annotations

import sys

import pytest

from launcher_magic.core.commands import assign_devices, node_command
from launcher_magic.core.jobdir import JobDir, JobNotFound, list_jobs, resolve, tail_lines
from launcher_magic.core.spec import LaunchOptions, build_spec
from launcher_magic.engines.local.devices import parse_nvidia_smi, visible_gpus
from workbench_contract import environment as wbenv
from workbench_contract.environment import NotebookContext


def _spec(name="demo", nodes=2, **kw):
    return build_spec(LaunchOptions(nodes=nodes, name=name, **kw), "print(1)", NotebookContext())


def test_job_directory_holds_spec_cell_main_files_and_folders(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("1,2\n")
    spec = _spec(files=(str(data),))
    job = JobDir.create(tmp_path / "jobs", spec, "print(1)", [data])
    assert job.read_spec() == spec
    assert job.cell_path.read_text() == "print(1)\n"
    assert "launcher_magic.training.worker" in job.main_path.read_text()
    assert (job.path / "data.csv").read_text() == "1,2\n"
    assert job.read_status().state.value == "Pending"
    for folder in (job.logs_dir, job.ranks_dir, job.checkpoints_dir, job.visualdl_dir):
        assert folder.is_dir()


def test_a_failed_create_leaves_nothing(tmp_path):
    root = tmp_path / "jobs"
    with pytest.raises(FileNotFoundError):
        JobDir.create(root, _spec(), "print(1)", [tmp_path / "missing.txt"])
    assert list(root.iterdir()) == []


def test_resolve_by_id_or_newest_name(tmp_path):
    root = tmp_path / "jobs"
    first = JobDir.create(root, build_spec(LaunchOptions(name="a"), "x", NotebookContext(), now=1), "x")
    second = JobDir.create(root, build_spec(LaunchOptions(name="a"), "x", NotebookContext(), now=2), "x")
    assert resolve(root, first.job_id).path == first.path
    assert resolve(root, "a").path == second.path
    assert [j.job_id for j in list_jobs(root)] == [first.job_id, second.job_id]
    with pytest.raises(JobNotFound, match="recent jobs"):
        resolve(root, "b")
    with pytest.raises(JobNotFound):
        resolve(root, "../etc")


def test_tail_lines_reads_only_the_end(tmp_path):
    path = tmp_path / "log"
    path.write_text("".join(f"line {i}\n" for i in range(10000)))
    assert tail_lines(path, 3) == ["line 9997", "line 9998", "line 9999"]
    assert tail_lines(tmp_path / "missing", 3) == []


def test_node_command_follows_the_paddlejob_contract(tmp_path):
    spec = _spec(nodes=2, env=("MY_FLAG=1",))
    job = JobDir(tmp_path / spec.job_id)
    argv, env = node_command(spec, job, node=1, attempt=2, master="localhost:1234",
                             python=sys.executable, devices=[2, 3])
    assert argv[:3] == [sys.executable, "-m", "paddle.distributed.launch"]
    assert argv[-1] == str(job.main_path)
    assert argv[argv.index("--rank") + 1] == "1"
    assert argv[argv.index("--max_restart") + 1] == "0"
    assert argv[argv.index("--devices") + 1] == "2,3"
    assert argv[argv.index("--log_dir") + 1] == str(job.node_log_dir(2, 1))
    assert env["PADDLE_MASTER"] == "localhost:1234"
    assert env["PADDLE_NNODES"] == "2"
    assert env["PADDLE_JOB_ID"] == spec.job_id
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["MY_FLAG"] == "1"
    assert env[wbenv.CHECKPOINT_DIR] == str(job.checkpoints_dir)
    assert env[wbenv.VISUALDL_DIR] == str(job.visualdl_dir)
    assert env[wbenv.ATTEMPT] == "2" and env[wbenv.NODE_RANK] == "1"


def test_cpu_nodes_get_no_devices(tmp_path):
    spec = _spec()
    argv, _ = node_command(spec, JobDir(tmp_path), node=0, attempt=0, master="m:1",
                           python="python")
    assert "--devices" not in argv


def test_devices_are_split_between_nodes():
    spec = _spec(nodes=2, gpus=2)
    assert assign_devices(spec, [0, 1, 2, 3]) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="4 GPUs, but this machine has 3"):
        assign_devices(spec, [0, 1, 2])


NVIDIA_SMI = """GPU 0: NVIDIA H200 (UUID: GPU-1)
GPU 1: NVIDIA H200 (UUID: GPU-2)
"""


def test_gpu_listing_and_visible_devices():
    assert parse_nvidia_smi(NVIDIA_SMI) == [0, 1]
    assert visible_gpus(NVIDIA_SMI, {}) == [0, 1]
    assert visible_gpus(NVIDIA_SMI, {"CUDA_VISIBLE_DEVICES": "1"}) == [1]
    assert visible_gpus(NVIDIA_SMI, {"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus("", {}) == []
