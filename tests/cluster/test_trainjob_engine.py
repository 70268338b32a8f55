"""The trainjob engine end to end: Kubeflow Trainer v2 + JobSet on the real control plane.

A real kernel holds the token of ada's own notebook account (as in test_paddlejob_engine) and
runs `%%paddle_launch --engine trainjob`: the TrainJob goes through RBAC, the tenant's admission
policies (TrainJob, JobSet and pod), Trainer's webhooks and its controller, which makes a JobSet
of the workbench's Paddle runtime; JobSet makes the indexed Job whose pods KWOK runs. The
runtime itself is validated by Trainer's webhook when the `paddle_runtime` fixture applies it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from k8s_plane import admin_apis

from tests.launcher_magic.support import wait_until

JOB_API = "trainjob"  # the conftest's `tenant`
RUNTIME_FILE = Path(__file__).parents[2] / "deploy" / "k8s" / "trainer" / "paddle-runtime.yaml"
OUTCOME = "workbench.test/outcome"
TRAINER = ("trainer.kubeflow.org", "v1alpha1")


def _pods(plane, tenant, job_id):
    core, _ = admin_apis(plane)
    return core.list_namespaced_pod(
        tenant.namespace, label_selector=f"jobset.sigs.k8s.io/jobset-name={job_id}").items


def _running(plane, tenant, job_id):
    return [p for p in _pods(plane, tenant, job_id)
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


def _job_id(home, name) -> str:
    (job,) = [p.name for p in (home / "jobs").iterdir() if p.name.startswith(name + "-")]
    return job


def _status(home, job_id) -> dict:
    return json.loads((home / "jobs" / job_id / "status.json").read_text())


def _index(pod) -> int:
    return int(pod.metadata.labels["batch.kubernetes.io/job-completion-index"])


def _fail(plane, tenant, pod, exit_code: int) -> None:
    core, _ = admin_apis(plane)
    core.patch_namespaced_pod(pod.metadata.name, tenant.namespace, {"metadata": {"annotations": {
        OUTCOME: "failed", "workbench.test/exit-code": str(exit_code)}}})


def test_the_paddle_runtime_is_validated_by_trainer(control_plane, paddle_runtime):
    """The shipped runtime was admitted (fixture); Trainer's own webhook refuses a broken one,
    so the admission really ran."""
    _, custom = admin_apis(control_plane)
    runtime = custom.get_cluster_custom_object(*TRAINER, "clustertrainingruntimes",
                                               paddle_runtime)
    assert runtime["metadata"]["labels"]["trainer.kubeflow.org/framework"] == "paddle"
    broken = copy.deepcopy(yaml.safe_load(RUNTIME_FILE.read_text()))
    broken["metadata"]["name"] = "paddle-broken"
    broken["spec"]["template"]["spec"]["replicatedJobs"].append(
        copy.deepcopy(broken["spec"]["template"]["spec"]["replicatedJobs"][0]))
    from kubernetes.client.exceptions import ApiException

    with pytest.raises(ApiException) as refused:
        custom.create_cluster_custom_object(*TRAINER, "clustertrainingruntimes", broken)
    assert refused.value.status in (400, 422), refused.value.body


def test_the_tenants_policy_allows_only_the_paddle_runtimes(control_plane, tenant):
    """Every copy per --max-restarts value is allowed; a runtime of any other name is refused
    by the tenant's admission policy even where it exists (a copy made here)."""
    from kubernetes.client.exceptions import ApiException

    from launcher_magic.core.jobdir import JobDir
    from launcher_magic.core.spec import LaunchOptions, build_spec
    from launcher_magic.engines.cluster.objects import ClusterSettings
    from launcher_magic.engines.cluster.trainjob import build_trainjob
    from workbench_contract.environment import Limits, NotebookContext

    _, custom = admin_apis(control_plane)
    other = copy.deepcopy(yaml.safe_load(RUNTIME_FILE.read_text()))
    other["metadata"]["name"] = "paddle-elsewhere"
    custom.create_cluster_custom_object(*TRAINER, "clustertrainingruntimes", other)
    try:
        spec = build_spec(LaunchOptions(nodes=1, max_restarts=10, name="rt"), "x = 1\n",
                          NotebookContext(namespace=tenant.namespace, tenant=tenant.name,
                                          user="ada", limits=Limits(max_runtime_seconds=3600)))
        manifest = build_trainjob(spec, JobDir(Path("/home/jovyan/jobs") / spec.job_id),
                                  ClusterSettings(namespace=tenant.namespace,
                                                  image=tenant.images[0].image))
        assert manifest["spec"]["runtimeRef"]["name"] == "paddle-workbench-restarts-10"
        custom.create_namespaced_custom_object(*TRAINER, tenant.namespace, "trainjobs",
                                               manifest, dry_run="All")
        manifest["spec"]["runtimeRef"]["name"] = "paddle-elsewhere"
        with pytest.raises(ApiException) as refused:
            custom.create_namespaced_custom_object(*TRAINER, tenant.namespace, "trainjobs",
                                                   manifest, dry_run="All")
        assert refused.value.status in (403, 422), refused.value.body
        assert "must use the workbench's Paddle runtime" in refused.value.body
    finally:
        custom.delete_cluster_custom_object(*TRAINER, "clustertrainingruntimes",
                                            "paddle-elsewhere")


