"""The trainjob engine watches instead of polling, on the real API server, Trainer, JobSet and Kueue.

The engine runs in the test process as a kernel runs it: the launch service (`Launcher`) with
the environment the hub's own spawner renders for ada and the token of her own notebook
account; its panels are the real text panels (`kernel.live.show`), each kept current by its
own thread. The tenant has a Kueue queue with 8 GPUs and nothing to borrow, so a second 8-GPU
job waits in it.

- Every state reaches the panels across a dropped stream and after a 410: the engine talks to
  the API server through `cut_proxy.CutProxy`; while the proxy refuses connections the blocking
  job fails and the queued one is admitted and runs (the watch resumes from its
  resourceVersion, no second list), then, after the informers are made to resume from a version
  the server no longer holds, the running job succeeds (410, list again). The panels show
  Running -> Failed and Queued -> Running -> Succeeded, and the failed job names its node's
  exit code although the streams came back one after the other.
- Live panels cost no request per job while nothing changes: every HTTP request the engine
  sends is recorded; once the controllers have settled (no watched object changed during three
  refreshes of every panel), while each panel refreshes five more times, running and queued
  jobs alike, the engine sends no request but the namespace's watch resumes, the log follow
  streams of the ranks shown and a JobSet read per change of its job; the queued jobs' place
  was read once for all of them. With `watch = False` the same refreshes ask the API server
  for every job, every time.

Nothing here times anything: waits end when a state or a count is reached (`wait_until`).
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from pathlib import Path

import pytest
from cut_proxy import CutProxy

from launcher_magic.core.spec import LaunchOptions
from tests.launcher_magic.support import wait_until

KUEUE = ("kueue.x-k8s.io", "v1beta2")
TRAINER = ("trainer.kubeflow.org", "v1alpha1")
OUTCOME = "workbench.test/outcome"
JOBSET_NAME = "jobset.sigs.k8s.io/jobset-name"


@pytest.fixture
def queued_tenant(control_plane, paddle_runtime):
    """A tenant whose queue holds 8 GPUs and may borrow none (a cohort of its own), provisioned;
    its namespace, policies and ClusterQueue are deleted afterwards."""
    from kubernetes import client
    from tenancy import deprovision, provision, tenant_data

    from hub_config.tenants import Tenants

    data = tenant_data(f"w{uuid.uuid4().hex[:6]}", gpus=8)
    data["queue"] = {"cohort": f"c-{uuid.uuid4().hex[:6]}", "borrowing_limit": {"gpus": 0}}
    (tenant,) = Tenants.from_dict({"tenants": [data]}, strict=True).tenants
    provision(control_plane, tenant, hub_namespace="jupyterhub")
    yield tenant
    deprovision(control_plane, tenant)
    client.CustomObjectsApi(control_plane.api_client()).delete_cluster_custom_object(
        *KUEUE, "clusterqueues", f"workbench-{tenant.name}")



class Notebook:
    """ada's launch service and trainjob engine, with every HTTP request the engine sends
    recorded as (method, url) and every `status` call counted per job."""

    def __init__(self, plane, tenant, home: Path, monkeypatch, proxy: CutProxy | None = None):
        from tenancy import notebook_user

        from hub_config.cluster_policy.identities import user_service_account
        from launcher_magic.kernel.launch import Launcher
        from tests.hub_config.hub_env import notebook_env

        notebook_user(plane, tenant, "ada")
        kubeconfig = plane.service_account_kubeconfig(
            tenant.namespace, user_service_account(tenant, "ada"))
        if proxy is not None:
            kubeconfig = proxy.kubeconfig(kubeconfig, home / "proxied.kubeconfig")
        (home / "jobs").mkdir(parents=True, exist_ok=True)
        env = notebook_env(tenant, "ada", home_mount_path=str(home))
        env.update({"PADDLE_WORKBENCH_JOBS_DIR": str(home / "jobs"),
                    "PADDLE_WORKBENCH_PANEL": "text"})
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        self.launcher = Launcher(env=env)
        self.engine = self.launcher.engine("trainjob")
        self.requests: list[tuple[str, str]] = []
        self.refreshes: Counter = Counter()
        rest = self.engine.api.core.api_client.rest_client
        send, lock = rest.request, threading.Lock()

        def recorded(method, url, *args, **kwargs):
            with lock:
                self.requests.append((method, url))
            return send(method, url, *args, **kwargs)

        rest.request = recorded
        status = self.engine.status

        def counted(job):
            self.refreshes[job.job_id] += 1
            return status(job)

        self.engine.status = counted
        self.panels = []

    def launch(self, name: str, gpus: int):
        job = self.launcher.launch(LaunchOptions(engine="trainjob", gpus=gpus, name=name),
                                   "x = 1\n")
        return job

    def show(self, job) -> None:
        from launcher_magic.kernel.live import show

        self.panels.append(show(job, self.engine))

    def state(self, job) -> str:
        return job.dir.read_status().state.value

    def informers(self):
        return self.engine.informers()

    def close(self, plane) -> None:
        """Delete the jobs, let their panels draw the end (their threads then return), and
        close the engine's watches and log streams."""
        from kubernetes.client.exceptions import ApiException

        _, custom = _admin(plane)
        for panel in self.panels:
            try:
                custom.delete_namespaced_custom_object(*TRAINER, panel.spec.namespace,
                                                       "trainjobs", panel.spec.job_id,
                                                       propagation_policy="Background")
            except ApiException as err:
                if err.status != 404:
                    raise
        wait_until(lambda: all(p.view.status.state.is_terminal() for p in self.panels))
        self.engine.shutdown([])


