"""The cluster engine's PaddleJob kind end to end on the real control plane.

A real kernel holds the token of ada's own notebook service account in tenant A (a TokenRequest
token in its kubeconfig) and runs `%%paddle_launch` with the tenant's engine, paddlejob: the
PaddleJob goes through RBAC, the tenant's admission policies, Pod Security `restricted`, quota
and the training-operator, which makes the worker pods that KWOK runs. Nothing here talks to the
API server as admin except to set up and to look.

The kernel's environment is the one the hub's own `TenantKubeSpawner` renders into the notebook
pod (tests/hub_config/hub_env.py), never one written here by hand: that is the contract between
the hub and the engine, and these tests take each side's real output.
"""

from __future__ import annotations

import json

import pytest
from k8s_plane import admin_apis

from tests.launcher_magic.support import wait_until

JOB_API = "paddlejob"  # the conftest's `tenant`: training-operator v1
OUTCOME = "workbench.test/outcome"


def _pods(plane, tenant, job_id):
    core, _ = admin_apis(plane)
    return core.list_namespaced_pod(
        tenant.namespace, label_selector=f"training.kubeflow.org/job-name={job_id}").items


def _job_id(home, name) -> str:
    (job,) = [p.name for p in (home / "jobs").iterdir() if p.name.startswith(name + "-")]
    return job


def _status(home, job_id) -> dict:
    return json.loads((home / "jobs" / job_id / "status.json").read_text())


def test_magic_runs_a_paddlejob_to_success(control_plane, tenant, notebook_kernel):
    kernel = notebook_kernel(tenant, "ada", {OUTCOME: "succeeded", f"{OUTCOME}-delay": "6s"})
    result = kernel.run("%%paddle_launch --nodes 2 --gpus 1 --name train\nprint('hi')\n",
                        timeout=300)
    assert result.error is None, result.text
    states = [line.split(": ", 1)[1].split(" ")[0] for line in result.text.splitlines()
              if line.startswith("Paddle job train-")]
    assert "Running" in states and states[-1] == "Succeeded", result.text  # the panel, live

    job_id = _job_id(kernel.home, "train")
    assert _status(kernel.home, job_id)["state"] == "Succeeded"
    pods = _pods(control_plane, tenant, job_id)
    assert sorted(p.metadata.name for p in pods) == [f"{job_id}-worker-0", f"{job_id}-worker-1"]
    for pod in pods:
        (container,) = pod.spec.containers
        env = {e.name: e.value for e in container.env}
        assert env["PADDLE_NNODES"] == "2"
        assert env["PADDLE_MASTER"].endswith(":36543")
        assert env["PADDLE_JOB_ID"] == job_id
        assert container.resources.limits["nvidia.com/gpu"] == "1"
        assert pod.spec.security_context.run_as_non_root is True
        assert pod.metadata.labels["workbench.paddle.org/tenant"] == "vision"
        assert pod.status.phase == "Succeeded"
        assert pod.spec.node_name.startswith("kwok-gpu")  # scheduled onto a GPU node

    _, custom = admin_apis(control_plane)
    paddlejob = custom.get_namespaced_custom_object("kubeflow.org", "v1", tenant.namespace,
                                                    "paddlejobs", job_id)
    assert paddlejob["spec"]["runPolicy"]["activeDeadlineSeconds"] == 86400
    assert paddlejob["spec"]["runPolicy"]["backoffLimit"] == 0
    listing = kernel.run("%paddle_jobs")
    assert job_id in listing.text and "paddlejob" in listing.text


