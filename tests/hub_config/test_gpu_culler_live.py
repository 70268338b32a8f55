"""The GPU-idle culler against a real Prometheus and a real JupyterHub.

Fixtures (this module only; small and self-contained):
- `dcgm_exporter`: a tiny HTTP exporter (the GPU is what cannot run here, so this serves
  DCGM-shaped series, as the DCGM exporter would, plus kube-state-metrics' kube_pod_labels);
- `prometheus`: Debian's Prometheus scraping it every second with the workbench's real recording
  rules loaded;
- `hub`: JupyterHub with configurable-http-proxy and SimpleLocalProcessSpawner; users "ann"
  (GPU at 5 %: idle) and "bob" (80 %: busy) have running single-user servers; services with
  tokens: the culler's (exactly the documented scopes), one without delete:servers, an admin.
Windows are seconds instead of hours (policy: idle after 6 s, warn after 3 s); promtool tests
prove the 2-hour semantics with the same rules.
"""

from __future__ import annotations

import asyncio
import logging
import os
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

import pytest
import requests
import yaml

from hub_config.services.gpu_culler import GpuIdleCuller

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "monitoring" / "prometheus" / "rules" / "workbench-gpu.rules.yaml"
EXAMPLE_TENANTS = REPO / "hub_config" / "tenants.example.yaml"
CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
CULLER_SCOPES = ["read:users:name", "read:servers", "delete:servers"]
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


# --- the exporter ------------------------------------------------------------------------------

PODS = {
    # pod: (user, component, job, GPU utilisation %)
    "jupyter-ann": ("ann", "notebook", "", 5.0),
    "jupyter-bob": ("bob", "notebook", "", 80.0),
    "resnet-worker-0": ("ann", "job-worker", "resnet", 3.0),
}


def _exposition() -> str:
    lines = ["# TYPE DCGM_FI_DEV_GPU_UTIL gauge", "# TYPE kube_pod_labels gauge"]
    for gpu, (pod, (user, component, job, util)) in enumerate(PODS.items()):
        lines.append(f'DCGM_FI_DEV_GPU_UTIL{{gpu="{gpu}",UUID="GPU-{gpu}",Hostname="node-1",'
                     f'namespace="wb-vision",pod="{pod}",container="main"}} {util}')
        job_label = f',label_workbench_paddle_org_job="{job}"' if job else ""
        lines.append(f'kube_pod_labels{{namespace="wb-vision",pod="{pod}",'
                     f'label_workbench_paddle_org_tenant="vision",'
                     f'label_workbench_paddle_org_user="{user}",'
                     f'label_workbench_paddle_org_component="{component}"{job_label}}} 1')
    return "\n".join(lines) + "\n"