@pytest.fixture
def notebook(control_plane, queued_tenant, tmp_path, monkeypatch):
    made = []

    def start(proxy: CutProxy | None = None) -> Notebook:
        made.append(Notebook(control_plane, queued_tenant, tmp_path, monkeypatch, proxy))
        return made[-1]

    yield start
    for notebook in made:
        notebook.close(control_plane)


def _admin(plane):
    from kubernetes import client

    api = plane.api_client()
    return client.CoreV1Api(api), client.CustomObjectsApi(api)


def _pods(plane, namespace: str, job_id: str, phase: str = "Running"):
    core, _ = _admin(plane)
    return [p for p in core.list_namespaced_pod(
        namespace, label_selector=f"{JOBSET_NAME}={job_id}").items
        if p.status.phase == phase and not p.metadata.deletion_timestamp]


def _end(plane, namespace: str, job_id: str, outcome: str, code: int = 0) -> None:
    """End the job's one running pod as KWOK is told: succeeded, or failed with `code`."""
    core, _ = _admin(plane)
    (pod,) = _pods(plane, namespace, job_id)
    core.patch_namespaced_pod(pod.metadata.name, namespace, {"metadata": {"annotations": {
        OUTCOME: outcome, "workbench.test/exit-code": str(code)}}})


def _condition(plane, namespace: str, job_id: str) -> set[str]:
    _, custom = _admin(plane)
    trainjob = custom.get_namespaced_custom_object(*TRAINER, namespace, "trainjobs", job_id)
    return {c["type"] for c in (trainjob.get("status") or {}).get("conditions") or []
            if c.get("status") == "True"}


def _shown(text: str, job_id: str) -> list[str]:
    """The states a text panel drew for `job_id`, each run of one state once."""
    states = re.findall(rf"^Paddle job {re.escape(job_id)}: (\w+)", text, re.MULTILINE)
    return [state for n, state in enumerate(states) if n == 0 or states[n - 1] != state]


def test_the_panels_see_every_state_across_a_dropped_stream_and_a_410(
        control_plane, queued_tenant, proxy, notebook, capsys):
    ada, namespace = notebook(proxy), queued_tenant.namespace
    blocker = ada.launch("blocker", gpus=8)
    ada.show(blocker)
    assert wait_until(lambda: ada.state(blocker) == "Running", timeout=120), \
        blocker.dir.read_status()
    waiting = ada.launch("waiting", gpus=8)
    ada.show(waiting)
    assert wait_until(lambda: waiting.dir.read_status().message.startswith(
        "position 1 of 1 in workbench; "), timeout=120), waiting.dir.read_status()
    assert ada.state(waiting) == "Queued"
    informers = ada.informers()
    assert {i.name.split()[0] for i in informers} == {"jobs", "pods"}
    assert all(i.stats.lists == 1 for i in informers)

    # The streams drop and stay away while the blocking job fails and the queued one runs.
    assert proxy.down() >= len(informers)
    assert wait_until(lambda: all(i.stats.errors >= 1 for i in informers))
    _end(control_plane, namespace, blocker.job_id, "failed", 1)
    assert wait_until(lambda: len(_pods(control_plane, namespace, waiting.job_id)) == 1,
                      timeout=120)
    assert ada.state(waiting) == "Queued"  # nothing reached the engine meanwhile
    proxy.up()
    assert wait_until(lambda: ada.state(waiting) == "Running", timeout=120), \
        waiting.dir.read_status()
    assert wait_until(lambda: ada.state(blocker) == "Failed", timeout=60)
    assert all(i.stats.lists == 1 and i.stats.gone == 0 for i in informers)  # resumed

    # Away again, long enough for the server's history to move past the informers' versions:
    # "1" is older than anything its watch cache holds, so it answers 410 when they come back.
    errors = {i.name: i.stats.errors for i in informers}
    proxy.down()
    assert wait_until(lambda: all(i.stats.errors > errors[i.name] for i in informers))
    for informer in informers:
        informer.resource_version = "1"
    _end(control_plane, namespace, waiting.job_id, "succeeded")
    assert wait_until(lambda: "Complete" in _condition(control_plane, namespace,
                                                       waiting.job_id), timeout=120)
    proxy.up()
    assert wait_until(lambda: ada.state(waiting) == "Succeeded", timeout=120), \
        waiting.dir.read_status()
    # Each stream comes back after its own backoff, is refused with 410 and lists again (once).
    assert wait_until(lambda: all(i.stats.gone >= 1 and i.stats.lists == 1 + i.stats.gone
                                  for i in informers), timeout=120), \
        [(i.name, i.stats) for i in informers]

    assert wait_until(lambda: all(p.view.status.state.is_terminal() for p in ada.panels))
    text = capsys.readouterr().out
    shown = _shown(text, waiting.job_id)
    assert shown[0] == "Queued" and shown[-1] == "Succeeded", text
    assert "Running" in shown and set(shown) <= {"Queued", "Pending", "Running",
                                                 "Succeeded"}, text
    shown = _shown(text, blocker.job_id)
    assert shown[-1] == "Failed" and "Running" in shown, text
    assert "node 0 (rank 0) exited with code 1" in blocker.dir.read_status().message


