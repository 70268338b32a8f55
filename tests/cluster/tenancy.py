"""Helpers for the tenant-provisioning tests on the real control plane.

- `make_tenant(...)`: a validated `Tenant` with a unique name and namespace (the plane is shared
  by the session, so every test provisions its own tenants).
- `provision(plane, tenant, hub_namespace)`: `namespace_bundle` applied with `apply_objects` as the
  cluster operator; waits until the quota controller has filled the ResourceQuota status (until
  then the API server refuses every pod in the namespace) and until the tenant's admission
  policies are enforced, and returns the apply results.
- `call(api_client, method, path, body)`: one raw API request; returns the HTTP status (the RBAC
  matrix counts real successes, so it needs statuses, not exceptions).
- `notebook_user(plane, tenant, user)`: `user`'s own service account and its RoleBinding, made
  from `user_identity` as the hub makes them at a spawn (here by the admin), and an ApiClient
  with a real TokenRequest token of that account, once RBAC lets it in: what a notebook holds.
- `paddlejob(name, owner=...)`: a PaddleJob that the tenant's admission policies admit (owner
  label, deadline, cleanup, no API token in its pods) unless a test breaks one rule on purpose.
- `deprovision(plane, tenant)`: deletes the tenant's namespace and its cluster-scoped admission
  policies and bindings (the plane is shared: nothing of a test may outlive it).
- `hub_account` fixture: a hub namespace with the hub's service account, as the Zero to JupyterHub
  chart would create it; `tenants` fixture: a factory that provisions tenants and deletes their
  namespaces afterwards.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import k8s_plane
import pytest

from hub_config.cluster_policy.apply import ApplyResult, apply_objects
from hub_config.cluster_policy.bundle import QUOTA_NAME, namespace_bundle
from hub_config.cluster_policy.identities import user_identity, user_service_account
from hub_config.tenants import Tenant
from workbench_contract.cluster import PADDLEJOB, RUNTIME, TRAINJOB

HUB_SERVICE_ACCOUNT = "hub"
IMAGE = ("registry.example.com/workbench/notebook-cpu@sha256:"
         "68ab84f7c6d0f5781585eb1b5289499fb29081b918f71ebddb5f72021c9ef9c5")
GPU_IMAGE = ("registry.example.com/workbench/notebook-gpu@sha256:"
             "e3c5ba51dba85ab0c990db5e309f4d7bdb282470fb02aee75b9022c1399e91c8")
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
RESTRICTED = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "runAsUser": 1000,
              "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def tenant_data(name: str, *, gpus: int = 8, jobs: int = 10, pods: int = 20) -> dict[str, Any]:
    """A tenants-file entry (validated by `Tenant.from_dict` / `load_tenants`)."""
    return {
        "name": name,
        "groups": [f"{name}-team"],
        "namespace": f"wb-{name}",
        "quota": {"gpus": gpus, "cpu": "32", "memory": "128Gi", "pods": pods, "jobs": jobs},
        "profiles": [
            {"name": "cpu-small", "description": "2 CPU", "cpu": {"guarantee": 0.5, "limit": 2},
             "memory": {"guarantee": "1Gi", "limit": "4Gi"}},
            *([{"name": "gpu-small", "description": "1 GPU", "gpus": 1,
                "cpu": {"guarantee": 2, "limit": 8},
                "memory": {"guarantee": "8Gi", "limit": "32Gi"},
                "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100"},
                "tolerations": [GPU_TOLERATION]}] if gpus else []),
        ],
        "images": [{"name": "CPU", "image": IMAGE}, {"name": "GPU", "image": GPU_IMAGE}],
        "job_limits": {"max_nodes": 2, "max_gpus_per_node": min(gpus, 8), "max_runtime": 3600},
    }


def make_tenant(prefix: str = "t", **quota: int) -> Tenant:
    return Tenant.from_dict(tenant_data(unique(prefix), **quota), strict=True)


def wait_quota_ready(core, namespace: str) -> None:
    k8s_plane.wait_for(
        lambda: core.read_namespaced_resource_quota(QUOTA_NAME, namespace).status.hard, 60,
        f"the quota controller to compute {namespace}/{QUOTA_NAME}")


def provision(plane, tenant: Tenant, hub_namespace: str, **kwargs: Any) -> list[ApplyResult]:
    from kubernetes import client

    api = plane.api_client()
    bundle = namespace_bundle(tenant, hub_namespace=hub_namespace,
                              hub_service_account=HUB_SERVICE_ACCOUNT)
    results = apply_objects(api, bundle, **kwargs)
    if not kwargs.get("dry_run"):
        wait_quota_ready(client.CoreV1Api(api), tenant.namespace)
        wait_policies_enforced(api, tenant)
    return results


def wait_policies_enforced(api_client, tenant: Tenant) -> None:
    """Admission policies reach the API server's admission chain through an informer, each on its
    own: wait until the tenant's PaddleJob and TrainJob policies both refuse a job without a
    deadline (dry runs: nothing is made). The admission plugin runs the policies before any
    webhook, so the refusal is the policy's."""
    unbounded = paddlejob("policy-probe")
    del unbounded["spec"]["runPolicy"]["activeDeadlineSeconds"]
    trainjob = {"apiVersion": TRAINJOB.api_version, "kind": TRAINJOB.kind,
                "metadata": {"name": "policy-probe"},
                "spec": {"runtimeRef": {"name": RUNTIME}, "trainer": {"image": IMAGE}}}
    probes = [(f"/apis/{PADDLEJOB.api_version}/namespaces/{tenant.namespace}/{PADDLEJOB.plural}",
               unbounded),
              (f"/apis/{TRAINJOB.api_version}/namespaces/{tenant.namespace}/{TRAINJOB.plural}",
               trainjob)]

    def enforced() -> bool:
        for path, body in probes:
            status, message = call(api_client, "POST", path, body, [("dryRun", "All")])
            if status != 422 or "workbench rule " not in message:
                return False
        return True

    k8s_plane.wait_for(enforced, 60, f"the admission policies of {tenant.name} to be enforced")