def test_magic_runs_a_two_node_trainjob_to_success(control_plane, tenant, notebook_kernel):
    kernel = notebook_kernel(tenant, annotations={OUTCOME: "succeeded", f"{OUTCOME}-delay": "6s"})
    result = kernel.run("%%paddle_launch --engine trainjob --nodes 2 --gpus 1 --name train\n"
                        "print('hi')\n", timeout=300)
    assert result.error is None, result.text
    states = [line.split(": ", 1)[1].split(" ")[0] for line in result.text.splitlines()
              if line.startswith("Paddle job train-")]
    assert "Running" in states and states[-1] == "Succeeded", result.text

    job_id = _job_id(kernel.home, "train")
    assert _status(kernel.home, job_id)["state"] == "Succeeded"
    _, custom = admin_apis(control_plane)
    trainjob = custom.get_namespaced_custom_object(*TRAINER, tenant.namespace, "trainjobs",
                                                   job_id)
    assert trainjob["spec"]["runtimeRef"]["name"] == "paddle-workbench-restarts-0"
    assert trainjob["spec"]["activeDeadlineSeconds"] == 86400
    pods = sorted(_pods(control_plane, tenant, job_id), key=_index)
    assert [_index(p) for p in pods] == [0, 1]
    for pod in pods:
        (container,) = pod.spec.containers
        env = {e.name: e.value for e in container.env}
        assert container.command == ["python", "-m", "launcher_magic.training.node_launch"]
        assert env["PADDLE_NNODES"] == "2"
        # node 0's stable DNS name: <jobset>-<replicated job>-<job index>-<pod index>
        assert env["PADDLE_MASTER"] == "$(PADDLE_JOB_ID)-node-0-0.$(PADDLE_JOB_ID):36543"
        assert pods[0].spec.hostname == f"{job_id}-node-0-0"
        assert pod.spec.subdomain == job_id
        assert container.args[-1] == str(kernel.home / "jobs" / job_id / "main.py")
        assert container.resources.limits["nvidia.com/gpu"] == "1"
        assert pod.spec.security_context.run_as_non_root is True
        assert pod.spec.automount_service_account_token is False
        assert pod.metadata.labels["workbench.paddle.org/user"] == "ada"
        assert pod.status.phase == "Succeeded"
        assert pod.spec.node_name.startswith("kwok-gpu")
        assert not any(e.value and "token" in e.value.lower() for e in container.env)
    listing = kernel.run("%paddle_jobs")
    assert job_id in listing.text and "trainjob" in listing.text


