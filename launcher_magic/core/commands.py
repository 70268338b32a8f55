"""Pure builders: a JobSpec and a node's place in the job to the command and environment it runs.

Each node runs `python -m paddle.distributed.launch <job dir>/main.py` with the environment that
Kubeflow's PaddleJob operator gives a worker pod (`PADDLE_MASTER`, `PADDLE_NNODES`, `PADDLE_JOB_ID`,
`PYTHONUNBUFFERED`) plus the workbench's own paths, so the same script runs in every engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import JobSpec
from workbench_contract import environment as wbenv

# The hub's credentials in a hub-spawned kernel's environment. A job's processes never get them:
# a rank has no use for them, and Paddle's launcher writes each worker's whole environment to a
# file in the job's log folder (`backup_env.<rank>.json`).
HUB_CREDENTIALS = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")


def job_process_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The kernel's environment as a job's processes inherit it: without the hub's credentials."""
    return {k: v for k, v in environ.items() if k not in HUB_CREDENTIALS}


def job_environment(spec: JobSpec, job: JobDir, master: str) -> dict[str, str]:
    """The variables every node of `spec` gets, whatever the engine."""
    env = dict(spec.env)
    env.update(
        {
            "PADDLE_MASTER": master,
            "PADDLE_NNODES": str(spec.nodes),
            "PADDLE_JOB_ID": spec.job_id,
            "PYTHONUNBUFFERED": "1",
            wbenv.JOB_DIR: str(job.path),
            wbenv.CHECKPOINT_DIR: str(job.checkpoints_dir),
            wbenv.VISUALDL_DIR: str(job.visualdl_dir),
        }
    )
    return env


def node_command(
    spec: JobSpec,
    job: JobDir,
    *,
    node: int | str,
    attempt: int,
    master: str,
    python: str,
    devices: Sequence[int] = (),
) -> tuple[list[str], dict[str, str]]:
    """argv and the job's environment additions for `node` of `spec` in `attempt`.

    `node` may be a placeholder that the runtime expands (the kubernetes engine passes
    `$(PADDLE_WORKBENCH_NODE_RANK)`). `devices` are the GPU indices this node owns (empty: CPU).
    """
    argv = [
        python, "-m", "paddle.distributed.launch",
        "--log_dir", str(job.node_log_dir(attempt, node)),
        "--nproc_per_node", str(spec.resources.nproc_per_node),
        # Fixed node ranks make global ranks node * nproc + local rank in every attempt.
        "--rank", str(node),
        # The workbench restarts the whole job (--max-restarts); Paddle's own per-node
        # restarts would hide failures from it.
        "--max_restart", "0",
    ]
    if devices:
        argv += ["--devices", ",".join(str(d) for d in devices)]
    argv.append(str(job.main_path))

    env = job_environment(spec, job, master)
    env[wbenv.NODE_RANK] = str(node)
    env[wbenv.ATTEMPT] = str(attempt)
    return argv, env


def assign_devices(spec: JobSpec, available: Sequence[int]) -> list[list[int]]:
    """GPU indices per node: node n gets the n-th block of `gpus_per_node` devices.

    Raises:
        ValueError: more GPUs asked for than `available` holds.
    """
    per_node = spec.resources.gpus_per_node
    if per_node == 0:
        return [[] for _ in range(spec.nodes)]
    needed = per_node * spec.nodes
    if needed > len(available):
        raise ValueError(
            f"the job asks for {spec.nodes} nodes x {per_node} GPUs = {needed} GPUs, but this "
            f"machine has {len(available)}; ask for fewer"
        )
    return [list(available[n * per_node:(n + 1) * per_node]) for n in range(spec.nodes)]
