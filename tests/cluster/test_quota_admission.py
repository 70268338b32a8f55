"""The provisioned ResourceQuota and LimitRange, enforced by the API server itself (the half of
the quota story that does not depend on the magic's preflight): pods over the tenant's GPU
quota, the pods the operator makes from an over-quota PaddleJob, PaddleJobs beyond the tenant's
job count, and pods with more GPUs than a node of the tenant may have (in an init container
too) are refused; the same requests within the quota are admitted."""

from __future__ import annotations

import pytest

client = pytest.importorskip("kubernetes.client", reason="install the test extra (kubernetes)")
pytest.importorskip("cryptography", reason="install the test extra (cryptography)")

import k8s_plane  # noqa: E402  (tests/cluster is on sys.path)
import tenancy  # noqa: E402
from tenancy import call, notebook_user, paddlejob, pod  # noqa: E402

from hub_config.cluster_policy.bundle import LIMIT_RANGE_NAME, QUOTA_NAME  # noqa: E402

hub_account = tenancy.hub_account  # fixtures shared by the tenancy tests
tenants = tenancy.tenants

JOBS = "/apis/kubeflow.org/v1/namespaces/{ns}/paddlejobs"


def test_gpu_pods_over_the_tenant_quota_are_refused_by_the_api_server(control_plane, tenants):
    tenant = tenants("gpu", gpus=2)
    core = client.CoreV1Api(control_plane.api_client())
    pods = f"/api/v1/namespaces/{tenant.namespace}/pods"
    admin = control_plane.api_client()

    # More than the whole quota is more than a node of the tenant may have: the LimitRange
    # refuses it before the quota is asked.
    status, message = call(admin, "POST", pods, pod("three-gpus", gpus=3))
    assert status == 403, message
    assert "maximum nvidia.com/gpu usage per Container is 2, but limit is 3" in message

    # Within the quota: admitted, and counted, so one more GPU is now over.
    assert call(admin, "POST", pods, pod("two-gpus", gpus=2))[0] == 201
    status, message = call(admin, "POST", pods, pod("one-more", gpus=1))
    assert status == 403 and f"exceeded quota: {QUOTA_NAME}" in message, message
    assert "used: requests.nvidia.com/gpu=2" in message
    assert "requests.nvidia.com/gpu=1" in message
    assert "limited: requests.nvidia.com/gpu=2" in message
    used = core.read_namespaced_resource_quota(QUOTA_NAME, tenant.namespace).status.used
    assert used["requests.nvidia.com/gpu"] == "2"


def test_a_tenant_without_gpus_gets_no_gpu_pod(control_plane, tenants):
    tenant = tenants("nogpu", gpus=0)
    status, message = call(control_plane.api_client(), "POST",
                           f"/api/v1/namespaces/{tenant.namespace}/pods", pod("one", gpus=1))
    assert status == 403, message
    assert "maximum nvidia.com/gpu usage per Container is 0, but limit is 1" in message
    # A pod that states no resources at all is admitted: the LimitRange gives it requests.
    bare = pod("bare")
    del bare["spec"]["containers"][0]["resources"]
    assert call(control_plane.api_client(), "POST",
                f"/api/v1/namespaces/{tenant.namespace}/pods", bare)[0] == 201