def _per_job(requests: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Requests other than a watch (one per kind and namespace) or a log follow stream (one per
    rank shown)."""
    return [(method, url) for method, url in requests
            if "watch=true" not in url and "follow=true" not in url]


def _events(ada: Notebook) -> int:
    return sum(informer.stats.events for informer in ada.informers())


def _refreshed(ada: Notebook, jobs, times: int) -> None:
    """Wait until every job's panel refreshed `times` more times."""
    seen = {job.job_id: ada.refreshes[job.job_id] for job in jobs}
    assert wait_until(lambda: all(ada.refreshes[j] >= n + times for j, n in seen.items()),
                      timeout=120), (seen, ada.refreshes)


def _settled(ada: Notebook, jobs, rounds: int = 30) -> bool:
    """Wait until three refreshes of every panel pass without a change of any watched object
    (the controllers finish what a new job sets off: Kueue's and Trainer's status updates)."""
    for _ in range(rounds):
        events = _events(ada)
        _refreshed(ada, jobs, 3)
        if _events(ada) == events:
            return True
    return False


def test_live_panels_ask_nothing_per_job_while_nothing_changes(control_plane, queued_tenant,
                                                               notebook, capsys):
    ada, namespace = notebook(), queued_tenant.namespace
    ada.engine.queue_refresh_seconds = 3600.0  # one read of the queue for this whole test
    running = [ada.launch(f"run{n}", gpus=2) for n in range(3)]
    assert wait_until(lambda: all(len(_pods(control_plane, namespace, job.job_id)) == 1
                                  for job in running), timeout=180)
    queued = [ada.launch(f"wait{n}", gpus=8) for n in range(2)]
    _, custom = _admin(control_plane)
    assert wait_until(lambda: len(custom.list_namespaced_custom_object(
        *KUEUE, namespace, "workloads")["items"]) == 5, timeout=120)
    for job in running + queued:
        ada.show(job)
    assert wait_until(lambda: [ada.state(job) for job in running + queued]
                      == ["Running"] * 3 + ["Queued"] * 2, timeout=120)
    assert wait_until(lambda: all(job.dir.read_status().message.startswith("position ")
                                  for job in queued), timeout=60)
    # Each running job's panel follows its rank's log: one stream each.
    assert wait_until(lambda: ada.engine.logs.streams == 3)

    jobs = running + queued
    assert _settled(ada, jobs), [(i.name, i.stats) for i in ada.informers()]
    mark, events = len(ada.requests), _events(ada)
    _refreshed(ada, jobs, 5)
    window, changed = ada.requests[mark:], _events(ada) - events
    # Nothing but a change costs a request: a change of a job may make its JobSet be read.
    assert len(_per_job(window)) <= changed, (window, changed)
    assert all("/jobsets/" in url for _, url in _per_job(window)), window
    watches = [url for _, url in window if "watch=true" in url]
    assert len(watches) <= 2, watches  # at most a resume of each of the namespace's streams
    followed = {re.search(r"/pods/([^/]+)/log", url).group(1) for _, url in window
                if "follow=true" in url}
    assert len(followed) <= 3, followed  # only the ranks shown, one stream each
    assert ada.engine.tenant_queue.reads == 1  # the two queued jobs' places: one read for both

    # Polling instead: the same refreshes ask the API server for each job, every time.
    ada.engine.watch = False
    mark = len(ada.requests)
    _refreshed(ada, jobs, 3)
    polled = _per_job(ada.requests[mark:])
    for job in jobs:
        asked = [url for _, url in polled if f"trainjobs/{job.job_id}" in url]
        assert len(asked) >= 3, (job.job_id, polled)
    capsys.readouterr()
