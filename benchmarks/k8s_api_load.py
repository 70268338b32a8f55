"""What live panels cost the API server: polling against watching, 50 jobs per job API, one run.

    python benchmarks/k8s_api_load.py [--jobs 50] [--window 120] [--warmup 180]
                                      [--watch-seconds 60] [--engines paddlejob,trainjob]

Starts the test control plane (kube-apiserver, controller-manager, scheduler, KWOK, the
training-operator, JobSet, Kubeflow Trainer and Kueue; see deploy/controlplane) and applies the
workbench's Paddle training runtimes. Then for each engine in turn (`paddlejob`: PaddleJobs;
`trainjob`: TrainJobs on the Paddle runtime, the tenants' default) it provisions a tenant of its
own (with room for the jobs, not queued) and submits `--jobs` one-node jobs as the tenant's
notebook account; KWOK keeps their pods Running. Then, one after the other, for `--window`
seconds of steady state each (after a warm-up):

- baseline: no panel (what the controllers, KWOK and the operators cost on their own);
- polling:  a kernel-like process showing a live panel of every job with the engine's
            `watch = False` (each refresh asks for the job, its pods and, for a PaddleJob, its
            events, for a TrainJob its JobSet, and a log tail);
- watching: the same with `watch = True` (one watch stream per kind for all jobs, resumed every
            `--watch-seconds`, and one log follow stream per panel).
The tenant is deleted before the next engine's turn.

Requests are counted by the API server itself: the increase of `apiserver_request_total` for
reads (get, list, watch) of the job objects (PaddleJobs; TrainJobs, JobSets, Kueue's Workloads),
pods (with their logs) and events over the window, less the baseline's; the engine's own count
of the HTTP requests it sent is printed beside it. A watch or log stream is counted by the server
when it ends, so the resumes inside the window are what it counts (the default
`--watch-seconds` is shorter than the engines' 300 to make them happen there). Counts, not
times: a loaded machine changes the figures only through the log streams' retries.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "cluster")]

# pods/log counts under pods
RESOURCES = ("paddlejobs", "trainjobs", "jobsets", "workloads", "pods", "events")
ENGINES = ("paddlejob", "trainjob")
READS = ("GET", "LIST", "WATCH", "WATCHLIST", "CONNECT")


def request_counts(plane) -> Counter:
    """`apiserver_request_total` of reads (get, list, watch) summed per resource (`RESOURCES`,
    pods/log apart), read from the API server's /metrics as admin."""
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    context.load_cert_chain(str(plane.layout.pki / "admin.crt"),
                            str(plane.layout.pki / "admin.key"))
    with urllib.request.urlopen(f"{plane.server}/metrics", timeout=30, context=context) as resp:
        text = resp.read().decode()
    counts: Counter = Counter()
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels, _, value = line.rpartition(" ")
        found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        # Reads only: what a panel asks. Writes (KWOK's pod status, the controllers' events) are
        # the cluster's own traffic, whatever the panels do.
        if found.get("resource") in RESOURCES and found.get("verb") in READS:
            name = found["resource"] + (f"/{found['subresource']}" if found.get("subresource")
                                        else "")
            counts[name] += float(value)
    return counts


def panel_process(args) -> int:
    """The kernel side of one phase: live panels for every job, counting its own requests."""
    from launcher_magic.core.jobdir import JobHandle, list_jobs
    from launcher_magic.engines import load_engine
    from launcher_magic.kernel.live import show
    from workbench_contract.environment import NotebookContext

    engine = load_engine(args.engine, context=NotebookContext.from_env(),
                         watch=args.phase == "watching", watch_seconds=args.watch_seconds)
    rest = engine.api.core.api_client.rest_client
    sent = {"n": 0}
    original = rest.request

    def counting(*a, **kw):
        sent["n"] += 1
        return original(*a, **kw)

    rest.request = counting
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):
        for path in list_jobs(Path(args.jobs_dir)):
            show(JobHandle.open(path.path), engine)
    time.sleep(args.warmup)
    print(f"WARM {sent['n']}", flush=True)
    time.sleep(args.window)
    print(f"DONE {sent['n']}", flush=True)
    os._exit(0)  # the panels' threads end with the process


