"""Load on the hub: our configuration against a vanilla JupyterHub, side by side on one machine.

Both hubs run at once (each with its own configurable-http-proxy), with the same lightweight
spawner (no notebook process: every server is one shared stub HTTP endpoint), so the difference
is what our configuration adds: the tenant-aware login (users file, groups, admin by group), the
tenant policy on every spawn (tenants file, profile and image checks, home with the sample
notebook, the magic's environment) and the culler services.

For each hub, N simulated users (default 200) log in through the login form, call the REST API
(`GET /hub/api/user`, 5 times each) and spawn. Printed: login and API latency p50/p95, spawn
throughput, and ours/vanilla ratios. Logins differ by design: ours checks a salted PBKDF2 hash,
vanilla's DummyAuthenticator checks nothing; the API and spawn figures are the hook overhead.

    .venv/bin/python benchmarks/hub_load.py --users 200 --concurrency 16
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from jupyterhub.spawner import Spawner  # noqa: E402

from hub_config.auth import add_user  # noqa: E402
from hub_config.local_spawner import TenantLocalSpawner  # noqa: E402

STUB_PORT_ENV = "HUB_LOAD_STUB_PORT"


class StubSpawner(Spawner):
    """A server that is already up: the shared stub endpoint. Starts and stops instantly."""

    _started = False

    async def start(self):
        self._started = True
        return ("127.0.0.1", int(os.environ[STUB_PORT_ENV]))

    async def poll(self):
        return None if self._started else 0

    async def stop(self, now=False):
        self._started = False


class TenantStubSpawner(StubSpawner, TenantLocalSpawner):
    """Our spawner's tenant policy in front of the stub server."""

    async def start(self):
        self.apply_tenant_policy()
        return await StubSpawner.start(self)


