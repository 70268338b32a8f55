"""What the real-node tier's training tests share: ada's kernel with her storage, the cell that
launches a 2-node job, and reading what a job left in her home (its id, states, parameters).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from workbench_contract.ownership import user_claim

NODE_CELL = "%%paddle_launch --nodes 2 --cpu 500m --memory 2Gi --name dp\n"
JOB_TIMEOUT = 900


def states(text: str, name: str) -> list[str]:
    """The job states the text panel printed, in order."""
    return [line.split(": ", 1)[1].split(" ")[0] for line in text.splitlines()
            if line.startswith(f"Paddle job {name}-")]


def run_to_end(kernel, name: str, options: str = "", cell: str = ""):
    """Run the 2-node cell (``NODE_CELL`` named `name`, with `options`) to its end and check
    that it succeeded; returns the cell's result. `cell`: the training code (TRAIN_CELL)."""
    result = kernel.run(NODE_CELL.replace("--name dp", f"--name {name} {options}".rstrip())
                        + cell, timeout=JOB_TIMEOUT)
    assert result.error is None and states(result.text, name)[-1] == "Succeeded", result.text
    return result


def detach_until_checkpoint(kernel, home: Path, name: str) -> str:
    """Launch the slow 2-node training cell named `name` (two seconds a step, one restart
    allowed) detached, and return its job id once its first checkpoint is on the shared
    volume: the moment to break something under it."""
    from launcher_magic.training.checkpoint import list_checkpoints
    from tests.launcher_magic.support import TRAIN_CELL, wait_until

    launch = NODE_CELL.replace("--name dp", f"--name {name} --max-restarts 1 --env STEP_SLEEP=2 "
                               "--detach")
    result = kernel.run(launch + TRAIN_CELL)
    assert result.error is None, result.error
    job_id = job_id_of(home, name)
    checkpoints = home / "jobs" / job_id / "checkpoints"
    assert wait_until(lambda: checkpoints.is_dir() and list_checkpoints(checkpoints),
                      timeout=JOB_TIMEOUT), (home / "jobs" / job_id / "status.json").read_text()
    return job_id


def job_id_of(home: Path, name: str) -> str:
    (job,) = [p.name for p in (home / "jobs").iterdir() if p.name.startswith(name + "-")]
    return job


def progress_step(job_dir: Path) -> int:
    """The step rank 0 last reported in the job's progress file (0 before the first)."""
    try:
        return json.loads((job_dir / "progress.json").read_text())["step"]
    except (OSError, ValueError, KeyError):
        return 0


def params(home: Path, job_id: str, rank: int) -> np.ndarray:
    return np.load(home / "jobs" / job_id / f"params-rank{rank}.npy")


def user_storage(claim: str, mount_path: Path) -> dict:
    """The spawner's storage settings (as Zero to JupyterHub's ``singleuser.storage`` renders
    them): the user's claim mounted at the home folder."""
    return {"volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": claim}}],
            "volume_mounts": [{"name": "home", "mountPath": str(mount_path)}]}


def start_kernel(notebook_kernel, tenant, home: Path):
    """ada's kernel with her storage; files it makes are writable by the workers' uid (the
    kernel runs as root here, a notebook as that uid)."""
    previous = os.umask(0)
    try:
        return notebook_kernel(tenant, "ada", **user_storage(user_claim("ada"), home))
    finally:
        os.umask(previous)


# The job APIs a tenant may choose, each with the custom resource a job becomes.
JOB_APIS = {"trainjob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
            "paddlejob": ("kubeflow.org", "v1", "paddlejobs")}
