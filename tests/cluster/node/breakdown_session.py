"""The real-node session of ``benchmarks/cluster_breakdown.py``; not a test (pytest runs it only
when named: ``pytest tests/cluster/node/breakdown_session.py``), and it asserts only that each
job succeeded, never a time.

Per job kind, in a tenant of its own on the real node: one untimed job (the image's pull), then
``BREAKDOWN_RUNS`` rounds of a bare pod and a timed 2-node cell; for TrainJobs each round also
runs the cell with ``--env WORKBENCH_PADDLE_LAUNCHER=1`` (each node runs Paddle's launcher, as
every node did before nodes forked their ranks). Each round appends one JSON line per
measurement to ``BREAKDOWN_OUT``: ``{"kind", "what": "bare"|"cell", "marks"}``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
from node_jobs import JOB_APIS, JOB_TIMEOUT, job_id_of, start_kernel, states
from pod_client import POD_TIMEOUT, core_api
from real_node import wait_for

from benchmarks.cluster_breakdown import BARE_POD, TIMED_CELL, observe
from workbench_contract.cluster import WORKLOAD
from workbench_contract.labels import LABEL_JOB
from workbench_contract.pod_security import DEFAULT_GID, DEFAULT_UID, restricted_security_contexts

CELL = "%%paddle_launch --nodes 2 --cpu {cpu} --memory {memory} --name {name}{options}\n"
MEMORY = "2Gi"
LAUNCHER = " --env WORKBENCH_PADDLE_LAUNCHER=1"
WAYS = {"trainjob": {"trainjob": "", "trainjob, Paddle's launcher": LAUNCHER},
        "paddlejob": {"paddlejob": ""}}


class Watches:
    """Watches on the namespace's jobs of one kind, Workloads and job pods, feeding `observe`
    per job id, from threads, until closed."""

    def __init__(self, control_plane, namespace: str, job_api: str):
        from kubernetes import client

        api = control_plane.api_client()
        custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
        group, version, plural = JOB_APIS[job_api]
        self.marks: dict[str, dict[str, float]] = {}
        self._lock, self._stop = threading.Lock(), threading.Event()
        sources = [
            ("job", lambda **kw: custom.list_namespaced_custom_object(
                group, version, namespace, plural, **kw),
             lambda o: o["metadata"]["name"]),
            ("workload", lambda **kw: custom.list_namespaced_custom_object(
                WORKLOAD.group, WORKLOAD.version, namespace, WORKLOAD.plural, **kw),
             lambda o: next(iter(o["metadata"].get("ownerReferences") or []), {}).get("name")),
            ("pod", lambda **kw: core.list_namespaced_pod(namespace, label_selector=LABEL_JOB,
                                                          **kw),
             lambda o: (o["metadata"].get("labels") or {}).get(LABEL_JOB)),
        ]
        self._threads = [threading.Thread(target=self._watch, args=source, daemon=True)
                         for source in sources]
        for thread in self._threads:
            thread.start()

    def _watch(self, what, list_call, job_of) -> None:
        from kubernetes import watch

        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a broken watch is started again
                for event in watch.Watch().stream(list_call, timeout_seconds=2):
                    obj, now = event["raw_object"], time.time()
                    job = job_of(obj)
                    if job:
                        with self._lock:
                            observe(self.marks.setdefault(job, {}), what, obj, now)
                    if self._stop.is_set():
                        return

    def of(self, job: str) -> dict[str, float]:
        with self._lock:
            return dict(self.marks.get(job, {}))

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


# What a forked node prints once it has met the others (launcher_magic.training.node_launch).
NODE_LINE = re.compile(r"node (\d+): Paddle imported after ([0-9.]+)s, the \d+ nodes met after "
                       r"([0-9.]+)s")


def node_figures(core, namespace: str, job_id: str) -> dict[str, float]:
    """From each pod's log, where a node forked its ranks: seconds from the node process's
    start to Paddle imported and to all nodes met."""
    figures = {}
    for pod in core.list_namespaced_pod(namespace, label_selector=f"{LABEL_JOB}={job_id}").items:
        with contextlib.suppress(Exception):
            for node, imported, met in NODE_LINE.findall(
                    core.read_namespaced_pod_log(pod.metadata.name, namespace)):
                figures[f"node {node}: Paddle imported"] = float(imported)
                figures[f"node {node}: nodes met"] = float(met)
    return figures


def bare_pod(core, namespace: str, image: str, name: str, cpu: str) -> dict[str, float]:
    """Create a pod of `image` that imports Paddle, with the CPU and memory of each of the
    cell's pods; its marks once it has succeeded."""
    amounts = {"cpu": cpu, "memory": MEMORY}
    pod_context, container_context = restricted_security_contexts(DEFAULT_UID, DEFAULT_GID)
    manifest = {"metadata": {"name": name}, "spec": {
        "securityContext": pod_context, "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "containers": [{"name": "bare", "image": image, "imagePullPolicy": "IfNotPresent",
                        "command": ["python", "-c", BARE_POD],
                        "resources": {"requests": amounts, "limits": amounts},
                        "securityContext": container_context}]}}
    created = time.time()
    core.create_namespaced_pod(namespace, manifest)
    phase = wait_for(lambda: core.read_namespaced_pod(name, namespace).status.phase
                     in ("Succeeded", "Failed") and core.read_namespaced_pod(
                         name, namespace).status.phase, POD_TIMEOUT, f"bare pod {name}")
    log = core.read_namespaced_pod_log(name, namespace)
    core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    assert phase == "Succeeded", log
    return {"created": created, **json.loads(log.strip().splitlines()[-1])}


@pytest.mark.parametrize("node_tenant", ["trainjob", "paddlejob"], indirect=True)
def test_breakdown(control_plane, real_node, node_tenant, notebook_kernel, cpu_image):
    out = Path(os.environ["BREAKDOWN_OUT"])
    runs, steps = int(os.environ["BREAKDOWN_RUNS"]), int(os.environ["BREAKDOWN_STEPS"])
    cpu = os.environ["BREAKDOWN_CPU"]
    tenant, home = node_tenant
    kernel = start_kernel(notebook_kernel, tenant, home)
    core = core_api(control_plane)
    cell = TIMED_CELL.format(steps=steps)
    watches = Watches(control_plane, tenant.namespace, tenant.job_api)
    try:
        for index in range(runs + 1):  # the first round pulls the image: not recorded
            bare = bare_pod(core, tenant.namespace, cpu_image, f"bare-{index}", cpu)
            for way, options in WAYS[tenant.job_api].items():
                name = f"b{index}{'l' if options else ''}"
                marks = {"shift_enter": time.time()}
                result = kernel.run(CELL.format(cpu=cpu, memory=MEMORY, name=name,
                                                options=options) + cell,
                                    timeout=JOB_TIMEOUT)
                marks["returned"] = time.time()
                assert result.error is None and states(result.text, name)[-1] == "Succeeded", (
                    result.text)
                job_id = job_id_of(home, name)
                marks.update(json.loads((home / "jobs" / job_id / "timing.json").read_text()))
                marks.update(watches.of(job_id))
                figures = node_figures(core, tenant.namespace, job_id)
                if index:
                    with out.open("a") as stream:
                        for what, recorded in (("bare", bare), ("cell", marks)):
                            stream.write(json.dumps({"kind": way, "what": what,
                                                     "marks": recorded}) + "\n")
                        stream.write(json.dumps({"kind": way, "what": "node",
                                                 "marks": figures}) + "\n")
    finally:
        watches.close()