def call(api_client, method: str, path: str, body: Any = None,
         query: list[tuple[str, str]] | None = None) -> tuple[int, str]:
    """One request as `api_client`'s identity: (HTTP status, the server's message or "")."""
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    request = api_client.param_serialize(
        method, path, query_params=query or [], body=body, auth_settings=["BearerToken"],
        header_params={"Accept": "application/json", "Content-Type": content_type})
    response = api_client.call_api(*request, _request_timeout=30)
    response.read()
    text = (response.data or b"").decode("utf-8", "replace")
    try:
        message = json.loads(text).get("message", "") if text.startswith("{") else ""
    except ValueError:
        message = ""
    return response.status, message


def wait_allowed(api_client, path: str, what: str) -> None:
    """RoleBindings reach the authorizer through an informer: wait until `path` is readable."""
    k8s_plane.wait_for(lambda: call(api_client, "GET", path)[0] == 200, 30, what)


USER_LABEL = "workbench.paddle.org/user"
DEADLINE = 600


def notebook_user(plane, tenant: Tenant, user: str):
    """An ApiClient acting as `user`'s own notebook account in `tenant` (made if missing)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = plane.api_client()
    account, binding = user_identity(tenant, user)
    for create, body in ((client.CoreV1Api(api).create_namespaced_service_account, account),
                         (client.RbacAuthorizationV1Api(api).create_namespaced_role_binding,
                          binding)):
        try:
            create(tenant.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    notebook = plane.service_account_client(tenant.namespace,
                                            user_service_account(tenant, user))
    wait_allowed(notebook, f"/apis/kubeflow.org/v1/namespaces/{tenant.namespace}/paddlejobs",
                 f"{user}'s RoleBinding to apply")
    return notebook


def paddlejob(name: str, *, workers: int = 1, gpus: int = 0,
              labels: dict[str, str] | None = None, owner: str | None = None) -> dict[str, Any]:
    """A PaddleJob whose pods meet Pod Security `restricted` and the tenant's admission
    policies (with `owner`, as that user's), so only quota can refuse them."""
    labels = {**(labels or {}), **({USER_LABEL: owner} if owner else {})}
    container: dict[str, Any] = {
        "name": "paddle", "image": IMAGE, "securityContext": RESTRICTED,
        "command": ["python", "-m", "paddle.distributed.launch", "train.py"],
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"},
                      "limits": {"cpu": "1", "memory": "1Gi"}},
    }
    spec: dict[str, Any] = {"containers": [container], "automountServiceAccountToken": False}
    if gpus:
        container["resources"]["limits"]["nvidia.com/gpu"] = str(gpus)
        spec["tolerations"] = [GPU_TOLERATION]
    return {
        "apiVersion": "kubeflow.org/v1", "kind": "PaddleJob",
        "metadata": {"name": name, "labels": dict(labels)},
        # Running pods go when the job ends, and the finished job after a while (`cleanup`).
        "spec": {"runPolicy": {"activeDeadlineSeconds": DEADLINE, "cleanPodPolicy": "Running",
                               "ttlSecondsAfterFinished": DEADLINE},
                 "paddleReplicaSpecs": {"Worker": {
                     "replicas": workers, "restartPolicy": "Never",
                     "template": {"metadata": {"labels": dict(labels)}, "spec": spec}}}},
    }


