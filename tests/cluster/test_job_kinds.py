"""A third job kind, registered from this test, runs through `%%paddle_launch` on the control plane.

The kind (tests/cluster/toy_kind/: a Kubernetes Indexed Job, one pod per node) is its own three
files and one entry point, written here into a folder put on the Python path of this process
(where `workbench apply` renders the tenant's bundle) and of the notebook's kernel. Nothing else
of the workbench names it, and yet:
- the tenant's bundle lets its notebooks run Jobs (the notebook Role), counts them in the quota
  and holds them to the kind's own admission rules;
- the tenant's hub environment names the kind as its engine, and a blocking cell runs a 2-node
  Job to Succeeded, its panel live; a detached one is stopped with `%paddle_stop`, pods and all;
- the API server refuses, by the kind's own rule, a Job that is not Indexed, asked by the
  user's own account.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from toy_kind import TOY, registration

from tests.launcher_magic.support import wait_until
from workbench_contract.jobkinds import job_kinds

JOB_API = TOY.name  # the conftest's `tenant` uses the toy kind
OUTCOME = "workbench.test/outcome"


@pytest.fixture(autouse=True)
def toy_kind_registered(tmp_path):
    """The kind's one registration, on the Python path of this process and of the kernels it
    starts (before the tenant is provisioned: autouse fixtures come first); gone afterwards."""
    folder = registration(tmp_path / "registered")
    kinds_home = str(Path(__file__).resolve().parent)  # where the `toy_kind` package is
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        patch.setenv("PYTHONPATH", os.pathsep.join(
            [str(folder), kinds_home, *filter(None, [os.environ.get("PYTHONPATH")])]))
        assert job_kinds()[TOY.name] == TOY
        yield
    assert TOY.name not in job_kinds()


def _admin(plane):
    from kubernetes import client

    api = plane.api_client()
    return (client.CoreV1Api(api), client.BatchV1Api(api),
            client.RbacAuthorizationV1Api(api))


def _job_pods(plane, namespace: str, job_id: str):
    core, _, _ = _admin(plane)
    return core.list_namespaced_pod(
        namespace, label_selector=f"batch.kubernetes.io/job-name={job_id}").items


def _only_job(home: Path, name: str) -> str:
    (job,) = [p.name for p in (home / "jobs").iterdir() if p.name.startswith(name + "-")]
    return job


def test_the_tenants_bundle_knows_the_new_kind(control_plane, tenant):
    core, _, rbac = _admin(control_plane)
    role = rbac.read_namespaced_role("workbench-notebook", tenant.namespace)
    jobs = [r for r in role.rules if r.api_groups == ["batch"] and r.resources == ["jobs"]]
    assert [sorted(r.verbs) for r in jobs] == [["create", "delete", "get", "list", "watch"]]
    quota = core.read_namespaced_resource_quota("workbench-quota", tenant.namespace)
    assert quota.spec.hard["count/jobs.batch"] == str(tenant.quota.jobs)


def test_a_cell_runs_and_stops_as_the_new_kind(control_plane, tenant, notebook_kernel):
    kernel = notebook_kernel(tenant, "ada")  # no outcome: KWOK keeps the pods Running
    result = kernel.run("%%paddle_launch --nodes 2 --name stay --detach\nx = 1\n")
    assert result.error is None, result.text
    staying = _only_job(kernel.home, "stay")
    assert wait_until(lambda: len([p for p in _job_pods(control_plane, tenant.namespace, staying)
                                   if p.status.phase == "Running"]) == 2, timeout=120)
    stopped = kernel.run(f"%paddle_stop {staying}", timeout=200)
    assert f"Job {staying}: Stopped." in stopped.text, stopped.text
    _, batch, _ = _admin(control_plane)
    assert batch.list_namespaced_job(tenant.namespace).items == []
    assert _job_pods(control_plane, tenant.namespace, staying) == []

    succeed = {OUTCOME: "succeeded", f"{OUTCOME}-delay": "3s"}
    set_outcome = ("from launcher_magic.kernel.magics import launcher\n"
                   f"launcher().engine({TOY.name!r}).pod_annotations = {succeed!r}\n")
    assert kernel.run(set_outcome).error is None
    result = kernel.run("%%paddle_launch --nodes 2 --name toy\nprint('hi')\n", timeout=300)
    assert result.error is None, result.text
    states = [line.split(": ", 1)[1].split(" ")[0] for line in result.text.splitlines()
              if line.startswith("Paddle job toy-")]
    assert "Running" in states and states[-1] == "Succeeded", result.text
    job_id = _only_job(kernel.home, "toy")
    status = json.loads((kernel.home / "jobs" / job_id / "status.json").read_text())
    assert status["state"] == "Succeeded" and [n["state"] for n in status["nodes"]] == [
        "Succeeded", "Succeeded"]
    job = batch.read_namespaced_job(job_id, tenant.namespace)
    assert (job.spec.completion_mode, job.spec.completions, job.spec.parallelism) == (
        "Indexed", 2, 2)
    assert job.metadata.labels["workbench.paddle.org/user"] == "ada"
    listing = kernel.run("%paddle_jobs")
    row = next(line for line in listing.text.splitlines() if line.startswith(job_id))
    assert TOY.name in row and "Succeeded" in row, listing.text


def test_the_kinds_own_rule_refuses_a_job_that_is_not_indexed(control_plane, tenant):
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from tenancy import notebook_user

    ada = client.BatchV1Api(notebook_user(control_plane, tenant, "ada"))
    pod = {"restartPolicy": "Never", "automountServiceAccountToken": False,
           "securityContext": {"runAsNonRoot": True, "runAsUser": 1000,
                               "seccompProfile": {"type": "RuntimeDefault"}},
           "containers": [{"name": "node", "image": tenant.images[0].image,
                           "securityContext": {"allowPrivilegeEscalation": False,
                                               "capabilities": {"drop": ["ALL"]}}}]}
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "plain", "labels": {"workbench.paddle.org/user": "ada"}},
           "spec": {"parallelism": 2, "completions": 2, "activeDeadlineSeconds": 600,
                    "template": {"metadata": {"labels": {"workbench.paddle.org/job": "plain"}},
                                 "spec": pod}}}
    def refused() -> str:
        try:
            ada.create_namespaced_job(tenant.namespace, job, dry_run="All")
        except ApiException as err:
            return f"{err.status} {err.body}"
        return ""

    # The kind's policy reaches the API server's admission chain through an informer.
    said = wait_until(refused, timeout=60)
    policy = client.AdmissionregistrationV1Api(control_plane.api_client()) \
        .read_validating_admission_policy(f"workbench-{tenant.name}-jobs")
    assert said.startswith("422 "), (said, policy.status)
    assert "workbench rule indexed: a Job in tenant vision is Indexed" in said
    job["spec"]["completionMode"] = "Indexed"  # what the rule asks for: now admitted
    ada.create_namespaced_job(tenant.namespace, job, dry_run="All")
