"""`%paddle_jobs` with many past jobs: reading every job directory against the folder's index.

    python benchmarks/jobs_index.py [--jobs 1000] [--runs 5]

Makes `--jobs` finished local jobs (real job directories, a final status each, as old as a
finished job's files are) in a temporary jobs folder, then, side by side in this one process:

- before:  what `%paddle_jobs` did without an index: list the folder (reading each spec for its
           date), open each job (its spec again), ask the engine (its status) and look for its
           last checkpoint, then the same table and totals;
- cold:    `%paddle_jobs` with no index file yet (it reads every job once and writes the index);
- indexed: `%paddle_jobs` with the index in place (what every later call costs).

Each is timed `--runs` times (the index file is removed before each cold run) in text mode, as
a terminal or a saved notebook shows it. Prints the medians and the ratios against `before`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_jobs(root: Path, count: int) -> None:
    from launcher_magic.core.jobdir import JobDir
    from launcher_magic.core.spec import JobSpec, Resources
    from launcher_magic.core.status import JobState, JobStatus

    start = time.time() - 30 * 86400
    for n in range(count):
        spec = JobSpec(job_id=f"train-{n:06x}", name="train", engine="local", nodes=2,
                       resources=Resources(nproc_per_node=1), created_at=start + n * 60)
        job = JobDir.create(root, spec, "x = 1\n")
        state = (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED)[n % 3]
        job.write_status(JobStatus(job_id=spec.job_id, state=state, started_at=start + n * 60,
                                   finished_at=start + n * 60 + 45))
    past = time.time() - 3600
    for path in root.iterdir():
        for item in (path / "spec.json", path / "status.json", path):
            os.utime(item, (past, past))


def before(jobs, now: float) -> str:
    """The history as `%paddle_jobs` read it before the index (every directory, every time)."""
    from launcher_magic.core.jobdir import JobHandle, list_jobs
    from launcher_magic.kernel import history
    from launcher_magic.training.checkpoint import latest_step

    rows = []
    for path in list_jobs(jobs.root()):
        job = JobHandle.open(path.path)
        engine = jobs.engine(job.spec.engine)
        status = engine.status(job)
        rows.append(history.HistoryRow.of(job.spec, status, latest_step(job.dir.checkpoints_dir),
                                          engine.notes(job.spec), now))
    usage, why = history.read_tenant_usage(jobs, None)
    summary = history.summarize(rows, usage, user="", since=None, now=now, caveat=why,
                                period="all time")
    return history.render_text(rows, summary)


def timed(action) -> tuple[float, str]:
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        result = action()
    return time.perf_counter() - start, out.getvalue() or str(result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="jobs-index-bench-")) / "jobs"
    root.mkdir()
    made = time.perf_counter()
    make_jobs(root, args.jobs)
    print(f"made {args.jobs} finished jobs in {time.perf_counter() - made:.1f} s ({root})")
    for name in list(os.environ):
        if name.startswith("PADDLE_WORKBENCH_"):
            del os.environ[name]
    os.environ.update({"PADDLE_WORKBENCH_JOBS_DIR": str(root), "PADDLE_WORKBENCH_PANEL": "text"})

    from IPython.testing.globalipapp import start_ipython

    start_ipython()
    from IPython import get_ipython

    from launcher_magic.core.jobindex import INDEX_FILE
    from launcher_magic.kernel.magics import launcher

    shell = get_ipython()
    shell.run_line_magic("load_ext", "launcher_magic")
    jobs = launcher(shell)

    def cold():
        (root / INDEX_FILE).unlink(missing_ok=True)
        return shell.run_line_magic("paddle_jobs", "")

    ways = {"before": lambda: before(jobs, time.time()), "cold": cold,
            "indexed": lambda: shell.run_line_magic("paddle_jobs", "")}
    times: dict[str, list[float]] = {name: [] for name in ways}
    outputs: dict[str, str] = {}
    for run in range(args.runs):
        for name, way in ways.items():
            seconds, text = timed(way)
            times[name].append(seconds)
            outputs[name] = text
            print(f"run {run + 1}: {name:8s} {seconds * 1000:8.1f} ms", flush=True)
    rows = {name: sum(1 for line in text.splitlines() if line.startswith("train-"))
            for name, text in outputs.items()}
    if len(set(rows.values())) != 1 or rows["indexed"] != args.jobs:
        print(f"the ways disagree on the rows: {rows}")
        return 1

    base = statistics.median(times["before"])
    print(f"\n{args.jobs} finished jobs, {args.runs} runs each, text mode")
    print(f"{'way':8s} {'median':>10s} {'min':>10s} {'vs before':>10s}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:8s} {median * 1000:8.1f}ms {min(values) * 1000:8.1f}ms "
              f"{median / base:9.2f}x")
    print(f"index file: {(root / INDEX_FILE).stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
