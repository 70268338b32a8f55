"""Time to completion of one 2-rank training cell, three ways, side by side.

    python benchmarks/launch_overhead.py [--runs 5] [--steps 300]

1. magic:     `%%paddle_launch --nodes 2` in an IPython shell (the local engine, 2 nodes)
2. raw-2node: two `python -m paddle.distributed.launch` with PADDLE_MASTER/PADDLE_NNODES on loopback
3. raw-1node: one `python -m paddle.distributed.launch --nproc_per_node 2`

The three run interleaved (one of each per round) in this one process tree, so drift on a busy
machine hits all of them alike. Prints each run, then medians and the ratios against raw-1node.

Then the breakdown of the magic's 2-node job (`--breakdown N` runs, 0 to skip; `--breakdown-only`
skips the comparison), cold and warm side by side, interleaved: where the time from Shift-Enter to
rank 0's first training step goes, and what follows it, each part the median over the runs, beside
the time `python -c "import paddle"` takes on this machine in this run. Cold is
`LocalEngine.warm = False` (each node runs `paddle.distributed.launch`, which starts the ranks);
warm is the default (the kernel's warm interpreter, Paddle imported, forks the supervisor, the
nodes and the ranks). The first warm job of a kernel starts the warm interpreter and waits for its
import: it is printed on its own, and the warm interpreter's resident memory with it. The parts
come from the job itself: rank 0's cell notes when it starts, after the rendezvous and after its
first step, and reads the start times of its own process, its node's leader and the job's
supervisor from /proc.

- job directory:   Shift-Enter until spec.json is written (parse, validate, preflight, directory)
- supervisor start: until the supervisor process exists (the kernel's Popen)
- supervisor:      until its node's launcher process exists (the supervisor's interpreter and
                   imports, its rendezvous master, starting the node's process group)
- node launcher:   until rank 0's process exists (cold, `paddle.distributed.launch`: an
                   interpreter, `import paddle`, the nodes' own rendezvous, starting the ranks;
                   warm, a fork)
- rank start:      until the cell's first line (cold, the rank's interpreter and its
                   `import paddle`; warm, the fork's set-up, Paddle imported already)
- rendezvous:      `dist.init_parallel_env()`
- first step:      building the model and the first optimizer step
- rest of training, then end of job: from rank 0's last line until the cell returns (ranks and
                   launchers exit, the supervisor records the end, the panel sees it)
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


TIMED_TRAIN = """
import json, os, time
_t = dict(cell=time.time())
import numpy as np
import paddle
import paddle.distributed as dist

_t["import"] = time.time()
dist.init_parallel_env()
_t["rendezvous"] = time.time()
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
    if step == 0:
        _t["first_step"] = time.time()


def _stat(pid):
    return open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()


def _started(pid):
    uptime = float(open("/proc/uptime").read().split()[0])
    return time.time() - uptime + int(_stat(pid)[19]) / os.sysconf("SC_CLK_TCK")


if rank == 0:
    launcher = int(_stat(os.getpid())[1])
    supervisor = int(_stat(launcher)[1])
    _t.update(rank_process=_started(os.getpid()), launcher_process=_started(launcher),
              supervisor_process=_started(supervisor), end=time.time())
    with open(os.path.join(os.environ["PADDLE_WORKBENCH_JOB_DIR"], "timing.json"), "w") as f:
        json.dump(_t, f)
