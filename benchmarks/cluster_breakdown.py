"""Where a cluster cell's time goes, for both job kinds on the real node, beside a bare pod.

    PATH=$PATH:/usr/local/go/bin .venv/bin/python benchmarks/cluster_breakdown.py [--runs 3]

(as root, like the real node's tests). It runs `tests/cluster/node/breakdown_session.py` under
pytest, which starts what the node's job tests start (the control plane with Kueue, Trainer,
JobSet and the training-operator, the real node, the images tier's CPU image on the internal
registry) and then, for each job kind (`trainjob`, `paddlejob`) in a tenant of its own, one
untimed job first (it pulls the image into the node's fresh containerd), then `--runs` rounds of:

- a bare pod: the same image, CPU and memory (`--cpu`, requests = limits, as the cell's pods),
  created by the cluster's admin in the same namespace, runs `python -c "import paddle"` with
  marks; create -> Paddle imported is the floor a cell is measured against (a pod's start plus
  `import paddle`, on this node, in this run);
- the cell: `%%paddle_launch --nodes 2 --cpu CPU --memory 2Gi` with a small timed training
  cell, from a kernel with a notebook's identity.

The marks of a cell come from two sides. The API side: a watch on the job's kind, Kueue's
Workloads and the job's pods sees each object appear and change (when the watch saw it, not the
second-precision timestamps objects carry). The job side: rank 0's cell notes the start of its
pod's first process, of its own parent and of itself (from /proc: the pods run on this machine,
same clock), when the cell starts, after `import paddle`, after the rendezvous, after the first
step and at its end. An API-side mark seen after the job-side mark that must follow it is moved
back to that mark (a kubelet reports a pod's status only every so often).

Prints, per kind, each part's median over the runs, the bare pod's, and the ratio of
Shift-Enter -> rank 0's first step to the bare pod's create -> Paddle imported (target 1.5x).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script
    sys.path.insert(0, str(REPO))

from benchmarks.launch_overhead import TIMED_TRAIN  # noqa: E402

SESSION = "tests/cluster/node/breakdown_session.py"
TARGET = 1.5

# The local breakdown's timed cell (rank 0 notes when the cell starts, after `import paddle`,
# after the rendezvous and after the first step), with the start times of rank 0's own process,
# its parent and its pod's first process; written into the job directory. `{steps}` steps.
TIMED_CELL = TIMED_TRAIN.split("\nif rank == 0:")[0] + """
if rank == 0:
    parent = int(_stat(os.getpid())[1])
    _t.update(rank_process=_started(os.getpid()), parent_process=_started(parent),
              container_process=_started(1), end=time.time())
    with open(os.path.join(os.environ["PADDLE_WORKBENCH_JOB_DIR"], "timing.json"), "w") as f:
        json.dump(_t, f)
