"""The GPU-idle culler against a real Prometheus and a real JupyterHub, including pods that lie.

Fixtures (this module only; small and self-contained):
- `kube_servers`: the notebook pods of the hub's servers as the hub's real `TenantKubeSpawner`
  renders them (pod name, namespace, labels) and the state it records for each (`pod_name`,
  `namespace`): ann, bob, `alice@example.com` (a name KubeSpawner escapes), carl and carl's named
  server `exp`;
- `dcgm_exporter`: a tiny HTTP exporter (the GPU is what cannot run here, so this serves
  DCGM-shaped series, as the DCGM exporter would, plus kube-state-metrics' kube_pod_labels) for
  those pods, a job worker, and two forged pods labelled as bob's notebook: one in another tenant's
  namespace, one in bob's own namespace;
- `prometheus`: Debian's Prometheus scraping it every second with the workbench's real recording
  rules loaded;
- `hub`: JupyterHub with configurable-http-proxy; its spawner runs JupyterHub's own mock
  single-user server (the culler never talks to it) and records in each server's state the pod
  KubeSpawner would have made (`kube_servers`); services with tokens: the culler's (exactly
  `HUB_SCOPES`), one without delete:servers, one without admin:server_state, an admin.
GPU use: ann, alice and carl's `exp` 5 % (idle), bob 80 % (busy), carl's default server none, the
forged pods 0 %. Windows are seconds instead of hours (policy: idle after 6 s, warn after 3 s);
promtool tests prove the 2-hour semantics with the same rules.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote

import pytest
import requests
import yaml

from hub_config.services.gpu_culler import HUB_SCOPES, CullerError, GpuIdleCuller, read_tenants

from .hub_env import render_pod

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "monitoring" / "prometheus" / "rules" / "workbench-gpu.rules.yaml"
EXAMPLE_TENANTS = REPO / "hub_config" / "tenants.example.yaml"
CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
POLICY = {"utilisation_below": 20, "for": 6, "warn_after": 3, "stop_jobs": True}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(check, what: str, timeout: float = 90.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- the servers' pods, as the hub's KubeSpawner makes them ------------------------------------

# (user, server name) -> GPU utilisation % of its pod (None: the server holds no GPU)
SERVERS = {
    ("ann", ""): 5.0,
    ("bob", ""): 80.0,
    ("alice@example.com", ""): 5.0,
    ("carl", ""): None,
    ("carl", "exp"): 5.0,
}


@pytest.fixture(scope="module")
def kube_servers() -> dict[tuple[str, str], dict]:
    """(user, server) -> {"state": what KubeSpawner records, "labels": its pod's labels}."""
    pytest.importorskip("kubespawner", reason="jupyterhub-kubespawner is not installed (hub "
                        "extra)")
    rendered = {}
    for user, server in SERVERS:
        pod, spawner = render_pod(EXAMPLE_TENANTS, user, ["vision-team"], {},
                                  orm_spawner=SimpleNamespace(name=server, server=None,
                                                              display_name=""))
        state = {key: value for key, value in spawner.get_state().items()
                 if key in ("pod_name", "namespace")}
        assert state["pod_name"] == pod["metadata"]["name"]
        rendered[(user, server)] = {"state": state, "labels": pod["metadata"]["labels"]}
    return rendered


def _ksm_labels(labels: dict[str, str]) -> str:
    """Pod labels as kube-state-metrics' kube_pod_labels writes them (`label_<sanitised key>`)."""
    return ",".join(f'label_{re.sub(r"[^a-zA-Z0-9_]", "_", key)}="{value}"'
                    for key, value in sorted(labels.items()))


# What a user who may create pods can write: any name, any labels, in a namespace they reach.
FORGED_AS_BOB = {"workbench.paddle.org/tenant": "vision", "workbench.paddle.org/user": "bob",
                 "workbench.paddle.org/component": "notebook"}
FORGED = [
    # (namespace, pod, labels, GPU utilisation %)
    ("wb-classroom", "evil-0", FORGED_AS_BOB, 0.0),  # another tenant's namespace
    ("wb-vision", "resnet-worker-1", FORGED_AS_BOB, 0.0),  # bob's own namespace
    ("wb-vision", "resnet-worker-0", {"workbench.paddle.org/tenant": "vision",
                                      "workbench.paddle.org/user": "ann",
                                      "workbench.paddle.org/component": "job-worker",
                                      "workbench.paddle.org/job": "resnet"}, 3.0),
]


def _exposition(pods: list[tuple[str, str, dict[str, str], float]]) -> str:
    lines = ["# TYPE DCGM_FI_DEV_GPU_UTIL gauge", "# TYPE kube_pod_labels gauge"]
    for gpu, (namespace, pod, labels, util) in enumerate(pods):
        lines.append(f'DCGM_FI_DEV_GPU_UTIL{{gpu="{gpu}",UUID="GPU-{gpu}",Hostname="node-1",'
                     f'namespace="{namespace}",pod="{pod}",container="main"}} {util}')
        lines.append(f'kube_pod_labels{{namespace="{namespace}",pod="{pod}",'
                     f'{_ksm_labels(labels)}}} 1')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def dcgm_exporter(kube_servers) -> Iterator[str]:
    pods = [(spawned["state"]["namespace"], spawned["state"]["pod_name"], spawned["labels"],
             SERVERS[key]) for key, spawned in kube_servers.items() if SERVERS[key] is not None]
    body = _exposition(pods + FORGED).encode()

    class Exporter(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", _free_port()), Exporter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# --- Prometheus --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prometheus(dcgm_exporter: str, tmp_path_factory) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not found: install Debian's prometheus package (scripts/setup.sh)")
    root = tmp_path_factory.mktemp("prometheus")
    config = root / "prometheus.yml"
    config.write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "dcgm", "static_configs": [{"targets": [dcgm_exporter]}]}],
    }))
    port = _free_port()
    log = (root / "prometheus.log").open("w")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for(lambda: process.poll() is not None or _ok(f"{url}/-/ready"), "Prometheus")
        assert process.poll() is None, (root / "prometheus.log").read_text()[-2000:]
        yield url
    finally:
        _stop(process)
        log.close()


