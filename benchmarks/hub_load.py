"""Load on the hub: our configuration against a vanilla JupyterHub, side by side on one machine.

Both hubs run at once in this process tree (each with its own configurable-http-proxy), with the
same lightweight spawner (no notebook process: every server is one shared stub HTTP endpoint), so
the difference is what our configuration adds: the tenant-aware login (users file, groups, admin
by group), the tenant policy on every spawn (tenants file, profile and image checks, the magic's
environment), the refresh of the user's groups before each spawn, and the culler services.

The comparison is fair on login: the vanilla hub's authenticator (`HashedAuthenticator`, below)
checks the same salted PBKDF2 hash, with the same parameters and off the event loop as ours does,
and (unless `--no-vanilla-groups`) puts each user in the same JupyterHub groups, so that the
database work of group membership, which any hub with teams does, is on both sides.

Each round, N simulated users (default 200) log in through the login form, call the REST API
(`GET /hub/api/user`, 5 times each) and spawn; then every server is stopped (not timed) for the
next round. By default both hubs are loaded at once, phase by phase, each by clients of its own
(whatever else the machine does meanwhile then slows both alike); `--mode alternate` loads one
hub after the other instead. Which hub goes first alternates between rounds. Printed: p50/p95/p99 of login,
API call and spawn latency over all rounds, spawns per second (median of the rounds), the hub
process's resident memory (peak while loaded, and at the end), and ours/vanilla. The last column
is the cost ratio (ours/vanilla, inverted for spawns per second, where more is better); the
target is at most 1.10 for each.

    .venv/bin/python benchmarks/hub_load.py --users 200 --rounds 3 --concurrency 16
    .venv/bin/python benchmarks/hub_load.py --users 1000 --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from jupyterhub.auth import Authenticator  # noqa: E402
from jupyterhub.spawner import Spawner  # noqa: E402

from hub_config.local_spawner import TenantLocalSpawner  # noqa: E402
from hub_config.users import hash_password, verify_password  # noqa: E402

STUB_PORT_ENV = "HUB_LOAD_STUB_PORT"
HASHES_ENV = "HUB_LOAD_HASHES"
PASSWORD = "bench-password"
TARGET = 1.10


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


class HashedAuthenticator(Authenticator):
    """The vanilla hub's login: a salted PBKDF2 hash per user (the same scheme, iterations and
    thread as ours), from a JSON file of name -> [hash, groups] read once at start. With
    `manage_groups` (`--vanilla-groups`, the default) the user is put in the same JupyterHub
    groups as in our hub; nothing else."""

    _users: dict[str, list] | None = None

    async def authenticate(self, handler, data):
        if self._users is None:
            self._users = json.loads(Path(os.environ[HASHES_ENV]).read_text())
        stored, groups = self._users.get(data.get("username", ""), (None, []))
        if stored and await asyncio.to_thread(verify_password, data.get("password", ""), stored):
            return {"name": data["username"], "groups": groups}
        return None


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
c.JupyterHub.authenticator_class = "hub_load.HashedAuthenticator"
c.Authenticator.allow_all = True
c.Authenticator.manage_groups = {groups}
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


def write_users(state: Path, users: list[str]) -> None:
    """Our users file and the vanilla hub's hashes: one salted hash (hashing 1,000 passwords
    would take a minute), each user alternately in a tenant of the example file."""
    stored = hash_password(PASSWORD)
    groups = ["vision-team", "students"]
    entries = {u: {"password": stored, "groups": [groups[i % 2]]} for i, u in enumerate(users)}
    (state / "users.yaml").write_text(yaml.safe_dump({"users": entries}))
    (state / "hashes.json").write_text(json.dumps({u: [stored, e["groups"]]
                                                   for u, e in entries.items()}))


class Hub:
    def __init__(self, name: str, root: Path, proxy: str, stub_port: int, users: list[str],
                 vanilla_groups: bool = True):
        self.name, self.state = name, root / name
        self.state.mkdir(parents=True)
        self.token = secrets.token_hex(16)
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(REPO)]))
        env[STUB_PORT_ENV] = str(stub_port)
        env[HASHES_ENV] = str(self.state / "hashes.json")
        write_users(self.state, users)
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
            config = REPO / "hub_config" / "jupyterhub_config.py"
        else:
            config = self.state / "jupyterhub_config.py"
            config.write_text(VANILLA_CONFIG.format(
                bind=self.url, hub_port=free_port(), proxy_port=free_port(), proxy=proxy,
                state=self.state, groups=vanilla_groups) + extra_text)
        extra.write_text(extra_text)
        self.log = open(self.state / "hub.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.state, env=env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.rss_peak = 0
        self.measuring = False
        self._sampler = threading.Thread(target=self._sample_rss, daemon=True)
        self._sampler.start()

    def rss(self) -> int:
        """The hub process's resident memory, bytes (0 once it has exited)."""
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    def _sample_rss(self) -> None:
        while self.process.poll() is None:
            if self.measuring:
                self.rss_peak = max(self.rss_peak, self.rss())
            time.sleep(0.2)

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
    session.get(f"{hub.url}/hub/login", timeout=120)
    xsrf = session.cookies.get("_xsrf", path="/hub/")
    response = session.post(f"{hub.url}/hub/login", allow_redirects=False, timeout=120,
                            data={"username": user, "password": PASSWORD, "_xsrf": xsrf})
    login = time.perf_counter() - t0
    if response.status_code != 302:
        raise SystemExit(f"{hub.name}: login of {user} failed ({response.status_code})")
    admin = {"Authorization": f"token {hub.token}"}
    token = requests.post(f"{hub.url}/hub/api/users/{user}/tokens", headers=admin, json={},
                          timeout=120).json()["token"]
    auth = {"Authorization": f"token {token}"}
    api = []
    for _ in range(calls):
        t0 = time.perf_counter()
        requests.get(f"{hub.url}/hub/api/user", headers=auth, timeout=120).raise_for_status()
        api.append(time.perf_counter() - t0)
    return token, login, api


