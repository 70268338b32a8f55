"""Time to completion of one 2-rank training cell, three ways, side by side.

    python benchmarks/launch_overhead.py [--runs 5] [--steps 300]

1. magic:     `%%paddle_launch --nodes 2` in an IPython shell (the local engine, 2 nodes)
2. raw-2node: two `python -m paddle.distributed.launch` with PADDLE_MASTER/PADDLE_NNODES on loopback
3. raw-1node: one `python -m paddle.distributed.launch --nproc_per_node 2`

The three run interleaved (one of each per round) in this one process tree, so drift on a busy
machine hits all of them alike. Prints each run, then medians and the ratios against raw-1node.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = """
import numpy as np
import paddle
import paddle.distributed as dist

dist.init_parallel_env()
rank = dist.get_rank()
paddle.seed(0)
model = paddle.DataParallel(paddle.nn.Sequential(
    paddle.nn.Linear(64, 256), paddle.nn.ReLU(), paddle.nn.Linear(256, 1)))
opt = paddle.optimizer.Adam(learning_rate=0.001, parameters=model.parameters())
for step in range({steps}):
    rng = np.random.default_rng(1000 * step + rank)
    x = paddle.to_tensor(rng.normal(size=(128, 64)).astype("float32"))
    loss = (model(x) ** 2).mean()
    loss.backward()
    opt.step()
    opt.clear_grad()
print("final loss", float(loss), "rank", rank, flush=True)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_raw_two_nodes(script: Path, workdir: Path) -> float:
    port = free_port()
    start = time.perf_counter()
    procs = []
    for node in range(2):
        env = {**os.environ, "PADDLE_MASTER": f"127.0.0.1:{port}", "PADDLE_NNODES": "2",
               "PADDLE_JOB_ID": f"raw{port}"}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "paddle.distributed.launch", "--log_dir",
             str(workdir / f"raw2-{port}-{node}"), str(script)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    codes = [p.wait() for p in procs]
    elapsed = time.perf_counter() - start
    if any(codes):
        raise RuntimeError(f"raw 2-node launch failed: {codes} (logs in {workdir})")
    return elapsed


def run_raw_one_node(script: Path, workdir: Path) -> float:
    start = time.perf_counter()
    code = subprocess.call(
        [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2",
         "--log_dir", str(workdir / f"raw1-{time.time_ns()}"), str(script)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = time.perf_counter() - start
    if code:
        raise RuntimeError(f"raw single-node launch failed: {code} (logs in {workdir})")
    return elapsed


def run_magic(shell, cell: str) -> float:
    start = time.perf_counter()
    shell.run_cell_magic("paddle_launch", "--nodes 2 --name bench", cell)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300, help="training steps per run")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="launch-bench-"))
    script = workdir / "train.py"
    cell = TRAIN.format(steps=args.steps)
    script.write_text(cell)
    os.environ["PADDLE_WORKBENCH_JOBS_DIR"] = str(workdir / "jobs")
    os.environ["PADDLE_WORKBENCH_PANEL"] = "text"

    from IPython.testing.globalipapp import start_ipython

    start_ipython()
    from IPython import get_ipython

    shell = get_ipython()
    shell.run_line_magic("load_ext", "launcher_magic")

    ways = {"magic": lambda: run_magic(shell, cell),
            "raw-2node": lambda: run_raw_two_nodes(script, workdir),
            "raw-1node": lambda: run_raw_one_node(script, workdir)}
    times: dict[str, list[float]] = {name: [] for name in ways}
    import contextlib
    import io

    for round_ in range(args.runs):
        for name, way in ways.items():
            with contextlib.redirect_stdout(io.StringIO()):
                seconds = way()
            times[name].append(seconds)
            print(f"round {round_ + 1}: {name:10s} {seconds:6.2f} s", flush=True)

    base = statistics.median(times["raw-1node"])
    print(f"\n{'way':10s} {'median':>8s} {'min':>7s} {'max':>7s} {'vs raw-1node':>13s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:10s} {median:7.2f}s {min(values):6.2f}s {max(values):6.2f}s "
              f"{median / base:12.2f}x")
    magic = statistics.median(times["magic"])
    print(f"\nmagic vs raw-2node: {magic / statistics.median(times['raw-2node']):.2f}x")
    # A raw launch is bimodal: when rank 1 reaches rank 0's TCP store before it listens, Paddle
    # retries only after 3 s. Its fastest run is the launch without that penalty.
    print(f"magic vs raw-1node's fastest run: {magic / min(times['raw-1node']):.2f}x")
    print(f"(runs: {args.runs}, steps: {args.steps}, logs: {workdir})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
