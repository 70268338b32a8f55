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
