"""Smoke tests that the control plane is real: admission, RBAC, quota, scheduler, operator.

Each test pairs the refusal it proves with an accepted twin, so that it fails if the plane
refuses everything (or nothing) rather than enforcing the one property under test.
"""

from __future__ import annotations

import json
import uuid

import pytest

client = pytest.importorskip("kubernetes.client", reason="install the test extra (kubernetes)")
ApiException = pytest.importorskip("kubernetes.client.exceptions").ApiException

import k8s_plane  # noqa: E402  (tests/cluster is on sys.path; imported after the skip guard)

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "paddlejobs"
IMAGE = "registry.example.com/workbench/notebook-cpu:test"


def _pod(name: str, *, privileged: bool = False, restricted: bool = False, gpus: int = 0,
         annotations: dict | None = None) -> dict:
    container: dict = {"name": "main", "image": IMAGE}
    if privileged:
        container["securityContext"] = {"privileged": True}
    if restricted:
        container["securityContext"] = {
            "allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        }
    spec: dict = {"containers": [container]}
    if gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                                "effect": "NoSchedule"}]
    meta: dict = {"name": name, "annotations": annotations or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _paddlejob(name: str, workers: int, outcome: str | None, container: str = "paddle") -> dict:
    annotations = {}
    if outcome:
        annotations = {k8s_plane.OUTCOME_ANNOTATION: outcome,
                       k8s_plane.OUTCOME_DELAY_ANNOTATION: "2s"}
    template = {
        "metadata": {"annotations": annotations},
        "spec": {"containers": [{
            "name": container, "image": IMAGE,
            "command": ["python", "-m", "paddle.distributed.launch", "train.py"],
            "ports": [{"name": "master", "containerPort": 37777}],
        }]},
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "PaddleJob",
        "metadata": {"name": name},
        "spec": {"paddleReplicaSpecs": {"Worker": {
            "replicas": workers, "restartPolicy": "Never", "template": template}}},
    }


def _message(exc) -> str:
    """The API server's message from a refused request (``Status.message``)."""
    return json.loads(exc.body)["message"]


def _job_condition(job: dict, kind: str) -> bool:
    return any(c["type"] == kind and c["status"] == "True"
               for c in job.get("status", {}).get("conditions", []))


def test_pod_security_restricted_rejects_a_privileged_pod(control_plane, namespace):
    core = client.CoreV1Api(control_plane.api_client())
    restricted = f"{namespace}-restricted"
    core.create_namespace({"metadata": {"name": restricted, "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"}}})
    try:
        with pytest.raises(ApiException) as refused:
            core.create_namespaced_pod(restricted, _pod("privileged", privileged=True))
        assert refused.value.status == 403
        assert 'violates PodSecurity "restricted:latest"' in _message(refused.value)
        assert "privileged" in _message(refused.value)
        # A pod that meets the restricted profile is admitted in the same namespace...
        core.create_namespaced_pod(restricted, _pod("compliant", restricted=True))
    finally:
        core.delete_namespace(restricted)
    # ...and the privileged pod itself is admitted where no Pod Security label applies.
    created = core.create_namespaced_pod(namespace, _pod("privileged", privileged=True))
    assert created.spec.containers[0].security_context.privileged is True


