"""From cell execution to every worker pod Running, on the local control plane.

    python benchmarks/k8s_submit.py [--runs 3] [--nodes 1 2 8]

Starts the test control plane (kube-apiserver, controller-manager, scheduler, KWOK, the
training-operator; see deploy/controlplane), provisions one tenant, and for each node count times,
side by side in this one process tree:

- magic: `%%paddle_launch --nodes N --engine kubernetes --detach` in an IPython shell holding the
  tenant's notebook token, until the operator's N worker pods are all Running. Counts the HTTP
  requests the engine itself sent (preflight, submit, the panel's status polls).
- raw:   one create of the same PaddleJob manifest with the admin client (what `kubectl create`
  does), until the pods are Running.

Prints medians per node count and the ratios magic/raw. Pods are watched through a separate admin
client whose requests are not counted.
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


def running_pods(core, namespace: str, job_id: str) -> int:
    pods = core.list_namespaced_pod(
        namespace, label_selector=f"training.kubeflow.org/job-name={job_id}").items
    return sum(1 for p in pods if p.status.phase == "Running")


def wait_running(core, namespace: str, job_id: str, nodes: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while running_pods(core, namespace, job_id) < nodes:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{job_id}: pods not Running after {timeout} s")
        time.sleep(0.05)


def delete_and_wait(core, custom, namespace: str, job_id: str) -> None:
    custom.delete_namespaced_custom_object("kubeflow.org", "v1", namespace, "paddlejobs", job_id,
                                           propagation_policy="Foreground")
    while core.list_namespaced_pod(
            namespace, label_selector=f"training.kubeflow.org/job-name={job_id}").items:
        time.sleep(0.2)


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
    from launcher_magic.engines.kubernetes.paddlejob import ClusterSettings, build_paddlejob
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
        # The user's own notebook account, as the hub makes it at the first spawn.
        from tenancy import notebook_user

        from hub_config.cli.provisioning import user_service_account

        notebook_user(plane, tenant, "bench")
        kubeconfig = plane.service_account_kubeconfig(tenant.namespace,
                                                      user_service_account(tenant, "bench"))

        import os

        os.environ.update({
            "KUBECONFIG": str(kubeconfig), "PADDLE_WORKBENCH_ENGINE": "kubernetes",
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

        engine = launcher(shell).engine("kubernetes")
        core_engine, _ = engine._api()
        rest = core_engine.api_client.rest_client
        counted = {"n": 0}
        original = rest.request

        def counting(*a, **kw):
            counted["n"] += 1
            return original(*a, **kw)

        rest.request = counting

        results: dict[tuple[str, int], list[tuple[float, int]]] = {}
        import contextlib
        import io

        for nodes in args.nodes:
            for run in range(args.runs):
                name = f"m{nodes}r{run}"
                counted["n"] = 0
                start = time.perf_counter()
                with contextlib.redirect_stdout(io.StringIO()):
                    shell.run_cell_magic("paddle_launch", f"--nodes {nodes} --name {name} "
                                         "--detach", "x = 1\n")
                job_id = next(p.name for p in (work / "jobs").iterdir()
                              if p.name.startswith(name + "-"))
                wait_running(core, tenant.namespace, job_id, nodes)
                results.setdefault(("magic", nodes), []).append(
                    (time.perf_counter() - start, counted["n"]))
                with contextlib.redirect_stdout(io.StringIO()):
                    shell.run_line_magic("paddle_stop", job_id)

                spec = build_spec(LaunchOptions(nodes=nodes, name=f"r{nodes}r{run}"), "x = 1\n",
                                  NotebookContext.from_env())
                manifest = build_paddlejob(spec, JobDir(work / "raw" / spec.job_id),
                                           ClusterSettings(namespace=tenant.namespace,
                                                           image=tenant.images[0].image))
                start = time.perf_counter()
                custom.create_namespaced_custom_object("kubeflow.org", "v1", tenant.namespace,
                                                       "paddlejobs", manifest)
                wait_running(core, tenant.namespace, spec.job_id, nodes)
                results.setdefault(("raw", nodes), []).append((time.perf_counter() - start, 1))
                delete_and_wait(core, custom, tenant.namespace, spec.job_id)
                print(f"nodes={nodes} run={run + 1}: magic "
                      f"{results[('magic', nodes)][-1][0]:.2f}s "
                      f"({results[('magic', nodes)][-1][1]} requests), raw "
                      f"{results[('raw', nodes)][-1][0]:.2f}s", flush=True)

        print(f"\n{'nodes':>5} {'magic s':>8} {'requests':>9} {'raw s':>7} {'magic/raw':>10}")
        for nodes in args.nodes:
            magic = statistics.median(t for t, _ in results[("magic", nodes)])
            requests = statistics.median(n for _, n in results[("magic", nodes)])
            raw = statistics.median(t for t, _ in results[("raw", nodes)])
            print(f"{nodes:>5} {magic:>8.2f} {requests:>9.0f} {raw:>7.2f} {magic / raw:>9.2f}x")
        print("\nraw = one create request by an admin client; requests = HTTP requests the "
              "magic's engine sent until every pod ran")
    finally:
        plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
