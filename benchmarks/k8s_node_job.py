"""The 2-node training job on the real test node beside the same cell on the local engine.

    PATH=$PATH:/usr/local/go/bin .venv/bin/python benchmarks/k8s_node_job.py [--job-api trainjob]

(as root, like the real node's tests). In one run, one after the other:

1. node: the real node's job test for the chosen job API (`paddlejob` or `trainjob`;
   tests/cluster/node/test_training_job.py) under pytest: the control plane, the real node, the
   images tier's CPU image on the internal registry, a tenant from `workbench apply`, a kernel
   with a notebook's identity running `%%paddle_launch --nodes 2` with `TRAIN_CELL`. The cell's
   wall time (Shift-Enter until the panel shows Succeeded) and the image pull into the node's
   fresh containerd (the kubelet's "Successfully pulled image ... in Ns" event; each session's
   node starts with an empty image store) come from the session's figures.
2. local: the same cell in a kernel on the local engine (`--engine local`, 2 nodes on this
   machine).

Prints both, the node's time less the image pull, and the ratios node/local. One run each: on a
busy machine take the figures as one sample, not a median.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEST = "tests/cluster/node/test_training_job.py"


def node_run(job_api: str) -> dict[str, float]:
    """Run the node's job test; returns the figures its session printed."""
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST,
            "-k", f"two_node and {job_api}"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the node's job test failed (exit {done.returncode}):\n{done.stdout[-4000:]}")
    summary = done.stdout.split("real node figures", 1)[-1].splitlines()[1:]
    figures = {}
    for line in summary:
        what, _, seconds = line.rpartition(": ")
        try:
            figures[what] = float(seconds)
        except ValueError:
            break  # the end of the figures (pytest's result line)
    return figures


def local_run() -> float:
    """Seconds from Shift-Enter to the end of the same 2-node cell on the local engine."""
    from jupyter_client.manager import start_new_kernel

    from tests.launcher_magic.support import TRAIN_CELL, KernelSession

    with tempfile.TemporaryDirectory(prefix="k8s-node-bench-") as folder:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLE_WORKBENCH_")}
        env["PADDLE_WORKBENCH_JOBS_DIR"] = str(Path(folder) / "jobs")
        manager, client = start_new_kernel(kernel_name="python3", env=env, cwd=folder)
        session = KernelSession(manager, client)
        try:
            assert session.run("%load_ext launcher_magic").error is None
            began = time.monotonic()
            result = session.run("%%paddle_launch --nodes 2 --engine local --name bench\n"
                                 + TRAIN_CELL, timeout=900)
            seconds = time.monotonic() - began
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    if result.error is not None or "Succeeded" not in result.text:
        sys.exit(f"the local engine's job did not succeed:\n{result.text[-4000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--job-api", choices=("paddlejob", "trainjob"), default="paddlejob")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    figures = node_run(args.job_api)
    wall = next((v for k, v in figures.items() if k.startswith("2-node job")), None)
    if wall is None:
        sys.exit(f"the node's session printed no job figure: {figures}")
    pull = figures.get("image pull into the node (s)", 0.0)
    local = local_run()
    print(f"node ({args.job_api}), cell wall time:     {wall:7.1f} s")
    print(f"  of which the image pull:            {pull:7.1f} s")
    print(f"node less the pull:                   {wall - pull:7.1f} s")
    print(f"local engine, same cell:              {local:7.1f} s")
    print(f"ratio node/local:                     {wall / local:7.2f}")
    print(f"ratio node less pull/local:           {(wall - pull) / local:7.2f}")
    for what, seconds in figures.items():
        print(f"  (node session) {what}: {seconds:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
