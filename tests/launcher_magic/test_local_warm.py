"""The local engine's warm start: ranks forked from the kernel's warm interpreter (Paddle imported).

Real Paddle training on CPU, through `%%paddle_launch`; the cold path (`LocalEngine.warm = False`,
`paddle.distributed.launch` per node) is the reference wherever the two must agree.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from launcher_magic.core.spec import LaunchOptions, build_spec
from launcher_magic.engines.local.warm import eligible, import_time_env
from workbench_contract.environment import NotebookContext

from .support import TRAIN_CELL, job_processes, read_status, requires_paddle, wait_until

pytestmark = [requires_paddle, pytest.mark.paddle]

# What a rank reports about itself at the top of the cell (before Paddle is used).
PROBE_CELL = '''
import json, os, random
import numpy as np
import paddle
import paddle.distributed as dist
fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
report = {
    "env": {k: v for k, v in os.environ.items() if k.startswith(("PADDLE_", "FLAGS_", "POD_"))},
    "all_env": sorted(os.environ),
    "omp": os.environ.get("OMP_NUM_THREADS"),
    "fds": fds,
    "uid": os.getuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
    "cgroup": open("/proc/self/cgroup").read(),
    "cwd": os.getcwd(),
    "random": [random.random(), float(np.random.rand()), float(paddle.rand([1]).numpy()[0])],
    "parents": [],
}
pid = os.getpid()
for _ in range(3):  # node, supervisor, what started the supervisor
    pid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    report["parents"].append(pid)

dist.init_parallel_env()
x = paddle.to_tensor([float(dist.get_rank() + 1)])
dist.all_reduce(x)
report["sum"] = float(x.numpy()[0])
with open(f"probe-{dist.get_rank()}.json", "w") as f:
    json.dump(report, f)
'''


def _engine():
    from launcher_magic.kernel.magics import launcher

    return launcher().engine("local")


@pytest.fixture
def local(shell):
    """`shell`, with its local engine's warm interpreter ended at teardown."""
    yield shell
    from launcher_magic.kernel import magics

    if magics._LAUNCHER is not None and "local" in magics._LAUNCHER._engines:
        warm = magics._LAUNCHER._engines["local"].warm_interpreter
        if warm is not None:
            warm.close()


def _launch(shell, jobs_root: Path, args: str, cell: str, *, warm: bool = True) -> Path:
    before = set(jobs_root.iterdir())
    from launcher_magic.kernel.magics import launcher

    launcher(parent=shell).engine("local").warm = warm
    shell.run_cell_magic("paddle_launch", args, cell)
    (job,) = set(jobs_root.iterdir()) - before
    return job


def _probes(job: Path, world: int) -> list[dict]:
    return [json.loads((job / f"probe-{rank}.json").read_text()) for rank in range(world)]


def test_warm_ranks_get_what_paddles_launcher_gives_them(local, jobs_root):
    """Contract: the variables a warm rank sees are the ones `paddle.distributed.launch` sets
    for the same job (its real output: a cold job of the same shape), rank for rank."""
    cold = _launch(local, jobs_root, "--nodes 2 --nproc-per-node 2 --name cold", PROBE_CELL,
                   warm=False)
    warm = _launch(local, jobs_root, "--nodes 2 --nproc-per-node 2 --name warm", PROBE_CELL)
    assert read_status(jobs_root, cold.name)["state"] == "Succeeded"
    assert read_status(jobs_root, warm.name)["state"] == "Succeeded"
    assert "from the warm interpreter" in (warm / "logs/attempt-0/node-1/launch.log").read_text()
    assert "from the warm interpreter" not in (cold / "logs/attempt-0/node-1/launch.log").read_text()

    def comparable(job: Path, env: dict) -> dict:
        # Values that name this job's own paths, ports or id are compared by shape.
        out = {}
        for key, value in env.items():
            if key == "POD_NAME":
                value = bool(value)
            elif key in ("PADDLE_MASTER", "PADDLE_CURRENT_ENDPOINT"):
                value = value.rpartition(":")[0] and "host:port"
            elif key == "PADDLE_TRAINER_ENDPOINTS":
                value = len(value.split(","))
            else:
                value = value.replace(str(job), "<job>").replace(job.name, "<id>")
            out[key] = value
        return out

    for c, w in zip(_probes(cold, 4), _probes(warm, 4), strict=True):
        # Paddle's launcher also writes each worker's whole environment to a file for values too
        # long to pass; the warm path passes none such and writes no such file.
        assert c["env"].pop("PADDLE_BACKUP_ENV_PATH")
        # Every variable, not only Paddle's: OMP_NUM_THREADS=1 (set by `import paddle`) decides
        # how fast a rank trains on a shared CPU. (LINES and COLUMNS are the terminal size that
        # readline exports in the launcher's own process.)
        noise = {"PADDLE_BACKUP_ENV_PATH", "LINES", "COLUMNS"}
        assert set(w["all_env"]) - noise == set(c["all_env"]) - noise, (
            set(w["all_env"]) ^ set(c["all_env"]) - noise)
        assert (w["omp"], c["omp"]) == ("1", "1")
        assert set(w["env"]) == set(c["env"]), (set(w["env"]) ^ set(c["env"]))
        assert comparable(warm, w["env"]) == comparable(cold, c["env"])
        assert w["sum"] == c["sum"] == 10.0  # one world of four ranks
        assert w["cwd"] == str(warm) and c["cwd"] == str(cold)