"""

# A bare pod's command: its marks as one JSON line.
BARE_POD = ("import json, os, time; t = time.time(); import paddle; "
            "print(json.dumps(dict(before_import=t, imported=time.time())), flush=True)")

# The chain from Shift-Enter to the end: (part, from mark, to mark).
PARTS = (
    ("job objects created", "shift_enter", "object"),
    ("admitted by Kueue", "object", "admitted"),
    ("rank 0's pod created", "admitted", "pod"),
    ("scheduled", "pod", "scheduled"),
    ("sandbox ready", "scheduled", "sandbox"),
    ("container started", "sandbox", "container_process"),
    ("node's launcher", "container_process", "rank_process"),
    ("rank start", "rank_process", "cell"),
    ("import paddle", "cell", "import"),
    ("rendezvous", "import", "rendezvous"),
    ("first step", "rendezvous", "first_step"),
)
AFTER = (
    ("rest of training", "first_step", "end"),
    ("API shows the end", "end", "job_done"),
    ("panel shows the end", "job_done", "returned"),
)
BARE_PARTS = (
    ("pod start", "created", "before_import"),
    ("import paddle", "before_import", "imported"),
)
ORDER = [PARTS[0][1], *(end for _, _, end in PARTS), *(end for _, _, end in AFTER)]


# -- what the API side sees (pure: an object's state at the moment a watch delivered it) --------

def _conditions(obj: Mapping[str, Any]) -> dict[str, str]:
    return {c.get("type"): c.get("status")
            for c in (obj.get("status") or {}).get("conditions") or []}


def _rank_index(pod: Mapping[str, Any]) -> str | None:
    meta = pod.get("metadata") or {}
    annotations, labels = meta.get("annotations") or {}, meta.get("labels") or {}
    return (annotations.get("batch.kubernetes.io/job-completion-index")
            or labels.get("training.kubeflow.org/replica-index"))


def observe(marks: dict[str, float], what: str, obj: Mapping[str, Any], now: float) -> None:
    """Note in `marks` (one job's) what `obj`, a `what` ("job", "workload" or "pod") as a watch
    delivered it at `now`, shows for the first time."""
    def first(mark: str) -> None:
        marks.setdefault(mark, now)

    conditions = _conditions(obj)
    if what == "job":
        first("object")
        # TrainJob: Complete/Failed; PaddleJob: Succeeded/Failed.
        if "True" in (conditions.get("Complete"), conditions.get("Succeeded"),
                      conditions.get("Failed")):
            first("job_done")
    elif what == "workload":
        if conditions.get("Admitted") == "True":
            first("admitted")
    elif what == "pod" and _rank_index(obj) == "0":
        first("pod")
        if (obj.get("spec") or {}).get("nodeName"):
            first("scheduled")
        if conditions.get("PodReadyToStartContainers") == "True":
            first("sandbox")


def settle(marks: Mapping[str, float]) -> dict[str, float]:
    """The marks in chain order, each no later than the next (an API-side mark seen late is
    moved back to the job-side mark that must follow it); a mark that never came (no queue: no
    admission) takes the one before it."""
    settled: dict[str, float] = {}
    for index, name in enumerate(ORDER):
        value = marks.get(name)
        settled[name] = settled[ORDER[index - 1]] if value is None else value
    for earlier, later in reversed(list(zip(ORDER, ORDER[1:], strict=False))):
        settled[earlier] = min(settled[earlier], settled[later])
    return settled


# -- the table ----------------------------------------------------------------------------------

def median_part(runs: list[Mapping[str, float]], start: str, end: str) -> float:
    return statistics.median(run[end] - run[start] for run in runs)


def report(kind: str, cells: list[Mapping[str, float]], bare: list[Mapping[str, float]],
           nodes: list[Mapping[str, float]] = ()) -> str:
    """The breakdown of one kind's cells (settled marks) beside its bare pods'; `nodes`: what
    forked nodes said of themselves (seconds from their process's start)."""
    floor = median_part(bare, "created", "imported")
    lines = [f"{kind}: Shift-Enter to rank 0's first training step, 2 nodes "
             f"(median of {len(cells)})"]
    for name, start, end in PARTS:
        lines.append(f"  {name:22s} {median_part(cells, start, end):6.2f} s")
    first = median_part(cells, "shift_enter", "first_step")
    lines.append(f"  {'= first step':22s} {first:6.2f} s  {first / floor:5.2f}x the bare pod "
                 f"(target {TARGET:.1f}x)")
    for figure in sorted({name for run in nodes for name in run}):
        values = [run[figure] for run in nodes if figure in run]
        lines.append(f"    {figure + ' after':34s} {statistics.median(values):6.2f} s "
                     "(from the node process's start)")
    for name, start, end in AFTER:
        lines.append(f"  {name:22s} {median_part(cells, start, end):6.2f} s")
    lines.append(f"  {'whole cell':22s} {median_part(cells, 'shift_enter', 'returned'):6.2f} s")
    lines.append(f"bare pod, same image and namespace (median of {len(bare)}):")
    for name, start, end in BARE_PARTS:
        lines.append(f"  {name:22s} {median_part(bare, start, end):6.2f} s")
    lines.append(f"  {'= Paddle imported':22s} {floor:6.2f} s")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3, help="timed rounds per job kind")
    parser.add_argument("--steps", type=int, default=20, help="training steps per cell")
    parser.add_argument("--cpu", default="500m",
                        help="CPU of each node's pod and of the bare pod (requests = limits)")
    parser.add_argument("-k", default="", help="pytest -k, e.g. trainjob")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cluster-breakdown-") as folder:
        out = Path(folder) / "marks.jsonl"
        env = {**os.environ, "BREAKDOWN_OUT": str(out), "BREAKDOWN_RUNS": str(args.runs),
               "BREAKDOWN_STEPS": str(args.steps), "BREAKDOWN_CPU": args.cpu}
        argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", SESSION,
                *(["-k", args.k] if args.k else [])]
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the breakdown session failed (exit {done.returncode}):\n"
                     f"{done.stdout[-6000:]}")
        records = [json.loads(line) for line in out.read_text().splitlines()]
    for kind in dict.fromkeys(r["kind"] for r in records):
        cells = [settle(r["marks"]) for r in records if r["kind"] == kind and r["what"] == "cell"]
        bare = [r["marks"] for r in records if r["kind"] == kind and r["what"] == "bare"]
        nodes = [r["marks"] for r in records if r["kind"] == kind and r["what"] == "node"]
        print(report(kind, cells, bare, nodes), end="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