class _Stub(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = b'{"version": "stub"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


VANILLA_CONFIG = """
c.JupyterHub.bind_url = {bind!r}
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.db_url = "sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{state}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "hub_load.StubSpawner"
"""
EXTRA_CONFIG = """
# Stub servers need no stopping; without this a hub with hundreds of them is slow to shut down.
c.JupyterHub.cleanup_servers = False
c.JupyterHub.services.append({{"name": "bench-admin", "api_token": {token!r}}})
c.JupyterHub.load_roles.append({{"name": "bench-admin", "services": ["bench-admin"],
    "scopes": ["admin:users", "admin:servers", "tokens"]}})
"""
OURS_EXTRA = """
c.JupyterHub.spawner_class = "hub_load.TenantStubSpawner"
c.TenantStubSpawner.tenants_file = {tenants!r}
c.TenantStubSpawner.homes_dir = "{state}/home"
"""


class Hub:
    def __init__(self, name: str, root: Path, proxy: str, stub_port: int, users: list[str]):
        self.name, self.state = name, root / name
        self.state.mkdir(parents=True)
        self.token = secrets.token_hex(16)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
        env[STUB_PORT_ENV] = str(stub_port)
        extra = self.state / "extra_config.py"
        extra_text = EXTRA_CONFIG.format(token=self.token)
        if name == "ours":
            tenants = REPO / "hub_config" / "tenants.example.yaml"
            extra_text += OURS_EXTRA.format(tenants=str(tenants), state=self.state)
            env.update({
                "WORKBENCH_STATE_DIR": str(self.state), "WORKBENCH_BIND_URL": self.url,
                "WORKBENCH_HUB_BIND_URL": f"http://127.0.0.1:{free_port()}",
                "WORKBENCH_PROXY_API_URL": f"http://127.0.0.1:{free_port()}",
                "WORKBENCH_PROXY_COMMAND": proxy, "WORKBENCH_EXTRA_CONFIG": str(extra),
                "WORKBENCH_TENANTS_FILE": str(tenants),
            })
            for i, user in enumerate(users):
                group = ["vision-team", "students"][i % 2]
                add_user(self.state / "users.yaml", user, [group], "bench-password")
            config = REPO / "hub_config" / "jupyterhub_config.py"
        else:
            config = self.state / "jupyterhub_config.py"
            config.write_text(VANILLA_CONFIG.format(
                bind=self.url, hub_port=free_port(), proxy_port=free_port(), proxy=proxy,
                state=self.state) + extra_text)
        extra.write_text(extra_text)
        self.log = open(self.state / "hub.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.state, env=env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait(self) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"{self.name} hub exited; see {self.state}/hub.log")
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=2).ok:
                    return
            except requests.RequestException:
                time.sleep(0.3)
        raise SystemExit(f"{self.name} hub did not start")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        # The proxy and the culler services run in sessions of their own: end any left behind.
        for pid_dir in Path("/proc").glob("[0-9]*"):
            try:
                if Path(os.readlink(pid_dir / "cwd")).is_relative_to(self.state):
                    os.kill(int(pid_dir.name), signal.SIGKILL)
            except (OSError, ValueError):
                continue
        self.log.close()


def login_and_api(hub: Hub, user: str, calls: int) -> tuple[str, float, list[float]]:
    """Log in through the form, get a token, call the API; (token, login s, API call s)."""
    session = requests.Session()
    t0 = time.perf_counter()
    session.get(f"{hub.url}/hub/login", timeout=60)
    xsrf = session.cookies.get("_xsrf", path="/hub/")
    response = session.post(f"{hub.url}/hub/login", allow_redirects=False, timeout=60,
                            data={"username": user, "password": "bench-password", "_xsrf": xsrf})
    login = time.perf_counter() - t0
    if response.status_code != 302:
        raise SystemExit(f"{hub.name}: login of {user} failed ({response.status_code})")
    admin = {"Authorization": f"token {hub.token}"}
    token = requests.post(f"{hub.url}/hub/api/users/{user}/tokens", headers=admin, json={},
                          timeout=60).json()["token"]
    auth = {"Authorization": f"token {token}"}
    api = []
    for _ in range(calls):
        t0 = time.perf_counter()
        requests.get(f"{hub.url}/hub/api/user", headers=auth, timeout=60).raise_for_status()
        api.append(time.perf_counter() - t0)
    return token, login, api


def spawn(hub: Hub, user: str, token: str) -> float:
    """Spawn and wait until the hub reports the server ready; seconds taken."""
    auth = {"Authorization": f"token {token}"}
    t0 = time.perf_counter()
    response = requests.post(f"{hub.url}/hub/api/users/{user}/server", headers=auth, timeout=120)
    if response.status_code not in (201, 202):
        raise SystemExit(f"{hub.name}: spawn of {user} failed: {response.text}")
    while not (requests.get(f"{hub.url}/hub/api/users/{user}", headers=auth, timeout=60)
               .json()["servers"].get("", {}).get("ready")):
        time.sleep(0.05)
    return time.perf_counter() - t0


def load(hub: Hub, users: list[str], concurrency: int, calls: int) -> dict[str, float]:
    """Phase 1: every user logs in and calls the API. Phase 2: every user spawns (timed)."""
    with ThreadPoolExecutor(concurrency) as pool:
        first = list(pool.map(lambda u: login_and_api(hub, u, calls), users))
        t0 = time.perf_counter()
        spawns = list(pool.map(lambda ut: spawn(hub, ut[0], ut[1][0]), zip(users, first, strict=True)))
        wall = time.perf_counter() - t0
    logins = [f[1] for f in first]
    api = [t for f in first for t in f[2]]

    def pct(values: list[float], q: int) -> float:
        return statistics.quantiles(values, n=100)[q - 1] * 1000

    return {
        "login_p50_ms": pct(logins, 50), "login_p95_ms": pct(logins, 95),
        "api_p50_ms": pct(api, 50), "api_p95_ms": pct(api, 95),
        "spawn_p50_ms": pct(spawns, 50), "spawn_p95_ms": pct(spawns, 95),
        "spawns_per_s": len(users) / wall,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--calls", type=int, default=5, help="API calls per user")
    args = parser.parse_args()
    proxy = str(REPO / "node_modules" / ".bin" / "configurable-http-proxy")
    stub = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    users = [f"user{i:04d}" for i in range(args.users)]
    with tempfile.TemporaryDirectory(prefix="hub-load-") as root:
        hubs = [Hub(name, Path(root), proxy, stub.server_port, users)
                for name in ("vanilla", "ours")]
        try:
            for hub in hubs:
                hub.wait()
            figures = {hub.name: load(hub, users, args.concurrency, args.calls) for hub in hubs}
        finally:
            for hub in hubs:
                hub.stop()
            stub.shutdown()
    print(f"{args.users} users, concurrency {args.concurrency}, {args.calls} API calls each")
    print(f"{'metric':<14}{'vanilla':>12}{'ours':>12}{'ours/vanilla':>14}")
    for key in figures["vanilla"]:
        v, o = figures["vanilla"][key], figures["ours"][key]
        print(f"{key:<14}{v:>12.1f}{o:>12.1f}{o / v:>14.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