@pytest.fixture
def user_claim(control_plane, tenant):
    """Ada's claim in the tenant's namespace, bound to a volume of its own (as a provisioner
    would make it); the volume (cluster-wide) is deleted afterwards."""
    core, _ = admin_apis(control_plane)
    namespace, name = tenant.namespace, "claim-ada"
    volume = f"pv-{namespace}-{name}"
    core.create_persistent_volume({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
                 "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "",
                 "hostPath": {"path": f"/srv/workbench-test/{volume}"},
                 "claimRef": {"namespace": namespace, "name": name}}})
    core.create_namespaced_persistent_volume_claim(namespace, {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteMany"], "storageClassName": "",
                 "volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}}})
    assert wait_until(lambda: core.read_namespaced_persistent_volume_claim(
        name, namespace).status.phase == "Bound", timeout=60), "the claim was never bound"
    yield name
    core.delete_persistent_volume(volume)


@pytest.mark.parametrize("uid", [1000, 2345])
def test_job_pods_mount_the_users_claim_and_run_as_the_notebook_user(
        control_plane, tenant, user_claim, notebook_kernel, uid):
    """The hub's spawner says which claim holds the user's home, where it is mounted and which
    uid/gid the notebook runs as; every worker pod of the user's job mounts the same claim at the
    same path (so `main.py` and the job directory are there) and runs as the same user."""
    kernel = notebook_kernel(tenant, "ada", {OUTCOME: "succeeded"}, uid=uid, gid=100, storage=True)
    result = kernel.run("import os; print(sorted((k, v) for k, v in os.environ.items() "
                        "if k.startswith('PADDLE_WORKBENCH_STORAGE')))")
    assert "('PADDLE_WORKBENCH_STORAGE_CLAIM', 'claim-ada')" in result.text, result.text
    result = kernel.run("%%paddle_launch --nodes 2 --name shared\nprint('hi')\n", timeout=300)
    assert result.error is None, result.text
    assert "Succeeded" in result.text, result.text

    job_id = _job_id(kernel.home, "shared")
    pods = _pods(control_plane, tenant, job_id)
    assert len(pods) == 2
    for pod in pods:
        (container,) = pod.spec.containers
        (volume,) = pod.spec.volumes
        assert volume.persistent_volume_claim.claim_name == user_claim
        (mount,) = container.volume_mounts
        assert (mount.name, mount.mount_path) == (volume.name, str(kernel.home))
        assert container.command[-1] == str(kernel.home / "jobs" / job_id / "main.py")
        assert container.working_dir == str(kernel.home / "jobs" / job_id)
        assert pod.spec.security_context.run_as_user == uid
        assert pod.spec.security_context.run_as_group == 100
        assert container.security_context.run_as_user == uid


def _fail_pod(plane, tenant, pod: str, exit_code: int) -> None:
    core, _ = admin_apis(plane)
    core.patch_namespaced_pod(pod, tenant.namespace, {"metadata": {"annotations": {
        OUTCOME: "failed", "workbench.test/exit-code": str(exit_code)}}})


def _running_pods(plane, tenant, job_id) -> int:
    return len([p for p in _pods(plane, tenant, job_id)
                if p.status.phase == "Running" and not p.metadata.deletion_timestamp])


def test_killed_worker_restarts_then_the_job_fails(control_plane, tenant, notebook_kernel):
    """Exit 137 (killed: evicted, node lost) restarts the worker; exit 1 then fails the job and
    the panel names the rank that failed."""
    kernel = notebook_kernel(tenant)
    launch = "%%paddle_launch --nodes 2 --gpus 1 --name flaky --max-restarts 1 --detach\nx = 1\n"
    assert kernel.run(launch).error is None
    job_id = _job_id(kernel.home, "flaky")
    # The detached panel keeps refreshing the job's status.json from the cluster.
    assert wait_until(lambda: _running_pods(control_plane, tenant, job_id) == 2, timeout=120)
    first = {p.metadata.uid for p in _pods(control_plane, tenant, job_id)}
    _fail_pod(control_plane, tenant, f"{job_id}-worker-1", 137)

    def restarted():
        pods = _pods(control_plane, tenant, job_id)
        replaced = {p.metadata.uid for p in pods} - first
        return (_status(kernel.home, job_id)["restarts"] == 1 and replaced
                and _running_pods(control_plane, tenant, job_id) == 2)

    assert wait_until(restarted, timeout=120), _status(kernel.home, job_id)
    assert _status(kernel.home, job_id)["state"] in ("Running", "Restarting")
    # Exit 1 is the training code's own failure: no restart, the job fails.
    _fail_pod(control_plane, tenant, f"{job_id}-worker-1", 1)
    assert wait_until(lambda: _status(kernel.home, job_id)["state"] == "Failed", timeout=120)
    status = _status(kernel.home, job_id)
    assert status["failed_rank"] == 1
    assert status["nodes"][1]["exit_code"] == 1
    assert status["restarts"] == 1


def test_a_failing_worker_fails_the_job(control_plane, tenant, notebook_kernel):
    """Exit 1 is the training code's own failure: no restart, the job fails."""
    kernel = notebook_kernel(tenant)
    launch = "%%paddle_launch --nodes 2 --name broken --max-restarts 3 --detach\nx = 1\n"
    assert kernel.run(launch).error is None
    job_id = _job_id(kernel.home, "broken")
    assert wait_until(lambda: _running_pods(control_plane, tenant, job_id) == 2, timeout=120)
    _fail_pod(control_plane, tenant, f"{job_id}-worker-0", 1)
    assert wait_until(lambda: _status(kernel.home, job_id)["state"] == "Failed", timeout=120)
    assert _status(kernel.home, job_id)["restarts"] == 0


def test_paddle_stop_deletes_the_job_and_its_pods(control_plane, tenant, notebook_kernel):
    kernel = notebook_kernel(tenant)
    assert kernel.run("%%paddle_launch --nodes 2 --name halt --detach\nx = 1\n").error is None
    job_id = _job_id(kernel.home, "halt")
    assert wait_until(lambda: len(_pods(control_plane, tenant, job_id)) == 2, timeout=120)
    stopped = kernel.run(f"%paddle_stop {job_id}", timeout=200)
    assert "Stopped" in stopped.text
    _, custom = admin_apis(control_plane)
    jobs = custom.list_namespaced_custom_object("kubeflow.org", "v1", tenant.namespace,
                                                "paddlejobs")["items"]
    assert [j["metadata"]["name"] for j in jobs] == []
    assert _pods(control_plane, tenant, job_id) == []


def test_quota_preflight_refuses_before_anything_is_created(control_plane, tenant, notebook_kernel):
    kernel = notebook_kernel(tenant)
    # The example tenant has 8 GPUs of quota; 2 nodes x 8 GPUs cannot fit.
    result = kernel.run("%%paddle_launch --nodes 2 --gpus 8 --name greedy\nx = 1\n")
    assert result.error and "UsageError" in result.error
    assert "needs 16 GPUs (2 nodes x 8)" in result.error
    assert "requests.nvidia.com/gpu=8" in result.error
    _, custom = admin_apis(control_plane)
    assert custom.list_namespaced_custom_object("kubeflow.org", "v1", tenant.namespace,
                                                "paddlejobs")["items"] == []
    assert list((kernel.home / "jobs").iterdir()) == []


def test_the_notebook_token_cannot_reach_another_tenant(control_plane, tenant, notebook_kernel):
    """The engine refuses clearly when RBAC says no (here: a namespace that is not ours)."""
    kernel = notebook_kernel(tenant)
    result = kernel.run(
        "import os\nos.environ['PADDLE_WORKBENCH_NAMESPACE'] = 'kube-system'\n")
    assert result.error is None
    result = kernel.run("%%paddle_launch --nodes 1 --name sneaky\nx = 1\n")
    assert result.error and "403 Forbidden" in result.error
    _, custom = admin_apis(control_plane)
    assert custom.list_namespaced_custom_object("kubeflow.org", "v1", "kube-system",
                                                "paddlejobs")["items"] == []
