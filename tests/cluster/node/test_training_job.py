"""A 2-node job trains for real on the real node, from a kernel holding a notebook's identity.

The tenant is provisioned by ``workbench apply``'s bundle (admission policies, quota,
NetworkPolicies) with the CPU image of the images tier (``job_image``) as its image, and its
default job API (``trainjob``: Kubeflow Trainer v2 with the workbench's Paddle runtime). The
cluster operator routes the tenant's pods to the real node without touching what users submit:
the namespace's node selector and default tolerations (the ``PodNodeSelector`` and
``PodTolerationRestriction`` admission plugins read them from the namespace's annotations).

The user's storage is ``claim-<user>`` bound to a static ``local`` PersistentVolume on the
node: the kernel's home folder, with node affinity to the node. The engine mounts that claim at
the notebook's path in every worker, so the job folder, its checkpoints and the parameters each
rank saves are the ones the kernel sees.

The kernel runs ``%%paddle_launch --nodes 2`` with ``TRAIN_CELL`` (tests/launcher_magic): two
worker pods find rank 0 through its headless Service name (the runtime's ``PADDLE_MASTER``,
resolved by the kube-dns pod under the tenant's policies), train a data-parallel model with the
CPU wheel over the pod network and save their parameters, which must be identical.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from node_figures import FIGURES, pull_seconds
from node_jobs import (
    JOB_APIS,
    JOB_TIMEOUT,
    NODE_CELL,
    detach_until_checkpoint,
    job_id_of,
    params,
    run_to_end,
    start_kernel,
    states,
)
from pod_client import core_api

from tests.launcher_magic.support import TRAIN_CELL
from workbench_contract.labels import LABEL_JOB


@pytest.mark.parametrize("node_tenant", ["paddlejob", "trainjob"], indirect=True)
def test_a_two_node_job_trains_on_the_real_node(control_plane, real_node, node_tenant,
                                                notebook_kernel):
    tenant, home = node_tenant
    kernel = start_kernel(notebook_kernel, tenant, home)
    began = time.monotonic()
    result = kernel.run(NODE_CELL + TRAIN_CELL, timeout=JOB_TIMEOUT)
    assert result.error is None, result.text
    # Printed at the end of the session (benchmarks/k8s_node_job.py reads it); never asserted.
    FIGURES[f"2-node job, {tenant.job_api}: cell wall time (s)"] = (
        time.monotonic() - began)
    seen = states(result.text, "dp")
    assert "Running" in seen and seen[-1] == "Succeeded", result.text

    job_id = job_id_of(home, "dp")
    from kubernetes import client

    custom = client.CustomObjectsApi(control_plane.api_client())
    group, version, plural = JOB_APIS[tenant.job_api]
    custom.get_namespaced_custom_object(group, version, tenant.namespace, plural, job_id)
    pods = core_api(control_plane).list_namespaced_pod(
        tenant.namespace, label_selector=f"{LABEL_JOB}={job_id}").items
    assert len(pods) == 2 and {p.spec.node_name for p in pods} == {real_node.name}, pods
    assert {p.status.phase for p in pods} == {"Succeeded"}
    pulls = pull_seconds(core_api(control_plane).list_namespaced_event(tenant.namespace).items)
    if pulls:  # the first job of a session pulls the image into the node's fresh containerd
        FIGURES["image pull into the node (s)"] = max(pulls)

    rank0, rank1 = params(home, job_id, 0), params(home, job_id, 1)
    assert rank0.size and np.array_equal(rank0, rank1)

    for rank in (0, 1):
        logs = kernel.run(f"%paddle_logs {job_id} --rank {rank}")
        assert logs.error is None, logs.text
        assert f"done world=2 rank={rank}" in logs.text, logs.text


def training_process(job_id: str, node: int) -> int:
    """The pid (on this machine) of the training process of the job's `node` (one rank per
    node): in its pod's environment (the runtime's PADDLE_JOB_ID and node rank, which a rank
    forked by the node process inherits), and neither the pod's first process (the node
    process) nor Paddle's launcher (where a job runs it)."""
    wanted = (f"PADDLE_JOB_ID={job_id}".encode(), f"PADDLE_WORKBENCH_NODE_RANK={node}".encode())
    found = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
            status = (entry / "status").read_text()
        except OSError:
            continue
        in_pod = [line.split()[-1] for line in status.splitlines() if line.startswith("NSpid:")]
        if (all(w in environ for w in wanted) and in_pod != ["1"]
                and b"paddle.distributed.launch" not in cmdline):
            found.append(int(entry.name))
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("how", ["sigkill", "delete-pod"])
def test_a_killed_worker_restarts_the_job_which_resumes_from_its_checkpoint(
        control_plane, real_node, node_tenant, notebook_kernel, how):
    """Killing rank 1 mid-training fails its pod with a signal's exit code, which restarts the
    job (the runtime's JobSet recreates every node, ``--max-restarts 1``); each node resumes
    from the newest checkpoint on the shared volume and the job ends with the parameters of an
    uninterrupted run. Two ways to kill: SIGKILL of its training process (as the OOM killer
    does), and deleting its pod through the API (the kubelet's SIGTERM, as an eviction or a
    drained node sends; the node's entry point turns Paddle's exit 15 into 143)."""
    import signal

    from tests.launcher_magic.support import wait_until

    tenant, home = node_tenant
    kernel = start_kernel(notebook_kernel, tenant, home)
    run_to_end(kernel, "ref", cell=TRAIN_CELL)

    job_id = detach_until_checkpoint(kernel, home, "kill")
    if how == "sigkill":
        os.kill(training_process(job_id, 1), signal.SIGKILL)
    else:
        (pod,) = [p for p in core_api(control_plane).list_namespaced_pod(
            tenant.namespace, label_selector=f"{LABEL_JOB}={job_id}").items
            if p.metadata.annotations.get("batch.kubernetes.io/job-completion-index") == "1"]
        core_api(control_plane).delete_namespaced_pod(pod.metadata.name, tenant.namespace)
    killed = time.monotonic()
    resumed_log = home / "jobs" / job_id / "logs" / "attempt-1" / "node-1" / "workerlog.0"
    assert wait_until(lambda: resumed_log.is_file()
                      and "[checkpoint] resumed from step" in resumed_log.read_text(),
                      timeout=JOB_TIMEOUT), (home / "jobs" / job_id / "status.json").read_text()
    # Printed at the end of the session; never asserted.
    FIGURES[f"{how} to rank 1 resumed from its checkpoint, {tenant.job_api} (s)"] = (
        time.monotonic() - killed)

    waited = kernel.run(f"%paddle_attach {job_id} --wait", timeout=JOB_TIMEOUT)
    status = json.loads((home / "jobs" / job_id / "status.json").read_text())
    assert status["state"] == "Succeeded", (status, waited.text)
    assert status["restarts"] == 1, status
    resumed = kernel.run(f"%paddle_logs {job_id} --rank 1 --tail 200")
    assert "[checkpoint] resumed from step" in resumed.text, resumed.text
    ref_id = job_id_of(home, "ref")
    for rank in (0, 1):
        assert np.array_equal(params(home, job_id, rank), params(home, ref_id, rank)), rank