def test_two_warm_ranks_train_to_identical_parameters(local, jobs_root):
    cold = _launch(local, jobs_root, "--nodes 2 --name cold", TRAIN_CELL, warm=False)
    warm = _launch(local, jobs_root, "--nodes 2 --name warm", TRAIN_CELL)
    params = {(job.name, rank): np.load(job / f"params-rank{rank}.npy")
              for job in (cold, warm) for rank in (0, 1)}
    np.testing.assert_array_equal(params[warm.name, 0], params[warm.name, 1])
    # Same seed, same batches: forking changes nothing the training computes.
    np.testing.assert_array_equal(params[warm.name, 0], params[cold.name, 0])
    assert not np.allclose(params[warm.name, 0], 0)
    assert read_status(jobs_root, warm.name)["state"] == "Succeeded"
    assert "from the warm interpreter" in (warm / "logs/attempt-0/node-0/launch.log").read_text()
    assert job_processes(jobs_root, warm.name) == []


def test_a_warm_rank_killed_mid_run_restarts_from_its_checkpoint(local, jobs_root):
    reference = _launch(local, jobs_root, "--nodes 2 --name ref", TRAIN_CELL)
    os.environ["STEP_SLEEP"] = "0.3"
    try:
        job = _launch(local, jobs_root, "--nodes 2 --name crash --max-restarts 1 --detach",
                      TRAIN_CELL.replace("time.sleep(step_sleep)",
                                         "time.sleep(step_sleep if os.environ['PADDLE_WORKBENCH_"
                                         "ATTEMPT'] == '0' else 0)"))
    finally:
        del os.environ["STEP_SLEEP"]
    rank1 = job / "ranks/attempt-0/rank-1.json"
    assert wait_until(lambda: rank1.exists() and (job / "checkpoints").exists()
                      and any((job / "checkpoints").iterdir()), timeout=120)
    os.kill(json.loads(rank1.read_text())["pid"], signal.SIGKILL)
    assert wait_until(lambda: read_status(jobs_root, job.name)["state"] in
                      ("Succeeded", "Failed", "Stopped"), timeout=180)
    status = read_status(jobs_root, job.name)
    assert status["state"] == "Succeeded", status
    assert status["restarts"] == 1
    second = (job / "logs/attempt-1/node-0/workerlog.0").read_text()
    assert "resumed from step" in second and "step 0 " not in second
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(job / f"params-rank{rank}.npy"),
                                      np.load(reference / f"params-rank{rank}.npy"))
    assert job_processes(jobs_root, job.name) == []


def test_warm_ranks_inherit_nothing_of_another_job_and_keep_the_users_identity(local, jobs_root):
    _launch(local, jobs_root, "--nodes 2 --name first --env WB_FIRST_JOB_SECRET=s3cret",
            PROBE_CELL)
    second = _launch(local, jobs_root, "--nodes 2 --name second", PROBE_CELL)
    first = next(p for p in jobs_root.iterdir() if p.name.startswith("first"))
    assert "WB_FIRST_JOB_SECRET" in _probes(first, 2)[0]["all_env"]  # the check can see it
    draws = []
    for probe in _probes(first, 2) + _probes(second, 2):
        draws.append(tuple(probe["random"]))
    for probe in _probes(second, 2):
        assert "WB_FIRST_JOB_SECRET" not in probe["all_env"]
        # Only the standard streams (and the listing's own descriptor) are open.
        assert probe["fds"][:3] == [0, 1, 2] and len(probe["fds"]) <= 4, probe["fds"]
        assert (probe["uid"], probe["gid"]) == (os.getuid(), os.getgid())
        assert probe["groups"] == sorted(os.getgroups())
        assert probe["cgroup"] == Path("/proc/self/cgroup").read_text()
    # Every rank of every job drew its own random numbers (Python, NumPy, Paddle).
    for i in range(3):
        assert len({d[i] for d in draws}) == len(draws), draws
    # Each rank's parent is its node (a process group of its own), the nodes' parent is the job's
    # supervisor, and the supervisor's is this kernel's warm interpreter.
    status = read_status(jobs_root, second.name)
    assert [p["parents"] for p in _probes(second, 2)] == [
        [node["pid"], status["supervisor_pid"], _engine().warm_interpreter.pid]
        for node in status["nodes"]]