def pod(name: str, *, gpus: int = 0, unschedulable: bool = False) -> dict[str, Any]:
    """A restricted-compliant pod; `unschedulable` keeps it Pending (no node matches)."""
    resources: dict[str, Any] = {"requests": {"cpu": "100m", "memory": "128Mi"}}
    spec: dict[str, Any] = {"containers": [{"name": "main", "image": IMAGE,
                                            "securityContext": RESTRICTED,
                                            "resources": resources}]}
    if gpus:
        resources["limits"] = {"nvidia.com/gpu": str(gpus)}
        spec["tolerations"] = [GPU_TOLERATION]
    if unschedulable:
        spec["nodeSelector"] = {"workbench.test/no-such-node": "true"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def deprovision(plane, tenant: Tenant) -> None:
    """Delete what provisioning `tenant` made: its namespace and its admission policies."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = plane.api_client()
    admission = client.AdmissionregistrationV1Api(api)
    selector = f"workbench.paddle.org/tenant={tenant.name}"
    for listed, delete in (
            (admission.list_validating_admission_policy_binding,
             admission.delete_validating_admission_policy_binding),
            (admission.list_validating_admission_policy,
             admission.delete_validating_admission_policy)):
        for item in listed(label_selector=selector).items:
            delete(item.metadata.name)
    try:
        client.CoreV1Api(api).delete_namespace(tenant.namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def as_the_hub(plane, hub_namespace: str):
    """An ApiClient with a real token of the hub's own service account in `hub_namespace` (made
    if missing): what a tenant's bundle lets create notebook pods."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    core = client.CoreV1Api(plane.api_client())
    for create, body in ((core.create_namespace, {"metadata": {"name": hub_namespace}}),
                         (lambda b: core.create_namespaced_service_account(hub_namespace, b),
                          {"metadata": {"name": HUB_SERVICE_ACCOUNT}})):
        try:
            create(body)
        except ApiException as exc:
            if exc.status != 409:
                raise
    return plane.service_account_client(hub_namespace, HUB_SERVICE_ACCOUNT)


@pytest.fixture
def hub_account(control_plane) -> Iterator[str]:
    """A hub namespace holding the hub's service account; its name. Deleted afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(control_plane.api_client())
    name = unique("hub")
    core.create_namespace({"metadata": {"name": name}})
    core.create_namespaced_service_account(name, {"metadata": {"name": HUB_SERVICE_ACCOUNT}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def tenants(control_plane, hub_account) -> Iterator[Any]:
    """`tenants(prefix, gpus=..., jobs=...)` provisions a fresh tenant and returns it; every
    tenant provisioned this way is deprovisioned after the test."""
    made: list[Tenant] = []

    def factory(prefix: str = "t", **quota: int) -> Tenant:
        tenant = make_tenant(prefix, **quota)
        made.append(tenant)
        provision(control_plane, tenant, hub_account)
        return tenant

    yield factory
    for tenant in made:
        deprovision(control_plane, tenant)
