"""A machine dies under a running 2-node job (a TrainJob, then a PaddleJob), and the job goes on
from its last checkpoint.

The job's pods are spread over the two real nodes (``doomed_node`` stands for a machine of its
own). Once a checkpoint is on the shared volume, the second node loses power as nearly as this
machine allows (``RealNode.power_off``: every process of the node SIGKILLed at once, its network
namespace left dark). Then, each step asserted:

1. the Node turns NotReady once the control plane's node monitor grace period has passed (the
   test plane keeps Kubernetes' default, 50 s);
2. the job's pod there is marked for deletion by the taint eviction controller after the
   tenant's ``node_loss_toleration`` (30 s; Kubernetes' own default would be 300 s), and the
   panel says which node lost which machine;
3. the pod stays Terminating: no kubelet is left to confirm it has stopped, and nothing may start
   a second copy of that rank until something confirms the machine is off. That is the cluster
   operator's fencing (here the test plays it): the ``node.kubernetes.io/out-of-service`` taint
   (Kubernetes' non-graceful node shutdown) once the machine is known to be down;
4. the pod garbage collector then removes the pod and the job restarts as a whole (one restart of
   ``--max-restarts 1``) on the machine left. A TrainJob: the node's Job fails and the runtime's
   JobSet makes every node again. A PaddleJob: the operator makes the missing worker again, and the
   surviving worker is made again too (seen here: its log stops with no error). Each node resumes
   from the newest checkpoint and the job ends with the parameters of an uninterrupted run, having
   lost at most one checkpoint interval of steps;
5. the dead node is cleaned up (nothing of it left on the host) and starts again, Ready.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from node_figures import FIGURES
from node_jobs import (
    JOB_TIMEOUT,
    detach_until_checkpoint,
    job_id_of,
    params,
    progress_step,
    run_to_end,
    start_kernel,
)
from node_tenants import node_tenant_with
from pod_client import core_api

from tests.launcher_magic.support import TRAIN_CELL, wait_until
from workbench_contract.cluster import PADDLEJOB_REPLICA_INDEX_LABEL
from workbench_contract.labels import LABEL_JOB
from workbench_contract.placement import DEFAULT_NODE_LOSS_TOLERATION

OUT_OF_SERVICE = {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown",
                  "effect": "NoExecute"}
EVERY = 4  # TRAIN_CELL's checkpoint interval (Checkpointer(every=...)), in steps


def _ready(core, name: str) -> bool:
    node = core.read_node(name)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def _pods(core, namespace: str, job_id: str) -> list:
    return core.list_namespaced_pod(namespace, label_selector=f"{LABEL_JOB}={job_id}").items


def _lost_condition(pod) -> bool:
    return any(c.type == "DisruptionTarget" and c.status == "True"
               and c.reason == "DeletionByTaintManager" for c in pod.status.conditions or [])


@pytest.mark.parametrize("job_api", ["trainjob", "paddlejob"])
def test_a_job_survives_the_death_of_a_machine(control_plane, real_node, doomed_node,
                                               paddle_runtime, cpu_image, notebook_kernel,
                                               tmp_path, tmp_path_factory, job_api):
    core = core_api(control_plane)
    with node_tenant_with(control_plane, cpu_image, tmp_path, job_api) as (tenant, home):
        assert tenant.node_loss_toleration == DEFAULT_NODE_LOSS_TOLERATION
        kernel = start_kernel(notebook_kernel, tenant, home)
        run_to_end(kernel, "ref", cell=TRAIN_CELL)

        job_id = detach_until_checkpoint(kernel, home, "survive")
        job_dir = home / "jobs" / job_id
        pods = _pods(core, tenant.namespace, job_id)
        assert sorted(p.spec.node_name for p in pods) == sorted(
            [real_node.name, doomed_node.name])
        (doomed,) = [p for p in pods if p.spec.node_name == doomed_node.name]
        index = (doomed.metadata.annotations or {}).get(
            "batch.kubernetes.io/job-completion-index",
            doomed.metadata.labels.get(PADDLEJOB_REPLICA_INDEX_LABEL))
        seconds = {t.key: t.toleration_seconds for t in doomed.spec.tolerations
                   if t.effect == "NoExecute"}
        assert seconds["node.kubernetes.io/unreachable"] == DEFAULT_NODE_LOSS_TOLERATION

        time.sleep(3)  # a step or two past the checkpoint: those are lost with the machine
        doomed_node.power_off()
        died, step_at_death = time.monotonic(), progress_step(job_dir)

        # 1. NotReady within the grace period (and some seconds of the monitor's period).
        assert wait_until(lambda: not _ready(core, doomed_node.name), timeout=120)
        not_ready = time.monotonic() - died
        # 2. Its pod is evicted after the tenant's toleration, not Kubernetes' five minutes.
        assert wait_until(lambda: any(
            p.metadata.deletion_timestamp and _lost_condition(p)
            for p in _pods(core, tenant.namespace, job_id)
            if p.metadata.name == doomed.metadata.name), timeout=120)
        evicted = time.monotonic() - died
        shown = kernel.run(f"%paddle_attach {job_id}")
        assert f"node {index} lost its machine {doomed_node.name}" in shown.text, shown.text
        # 3. Still Terminating: nothing confirms the machine is off, so no second copy of
        # rank 1 may start yet. The operator's fencing confirms it.
        time.sleep(5)
        (stuck,) = [p for p in _pods(core, tenant.namespace, job_id)
                    if p.metadata.name == doomed.metadata.name]
        assert stuck.metadata.deletion_timestamp
        core.patch_node(doomed_node.name, {"spec": {"taints": [
            *(t.to_dict() for t in core.read_node(doomed_node.name).spec.taints or []),
            OUT_OF_SERVICE]}})
        fenced = time.monotonic()

        # 4. The restart on the machine left, from the newest checkpoint.
        # A TrainJob's restart is a new attempt; the PaddleJob operator restarts a worker with
        # the same command, so its log goes on in the first attempt's folder.
        attempt = "attempt-1" if job_api == "trainjob" else "attempt-0"
        resumed_log = job_dir / "logs" / attempt / f"node-{index}" / "workerlog.0"
        assert wait_until(lambda: resumed_log.is_file()
                          and "[checkpoint] resumed from step" in resumed_log.read_text(),
                          timeout=JOB_TIMEOUT), (job_dir / "status.json").read_text()
        training_again = time.monotonic() - died
        resumed_step = int(resumed_log.read_text().split("[checkpoint] resumed from step ")[1]
                           .split()[0])
        waited = kernel.run(f"%paddle_attach {job_id} --wait", timeout=JOB_TIMEOUT)
        status = json.loads((job_dir / "status.json").read_text())
        assert status["state"] == "Succeeded" and status["restarts"] == 1, (status, waited.text)
        assert f"lost its machine {doomed_node.name}" in waited.text, waited.text
        assert f"resumed from: step {resumed_step}" in waited.text, waited.text
        assert {p.spec.node_name for p in _pods(core, tenant.namespace, job_id)} == {
            real_node.name}
        assert 0 <= step_at_death - resumed_step <= EVERY, (step_at_death, resumed_step)
        ref_id = job_id_of(home, "ref")
        for rank in (0, 1):
            assert np.array_equal(params(home, job_id, rank), params(home, ref_id, rank)), rank

    # 5. Nothing of the dead node is left once it is cleaned up, and it comes back.
    doomed_node.stop()  # raises NodeError listing anything left behind
    import real_node as rn

    # A short work dir: containerd's sockets must fit a unix socket path (104 bytes), and a
    # test's own tmp_path is long under xdist.
    again = rn.RealNode(doomed_node.layout.build, tmp_path_factory.mktemp("again"), control_plane,
                        index=1)
    try:
        again.start()
        assert _ready(core, again.name)
        assert not any(t.key == OUT_OF_SERVICE["key"]
                       for t in core.read_node(again.name).spec.taints or [])
    finally:
        again.stop()
    # Printed at the end of the session; never asserted.
    FIGURES[f"node death, {job_api}: power-off to NotReady (s)"] = not_ready
    FIGURES[f"node death, {job_api}: power-off to the pod's eviction (s)"] = evicted
    FIGURES[f"node death, {job_api}: out-of-service taint to training again (s)"] = (
        training_again - (fenced - died))
    FIGURES[f"node death, {job_api}: power-off to training again (s)"] = training_again
    FIGURES[f"node death, {job_api}: steps lost (a checkpoint every {EVERY})"] = (
        step_at_death - resumed_step)