def test_warm_interpreter_ends_with_the_kernel(kernel, jobs_root):
    result = kernel.run("%%paddle_launch --nodes 2 --name w\n"
                        "import paddle.distributed as dist\ndist.init_parallel_env()\n")
    assert result.error is None, result.text
    pid = kernel.run("from launcher_magic.kernel.magics import launcher\n"
                     "print('warm', launcher().engine('local').warm_interpreter.pid)")
    warm_pid = int(pid.text.split("warm", 1)[1].split()[0])
    assert Path(f"/proc/{warm_pid}").exists()
    kernel.manager.signal_kernel(signal.SIGKILL)  # no atexit hook runs: it notices on its own
    assert wait_until(lambda: not Path(f"/proc/{warm_pid}").exists()
                      or Path(f"/proc/{warm_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                      == "Z", timeout=60)


@pytest.mark.parametrize(("options", "env", "why"), [
    (dict(nodes=2), {}, None),
    (dict(nodes=1, gpus=1), {}, "GPU"),
    (dict(nodes=2), {"FLAGS_use_mkldnn": "1"}, "FLAGS_use_mkldnn"),
    (dict(nodes=2), {"OMP_NUM_THREADS": "1"}, "OMP_NUM_THREADS"),
], ids=["cpu", "gpu", "paddle-flag", "omp"])
def test_which_jobs_start_warm(options, env, why):
    spec = build_spec(LaunchOptions(name="x", env=tuple(f"{k}={v}" for k, v in env.items()),
                                    **options), "x", NotebookContext(), suffix="x1")
    reason = eligible(spec)
    assert (reason is None) if why is None else (why in reason)


def test_import_time_variables_are_the_ones_paddle_reads_at_import():
    env = {"FLAGS_x": "1", "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1", "HOME": "/h",
           "PADDLE_WORKBENCH_JOB_DIR": "/j"}
    assert import_time_env(env) == {"FLAGS_x": "1", "OMP_NUM_THREADS": "2"}


def test_a_job_with_an_import_time_variable_starts_cold(local, jobs_root):
    job = _launch(local, jobs_root, "--nodes 2 --name flags --env FLAGS_check_nan_inf=0",
                  PROBE_CELL)
    assert read_status(jobs_root, job.name)["state"] == "Succeeded"
    assert "from the warm interpreter" not in (job / "logs/attempt-0/node-0/launch.log").read_text()
    assert _probes(job, 2)[0]["env"]["FLAGS_check_nan_inf"] == "0"


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_the_hubs_token_reaches_no_rank_and_no_file_of_the_job(local, jobs_root, monkeypatch,
                                                               warm):
    """A hub-spawned kernel holds the hub's API token. Paddle's launcher (the cold path) writes a
    worker's whole environment to the job's log folder; the token must not be in it, nor in any
    rank's environment."""
    token = "wb-hub-token-" + os.urandom(8).hex()
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)
    monkeypatch.setenv("JPY_API_TOKEN", token)
    started = _engine().warm_interpreter
    if warm and started is not None:  # one started before the token was set proves nothing
        started.close()
    job = _launch(local, jobs_root, f"--nodes 2 --name hubtoken-{int(warm)}", PROBE_CELL,
                  warm=warm)
    assert read_status(jobs_root, job.name)["state"] == "Succeeded"
    launch_log = (job / "logs/attempt-0/node-1/launch.log").read_text()
    assert ("from the warm interpreter" in launch_log) == warm
    if not warm:  # the file the check is about exists, so the check can see a leak
        assert list(job.glob("logs/attempt-0/node-*/backup_env.*.json"))
    for probe in _probes(job, 2):
        assert not {"JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN"} & set(probe["all_env"])
    for path in job.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
