"""Print the workbench's Paddle ClusterTrainingRuntimes as YAML, for `kubectl apply -f -`.

    python deploy/k8s/trainer/runtimes.py | kubectl apply -f -

They are `paddle-runtime.yaml` (runtime `paddle-workbench`, 3 restarts) and one copy of it per
`--max-restarts` value, `paddle-workbench-restarts-0` .. `-10`, that differs only in its JobSet's
`failurePolicy.maxRestarts`: the cluster engine names the copy of each job's `--max-restarts`
(JobSet's restart limit is immutable and a TrainJob cannot patch it). Needs the workbench's
Python package (`pip install .` of this repository).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from hub_config.cluster_policy.runtimes import restart_runtimes

BASE = Path(__file__).with_name("paddle-runtime.yaml")


def runtimes() -> list[dict]:
    """The shipped runtime and its copies, in the order they are printed."""
    base = yaml.safe_load(BASE.read_text())
    return [base, *restart_runtimes(base)]


def main() -> int:
    yaml.safe_dump_all(runtimes(), sys.stdout, sort_keys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