class _Exporter(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = _exposition().encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def dcgm_exporter() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", _free_port()), _Exporter)
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

class Hub:
    def __init__(self, api: str, tokens: dict[str, str]) -> None:
        self.api, self.tokens = api, tokens

    def call(self, method: str, path: str, token: str = "admin") -> requests.Response:
        return requests.request(method, f"{self.api}{path}", timeout=30,
                                headers={"Authorization": f"token {self.tokens[token]}"})

    def running(self, user: str) -> bool:
        servers = self.call("GET", f"/users/{user}").json().get("servers", {})
        return bool(servers.get("", {}).get("ready"))

    def ensure_running(self, user: str) -> None:
        if not self.running(user):
            response = self.call("POST", f"/users/{user}/server")
            assert response.status_code in (201, 202, 400), response.text
            _wait_for(lambda: self.running(user), f"{user}'s server to start")


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Iterator[Hub]:
    if not CHP.exists():
        pytest.skip("configurable-http-proxy not installed: run scripts/setup.sh (npm ci)")
    root = tmp_path_factory.mktemp("hub")
    tokens = {name: secrets.token_hex(16) for name in ("culler", "weak", "admin")}
    hub_port = _free_port()
    config = f"""
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
c.Authenticator.allowed_users = {{"ann", "bob"}}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(root / 'home' / '{username}')!r}
c.Spawner.cmd = [{sys.executable!r}, "-m", "jupyterhub.singleuser"]
c.Spawner.args = {["--allow-root"] if os.geteuid() == 0 else []!r}
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
c.JupyterHub.services = [
    {{"name": "gpu-culler", "api_token": {tokens['culler']!r}}},
    {{"name": "weak-culler", "api_token": {tokens['weak']!r}}},
    {{"name": "test-admin", "api_token": {tokens['admin']!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "gpu-culler", "scopes": {CULLER_SCOPES!r}, "services": ["gpu-culler"]}},
    {{"name": "weak-culler", "scopes": ["read:users:name", "read:servers"],
      "services": ["weak-culler"]}},
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
        for user in ("ann", "bob"):
            hub.ensure_running(user)
        yield hub
    finally:
        # The hub stops the single-user servers it started (cleanup_servers) on SIGTERM.
        _stop(process)
        log.close()


# --- the culler --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tenants_file(tmp_path_factory) -> Path:
    """The example tenants file (valid as the hub loads it) with the vision tenant's idle.gpu
    shortened to seconds."""
    data = yaml.safe_load(EXAMPLE_TENANTS.read_text())
    vision = next(t for t in data["tenants"] if t["name"] == "vision")
    vision["idle"] = {"server_timeout": 3600, "gpu": POLICY}
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
def idle_seen(hub: Hub, prometheus: str, tenants_file: Path) -> None:
    """Wait until Prometheus has seen ann's server idle for longer than the policy's limit."""
    culler = _culler(hub, prometheus, tenants_file, dry_run=True)

    def idle_long_enough():
        from hub_config.services.gpu_culler import read_policies
        observed = asyncio.run(culler.observe_gpus(read_policies(tenants_file)))
        ann = [o for o in observed if o.user == "ann" and o.kind == "server"]
        return ann and ann[0].idle_seconds >= POLICY["for"]

    _wait_for(idle_long_enough, "Prometheus to see an idle server", timeout=120, every=1.0)


def _stops(outcomes: list) -> list:
    return [(a.target.user, a.target.kind, outcome) for a, outcome in outcomes if a.verb == "stop"]


def test_dry_run_changes_nothing(hub: Hub, prometheus: str, tenants_file: Path, idle_seen,
                                 caplog) -> None:
    culler = _culler(hub, prometheus, tenants_file, dry_run=True)
    _capture(culler, caplog)
    outcomes = _rounds_until(culler, lambda out: any(u == "ann" for u, _, _ in _stops(out)),
                             "a dry-run stop decision")
    assert ("ann", "server", "dry run") in _stops(outcomes)
    assert hub.running("ann") and hub.running("bob")
    assert "Dry run, not stopping default server of 'ann'" in caplog.text


def test_culler_without_delete_scope_cannot_stop(hub: Hub, prometheus: str, tenants_file: Path,
                                                  idle_seen) -> None:
    culler = _culler(hub, prometheus, tenants_file, token="weak")
    outcomes = _rounds_until(culler, lambda out: any(
        u == "ann" and k == "server" for u, k, _ in _stops(out)), "a stop attempt")
    outcome = next(o for u, k, o in _stops(outcomes) if u == "ann" and k == "server")
    assert "403" in outcome and "delete:servers" in outcome
    assert hub.running("ann")


def test_idle_server_is_stopped_and_busy_one_is_not(hub: Hub, prometheus: str,
                                                      tenants_file: Path, idle_seen,
                                                      caplog) -> None:
    hub.ensure_running("ann")
    culler = _culler(hub, prometheus, tenants_file)
    _capture(culler, caplog)
    outcomes = _rounds_until(culler, lambda out: ("ann", "server", "stopped") in _stops(out)
                             or ("ann", "server", "stopping") in _stops(out), "ann's stop")
    verbs = [(a.verb, a.target.user, a.target.kind) for a, _ in outcomes]
    # Warned first, stopped after the grace period; bob (80 %) is never touched.
    assert verbs.index(("warn", "ann", "server")) < verbs.index(("stop", "ann", "server"))
    assert not [v for v in verbs if v[1] == "bob"]
    _wait_for(lambda: not hub.running("ann"), "ann's server to stop")
    assert hub.running("bob")
    # Every action is logged with its reason; the token never is.
    assert "Stopping default server of 'ann' (tenant vision): GPU utilisation under 20 %" \
        in caplog.text
    assert hub.tokens["culler"] not in caplog.text
    # The job's policy says stop_jobs, but no job engine is configured: a hook, logged.
    job_stops = [o for u, k, o in _stops(outcomes) if k == "job"]
    assert job_stops and all(o.startswith("would stop job") for o in job_stops)