def spawn(hub: Hub, user: str, token: str) -> float:
    """Spawn and wait until the hub reports the server ready; seconds taken."""
    auth = {"Authorization": f"token {token}"}
    t0 = time.perf_counter()
    response = requests.post(f"{hub.url}/hub/api/users/{user}/server", headers=auth, timeout=120)
    if response.status_code not in (201, 202):
        raise SystemExit(f"{hub.name}: spawn of {user} failed: {response.text}")
    while not (requests.get(f"{hub.url}/hub/api/users/{user}", headers=auth, timeout=120)
               .json()["servers"].get("", {}).get("ready")):
        time.sleep(0.05)
    return time.perf_counter() - t0


def stop_server(hub: Hub, user: str) -> None:
    """Stop a user's server (between rounds; not timed) and wait until it is gone."""
    admin = {"Authorization": f"token {hub.token}"}
    url = f"{hub.url}/hub/api/users/{user}"
    requests.delete(f"{url}/server", headers=admin, timeout=120)
    while requests.get(url, headers=admin, timeout=120).json()["servers"]:
        time.sleep(0.05)


def one_round(hubs: list[Hub], users: list[str], concurrency: int,
              calls: int) -> dict[str, dict[str, list[float]]]:
    """Every user logs in and calls the API, then every user spawns (timed); then every server
    stops (not timed). Several hubs are loaded at once, each by `concurrency` clients of its own
    (a shared pool would drift towards the slower hub and make it slower still), phase by phase,
    so that whatever else the machine does meanwhile slows every hub alike.
    Latencies in seconds, and each hub's spawn throughput, by hub name."""
    phase = threading.Barrier(len(hubs))
    out: dict[str, dict[str, list[float]]] = {}

    def load(hub: Hub) -> None:
        try:
            load_phases(hub)
        except BaseException:
            phase.abort()  # the other hubs' clients stop waiting for this one
            raise

    def load_phases(hub: Hub) -> None:
        with ThreadPoolExecutor(concurrency) as pool:
            phase.wait()
            hub.measuring = True
            first = list(pool.map(lambda u: login_and_api(hub, u, calls), users))
            phase.wait()
            t0 = time.perf_counter()
            spawns = list(pool.map(lambda ut: spawn(hub, ut[0], ut[1][0]),
                                   zip(users, first, strict=True)))
            wall = time.perf_counter() - t0
            hub.measuring = False
            phase.wait()
            list(pool.map(lambda u: stop_server(hub, u), users))
        out[hub.name] = {"login": [f[1] for f in first], "api": [t for f in first for t in f[2]],
                         "spawn": spawns, "spawns_per_s": [len(users) / wall]}

    with ThreadPoolExecutor(len(hubs)) as each:
        for done in [each.submit(load, hub) for hub in hubs]:
            done.result()
    return out


