"""The control plane restarts under a running job: the API server and etcd stop for 20 s.

A 2-node TrainJob trains on the real node while ada's panel follows it from her kernel (the
cell waits for the job, drawing each state as the engine's watches report it). Then
``ControlPlane.outage`` stops kube-apiserver and etcd and starts them again with the same data,
as a control plane upgrade or a crashed etcd member does. What must hold:

- the job is unaffected: its pods keep running on the node (the kubelet has no one to ask, and
  needs no one), and it ends Succeeded with no restart and the parameters of a quiet run;
- the panel finds its way back through its watches: it draws no state the job was not in (no
  Failed, Stopped or Unknown on the way, no Running twice) and shows the end;
- a submit from another kernel during the outage gets "the cluster is unreachable, try again"
  and leaves nothing behind, in the cluster or in ada's jobs folder.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime

import numpy as np
from node_figures import FIGURES
from node_jobs import (
    JOB_APIS,
    JOB_TIMEOUT,
    NODE_CELL,
    job_id_of,
    params,
    progress_step,
    run_to_end,
    start_kernel,
    states,
)
from pod_client import core_api

from tests.launcher_magic.support import TRAIN_CELL, wait_until

OUTAGE = 20  # seconds the API server and etcd are down


def _state(job_dir) -> str:
    try:
        return json.loads((job_dir / "status.json").read_text())["state"]
    except (OSError, ValueError, KeyError):
        return ""


def test_a_job_and_its_panel_outlive_a_control_plane_restart(control_plane, real_node,
                                                             node_tenant, notebook_kernel):
    from kubernetes import client

    tenant, home = node_tenant
    watching = start_kernel(notebook_kernel, tenant, home)
    run_to_end(watching, "quiet", "--env STEPS=24", cell=TRAIN_CELL)
    # Started before the job, so that the outage begins as soon as the job trains: the job must
    # outlast it (24 steps of 3 s against a 20 s outage and the restart), or the test tests
    # something else.
    submitting = start_kernel(notebook_kernel, tenant, home)

    cell = NODE_CELL.replace("--name dp", "--name calm --env STEP_SLEEP=3 --env STEPS=24")
    shown: dict = {}
    follower = threading.Thread(
        target=lambda: shown.update(result=watching.run(cell + TRAIN_CELL, timeout=JOB_TIMEOUT),
                                    at=time.time()))
    follower.start()
    assert wait_until(lambda: any(p.name.startswith("calm-") for p in (home / "jobs").iterdir())
                      and _state(home / "jobs" / job_id_of(home, "calm")) == "Running",
                      timeout=JOB_TIMEOUT)
    job_id = job_id_of(home, "calm")

    with control_plane.outage():
        down = time.monotonic()
        during = submitting.run(NODE_CELL.replace("--name dp", "--name during") + "x = 1\n")
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - down)))
        assert real_node.processes(), "the node's containerd and shims kept running"
    back = time.monotonic()
    job_dir = home / "jobs" / job_id
    assert _state(job_dir) == "Running" and progress_step(job_dir) < 24, (
        "the job ended during the outage: the test needs it training when the plane comes back")

    said = (during.error or "") + during.text
    assert "the cluster is unreachable, try again" in said, said
    assert not [p for p in (home / "jobs").iterdir() if p.name.startswith("during-")]
    group, version, plural = JOB_APIS[tenant.job_api]
    listed = client.CustomObjectsApi(control_plane.api_client()).list_namespaced_custom_object(
        group, version, tenant.namespace, plural)
    assert not [j for j in listed["items"] if j["metadata"]["name"].startswith("during-")]
    assert not [s for s in core_api(control_plane).list_namespaced_secret(tenant.namespace).items
                if s.metadata.name.startswith("during-")]

    follower.join(timeout=JOB_TIMEOUT)
    assert not follower.is_alive()
    result = shown["result"]
    drawn = states(result.text, "calm")
    assert result.error is None and drawn[-1] == "Succeeded", result.text
    assert not {"Failed", "Stopped", "Unknown", "Restarting"} & set(drawn), drawn
    assert drawn.count("Running") == 1, drawn
    status = json.loads((home / "jobs" / job_id / "status.json").read_text())
    assert status["restarts"] == 0, status
    quiet = job_id_of(home, "quiet")
    for rank in (0, 1):
        assert np.array_equal(params(home, job_id, rank), params(home, quiet, rank)), rank

    # Printed at the end of the session; never asserted: how long after the job's end (its
    # object's condition, one-second resolution) the panel that lived through the outage
    # showed it.
    job = client.CustomObjectsApi(control_plane.api_client()).get_namespaced_custom_object(
        group, version, tenant.namespace, plural, job_id)
    ended = max(datetime.fromisoformat(c["lastTransitionTime"].replace("Z", "+00:00"))
                .timestamp() for c in job["status"]["conditions"] if c["status"] == "True")
    FIGURES[f"API outage ({OUTAGE} s): API server ready again (s after it stopped)"] = back - down
    FIGURES["API outage: the job's end to the panel showing it (s)"] = shown["at"] - ended
