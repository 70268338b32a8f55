"""Watching instead of polling, on the real API server: streams that drop, versions that expire.

- A `SharedInformer` (launcher_magic/engines/cluster/informer.py) reaches the API server
  through `cut_proxy.CutProxy`, which cuts its connections for real. After a cut it watches again
  from the last resourceVersion (no new list) and its cache holds what changed meanwhile,
  deletions included.
- 410 Gone comes from the API server itself: the informer is made to resume from a version the
  server's watch cache no longer holds ("too old resource version"), and it lists again.
- A kernel whose engine watches through the proxy runs a blocking `%%paddle_launch`; its pods
  restart once and then fail while the test cuts the engine's streams, and the text panel shows
  every state the job went through, in order, and status.json ends Failed.

Nothing here times anything: waits end when a state is reached (`wait_until`).
"""

from __future__ import annotations

import functools
import re

import pytest

from launcher_magic.engines.cluster.informer import SharedInformer
from tests.launcher_magic.support import KernelSession, wait_until

JOB_API = "paddlejob"  # the conftest's `tenant`: its events are watched too
OUTCOME = "workbench.test/outcome"
LABELS = {"app": "watched"}



@pytest.fixture
def informer(control_plane, namespace, proxy, tmp_path):
    """A started informer on the test namespace's ConfigMaps labelled app=watched, talking to the
    API server through the proxy (as admin); stopped afterwards."""
    from kubernetes import client

    api = control_plane.api_client(proxy.kubeconfig(control_plane.kubeconfig,
                                                    tmp_path / "proxied.kubeconfig"))
    core = client.CoreV1Api(api)
    made = SharedInformer(f"configmaps of {namespace}",
                          functools.partial(core.list_namespaced_config_map, namespace),
                          label_selector="app=watched", first_backoff=0.2, max_backoff=1.0)
    made.start()
    assert made.wait_synced(60), made.stats
    yield made
    made.stop()


def _admin_core(plane):
    from kubernetes import client

    return client.CoreV1Api(plane.api_client())


def _configmap(name: str, value: str = "1") -> dict:
    return {"metadata": {"name": name, "labels": LABELS}, "data": {"value": value}}


def _cached(informer) -> dict[str, str]:
    return {obj["metadata"]["name"]: (obj.get("data") or {}).get("value")
            for obj in informer.items()}


def test_a_dropped_stream_resumes_from_its_version_without_listing(control_plane, namespace,
                                                                    informer, proxy):
    core = _admin_core(control_plane)
    for name in ("a", "b"):
        core.create_namespaced_config_map(namespace, _configmap(name))
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "other"}})  # unlabelled
    assert wait_until(lambda: _cached(informer) == {"a": "1", "b": "1"})
    watches = informer.stats.watches

    assert proxy.down() >= 1  # the open watch is cut, and the server cannot be reached
    core.delete_namespaced_config_map("a", namespace)
    core.patch_namespaced_config_map("b", namespace, {"data": {"value": "2"}})
    core.create_namespaced_config_map(namespace, _configmap("c"))
    assert wait_until(lambda: informer.stats.errors >= 1)  # it tried while the server was away
    proxy.up()

    assert wait_until(lambda: _cached(informer) == {"b": "2", "c": "1"}), _cached(informer)
    assert informer.stats.lists == 1  # resumed from its resourceVersion: no second list
    assert informer.stats.gone == 0
    assert informer.stats.watches > watches


def test_a_stream_cut_while_open_loses_nothing(control_plane, namespace, informer, proxy):
    """A cut with the server still reachable: the informer watches again at once."""
    core = _admin_core(control_plane)
    for round_ in range(3):
        assert wait_until(lambda: proxy.cut() >= 1)
        core.create_namespaced_config_map(namespace, _configmap(f"n{round_}"))
    assert wait_until(lambda: set(_cached(informer)) == {"n0", "n1", "n2"}), _cached(informer)
    assert informer.stats.lists == 1


def test_a_version_the_server_no_longer_has_makes_it_list_again(control_plane, namespace,
                                                                 informer, proxy):
    core = _admin_core(control_plane)
    core.create_namespaced_config_map(namespace, _configmap("kept"))
    core.create_namespaced_config_map(namespace, _configmap("doomed"))
    assert wait_until(lambda: set(_cached(informer)) == {"kept", "doomed"})

    proxy.down()
    assert wait_until(lambda: informer.stats.errors >= 1)  # backing off, not watching
    # As if it had been away long enough for the server's history to move past its version:
    # "1" is older than anything the API server's watch cache holds, so the server answers 410.
    informer.resource_version = "1"
    core.delete_namespaced_config_map("doomed", namespace)
    core.create_namespaced_config_map(namespace, _configmap("new"))
    proxy.up()

    assert wait_until(lambda: informer.stats.gone == 1)
    assert wait_until(lambda: _cached(informer) == {"kept": "1", "new": "1"}), _cached(informer)
    assert informer.stats.lists == 2  # the first, and the one after the 410
    # And it goes on watching from the new list's version.
    core.patch_namespaced_config_map("kept", namespace, {"data": {"value": "3"}})
    assert wait_until(lambda: _cached(informer).get("kept") == "3")
    assert informer.stats.lists == 2