def summary(samples: dict[str, list[float]], hub: Hub) -> dict[str, float]:
    """Percentiles (ms) over every round, the median round's spawns per second, memory (MiB)."""
    out = {}
    for kind in ("login", "api", "spawn"):
        cuts = statistics.quantiles(samples[kind], n=100)
        for q in (50, 95, 99):
            out[f"{kind}_p{q}_ms"] = cuts[q - 1] * 1000
    out["spawns_per_s"] = statistics.median(samples["spawns_per_s"])
    out["rss_peak_mib"] = hub.rss_peak / 2**20
    out["rss_end_mib"] = hub.rss() / 2**20
    return out


def report(figures: dict[str, dict[str, float]], args: argparse.Namespace) -> bool:
    """Print the table; True when every cost ratio is within the target."""
    print(f"{args.users} users, {args.rounds} rounds ({args.mode}), concurrency "
          f"{args.concurrency} per hub, "
          f"{args.calls} API calls each; vanilla {'with' if args.vanilla_groups else 'without'} "
          f"the same groups; load average {os.getloadavg()[0]:.2f}")
    print(f"{'metric':<16}{'vanilla':>11}{'ours':>11}{'ours/vanilla':>14}{'cost':>8}")
    ok = True
    for key in figures["vanilla"]:
        v, o = figures["vanilla"][key], figures["ours"][key]
        ratio = o / v
        cost = 1 / ratio if key == "spawns_per_s" else ratio
        ok = ok and cost <= TARGET
        mark = "" if cost <= TARGET else "  > target"
        print(f"{key:<16}{v:>11.1f}{o:>11.1f}{ratio:>14.2f}{cost:>8.2f}{mark}")
    print(f"every cost ratio at or below {TARGET:.2f}" if ok else
          f"some cost ratios above {TARGET:.2f} (marked)")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200, help="simulated users (up to 1000)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds on each hub; the hub that goes first alternates")
    parser.add_argument("--concurrency", type=int, default=16, help="clients per hub")
    parser.add_argument("--mode", choices=("together", "alternate"), default="together",
                        help="load both hubs at once, interleaved (default), or one after the "
                        "other")
    parser.add_argument("--calls", type=int, default=5, help="API calls per user")
    parser.add_argument("--vanilla-groups", action=argparse.BooleanOptionalAction, default=True,
                        help="put the vanilla hub's users in the same JupyterHub groups as ours "
                        "(manage_groups); --no-vanilla-groups: no groups there")
    args = parser.parse_args()
    if not 1 <= args.users <= 1000 or args.rounds < 1:
        parser.error("--users must be 1 to 1000 and --rounds at least 1")
    proxy = str(REPO / "node_modules" / ".bin" / "configurable-http-proxy")
    if not Path(proxy).exists():
        raise SystemExit(f"{proxy} is missing; run `make setup` (npm ci)")
    stub = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    users = [f"user{i:04d}" for i in range(args.users)]
    with tempfile.TemporaryDirectory(prefix="hub-load-") as root:
        hubs = {name: Hub(name, Path(root), proxy, stub.server_port, users, args.vanilla_groups)
                for name in ("vanilla", "ours")}
        samples: dict[str, dict[str, list[float]]] = {name: {} for name in hubs}
        try:
            for hub in hubs.values():
                hub.wait()
            for r in range(args.rounds):
                order = ["vanilla", "ours"] if r % 2 == 0 else ["ours", "vanilla"]
                batches = [order] if args.mode == "together" else [[name] for name in order]
                for batch in batches:
                    results = one_round([hubs[name] for name in batch], users,
                                        args.concurrency, args.calls)
                    for name, kinds in results.items():
                        for kind, values in kinds.items():
                            samples[name].setdefault(kind, []).extend(values)
                print(f"round {r + 1} of {args.rounds} done ({' and '.join(order)})",
                      file=sys.stderr, flush=True)
            figures = {name: summary(samples[name], hub) for name, hub in hubs.items()}
        finally:
            for hub in hubs.values():
                hub.stop()
            stub.shutdown()
    report(figures, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