def _ok(url: str, **kwargs) -> bool:
    try:
        return requests.get(url, timeout=2, **kwargs).status_code == 200
    except requests.RequestException:
        return False


# --- JupyterHub --------------------------------------------------------------------------------

# The hub's spawner here: JupyterHub's mock single-user server, and in the server's state the pod
# KubeSpawner would have made for it (as TenantKubeSpawner.get_state records it).
SPAWNER = """
import json
from jupyterhub.spawner import SimpleLocalProcessSpawner

KUBE_STATE = json.load(open({states!r}))


class PodRecordingSpawner(SimpleLocalProcessSpawner):
    def get_state(self):
        state = super().get_state()
        state.update(KUBE_STATE.get(self.user.name + "/" + self.name, {{}}))
        return state
"""


class Hub:
    def __init__(self, api: str, tokens: dict[str, str]) -> None:
        self.api, self.tokens = api, tokens

    def call(self, method: str, path: str, token: str = "admin") -> requests.Response:
        return requests.request(method, f"{self.api}{path}", timeout=30,
                                headers={"Authorization": f"token {self.tokens[token]}"})

    @staticmethod
    def path(user: str, server: str = "") -> str:
        base = f"/users/{quote(user, safe='')}"
        return f"{base}/servers/{quote(server, safe='')}" if server else f"{base}/server"

    def running(self, user: str, server: str = "") -> bool:
        servers = self.call("GET", f"/users/{quote(user, safe='')}").json().get("servers", {})
        return bool(servers.get(server, {}).get("ready"))

    def ensure_running(self, user: str, server: str = "") -> None:
        if not self.running(user, server):
            response = self.call("POST", self.path(user, server))
            assert response.status_code in (201, 202, 400), response.text
            _wait_for(lambda: self.running(user, server), f"{user}'s server {server!r} to start")


@pytest.fixture(scope="module")
def hub(tmp_path_factory, kube_servers) -> Iterator[Hub]:
    if not CHP.exists():
        pytest.skip("configurable-http-proxy not installed: run scripts/setup.sh (npm ci)")
    root = tmp_path_factory.mktemp("hub")
    tokens = {name: secrets.token_hex(16) for name in ("culler", "weak", "blind", "admin")}
    states = root / "kube_state.json"
    states.write_text(json.dumps({f"{user}/{server}": spawned["state"]
                                  for (user, server), spawned in kube_servers.items()}))
    users = sorted({user for user, _ in SERVERS})
    hub_port = _free_port()
    config = SPAWNER.format(states=str(states)) + f"""
c = get_config()  # noqa
c.JupyterHub.bind_url = "http://127.0.0.1:{_free_port()}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.command = [{str(CHP)!r}]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{_free_port()}"
c.JupyterHub.db_url = "sqlite:///{root / 'hub.sqlite'}"
c.JupyterHub.cookie_secret_file = {str(root / 'cookie_secret')!r}
c.JupyterHub.pid_file = {str(root / 'hub.pid')!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {set(users)!r}
c.JupyterHub.allow_named_servers = True
c.JupyterHub.spawner_class = PodRecordingSpawner
c.SimpleLocalProcessSpawner.home_dir_template = {str(root / 'home' / '{username}')!r}
c.Spawner.cmd = [{sys.executable!r}, "-m", "jupyterhub.tests.mocksu"]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.services = [
    {{"name": "gpu-culler", "api_token": {tokens['culler']!r}}},
    {{"name": "weak-culler", "api_token": {tokens['weak']!r}}},
    {{"name": "blind-culler", "api_token": {tokens['blind']!r}}},
    {{"name": "test-admin", "api_token": {tokens['admin']!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "gpu-culler", "scopes": {list(HUB_SCOPES)!r}, "services": ["gpu-culler"]}},
    {{"name": "weak-culler", "scopes": ["list:users", "read:servers", "admin:server_state"],
      "services": ["weak-culler"]}},
    {{"name": "blind-culler", "scopes": ["list:users", "read:servers", "delete:servers"],
      "services": ["blind-culler"]}},
    {{"name": "test-admin", "scopes": ["admin:users", "admin:servers"],
      "services": ["test-admin"]}},
]
"""
    (root / "jupyterhub_config.py").write_text(config)
    log = (root / "hub.log").open("w")
    env = {**os.environ, "JUPYTERHUB_CRYPT_KEY": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(root / "jupyterhub_config.py")],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    hub = Hub(f"http://127.0.0.1:{hub_port}/hub/api", tokens)
    try:
        _wait_for(lambda: process.poll() is not None or _ok(f"{hub.api}/"), "the hub")
        assert process.poll() is None, (root / "hub.log").read_text()[-3000:]
        for user, server in SERVERS:
            hub.ensure_running(user, server)
        yield hub
    finally:
        # The hub stops the single-user servers it started (cleanup_servers) on SIGTERM.
        _stop(process)
        log.close()


