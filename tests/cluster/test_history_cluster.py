"""`%paddle_jobs` on the real control plane: GPU-hours of every user of the tenant, from what
each PaddleJob held (Worker replicas x the GPU limit x startTime to completionTime).

Ada's kernel (the hub's environment, the tenant's notebook token) lists the PaddleJobs of her
namespace; Bob, another user of the tenant, runs a job from his own notebook context with the
same engine. The figures are checked against the PaddleJobs as the API server holds them.
"""

from __future__ import annotations

import json
from datetime import datetime

from launcher_magic.core.jobdir import JobDir, JobHandle
from launcher_magic.core.spec import LaunchOptions, build_spec
from launcher_magic.engines import load_engine
from launcher_magic.kernel.history import format_hours
from tests.hub_config.hub_env import notebook_env
from tests.launcher_magic.support import wait_until
from workbench_contract.environment import NotebookContext

JOB_API = "paddlejob"  # the conftest's `tenant`: training-operator v1
OUTCOME = "workbench.test/outcome"
SUCCEED = {OUTCOME: "succeeded", f"{OUTCOME}-delay": "6s"}


def _held(paddlejob: dict) -> float:
    """GPU-hours of a finished PaddleJob, read straight from the object."""
    worker = paddlejob["spec"]["paddleReplicaSpecs"]["Worker"]
    (container,) = worker["template"]["spec"]["containers"]
    gpus = int(container["resources"]["limits"]["nvidia.com/gpu"])
    start, end = (datetime.fromisoformat(paddlejob["status"][key].replace("Z", "+00:00"))
                  for key in ("startTime", "completionTime"))
    return worker["replicas"] * gpus * (end - start).total_seconds() / 3600


def _bobs_job(plane, tenant, folder) -> str:
    """Bob submits 1 node x 2 GPUs from his own notebook context, with his own account's token
    (each user's notebook runs as their own service account)."""
    from tenancy import notebook_user

    from hub_config.cluster_policy.identities import user_service_account

    context = NotebookContext.from_env(notebook_env(tenant, "bob"))
    notebook_user(plane, tenant, "bob")
    engine = load_engine(
        "paddlejob", context=context, pod_annotations=SUCCEED,
        kubeconfig=str(plane.service_account_kubeconfig(
            tenant.namespace, user_service_account(tenant, "bob"))))
    spec = build_spec(LaunchOptions(nodes=1, gpus=2, name="bobs"), "x = 1\n", context)
    engine.preflight(spec)
    engine.submit(JobHandle(spec, JobDir.create(folder, spec, "x = 1\n")))
    return spec.job_id


def test_tenant_gpu_hours_are_what_each_paddlejob_held(control_plane, tenant, notebook_kernel,
                                                        tmp_path):
    from kubernetes import client

    kernel = notebook_kernel(tenant, "ada", SUCCEED)
    bobs = _bobs_job(control_plane, tenant, tmp_path / "bob-jobs")
    result = kernel.run("%%paddle_launch --nodes 2 --gpus 1 --name mine\nprint('hi')\n",
                        timeout=300)
    assert result.error is None and "Succeeded" in result.text, result.text
    (mine,) = [p.name for p in (kernel.home / "jobs").iterdir()]

    custom = client.CustomObjectsApi(control_plane.api_client())

    def finished():
        jobs = custom.list_namespaced_custom_object("kubeflow.org", "v1", tenant.namespace,
                                                    "paddlejobs")["items"]
        done = {j["metadata"]["name"]: j for j in jobs
                if (j.get("status") or {}).get("completionTime")}
        return done if set(done) == {mine, bobs} else None

    paddlejobs = wait_until(finished, timeout=180)
    assert paddlejobs, "the two PaddleJobs never completed"
    expected = {name: _held(job) for name, job in paddlejobs.items()}
    assert all(hours > 0 for hours in expected.values())

    # The engine's records, as the notebook's service account lists them.
    listed = kernel.run(
        "import json, time\n"
        "from launcher_magic.kernel.magics import launcher\n"
        "from launcher_magic.kernel.history import hours_in_period\n"
        "usage = launcher().engine('paddlejob').tenant_usage(None)\n"
        "print(json.dumps({r.job_id: [r.user, r.nodes, r.gpus_per_node,\n"
        "                  hours_in_period(r, None, time.time())] for r in usage.records}))\n")
    assert listed.error is None, listed.text
    records = json.loads(listed.text.strip().splitlines()[-1])
    assert {name: record[:3] for name, record in records.items()} == {
        mine: ["ada", 2, 1], bobs: ["bob", 1, 2]}
    for name, hours in expected.items():
        assert abs(records[name][3] - hours) < 1e-9, (name, records[name], hours)

    # What Ada sees: her job's row, each user's total and the tenant's.
    table = kernel.run("%paddle_jobs --all")
    assert table.error is None, table.text
    (row,) = [line for line in table.text.splitlines() if line.startswith(mine)]
    assert "paddlejob" in row and "Succeeded" in row and "2 x 1" in row
    assert f"  {format_hours(expected[mine])}  " in row
    total = format_hours(expected[mine] + expected[bobs])
    assert (f"GPU-hours all time: you (ada) {format_hours(expected[mine])}; "
            f"tenant vision {total} (2 users)") in table.text
    assert f"  bob  {format_hours(expected[bobs])}" in table.text
    assert "a stopped job is deleted at once" in table.text
