"""The workbench's Paddle ClusterTrainingRuntime and its restart copies.

JobSet's `failurePolicy.maxRestarts` is immutable and no runtime patch of Trainer v2.3.0 reaches
it, so each `--max-restarts` value has a runtime of its own: copies of the shipped runtime
(deploy/k8s/trainer/paddle-runtime.yaml) that differ only there, named by
`workbench_contract.cluster.runtime_name`. The TrainJob admission policy lets a TrainJob name
exactly these (`cluster.runtime_names`); `deploy/k8s/trainer/runtimes.py` prints them for
`kubectl apply`. Pure: a runtime in, its copies out.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from workbench_contract.cluster import MAX_RESTARTS_LIMIT, runtime_name


def restart_runtimes(base: Mapping[str, Any], limit: int = MAX_RESTARTS_LIMIT) -> list[dict]:
    """Copies of the runtime `base`, one per restart limit 0..`limit`, named by `runtime_name`."""
    runtimes = []
    for count in range(limit + 1):
        runtime = copy.deepcopy(dict(base))
        runtime["metadata"]["name"] = runtime_name(base["metadata"]["name"], count)
        runtime["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] = count
        runtimes.append(runtime)
    return runtimes
