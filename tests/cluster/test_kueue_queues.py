"""Kueue per tenant on the real control plane: queued TrainJobs, borrowing and reclaiming.

Each tenant here has a `queue` setting, so `workbench apply` (tenancy.provision applies the
namespace bundle with k8s_apply) makes its ResourceFlavor, ClusterQueue and LocalQueue, and the
trainjob engine submits suspended TrainJobs with the queue label. Kueue v0.17.0 (TrainJob
integration) admits them; KWOK's two GPU nodes hold 16 GPUs. Every tenant gets a cohort of its
own test so that tests do not lend to each other.
"""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.launcher_magic.support import wait_until

TRAINER = ("trainer.kubeflow.org", "v1alpha1")
KUEUE = ("kueue.x-k8s.io", "v1beta2")


@pytest.fixture
def queued_tenants(control_plane, paddle_runtime):
    """make(cohort, gpus=8, borrowing_limit=None) -> a provisioned tenant with a queue. As
    `workbench apply` does with one tenants file, every tenant of the cohort is applied again,
    so each one's quota counts what the others can lend. Namespaces, policies and ClusterQueues
    are deleted afterwards."""
    from kubernetes import client
    from tenancy import deprovision, provision, tenant_data

    from hub_config.tenants import Tenant, Tenants

    entries: list[dict] = []
    made = {}

    def make(cohort: str, gpus: int = 8, borrowing_limit: int | None = None) -> Tenant:
        data = tenant_data(f"q{uuid.uuid4().hex[:6]}", gpus=gpus)
        data["queue"] = {"cohort": cohort, **({"borrowing_limit": {"gpus": borrowing_limit}}
                                              if borrowing_limit is not None else {})}
        entries.append(data)
        cohort_file = [e for e in entries if e["queue"]["cohort"] == cohort]
        for tenant in Tenants.from_dict({"tenants": cohort_file}, strict=True).tenants:
            provision(control_plane, tenant, hub_namespace="jupyterhub")
            made[tenant.name] = tenant
        return made[data["name"]]

    yield make
    custom = client.CustomObjectsApi(control_plane.api_client())
    for tenant in made.values():
        deprovision(control_plane, tenant)
        custom.delete_cluster_custom_object(*KUEUE, "clusterqueues", f"workbench-{tenant.name}")


def _job_id(kernel, name) -> str:
    (job,) = [p.name for p in (kernel.home / "jobs").iterdir() if p.name.startswith(name + "-")]
    return job


def _status(kernel, job_id) -> dict:
    return json.loads((kernel.home / "jobs" / job_id / "status.json").read_text())


def _running_pods(plane, tenant, job_id) -> int:
    from kubernetes import client

    pods = client.CoreV1Api(plane.api_client()).list_namespaced_pod(
        tenant.namespace, label_selector=f"jobset.sigs.k8s.io/jobset-name={job_id}").items
    return len([p for p in pods if p.status.phase == "Running"
                and not p.metadata.deletion_timestamp])


def _launch(kernel, name: str, nodes: int, gpus: int):
    result = kernel.run(f"%%paddle_launch --engine trainjob --nodes {nodes} --gpus {gpus} "
                        f"--name {name} --detach\nx = 1\n")
    assert result.error is None, result.text
    return _job_id(kernel, name), result


def _state(kernel, job_id) -> str:
    return _status(kernel, job_id)["state"]


def test_a_tenant_borrows_idle_gpus_and_the_lender_takes_them_back(
        control_plane, queued_tenants, notebook_kernel):
    cohort = f"c-{uuid.uuid4().hex[:6]}"
    lender, borrower = queued_tenants(cohort), queued_tenants(cohort)
    ada, bob = notebook_kernel(borrower, "ada"), notebook_kernel(lender, "bob")

    # 16 GPUs: twice the borrower's own quota, admitted with the lender's idle 8.
    big, _ = _launch(ada, "big", 2, 8)
    assert wait_until(lambda: _running_pods(control_plane, borrower, big) == 2, timeout=120), \
        _status(ada, big)
    assert wait_until(lambda: _state(ada, big) == "Running", timeout=60), _status(ada, big)

    # The lender wants its own 8 back: Kueue preempts the borrowed workload and re-queues it.
    mine, _ = _launch(bob, "mine", 1, 8)
    assert wait_until(lambda: _running_pods(control_plane, lender, mine) == 1, timeout=120), \
        _status(bob, mine)
    assert wait_until(lambda: _running_pods(control_plane, borrower, big) == 0, timeout=120)
    assert wait_until(lambda: _status(ada, big)["message"].startswith(
        "position 1 of 1 in workbench; "), timeout=60), _status(ada, big)
    assert _state(ada, big) == "Queued"
    from kubernetes import client

    custom = client.CustomObjectsApi(control_plane.api_client())
    (workload,) = custom.list_namespaced_custom_object(*KUEUE, borrower.namespace,
                                                       "workloads")["items"]
    reasons = {c["type"]: c.get("reason") for c in workload["status"]["conditions"]}
    assert reasons.get("Preempted") == "InCohortReclamation", workload["status"]

    # Once the lender's job ends, the borrower's job is admitted again and runs.
    assert "Stopped" in bob.run(f"%paddle_stop {mine}", timeout=200).text
    assert wait_until(lambda: _running_pods(control_plane, borrower, big) == 2, timeout=120), \
        _status(ada, big)
    assert wait_until(lambda: _state(ada, big) == "Running", timeout=60)