def run_phase(plane, phase: str, args, env: dict) -> tuple[Counter, int]:
    """(server-counted requests per resource, engine-counted requests) over one window of
    `phase`."""
    if phase == "baseline":
        time.sleep(args.warmup)
        before = request_counts(plane)
        time.sleep(args.window)
        return request_counts(plane) - before, 0
    child = subprocess.Popen(
        [sys.executable, __file__, "--phase", phase, "--engine", args.engine,
         "--jobs-dir", args.jobs_dir,
         "--window", str(args.window), "--warmup", str(args.warmup),
         "--watch-seconds", str(args.watch_seconds)],
        env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        warm = child.stdout.readline().split()
        before = request_counts(plane)
        done = child.stdout.readline().split()
        after = request_counts(plane)
        if warm[:1] != ["WARM"] or done[:1] != ["DONE"]:
            raise RuntimeError(f"the {phase} panels failed: {warm} {done}")
        return after - before, int(done[1]) - int(warm[1])
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


def run_engine(plane, args) -> dict[str, float]:
    """Submit `args.jobs` jobs with engine `args.engine` in a tenant of their own, count the three
    phases and print them; returns the requests per job per minute of polling and watching.
    The tenant and its jobs are deleted afterwards."""
    from kubernetes import client
    from tenancy import deprovision, notebook_user, provision

    from hub_config.cluster_policy.identities import user_service_account
    from hub_config.tenants import load_tenants
    from hub_config.tenants.model import Quota
    from launcher_magic.core.jobdir import JobDir, JobHandle
    from launcher_magic.core.spec import LaunchOptions, build_spec
    from launcher_magic.engines import load_engine
    from workbench_contract.environment import NotebookContext

    tenant = load_tenants(ROOT / "hub_config" / "tenants.example.yaml").get("vision")
    room = args.jobs + 10
    tenant = replace(tenant, namespace=f"wb-load-{uuid.uuid4().hex[:6]}", job_api=args.engine,
                     queue=None, quota=Quota(gpus=8, cpu=str(4 * room), memory=f"{8 * room}Gi",
                                             pods=2 * room, jobs=room))
    provision(plane, tenant, hub_namespace="jupyterhub")
    try:
        notebook_user(plane, tenant, "load")
        kubeconfig = plane.service_account_kubeconfig(tenant.namespace,
                                                      user_service_account(tenant, "load"))
        args.jobs_dir = tempfile.mkdtemp(prefix=f"{args.engine}-jobs-", dir=args.work)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLE_WORKBENCH_")}
        env.update({
            "KUBECONFIG": str(kubeconfig), "PADDLE_WORKBENCH_ENGINE": args.engine,
            "PADDLE_WORKBENCH_NAMESPACE": tenant.namespace, "PADDLE_WORKBENCH_TENANT": "vision",
            "PADDLE_WORKBENCH_USER": "load",
            "PADDLE_WORKBENCH_MAX_RUNTIME_SECONDS": str(tenant.job_limits.max_runtime),
            "PADDLE_WORKBENCH_IMAGE": tenant.images[0].image,
            "PADDLE_WORKBENCH_JOBS_DIR": args.jobs_dir, "PADDLE_WORKBENCH_PANEL": "text",
            "PYTHONPATH": str(ROOT),
        })
        context = NotebookContext.from_env(env)
        submitter = load_engine(args.engine, context=context, watch=False,
                                kubeconfig=str(kubeconfig))
        for n in range(args.jobs):
            spec = build_spec(LaunchOptions(nodes=1, name=f"load{n}", engine=args.engine),
                              "x = 1\n", context)
            job = JobHandle(spec, JobDir.create(Path(args.jobs_dir), spec, "x = 1\n"))
            submitter.submit(job)
        core = client.CoreV1Api(plane.api_client())
        deadline = time.monotonic() + 600
        while True:
            pods = core.list_namespaced_pod(tenant.namespace,
                                            label_selector=submitter.adapter.pod_job_label).items
            running = sum(1 for p in pods if p.status.phase == "Running")
            if running >= args.jobs:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {running} of {args.jobs} pods Running after 600 s")
            time.sleep(1)
        print(f"\n== {args.engine}: {args.jobs} jobs running; {args.window:.0f} s counted per "
              "phase", flush=True)

        counted = {}
        for phase in ("baseline", "polling", "watching"):
            counted[phase] = run_phase(plane, phase, args, env)
            server, sent = counted[phase]
            print(f"{phase}: {sum(server.values()):.0f} requests counted by the API server "
                  f"({', '.join(f'{k} {v:.0f}' for k, v in sorted(server.items())) or 'none'}),"
                  f" {sent} sent by the engine", flush=True)
    finally:
        deprovision(plane, tenant)
    baseline = counted["baseline"][0]
    minutes = args.window / 60
    print(f"\n{'phase':9s} {'server':>8s} {'engine':>8s} {'per job per minute':>20s}")
    rates = {}
    for phase in ("polling", "watching"):
        server, sent = counted[phase]
        extra = sum((server - baseline).values())  # per resource, never below zero
        rates[phase] = extra / args.jobs / minutes
        print(f"{phase:9s} {extra:8.0f} {sent:8d} {rates[phase]:20.2f}")
    print(f"baseline  {sum(baseline.values()):8.0f} (reads by the controllers, KWOK, the "
          "operators; subtracted above)", flush=True)
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--window", type=float, default=120.0, help="seconds counted per phase")
    parser.add_argument("--warmup", type=float, default=180.0,
                        help="seconds before counting: past the log streams' first retries")
    parser.add_argument("--watch-seconds", type=int, default=60)
    parser.add_argument("--engines", default=",".join(ENGINES),
                        help="the job APIs to measure, comma-separated (default: both)")
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--jobs-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        return panel_process(args)
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or not engines:
        parser.error(f"--engines: {', '.join(unknown) or 'none given'}; choose from "
                     f"{', '.join(ENGINES)}")

    import k8s_addons
    import k8s_plane
    from kubernetes import client

    bin_dir, error = k8s_plane.build_control_plane()
    if bin_dir is None:
        print(f"cannot build the control plane: {error}")
        return 2
    work = Path(tempfile.mkdtemp(prefix="k8s-load-"))
    args.work = str(work)
    plane = k8s_plane.ControlPlane(bin_dir, work / "plane")
    plane.start()
    results = {}
    try:
        custom = client.CustomObjectsApi(plane.api_client())
        for runtime in k8s_addons.paddle_runtimes():
            custom.create_cluster_custom_object("trainer.kubeflow.org", "v1alpha1",
                                                "clustertrainingruntimes", runtime)
        for name in engines:
            args.engine = name
            results[name] = run_engine(plane, args)
    finally:
        plane.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nrequests per job per minute in steady state ({args.jobs} jobs with live panels "
          f"per engine, {args.window:.0f} s windows):")
    print(f"{'engine':10s} {'polling':>9s} {'watching':>9s} {'polling/watching':>17s}  target")
    for name, rates in results.items():
        ratio = (f"{rates['polling'] / rates['watching']:.0f}x" if rates["watching"]
                 else "no requests")
        met = "met" if rates["watching"] <= 1 else "NOT met"
        print(f"{name:10s} {rates['polling']:9.2f} {rates['watching']:9.2f} {ratio:>17s}  "
              f"<= 1 while watching: {met}")
    print(f"(watch resumed every {args.watch_seconds} s or sooner; KWOK serves no pod logs, so "
          "each panel's log stream is retried with a backoff of up to 120 s: the pods/log "
          "figure)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