"""

PARTS = (  # (name, from, to) over the marks of one run
    ("job directory", "shift_enter", "job_dir"),
    ("supervisor start", "job_dir", "supervisor_process"),
    ("supervisor", "supervisor_process", "launcher_process"),
    ("node launcher", "launcher_process", "rank_process"),
    ("rank start", "rank_process", "cell"),
    ("rendezvous", "import", "rendezvous"),
    ("first step", "rendezvous", "first_step"),
)


def import_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import paddle"], check=True)
    return time.perf_counter() - start


def warm_interpreter_kib() -> int:
    """What a Python with Paddle imported holds (its peak resident set, KiB)."""
    code = "import paddle, resource; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    return int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                              text=True).stdout.split()[-1])


def timed_magic_run(shell, cell: str, jobs: Path) -> dict[str, float]:
    """The marks of one `%%paddle_launch --nodes 2` run (epoch seconds)."""
    import json

    before = set(jobs.iterdir()) if jobs.exists() else set()
    marks = {"shift_enter": time.time()}
    shell.run_cell_magic("paddle_launch", "--nodes 2 --name parts", cell)
    marks["returned"] = time.time()
    (job,) = [p for p in jobs.iterdir() if p not in before and not p.name.startswith(".")]
    marks["job_dir"] = (job / "spec.json").stat().st_mtime
    marks.update(json.loads((job / "timing.json").read_text()))
    return marks


def _engine(shell):
    from launcher_magic.kernel.magics import launcher

    return launcher(parent=shell).engine("local")


def _print_parts(title: str, marks: list[dict[str, float]], base: float) -> float:
    def median_of(start: str, end: str) -> float:
        return statistics.median(m[end] - m[start] for m in marks)

    print(f"\n{title} (median of {len(marks)}):")
    for name, start, end in PARTS:
        seconds = median_of(start, end)
        print(f"  {name:18s} {seconds:6.2f} s  {seconds / base:5.2f}x import")
    first = median_of("shift_enter", "first_step")
    print(f"  {'= first step':18s} {first:6.2f} s  {first / base:5.2f}x import (target 1.30x)")
    print(f"  {'rest of training':18s} {median_of('first_step', 'end'):6.2f} s")
    print(f"  {'end of job':18s} {median_of('end', 'returned'):6.2f} s  (rank 0's last line "
          "until the cell returns)")
    print(f"  {'whole cell':18s} {median_of('shift_enter', 'returned'):6.2f} s")
    return first


def breakdown(shell, runs: int, steps: int, jobs: Path) -> None:
    import contextlib
    import io

    cell = TIMED_TRAIN.format(steps=steps)
    engine = _engine(shell)

    def run(warm: bool) -> dict[str, float]:
        engine.warm = warm
        with contextlib.redirect_stdout(io.StringIO()):
            return timed_magic_run(shell, cell, jobs)

    first_warm = run(True)  # the kernel's first job starts the warm interpreter
    warm_kib = engine.warm_interpreter.rss_kib() if engine.warm_interpreter else None
    imports, cold, warm = [], [], []
    for index in range(runs):  # interleaved, so drift hits all alike
        imports.append(import_seconds())
        cold.append(run(False))
        warm.append(run(True))
        print(f"breakdown run {index + 1}: first step after "
              f"{cold[-1]['first_step'] - cold[-1]['shift_enter']:.2f} s cold, "
              f"{warm[-1]['first_step'] - warm[-1]['shift_enter']:.2f} s warm; "
              f"import paddle {imports[-1]:.2f} s", flush=True)

    base = statistics.median(imports)
    before = _print_parts("Before (cold, LocalEngine.warm = False): Shift-Enter to rank 0's first "
                          "training step, 2 nodes", cold, base)
    after = _print_parts("After (warm, the default): Shift-Enter to rank 0's first training "
                         "step, 2 nodes", warm, base)
    once = first_warm["first_step"] - first_warm["shift_enter"]
    print(f"\n`python -c \"import paddle\"`: {base:.2f} s (median of {runs}, same run)")
    print(f"first step: cold {before:.2f} s = {before / base:.2f}x import, warm {after:.2f} s = "
          f"{after / base:.2f}x import (target 1.30x)")
    print(f"the kernel's first job (starts the warm interpreter, waits for its import): "
          f"{once:.2f} s = {once / base:.2f}x import")
    if warm_kib:
        print(f"the warm interpreter holds {warm_kib / 1024:.0f} MiB resident (RSS), once per "
              "kernel that has run a local CPU job; its forks share those pages copy-on-write")
    print(f"(a Python with Paddle imported peaks at {warm_interpreter_kib() / 1024:.0f} MiB RSS)")


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
    parser.add_argument("--breakdown", type=int, default=3, metavar="N",
                        help="runs of the time breakdown (0: none)")
    parser.add_argument("--breakdown-only", action="store_true",
                        help="only the breakdown, not the comparison")
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

    if args.breakdown_only:
        breakdown(shell, max(1, args.breakdown), args.steps, workdir / "jobs")
        return 0
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
    if args.breakdown:
        breakdown(shell, args.breakdown, args.steps, workdir / "jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