# -- the engine and its panel ------------------------------------------------------------------

@pytest.fixture
def proxied_kernel(tenant, proxy, notebook_kernel):
    """A kernel as ada's notebook runs it (the hub's environment, her own token), whose API
    server address is the proxy's."""
    return notebook_kernel(tenant, proxy=proxy)


def _pods(plane, namespace: str, job_id: str):
    return _admin_core(plane).list_namespaced_pod(
        namespace, label_selector=f"training.kubeflow.org/job-name={job_id}").items


def _running(plane, namespace: str, job_id: str) -> set[str]:
    return {p.metadata.uid for p in _pods(plane, namespace, job_id)
            if p.status.phase == "Running" and not p.metadata.deletion_timestamp}


def _fail(plane, namespace: str, pod: str, code: int) -> None:
    _admin_core(plane).patch_namespaced_pod(pod, namespace, {"metadata": {"annotations": {
        OUTCOME: "failed", "workbench.test/exit-code": str(code)}}})


def test_the_panel_shows_every_state_across_dropped_streams(control_plane, tenant, proxy,
                                                            proxied_kernel):
    kernel, namespace = proxied_kernel, tenant.namespace
    msg_id = kernel.execute_async(
        "%%paddle_launch --nodes 2 --gpus 1 --name flaky --max-restarts 1\nx = 1\n")
    jobs = kernel.home / "jobs"
    job_id = wait_until(lambda: next((p.name for p in jobs.iterdir()
                                      if p.name.startswith("flaky-")), None), timeout=120)
    assert job_id, "the job directory never appeared"
    assert wait_until(lambda: len(_running(control_plane, namespace, job_id)) == 2, timeout=120)
    first = _running(control_plane, namespace, job_id)

    proxy.cut()  # every stream of the kernel's engine drops, and it resumes
    _fail(control_plane, namespace, f"{job_id}-worker-1", 137)  # killed: restarted
    assert wait_until(lambda: len(_running(control_plane, namespace, job_id) - first) >= 1
                      and len(_running(control_plane, namespace, job_id)) == 2, timeout=120)
    proxy.cut()
    _fail(control_plane, namespace, f"{job_id}-worker-1", 1)  # the code's own failure: fails

    reply = kernel.client.get_shell_msg(timeout=300)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kernel.client.get_shell_msg(timeout=300)
    text = _stream_text(kernel, msg_id)
    states = [match.group(1) for match in re.finditer(
        rf"^Paddle job {re.escape(job_id)}: (\w+)", text, re.MULTILINE)]
    shown = [state for n, state in enumerate(states) if n == 0 or states[n - 1] != state]
    assert shown[-1] == "Failed", text
    assert "Restarting" in shown, text
    restarting = shown.index("Restarting")
    assert "Running" in shown[:restarting], text  # it ran before it restarted...
    assert "Running" in shown[restarting:], text  # ...and ran again before it failed
    assert proxy.cut_connections >= 2
    # It watched (one list per kind, then resumed after each cut), it did not poll.
    counts = kernel.run(
        "from launcher_magic.kernel.magics import launcher\n"
        "for kinds in launcher(get_ipython()).engine('paddlejob').watch_stats().values():\n"
        "    for kind, stats in sorted(kinds.items()):\n"
        "        print('WATCH', kind, stats.lists, stats.watches, stats.gone)\n")
    watched = {line.split()[1]: tuple(map(int, line.split()[2:]))
               for line in counts.text.splitlines() if line.startswith("WATCH ")}
    assert set(watched) == {"events", "jobs", "pods"}, counts.text
    for kind, (lists, watches, gone) in watched.items():
        assert lists == 1 + gone and watches >= 2, (kind, counts.text)
    status = (jobs / job_id / "status.json").read_text()
    assert '"state": "Failed"' in status and '"restarts": 1' in status


def _stream_text(kernel: KernelSession, msg_id: str) -> str:
    """Everything the cell `msg_id` printed, from the kernel's iopub channel."""
    chunks = []
    while True:
        msg = kernel.client.get_iopub_msg(timeout=60)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            chunks.append(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(chunks)
