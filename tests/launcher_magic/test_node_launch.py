"""A TrainJob node's entry point, run for real around a stand-in for Paddle's launcher.

The stand-in (a `paddle.distributed.launch` module first on PYTHONPATH) records its argv and
working directory and, like Paddle's launcher, exits with the bare signal number when it is
sent SIGTERM. The real launcher runs under node_launch in tests/cluster/node/test_training_job.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher_magic.training.node_launch import exit_code

STAND_IN = '''
import json, os, signal, sys, time
def stop(signum, frame):
    sys.exit(signum)  # what Paddle's launcher does on SIGTERM
signal.signal(signal.SIGTERM, stop)
with open(os.environ["RECORD"], "w") as f:
    json.dump({"argv": sys.argv[1:], "cwd": os.getcwd(),
               "master_env": os.environ.get("PADDLE_MASTER")}, f)
if os.environ.get("STAND_IN_EXIT"):
    sys.exit(int(os.environ["STAND_IN_EXIT"]))
time.sleep(600)
'''


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    package = tmp_path / "fake" / "paddle" / "distributed"
    package.mkdir(parents=True)
    (tmp_path / "fake" / "paddle" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "launch.py").write_text(STAND_IN)
    return tmp_path / "fake"


def _start(tmp_path: Path, stand_in: Path, rank: str, **extra: str) -> subprocess.Popen:
    job = tmp_path / "jobs" / "j1"
    job.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{stand_in}{os.pathsep}{os.getcwd()}",
           "RECORD": str(tmp_path / "record.json"), "PADDLE_MASTER": "j1-node-0-0.j1:36543",
           "PADDLE_NNODES": "2", "PADDLE_WORKBENCH_NODE_RANK": rank, "POD_IP": "198.18.0.9",
           "PADDLE_WORKBENCH_JOB_DIR": str(job), **extra}
    return subprocess.Popen([sys.executable, "-m", "launcher_magic.training.node_launch",
                             "--log_dir", "logs", "main.py"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _record(tmp_path: Path) -> dict:
    path = tmp_path / "record.json"
    for _ in range(600):
        if path.exists() and path.stat().st_size:
            return json.loads(path.read_text())
        time.sleep(0.1)
    raise AssertionError("the stand-in launcher never started")


def test_node_0_runs_the_launcher_in_the_job_directory_as_the_master(tmp_path, stand_in):
    node = _start(tmp_path, stand_in, "0", STAND_IN_EXIT="0")
    assert node.wait(timeout=120) == 0, node.stderr.read()
    record = _record(tmp_path)
    assert record["cwd"] == str(tmp_path / "jobs" / "j1")
    assert record["argv"] == ["--master", "198.18.0.9:36543", "--nnodes", "2", "--rank", "0",
                              "--max_restart", "0", "--log_dir", "logs", "main.py"]
    # Paddle's launcher lets PADDLE_MASTER override --master: it must say the same.
    assert record["master_env"] == "198.18.0.9:36543"


def test_the_training_codes_failure_keeps_its_exit_code(tmp_path, stand_in):
    node = _start(tmp_path, stand_in, "1", STAND_IN_EXIT="3")
    assert node.wait(timeout=120) == 3
    record = _record(tmp_path)
    assert record["argv"][1] == record["master_env"] == "j1-node-0-0.j1:36543"


def test_a_node_stopped_by_sigterm_ends_with_128_plus_the_signal(tmp_path, stand_in):
    node = _start(tmp_path, stand_in, "1")
    _record(tmp_path)  # the launcher is running
    node.send_signal(signal.SIGTERM)
    # 143, not the 15 the launcher exits with: the runtime restarts 128 and up, fails 1-127.
    assert node.wait(timeout=120) == 128 + signal.SIGTERM


def test_a_pod_without_the_runtimes_variables_is_told_which(tmp_path, stand_in):
    node = _start(tmp_path, stand_in, "0", POD_IP="")
    assert node.wait(timeout=120) == 2
    assert "POD_IP is not set" in node.stderr.read()
    assert not (tmp_path / "record.json").exists()


def test_exit_codes():
    assert exit_code(0, None) == 0
    assert exit_code(15, signal.SIGTERM) == 143
    assert exit_code(-9, None) == 137  # the launcher itself killed
    assert exit_code(7, None) == 7


# -- a CPU node forks its ranks (Paddle imported once per pod), run for real on loopback ---------

ALLREDUCE_CELL = '''
import os, time
import paddle, paddle.distributed as dist
dist.init_parallel_env()
total = paddle.to_tensor(float(dist.get_rank() + 1))
dist.all_reduce(total)
print(f"rank {dist.get_rank()} of {dist.get_world_size()} sum {float(total)} "
      f"parent {os.getppid()}", flush=True)
time.sleep(float(os.environ.get("HOLD", "0")))
'''


def _forked_nodes(tmp_path: Path, cell: str, **extra: str) -> tuple[object, list]:
    """A real 2-node job directory and its two nodes started as pods would start them, both
    on this machine's loopback address (node 1 finds node 0 at PADDLE_MASTER)."""
    from launcher_magic.core.forking import free_endpoints
    from launcher_magic.core.jobdir import JobDir
    from launcher_magic.core.spec import JobSpec, Resources

    spec = JobSpec(job_id="fk-0a1b2c", name="fk", engine="trainjob", nodes=2,
                   resources=Resources(nproc_per_node=1))
    job = JobDir.create(tmp_path / "jobs", spec, cell)
    master = free_endpoints(1)[0]
    nodes = []
    for node in (0, 1):
        env = {**os.environ, "PYTHONPATH": os.getcwd(), "PADDLE_MASTER": master,
               "PADDLE_NNODES": "2", "PADDLE_WORKBENCH_NODE_RANK": str(node),
               "PADDLE_WORKBENCH_ATTEMPT": "0", "POD_IP": "127.0.0.1",
               "PADDLE_WORKBENCH_JOB_DIR": str(job.path), **extra}
        nodes.append(subprocess.Popen(
            [sys.executable, "-m", "launcher_magic.training.node_launch",
             "--log_dir", str(job.node_log_dir(0, node)), "--nproc_per_node", "1",
             str(job.main_path)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True))
    return job, nodes


def test_two_cpu_nodes_meet_and_fork_their_ranks_from_the_node_process(tmp_path):
    job, nodes = _forked_nodes(tmp_path, ALLREDUCE_CELL)
    outputs = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    for rank, node in enumerate(nodes):
        log = job.rank_log(0, rank, 1).read_text()
        # The rank is a fork of the node process: no second interpreter, no second import.
        assert f"rank {rank} of 2 sum 3.0 parent {node.pid}" in log, log
    # Node 0's own output shows its first rank's log, as the pod's log the engine reads.
    assert "rank 0 of 2 sum 3.0" in outputs[0][0], outputs[0]


def test_a_forked_node_stopped_by_sigterm_ends_with_143_and_takes_its_ranks(tmp_path):
    from launcher_magic.core.processes import pid_alive

    job, nodes = _forked_nodes(tmp_path, ALLREDUCE_CELL, HOLD="600")
    for rank in (0, 1):
        log = job.rank_log(0, rank, 1)
        for _ in range(3000):
            if log.is_file() and "sum 3.0" in log.read_text():
                break
            time.sleep(0.1)
        else:
            raise AssertionError([n.poll() for n in nodes])
    ranks = [record["pid"] for record in job.read_rank_records(0).values()]
    assert len(ranks) == 2
    for node in nodes:
        node.send_signal(signal.SIGTERM)
    assert [node.wait(timeout=120) for node in nodes] == [143, 143]
    for _ in range(100):
        if not any(pid_alive(pid) for pid in ranks):
            break
        time.sleep(0.1)
    assert not any(pid_alive(pid) for pid in ranks), ranks


def test_a_node_of_another_job_is_refused_by_node_0(tmp_path):
    import socket
    import threading

    from launcher_magic.training.node_rendezvous import RendezvousError, join, serve

    with socket.create_server(("127.0.0.1", 0)) as listener:
        master = f"127.0.0.1:{listener.getsockname()[1]}"
        met = {}
        thread = threading.Thread(target=lambda: met.update(done=serve(
            listener, job="a", attempt="0", nnodes=2, own=["127.0.0.1:1"], master="127.0.0.1:9",
            timeout=60)), daemon=True)
        thread.start()
        with pytest.raises(RendezvousError, match="another job or attempt"):
            join(master, job="b", attempt="0", node=1, own=["127.0.0.1:2"], timeout=30)
        assert join(master, job="a", attempt="0", node=1, own=["127.0.0.1:2"], timeout=30) == (
            ["127.0.0.1:1", "127.0.0.1:2"], "127.0.0.1:9")
        thread.join(timeout=30)
    assert met["done"] == (["127.0.0.1:1", "127.0.0.1:2"], "127.0.0.1:9")


def test_which_nodes_fork_and_which_run_paddles_launcher():
    from launcher_magic.training.node_launch import forked_options

    forked = forked_options({}, ["--log_dir", "L", "--nproc_per_node", "2", "main.py"])
    assert forked is not None and (forked.nproc_per_node, forked.script.name) == (2, "main.py")
    for args in (["--log_dir", "L", "--nproc_per_node", "1", "--devices", "0", "main.py"],
                 ["--log_dir", "L", "main.py"], ["--log_dir", "L", "--nproc_per_node", "x", "m"]):
        assert forked_options({}, args) is None, args
    assert forked_options({"WORKBENCH_PADDLE_LAUNCHER": "1"},
                          ["--log_dir", "L", "--nproc_per_node", "1", "main.py"]) is None