def test_rbac_denies_an_unbound_service_account(control_plane, namespace):
    admin = control_plane.api_client()
    core = client.CoreV1Api(admin)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "notebook"}})
    notebook = client.CoreV1Api(control_plane.service_account_client(namespace, "notebook"))

    with pytest.raises(ApiException) as denied:
        notebook.list_namespaced_pod(namespace)
    assert denied.value.status == 403
    assert f"system:serviceaccount:{namespace}:notebook" in _message(denied.value)

    rbac = client.RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(namespace, {
        "metadata": {"name": "pod-reader"},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "notebook-pod-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "notebook", "namespace": namespace}]})
    # Same token, now bound: RBAC (not authentication) was what said no. Bindings reach the
    # authorizer through an informer, hence the wait.
    k8s_plane.wait_for(lambda: notebook.list_namespaced_pod(namespace) is not None, 30,
                       "the new RoleBinding to take effect")
    # The binding is namespaced: the neighbouring namespace stays closed.
    with pytest.raises(ApiException) as elsewhere:
        notebook.list_namespaced_pod("default")
    assert elsewhere.value.status == 403


def test_resource_quota_refuses_an_over_quota_pod(control_plane, namespace):
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespaced_resource_quota(namespace, {
        "metadata": {"name": "gpus"}, "spec": {"hard": {"requests.nvidia.com/gpu": "1"}}})
    # Admission refuses every pod while the quota's status is unknown; the controller fills it.
    k8s_plane.wait_for(
        lambda: (core.read_namespaced_resource_quota("gpus", namespace).status.hard or {}),
        60, "the quota controller to compute the ResourceQuota status")

    with pytest.raises(ApiException) as refused:
        core.create_namespaced_pod(namespace, _pod("two-gpus", gpus=2))
    assert refused.value.status == 403
    assert "exceeded quota: gpus" in _message(refused.value)
    core.create_namespaced_pod(namespace, _pod("one-gpu", gpus=1))


def test_gpu_pod_is_scheduled_onto_a_gpu_node_and_run(control_plane, namespace):
    core = client.CoreV1Api(control_plane.api_client())
    gpu_nodes = {n.name for n in control_plane.nodes if n.gpus}
    for node in core.list_node().items:
        if node.metadata.name in gpu_nodes:
            assert node.status.allocatable["nvidia.com/gpu"] == "8"
    core.create_namespaced_pod(namespace, _pod("eight-gpus", gpus=8))
    core.create_namespaced_pod(namespace, _pod("cpu-only"))

    def running(name: str):
        pod = core.read_namespaced_pod(name, namespace)
        return pod if pod.status.phase == "Running" else None

    gpu_pod = k8s_plane.wait_for(lambda: running("eight-gpus"), 60, "the GPU pod to run")
    assert gpu_pod.spec.node_name in gpu_nodes
    assert gpu_pod.status.pod_ip
    cpu_pod = k8s_plane.wait_for(lambda: running("cpu-only"), 60, "the CPU pod to run")
    # No toleration for the GPU taint, so only the CPU node fits.
    assert cpu_pod.spec.node_name not in gpu_nodes


def _worker_pods(core, namespace: str, job: str, count: int):
    selector = f"training.kubeflow.org/job-name={job}"

    def listed():
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        return pods if len(pods) == count else None

    return k8s_plane.wait_for(listed, 60, f"{count} pods of PaddleJob {job}")


def test_paddlejob_with_two_workers_runs_to_succeeded(control_plane, namespace):
    api = control_plane.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    name = f"train-{uuid.uuid4().hex[:6]}"
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                           _paddlejob(name, 2, "succeeded"))

    pods = sorted(_worker_pods(core, namespace, name, 2), key=lambda p: p.metadata.name)
    assert [p.metadata.name for p in pods] == [f"{name}-worker-0", f"{name}-worker-1"]
    for pod in pods:
        env = {e.name: e.value for e in pod.spec.containers[0].env}
        assert env["PADDLE_NNODES"] == "2"
        assert env["PADDLE_JOB_ID"] == name
        assert env["PADDLE_MASTER"].endswith(":37777")
    # Rank 1 reaches rank 0 through the per-replica service the operator created.
    assert dict((e.name, e.value) for e in pods[1].spec.containers[0].env)["PADDLE_MASTER"] == (
        f"{name}-worker-0:37777")
    core.read_namespaced_service(f"{name}-worker-0", namespace)

    def finished():
        job = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return job if _job_condition(job, "Succeeded") or _job_condition(job, "Failed") else None

    job = k8s_plane.wait_for(finished, 120, f"PaddleJob {name} to finish")
    assert _job_condition(job, "Succeeded"), k8s_plane.dump(job)
    for pod in core.list_namespaced_pod(
            namespace, label_selector=f"training.kubeflow.org/job-name={name}").items:
        assert pod.status.phase == "Succeeded"
        assert pod.spec.node_name in {n.name for n in control_plane.nodes}


def test_failing_a_chosen_worker_fails_the_paddlejob(control_plane, namespace):
    api = control_plane.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    name = f"fail-{uuid.uuid4().hex[:6]}"
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                           _paddlejob(name, 2, outcome=None))
    _worker_pods(core, namespace, name, 2)
    victim = f"{name}-worker-1"
    k8s_plane.wait_for(
        lambda: core.read_namespaced_pod(victim, namespace).status.phase == "Running", 60,
        f"{victim} to run")
    core.patch_namespaced_pod(victim, namespace, {"metadata": {"annotations": {
        k8s_plane.OUTCOME_ANNOTATION: "failed", k8s_plane.OUTCOME_DELAY_ANNOTATION: "0s"}}})

    def failed():
        job = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return job if _job_condition(job, "Failed") else None

    k8s_plane.wait_for(failed, 120, f"PaddleJob {name} to fail")
    assert core.read_namespaced_pod(victim, namespace).status.phase == "Failed"

    # Deleting the job lets the garbage collector remove its pods through their owner references.
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    selector = f"training.kubeflow.org/job-name={name}"
    k8s_plane.wait_for(
        lambda: not core.list_namespaced_pod(namespace, label_selector=selector).items, 60,
        f"the pods of the deleted PaddleJob {name} to be collected")


def test_operator_webhook_rejects_a_paddlejob_without_a_paddle_container(control_plane,
                                                                         namespace):
    custom = client.CustomObjectsApi(control_plane.api_client())
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, _paddlejob("bad", 1, None, container="trainer"))
    message = _message(refused.value)
    assert refused.value.status == 403
    assert 'webhook "validator.paddlejob.training-operator.kubeflow.org" denied' in message
    assert 'must have at least one container with name "paddle"' in message
    # The same job with the container the operator expects is accepted.
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                           _paddlejob("good", 1, None))