def test_paddle_stop_removes_the_jobs_pods_from_the_node(control_plane, real_node, node_tenant,
                                                         notebook_kernel):
    """``%paddle_stop`` on a running job: the job and its pods are gone from the node."""
    from tests.launcher_magic.support import wait_until

    tenant, home = node_tenant
    kernel = start_kernel(notebook_kernel, tenant, home)
    launch = NODE_CELL.replace("--name dp", "--name halt --env STEP_SLEEP=5 --detach")
    assert kernel.run(launch + TRAIN_CELL).error is None
    job_id = job_id_of(home, "halt")
    status_file = home / "jobs" / job_id / "status.json"
    assert wait_until(lambda: status_file.is_file()
                      and json.loads(status_file.read_text())["state"] == "Running",
                      timeout=JOB_TIMEOUT), status_file.read_text()
    core = core_api(control_plane)

    def pods() -> list:
        return core.list_namespaced_pod(tenant.namespace,
                                        label_selector=f"{LABEL_JOB}={job_id}").items

    assert len(pods()) == 2
    stopped = kernel.run(f"%paddle_stop {job_id}", timeout=300)
    assert stopped.error is None, stopped.text
    assert json.loads(status_file.read_text())["state"] == "Stopped"
    assert wait_until(lambda: not pods(), timeout=300), [p.metadata.name for p in pods()]
    from kubernetes import client

    group, version, plural = JOB_APIS[tenant.job_api]
    with pytest.raises(client.ApiException) as gone:
        client.CustomObjectsApi(control_plane.api_client()).get_namespaced_custom_object(
            group, version, tenant.namespace, plural, job_id)
    assert gone.value.status == 404