def test_a_killed_node_restarts_the_whole_job_and_a_failing_one_names_its_rank(
        control_plane, tenant, notebook_kernel):
    """Exit 137 (killed) restarts every node (JobSet's Recreate) and the restart is counted;
    exit 1 (the training code) fails the job at once and the status names the rank."""
    kernel = notebook_kernel(tenant)
    launch = ("%%paddle_launch --engine trainjob --nodes 2 --gpus 1 --max-restarts 2 "
              "--name flaky --detach\nx = 1\n")
    assert kernel.run(launch).error is None
    job_id = _job_id(kernel.home, "flaky")
    assert wait_until(lambda: len(_running(control_plane, tenant, job_id)) == 2, timeout=120)
    first = {p.metadata.uid for p in _pods(control_plane, tenant, job_id)}
    (node1,) = [p for p in _running(control_plane, tenant, job_id) if _index(p) == 1]
    _fail(control_plane, tenant, node1, 137)

    def restarted():
        running = _running(control_plane, tenant, job_id)
        return (_status(kernel.home, job_id)["restarts"] == 1 and len(running) == 2
                and not {p.metadata.uid for p in running} & first)

    assert wait_until(restarted, timeout=120), _status(kernel.home, job_id)
    assert {p.metadata.labels["jobset.sigs.k8s.io/restart-attempt"]
            for p in _running(control_plane, tenant, job_id)} == {"1"}
    (node1,) = [p for p in _running(control_plane, tenant, job_id) if _index(p) == 1]
    _fail(control_plane, tenant, node1, 1)
    assert wait_until(lambda: _status(kernel.home, job_id)["state"] == "Failed", timeout=120)
    status = _status(kernel.home, job_id)
    assert status["failed_rank"] == 1
    assert status["nodes"][1]["exit_code"] == 1
    assert status["restarts"] == 1
    assert "node 1 (rank 1) exited with code 1" in status["message"]


def test_a_job_killed_more_often_than_its_max_restarts_fails(control_plane, tenant, notebook_kernel):
    """--max-restarts 1: the first kill restarts the job, the second one fails it."""
    kernel = notebook_kernel(tenant)
    launch = ("%%paddle_launch --engine trainjob --nodes 2 --max-restarts 1 --name once "
              "--detach\nx = 1\n")
    assert kernel.run(launch).error is None
    job_id = _job_id(kernel.home, "once")
    _, custom = admin_apis(control_plane)
    trainjob = custom.get_namespaced_custom_object(*TRAINER, tenant.namespace, "trainjobs",
                                                   job_id)
    assert trainjob["spec"]["runtimeRef"]["name"] == "paddle-workbench-restarts-1"
    def running(attempt: str) -> bool:
        pods = _running(control_plane, tenant, job_id)
        return len(pods) == 2 and {
            p.metadata.labels["jobset.sigs.k8s.io/restart-attempt"] for p in pods} == {attempt}

    for attempt in ("0", "1"):
        assert wait_until(lambda a=attempt: running(a), timeout=120), \
            _status(kernel.home, job_id)
        (node0,) = [p for p in _running(control_plane, tenant, job_id) if _index(p) == 0]
        _fail(control_plane, tenant, node0, 137)
    assert wait_until(lambda: _status(kernel.home, job_id)["state"] == "Failed", timeout=120), \
        _status(kernel.home, job_id)
    status = _status(kernel.home, job_id)
    assert status["restarts"] == 1
    assert status["message"].startswith("node 0 (rank 0) exited with code 137; "), status
    assert "no restart left: --max-restarts 1, 1 used" in status["message"], status


def test_paddle_stop_deletes_the_trainjob_and_its_pods(control_plane, tenant, notebook_kernel):
    kernel = notebook_kernel(tenant)
    result = kernel.run("%%paddle_launch --engine trainjob --nodes 2 --name halt --detach\n"
                        "x = 1\n")
    assert result.error is None, result.text
    job_id = _job_id(kernel.home, "halt")
    assert wait_until(lambda: len(_pods(control_plane, tenant, job_id)) == 2, timeout=120)
    stopped = kernel.run(f"%paddle_stop {job_id}", timeout=200)
    assert "Stopped" in stopped.text
    _, custom = admin_apis(control_plane)

    def gone() -> bool:
        jobs = custom.list_namespaced_custom_object(*TRAINER, tenant.namespace, "trainjobs")
        return jobs["items"] == [] and _pods(control_plane, tenant, job_id) == []

    # Normally gone when %paddle_stop returns; on a loaded machine the garbage collector may
    # still be removing the TrainJob's JobSet and pods (the stop then says so), but they go.
    assert "still terminating" in stopped.text or gone(), stopped.text
    assert wait_until(gone, timeout=180), \
        stopped.text