def test_paddlejobs_over_quota_are_refused(control_plane, tenants):
    tenant = tenants("jobs", gpus=2, jobs=2)
    ns = tenant.namespace
    notebook = notebook_user(control_plane, tenant, "ada")
    jobs = JOBS.format(ns=ns)
    core = client.CoreV1Api(control_plane.api_client())

    # A job that could never fit is refused at once by the tenant's admission policy
    # (test_tenant_admission.py). One that fits the quota but not what is left of it: the job
    # object is admitted, the API server refuses the operator's pod for it, and the operator
    # reports the refusal on the job's events.
    assert call(notebook, "POST", jobs, paddlejob("first", gpus=2, owner="ada"))[0] == 201
    k8s_plane.wait_for(lambda: core.read_namespaced_resource_quota(QUOTA_NAME, ns).status.used
                       .get("requests.nvidia.com/gpu") == "2", 90,
                       "the first job's pod to be counted")
    assert call(notebook, "POST", jobs, paddlejob("second", gpus=1, owner="ada"))[0] == 201

    def quota_refusal():
        events = core.list_namespaced_event(ns).items
        return [e for e in events if "exceeded quota" in (e.message or "")
                and e.involved_object.name == "second"]

    refusals = k8s_plane.wait_for(quota_refusal, 90, "the operator's quota refusal event")
    assert "requests.nvidia.com/gpu=1" in refusals[0].message
    assert "used: requests.nvidia.com/gpu=2" in refusals[0].message
    worker_pods = core.list_namespaced_pod(
        ns, label_selector="training.kubeflow.org/job-name=second").items
    assert worker_pods == []

    # Job count: a third job is over count/paddlejobs.
    status, message = call(notebook, "POST", jobs, paddlejob("third", owner="ada"))
    assert status == 403, message
    assert f"exceeded quota: {QUOTA_NAME}" in message
    assert "count/paddlejobs.kubeflow.org=1" in message
    assert "limited: count/paddlejobs.kubeflow.org=2" in message


def _gpu_pod(name: str, *, init: int = 0, containers: tuple[int, ...] = (0,)) -> dict:
    """A pod (kept Pending) whose init container asks for `init` GPUs (none: no init container)
    and whose containers ask for `containers` GPUs each."""
    body = pod(name, unschedulable=True)
    (main,) = body["spec"]["containers"]
    body["spec"]["containers"] = [
        {**main, "name": f"main-{i}",
         "resources": {**main["resources"], "limits": {"nvidia.com/gpu": str(gpus)}}}
        for i, gpus in enumerate(containers)]
    if init:
        body["spec"]["initContainers"] = [
            {**main, "name": "init",
             "resources": {**main["resources"], "limits": {"nvidia.com/gpu": str(init)}}}]
    return body


def test_the_limit_range_caps_gpus_per_container_and_per_pod(control_plane, tenants):
    """The LimitRange holds GPUs (an extended resource, which the API server accepts in its
    maximums) to what one node of the tenant may have, per container and per pod, so an init
    container is held to it too: a pod whose init container asks for more is refused, and so is
    one whose containers together do, though the quota (16) would let both in. Within it a pod
    is admitted, and a container that states no GPUs gets none (the default, 0)."""
    tenant = tenants("lr", gpus=16)  # 16 GPUs of quota, at most 8 per node
    core = client.CoreV1Api(control_plane.api_client())
    limits = {item.type: item for item in core.read_namespaced_limit_range(
        LIMIT_RANGE_NAME, tenant.namespace).spec.limits}
    assert limits["Container"].max["nvidia.com/gpu"] == "8"
    assert limits["Container"].default["nvidia.com/gpu"] == "0"
    assert limits["Pod"].max == {"nvidia.com/gpu": "8"}

    admin = control_plane.api_client()
    pods = f"/api/v1/namespaces/{tenant.namespace}/pods"
    status, message = call(admin, "POST", pods, _gpu_pod("init-16", init=16))
    print(f"\nan init container with 16 GPUs: {status}  {message}")
    assert status == 403, message
    assert "maximum nvidia.com/gpu usage per Container is 8, but limit is 16" in message
    status, message = call(admin, "POST", pods, _gpu_pod("five-and-five", containers=(5, 5)))
    print(f"two containers with 5 GPUs each: {status}  {message}")
    assert status == 403, message
    assert "maximum nvidia.com/gpu usage per Pod is 8, but limit is 10" in message
    assert call(admin, "POST", pods, _gpu_pod("init-8", init=8, containers=(8,)),
                [("dryRun", "All")])[0] == 201
    bare = core.create_namespaced_pod(tenant.namespace, pod("bare", unschedulable=True),
                                      dry_run="All")
    assert bare.spec.containers[0].resources.limits["nvidia.com/gpu"] == "0"