# --- the culler --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tenants_file(tmp_path_factory) -> Path:
    """The example tenants file (valid as the hub loads it) with idle.gpu shortened to seconds
    for both tenants, so the forged pod in the classroom namespace is looked at too."""
    data = yaml.safe_load(EXAMPLE_TENANTS.read_text())
    for tenant in data["tenants"]:
        tenant["idle"] = {**tenant.get("idle", {}), "gpu": POLICY}
    path = tmp_path_factory.mktemp("tenants") / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _culler(hub: Hub, prometheus: str, tenants_file: Path, token: str = "culler",
            **settings) -> GpuIdleCuller:
    return GpuIdleCuller(prometheus_url=prometheus, hub_api_url=hub.api,
                         api_token=hub.tokens[token], tenants_file=str(tenants_file),
                         smoothing_window=2, query_step=1, **settings)


def _capture(culler: GpuIdleCuller, caplog) -> None:
    # The traitlets application logger does not propagate to the root logger; hand it caplog's.
    culler.log.addHandler(caplog.handler)
    culler.log.setLevel(logging.INFO)


def _rounds_until(culler: GpuIdleCuller, done, what: str, timeout: float = 90.0) -> list:
    """Run culler rounds a second apart until `done(all outcomes so far)` holds."""
    outcomes: list = []

    def one_round():
        outcomes.extend(asyncio.run(culler.cull_once()))
        return done(outcomes)

    _wait_for(one_round, what, timeout=timeout, every=1.0)
    return outcomes


@pytest.fixture(scope="module")
def idle_seen(hub: Hub, prometheus: str, tenants_file: Path, kube_servers) -> None:
    """Wait until Prometheus has seen the idle pods idle for longer than the policy's limit."""
    culler = _culler(hub, prometheus, tenants_file, dry_run=True)
    idle_pods = {kube_servers[key]["state"]["pod_name"] for key, util in SERVERS.items()
                 if util is not None and util < POLICY["utilisation_below"]}
    idle_pods |= {pod for _, pod, labels, _ in FORGED if labels is FORGED_AS_BOB}

    def idle_long_enough():
        observed = asyncio.run(culler.observe_gpus(read_tenants(tenants_file)))
        long_idle = {o.pod for o in observed if o.kind == "server"
                     and o.idle_seconds >= POLICY["for"]}
        return idle_pods <= long_idle

    _wait_for(idle_long_enough, "Prometheus to see the idle pods", timeout=120, every=1.0)


def _stops(outcomes: list) -> list:
    return [(a.target.user, a.target.kind, outcome) for a, outcome in outcomes if a.verb == "stop"]


def _server_stops(outcomes: list) -> dict[tuple[str, str], str]:
    return {(a.target.user, a.target.name): outcome for a, outcome in outcomes
            if a.verb == "stop" and a.target.kind == "server"}


def test_dry_run_changes_nothing(hub: Hub, prometheus: str, tenants_file: Path, idle_seen,
                                 caplog) -> None:
    culler = _culler(hub, prometheus, tenants_file, dry_run=True)
    _capture(culler, caplog)
    outcomes = _rounds_until(culler, lambda out: any(u == "ann" for u, _, _ in _stops(out)),
                             "a dry-run stop decision")
    assert ("ann", "server", "dry run") in _stops(outcomes)
    assert all(hub.running(user, server) for user, server in SERVERS)
    assert "Dry run, not stopping default server of 'ann'" in caplog.text


