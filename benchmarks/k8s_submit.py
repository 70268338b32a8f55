"""From cell execution to every worker pod Running, on the local control plane, for PaddleJob
and TrainJob; and from quota freed to a queued TrainJob Running.

    python benchmarks/k8s_submit.py [--runs 3] [--nodes 1 2 8]

Starts the test control plane (kube-apiserver, controller-manager, scheduler, KWOK, the
training-operator, JobSet, Kubeflow Trainer v2 and Kueue; see deploy/controlplane), applies the
Paddle ClusterTrainingRuntime, provisions one tenant, and for each engine (`paddlejob`,
`trainjob`) and node count times, side by side in this one process tree:

- magic: `%%paddle_launch --nodes N --engine <engine> --detach` in an IPython shell holding the
  tenant's notebook token, until the N worker pods are all Running. Counts the HTTP requests
  the engine itself sent (preflight, submit, the panel's status polls).
- raw:   one create of the same manifest with the admin client (what `kubectl create` does),
  until the pods are Running.

Then, in a second tenant with a Kueue queue and 8 GPUs: a running 8-GPU TrainJob and a queued
one; the first is deleted and the time until the queued job's pod is Running is measured
(Kueue's admission, Trainer's JobSet, the pod), with the part until the first job's pod is gone.

Prints medians and the ratios magic/raw and TrainJob/PaddleJob. Pods are watched through a
separate admin client whose requests are not counted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "cluster")]


ENGINES = ("paddlejob", "trainjob")


def kind_facts(engine: str):
    """(the job kind's API, the label its controller puts on the job's pods)."""
    from launcher_magic.engines.cluster.engine import ClusterEngine
    from workbench_contract.jobkinds import job_kind

    adapter = ClusterEngine(kind=job_kind(engine)).adapter
    return adapter.kind.api, adapter.pod_job_label


def running_pods(core, namespace: str, job_id: str, engine: str = "paddlejob") -> int:
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"{kind_facts(engine)[1]}={job_id}").items
    return sum(1 for p in pods if p.status.phase == "Running"
               and not p.metadata.deletion_timestamp)


def wait_running(core, namespace: str, job_id: str, nodes: int, engine: str = "paddlejob",
                 timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while running_pods(core, namespace, job_id, engine) < nodes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id}: pods not Running after {timeout} s")
        time.sleep(0.05)


def delete_and_wait(core, custom, namespace: str, job_id: str,
                    engine: str = "paddlejob") -> None:
    api, label = kind_facts(engine)
    custom.delete_namespaced_custom_object(api.group, api.version, namespace, api.plural,
                                           job_id, propagation_policy="Foreground")
    while core.list_namespaced_pod(namespace, label_selector=f"{label}={job_id}").items:
        time.sleep(0.05)


def queue_latency(plane, core, custom, work: Path) -> tuple[float, float]:
    """(seconds from deleting the running job until its pod is gone, until the queued job's
    pod is Running), in a queued tenant with 8 GPUs."""
    from tenancy import provision, tenant_data

    from hub_config.tenants import Tenant
    from launcher_magic.core.jobdir import JobDir
    from launcher_magic.core.spec import LaunchOptions, build_spec
    from launcher_magic.engines.cluster.objects import ClusterSettings
    from launcher_magic.engines.cluster.trainjob import build_trainjob
    from workbench_contract.cluster import LOCAL_QUEUE, TRAINJOB
    from workbench_contract.environment import Limits, NotebookContext

    data = tenant_data(f"qb{uuid.uuid4().hex[:6]}", gpus=8)
    data["queue"] = {"cohort": f"bench-{uuid.uuid4().hex[:6]}", "borrowing_limit": {"gpus": 0}}
    tenant = Tenant.from_dict(data, strict=True)
    provision(plane, tenant, hub_namespace="jupyterhub")
    ids = []
    for name in ("holder", "waiter"):
        spec = build_spec(LaunchOptions(nodes=1, gpus=8, name=name), "x = 1\n",
                          NotebookContext(namespace=tenant.namespace, tenant=tenant.name,
                                          user="bench", limits=Limits(max_runtime_seconds=3600)))
        manifest = build_trainjob(spec, JobDir(work / "queued" / spec.job_id),
                                  ClusterSettings(namespace=tenant.namespace,
                                                  image=tenant.images[0].image),
                                  queue=LOCAL_QUEUE)
        custom.create_namespaced_custom_object(TRAINJOB.group, TRAINJOB.version,
                                               tenant.namespace, TRAINJOB.plural, manifest)
        ids.append(spec.job_id)
        if name == "holder":
            wait_running(core, tenant.namespace, spec.job_id, 1, "trainjob")
    time.sleep(2)  # the waiter is in the queue, not admitted
    assert running_pods(core, tenant.namespace, ids[1], "trainjob") == 0
    start = time.perf_counter()
    delete_and_wait(core, custom, tenant.namespace, ids[0], "trainjob")
    freed = time.perf_counter() - start
    wait_running(core, tenant.namespace, ids[1], 1, "trainjob")
    running = time.perf_counter() - start
    delete_and_wait(core, custom, tenant.namespace, ids[1], "trainjob")  # its 8 GPUs back
    return freed, running


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1, 2, 8])
    args = parser.parse_args()

    import k8s_plane
    from kubernetes import client
    from tenancy import provision

    from hub_config.tenants import load_tenants
    from launcher_magic.core.jobdir import JobDir
    from launcher_magic.core.spec import LaunchOptions, build_spec
    from launcher_magic.engines.cluster.objects import ClusterSettings
    from launcher_magic.engines.cluster.paddlejob import build_paddlejob
    from launcher_magic.engines.cluster.trainjob import build_trainjob
    from workbench_contract.cluster import TRAINING_RUNTIME
    from workbench_contract.environment import NotebookContext

    bin_dir, error = k8s_plane.build_control_plane()
    if bin_dir is None:
        print(f"cannot build the control plane: {error}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="k8s-bench-"))
    plane = k8s_plane.ControlPlane(bin_dir, work / "plane")
    plane.start()
    try:
        tenant = load_tenants(ROOT / "hub_config" / "tenants.example.yaml").get("vision")
        tenant = replace(tenant, namespace=f"wb-bench-{uuid.uuid4().hex[:6]}")
        provision(plane, tenant, hub_namespace="jupyterhub")
        admin = plane.api_client()
        core, custom = client.CoreV1Api(admin), client.CustomObjectsApi(admin)
        from k8s_addons import paddle_runtimes

        for runtime in paddle_runtimes():  # the shipped runtime and its copy per --max-restarts
            custom.create_cluster_custom_object(
                TRAINING_RUNTIME.group, TRAINING_RUNTIME.version, TRAINING_RUNTIME.plural,
                runtime)
        # The user's own notebook account, as the hub makes it at the first spawn.
        from tenancy import notebook_user

        from hub_config.cluster_policy.identities import user_service_account

        notebook_user(plane, tenant, "bench")
        kubeconfig = plane.service_account_kubeconfig(tenant.namespace,
                                                      user_service_account(tenant, "bench"))

        import os

        os.environ.update({
            "KUBECONFIG": str(kubeconfig), "PADDLE_WORKBENCH_ENGINE": "paddlejob",
            "PADDLE_WORKBENCH_NAMESPACE": tenant.namespace, "PADDLE_WORKBENCH_TENANT": "vision",
            "PADDLE_WORKBENCH_USER": "bench",
            "PADDLE_WORKBENCH_MAX_RUNTIME_SECONDS": str(tenant.job_limits.max_runtime),
            "PADDLE_WORKBENCH_IMAGE": tenant.images[0].image,
            "PADDLE_WORKBENCH_JOBS_DIR": str(work / "jobs"), "PADDLE_WORKBENCH_PANEL": "text",
        })
        from IPython.testing.globalipapp import start_ipython

        start_ipython()
        from IPython import get_ipython

        shell = get_ipython()
        shell.run_line_magic("load_ext", "launcher_magic")
        from launcher_magic.kernel.magics import launcher

        counted = {"n": 0}
        for name in ENGINES:
            rest = launcher(shell).engine(name).api.core.api_client.rest_client

            def counting(*a, _original=rest.request, **kw):
                counted["n"] += 1
                return _original(*a, **kw)

            rest.request = counting
        # First, on a fresh plane: quota freed -> the queued TrainJob Running.
        freed, running = zip(*(queue_latency(plane, core, custom, work)
                               for _ in range(args.runs)), strict=True)
        results: dict[tuple[str, str, int], list[tuple[float, int]]] = {}
        import contextlib
        import io

        for nodes in args.nodes:
            for run in range(args.runs):
                for engine in ENGINES:
                    api, _ = kind_facts(engine)
                    name = f"m{engine[0]}{nodes}r{run}"
                    counted["n"] = 0
                    start = time.perf_counter()
                    with contextlib.redirect_stdout(io.StringIO()):
                        shell.run_cell_magic("paddle_launch", f"--engine {engine} --nodes "
                                             f"{nodes} --name {name} --detach", "x = 1\n")
                    job_id = next(p.name for p in (work / "jobs").iterdir()
                                  if p.name.startswith(name + "-"))
                    wait_running(core, tenant.namespace, job_id, nodes, engine)
                    results.setdefault(("magic", engine, nodes), []).append(
                        (time.perf_counter() - start, counted["n"]))
                    with contextlib.redirect_stdout(io.StringIO()):
                        shell.run_line_magic("paddle_stop", job_id)

                    spec = build_spec(LaunchOptions(nodes=nodes, name=f"r{engine[0]}{nodes}r{run}"),
                                      "x = 1\n", NotebookContext.from_env())
                    build = build_paddlejob if engine == "paddlejob" else build_trainjob
                    manifest = build(spec, JobDir(work / "raw" / spec.job_id),
                                     ClusterSettings(namespace=tenant.namespace,
                                                     image=tenant.images[0].image))
                    start = time.perf_counter()
                    custom.create_namespaced_custom_object(api.group, api.version,
                                                           tenant.namespace, api.plural, manifest)
                    wait_running(core, tenant.namespace, spec.job_id, nodes, engine)
                    results.setdefault(("raw", engine, nodes), []).append(
                        (time.perf_counter() - start, 1))
                    delete_and_wait(core, custom, tenant.namespace, spec.job_id, engine)
                    magic = results[("magic", engine, nodes)][-1]
                    print(f"{engine} nodes={nodes} run={run + 1}: magic {magic[0]:.2f}s "
                          f"({magic[1]} requests), raw "
                          f"{results[('raw', engine, nodes)][-1][0]:.2f}s", flush=True)

        print(f"\n{'engine':>10} {'nodes':>5} {'magic s':>8} {'requests':>9} {'raw s':>7} "
              f"{'magic/raw':>10}")
        medians = {}
        for nodes in args.nodes:
            for engine in ENGINES:
                magic = statistics.median(t for t, _ in results[("magic", engine, nodes)])
                requests = statistics.median(n for _, n in results[("magic", engine, nodes)])
                raw = statistics.median(t for t, _ in results[("raw", engine, nodes)])
                medians[engine, nodes] = magic
                print(f"{engine:>10} {nodes:>5} {magic:>8.2f} {requests:>9.0f} {raw:>7.2f} "
                      f"{magic / raw:>9.2f}x")
        for nodes in args.nodes:
            print(f"TrainJob/PaddleJob cell-to-Running, {nodes} nodes: "
                  f"{medians['trainjob', nodes] / medians['paddlejob', nodes]:.2f}x")
        print("\nraw = one create request by an admin client; requests = HTTP requests the "
              "magic's engine sent until every pod ran")

        print(f"\nqueued TrainJob: holder deleted -> its pod gone {statistics.median(freed):.2f}s,"
              f" -> the queued job's pod Running {statistics.median(running):.2f}s "
              f"(median of {args.runs})")
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
