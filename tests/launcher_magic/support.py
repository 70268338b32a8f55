"""Helpers for the launcher tests (the fixtures are in conftest.py).

- `TRAIN_CELL`: a small data-parallel Paddle model trained with the checkpoint helper; every batch
  is a function of (step, rank), so a resumed run computes exactly what an uninterrupted one does.
- `job_processes(jobs_root, job_id)`: the live processes of a job, found both by the process
  groups its status recorded and by the `PADDLE_JOB_ID` in their environment, so a test can prove
  that nothing of a job is left running.
- `KernelSession.run(code)`: executes a cell in a real kernel, returns its text and error.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher_magic.core.processes import group_members

TRAIN_CELL = '''
import os, time
import numpy as np
import paddle
import paddle.distributed as dist
from launcher_magic.checkpoint import Checkpointer

dist.init_parallel_env()
rank, world = dist.get_rank(), dist.get_world_size()
paddle.seed(7)
model = paddle.DataParallel(paddle.nn.Linear(8, 1))
opt = paddle.optimizer.Adam(learning_rate=0.05, parameters=model.parameters())
ckpt = Checkpointer(model, opt, every=4)
crash_at = int(os.environ.get("CRASH_AT", "-1"))
step_sleep = float(os.environ.get("STEP_SLEEP", "0"))
marker = os.path.join(os.environ["PADDLE_WORKBENCH_JOB_DIR"], "crashed-once")
for step in ckpt.steps(int(os.environ.get("STEPS", "12"))):
    rng = np.random.default_rng(1000 * step + rank)
    x = paddle.to_tensor(rng.normal(size=(16, 8)).astype("float32"))
    loss = ((model(x) - x.sum(axis=1, keepdim=True)) ** 2).mean()
    loss.backward()
    opt.step()
    opt.clear_grad()
    print(f"step {step} loss {float(loss):.6f}", flush=True)
    if step == crash_at and rank == 1 and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(3)
    time.sleep(step_sleep)
params = np.concatenate([p.numpy().ravel() for p in model.parameters()])
np.save(f"params-rank{rank}.npy", params)
print(f"done world={world} rank={rank}", flush=True)
'''


def _paddle_missing() -> str | None:
    try:
        import paddle  # noqa: F401
    except ImportError:
        return "paddlepaddle is not installed (pip install -e '.[paddle]')"
    return None


requires_paddle = pytest.mark.skipif(_paddle_missing() is not None,
                                     reason=_paddle_missing() or "")


@dataclass
class CellResult:
    text: str
    error: str | None


class KernelSession:
    def __init__(self, manager, client):
        self.manager = manager
        self.client = client

    def run(self, code: str, timeout: float = 300) -> CellResult:
        chunks: list[str] = []
        errors: list[str] = []

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                chunks.append(content["text"])
            elif kind in ("display_data", "update_display_data", "execute_result"):
                chunks.append(content["data"].get("text/plain", "") + "\n")
            elif kind == "error":
                errors.append(f"{content['ename']}: {content['evalue']}")

        reply = self.client.execute_interactive(code, timeout=timeout, output_hook=hook)
        if reply["content"]["status"] == "error" and not errors:
            errors.append(f"{reply['content']['ename']}: {reply['content']['evalue']}")
        return CellResult("".join(chunks), errors[0] if errors else None)

    def execute_async(self, code: str) -> str:
        return self.client.execute(code)


def read_status(jobs_root: Path, job_id: str) -> dict:
    return json.loads((jobs_root / job_id / "status.json").read_text())


def only_job(jobs_root: Path) -> str:
    jobs = [p.name for p in jobs_root.iterdir() if not p.name.startswith(".")]
    assert len(jobs) == 1, jobs
    return jobs[0]


def _environ_has(pid: str, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False


def job_processes(jobs_root: Path, job_id: str) -> list[int]:
    """Live processes of a job: in its recorded process groups, or carrying its PADDLE_JOB_ID."""
    status = read_status(jobs_root, job_id)
    found = set()
    for pgid in [n.get("pid") for n in status.get("nodes", [])] + [status.get("supervisor_pid")]:
        if pgid:
            found.update(group_members(pgid))
    needle = f"PADDLE_JOB_ID={job_id}".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _environ_has(entry.name, needle):
            stat = (entry / "stat").read_text() if (entry / "stat").exists() else ""
            if stat and stat[stat.rfind(")") + 2:].split()[0] != "Z":
                found.add(int(entry.name))
    return sorted(found)


def wait_until(predicate, timeout: float = 60, interval: float = 0.2):
    """Poll `predicate` until it returns something truthy; returns that value or the last one."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value