def test_culler_without_delete_scope_cannot_stop(hub: Hub, prometheus: str, tenants_file: Path,
                                                  idle_seen) -> None:
    culler = _culler(hub, prometheus, tenants_file, token="weak")
    outcomes = _rounds_until(culler, lambda out: ("ann", "") in _server_stops(out),
                             "a stop attempt")
    outcome = _server_stops(outcomes)[("ann", "")]
    assert "403" in outcome and "delete:servers" in outcome
    assert hub.running("ann")


def test_culler_without_server_state_matches_nothing(hub: Hub, prometheus: str,
                                                      tenants_file: Path, idle_seen) -> None:
    """Without admin:server_state the hub does not say which pod is whose: the round fails and
    says which scope to give; it does not fall back to the labels."""
    culler = _culler(hub, prometheus, tenants_file, token="blind")
    with pytest.raises(CullerError, match="admin:server_state"):
        asyncio.run(culler.cull_once())
    assert all(hub.running(user, server) for user, server in SERVERS)


@pytest.fixture(scope="module")
def culled(hub: Hub, prometheus: str, tenants_file: Path, idle_seen, kube_servers):
    """The culler with exactly HUB_SCOPES, run until every idle server was stopped; returns the
    outcomes and the log."""
    for user, server in SERVERS:
        hub.ensure_running(user, server)
    culler = _culler(hub, prometheus, tenants_file)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    culler.log.addHandler(handler)
    culler.log.setLevel(logging.INFO)
    idle = {key for key, util in SERVERS.items() if util is not None and util < 20}

    def all_stopped(out: list) -> bool:
        stops = _server_stops(out)
        return all(stops.get(key) in ("stopped", "stopping") for key in idle)

    outcomes = _rounds_until(culler, all_stopped, "every idle server's stop", timeout=120)
    for user, server in idle:
        _wait_for(lambda u=user, s=server: not hub.running(u, s), f"{user}/{server} to stop")
    return SimpleNamespace(outcomes=outcomes, log="\n".join(r.getMessage() for r in records),
                           token=hub.tokens["culler"])


def test_idle_server_is_stopped_and_busy_one_is_not(hub: Hub, culled) -> None:
    verbs = [(a.verb, a.target.user, a.target.kind) for a, _ in culled.outcomes]
    # Warned first, stopped after the grace period; bob (80 %) is never touched.
    assert verbs.index(("warn", "ann", "server")) < verbs.index(("stop", "ann", "server"))
    assert not [v for v in verbs if v[1] == "bob"]
    assert not hub.running("ann")
    assert hub.running("bob")
    # Every action is logged with its reason; the token never is.
    assert "Stopping default server of 'ann' (tenant vision): GPU utilisation under 20 %" \
        in culled.log
    assert culled.token not in culled.log
    # The job's policy says stop_jobs, but no job engine is configured: a hook, logged.
    job_stops = [o for u, k, o in _stops(culled.outcomes) if k == "job"]
    assert job_stops and all(o.startswith("would stop job") for o in job_stops)


@pytest.mark.parametrize(("namespace", "pod"), [(ns, pod) for ns, pod, labels, _ in FORGED
                                                if labels is FORGED_AS_BOB],
                         ids=["other-tenants-namespace", "victims-own-namespace"])
def test_a_pod_labelled_as_the_victims_notebook_does_not_stop_it(hub: Hub, culled, namespace,
                                                                 pod) -> None:
    """Attack: an idle GPU pod labelled `component=notebook, user=bob, tenant=vision`."""
    assert hub.running("bob")
    assert not [a for a, _ in culled.outcomes if a.target.user == "bob"]
    assert f"Ignoring the GPUs of pod {namespace}/{pod}: " in culled.log


def test_a_user_whose_name_kubespawner_escapes_is_culled(hub: Hub, culled,
                                                         kube_servers) -> None:
    # The pod's user label holds KubeSpawner's escaped name, which is no hub user.
    label = kube_servers[("alice@example.com", "")]["labels"]["workbench.paddle.org/user"]
    assert label != "alice@example.com"
    assert _server_stops(culled.outcomes)[("alice@example.com", "")] in ("stopped", "stopping")
    assert not hub.running("alice@example.com")


def test_a_named_server_is_culled_by_its_own_name(hub: Hub, culled, kube_servers) -> None:
    # The pod carries no server-name label of ours; the hub's record names the server.
    assert "workbench.paddle.org/server" not in kube_servers[("carl", "exp")]["labels"]
    assert _server_stops(culled.outcomes)[("carl", "exp")] in ("stopped", "stopping")
    assert not hub.running("carl", "exp")
    assert hub.running("carl")  # the default server holds no GPU: untouched
    assert ("carl", "") not in _server_stops(culled.outcomes)