def test_a_job_larger_than_the_whole_cohort_is_refused_with_the_numbers(
        control_plane, queued_tenants, notebook_kernel):
    """The namespace's GPU quota is the whole cohort's capacity (own + what the others can
    lend), so a job that could never be admitted is refused by the magic, with the numbers,
    before anything is created (it would otherwise wait in the queue forever)."""
    tenant = queued_tenants(f"c-{uuid.uuid4().hex[:6]}")  # alone: the cohort holds 8 GPUs
    ada = notebook_kernel(tenant, "ada")
    result = ada.run("%%paddle_launch --engine trainjob --nodes 2 --gpus 8 --name huge "
                     "--detach\nx = 1\n")
    assert result.error is not None, result.text
    assert "the job needs 16 GPUs (2 nodes x 8)" in result.error, result.error
    assert "requests.nvidia.com/gpu=8 in all: it can never run" in result.error, result.error
    from kubernetes import client

    custom = client.CustomObjectsApi(control_plane.api_client())
    assert custom.list_namespaced_custom_object(
        *TRAINER, tenant.namespace, "trainjobs")["items"] == []


def test_a_queued_job_shows_its_place_and_starts_when_another_ends(
        control_plane, queued_tenants, notebook_kernel):
    # No borrowing: the namespace quota holds 8 GPUs, so the preflight sees the wait coming.
    tenant = queued_tenants(f"c-{uuid.uuid4().hex[:6]}", borrowing_limit=0)
    ada = notebook_kernel(tenant, "ada")
    first, _ = _launch(ada, "first", 1, 8)
    assert wait_until(lambda: _running_pods(control_plane, tenant, first) == 1, timeout=120)
    from kubernetes import client

    core = client.CoreV1Api(control_plane.api_client())
    assert wait_until(lambda: core.read_namespaced_resource_quota(
        "workbench-quota", tenant.namespace).status.used.get("requests.nvidia.com/gpu") == "8",
        timeout=60)

    second, launched = _launch(ada, "second", 1, 8)  # a warning, not a refusal
    assert "Queued" in launched.text, launched.text
    assert wait_until(lambda: _status(ada, second)["message"].startswith(
        "position 1 of 1 in workbench"), timeout=120), _status(ada, second)
    # Kueue orders a queue by the Workloads' creation times, which have one-second resolution:
    # two jobs made within one second have no order. The third comes a second later.
    time.sleep(1.1)
    third, _ = _launch(ada, "third", 1, 8)
    assert wait_until(lambda: _status(ada, third)["message"].startswith(
        "position 2 of 2 in workbench"), timeout=120), _status(ada, third)
    assert wait_until(lambda: _status(ada, second)["message"].startswith(
        "position 1 of 2 in workbench; "), timeout=60), _status(ada, second)
    # The positions are Kueue's own, from its visibility API (an aggregated API on this plane),
    # which the user reads with the namespace Role alone; the ClusterQueue's view (cluster-wide,
    # other tenants' jobs) stays closed to them.
    from k8s_addons import visibility_available
    from kubernetes.client.exceptions import ApiException

    from hub_config.cluster_policy.identities import user_service_account
    from launcher_magic.engines.cluster.api import ClusterApi
    from workbench_contract.cluster import pending_workloads_path

    assert wait_until(lambda: visibility_available(control_plane.api_client()), timeout=60)
    user = ClusterApi("trainjob", str(control_plane.service_account_kubeconfig(
        tenant.namespace, user_service_account(tenant, "ada"))), request_timeout=30)
    summary = user.get_path(pending_workloads_path(tenant.namespace, "workbench"))
    assert [(w["metadata"]["ownerReferences"][0]["name"], w["positionInLocalQueue"])
            for w in summary["items"]] == [(second, 0), (third, 1)], summary
    with pytest.raises(ApiException) as refused:
        user.get_path(f"/apis/visibility.kueue.x-k8s.io/v1beta2/clusterqueues/"
                      f"workbench-{tenant.name}/pendingworkloads")
    assert refused.value.status == 403
    status = _status(ada, second)
    assert status["state"] == "Queued"
    assert "insufficient unused quota for nvidia.com/gpu" in status["message"], status
    listing = ada.run("%paddle_jobs").text
    row = next(line for line in listing.splitlines() if line.startswith(second))
    assert row.split()[2] == "Queued", listing  # the state column
    assert f"note: {second}: queued: position 1 of 2 in workbench; " in listing, listing
    # The preflight's warning, with the quota's numbers.
    assert ("it will wait in your tenant's queue: the job needs 8 GPUs (1 nodes x 8), but your "
            "tenant's quota 'workbench-quota' has requests.nvidia.com/gpu=8 with 8 in use"
            ) in listing, listing

    # %paddle_stop on a queued job removes it.
    assert "Stopped" in ada.run(f"%paddle_stop {third}", timeout=200).text
    custom = client.CustomObjectsApi(control_plane.api_client())
    names = [j["metadata"]["name"] for j in custom.list_namespaced_custom_object(
        *TRAINER, tenant.namespace, "trainjobs")["items"]]
    assert sorted(names) == sorted([first, second])

    # The running job ends: the queued one is admitted and starts.
    assert "Stopped" in ada.run(f"%paddle_stop {first}", timeout=200).text
    assert wait_until(lambda: _running_pods(control_plane, tenant, second) == 1, timeout=120), \
        _status(ada, second)
    assert wait_until(lambda: _state(ada, second) == "Running", timeout=60)
