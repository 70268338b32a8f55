"""Fixtures for the hub tests.

- `free_port()`: a free TCP port on 127.0.0.1.
- `HubProcess` / `start_hub(...)`: a real JupyterHub running `hub_config/jupyterhub_config.py`
  (so a real configurable-http-proxy too) on free ports, its state in a temp folder, plus an
  extra config that adds two API-only services for the test: `test-admin` (admin scopes, token
  `HubProcess.admin_token`) and `test-metrics` (read:metrics). `stop()` sends SIGINT (the hub
  stops its servers, culler services and proxy), then kills whatever is left of the hub's process
  group and any process still running in the state folder, so nothing outlives the test.
- `local_login(hub, name, password)`: a `requests.Session` logged in through the hub's login form.
- `proxy_available`: skips when configurable-http-proxy is missing (setup.sh installs it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

requests = pytest.importorskip("requests", reason="requests is not installed")
psutil = pytest.importorskip("psutil", reason="psutil is not installed (test extra)")

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "hub_config" / "jupyterhub_config.py"
EXAMPLE_TENANTS = REPO / "hub_config" / "tenants.example.yaml"
EXTRA_CONFIG = """
c.JupyterHub.services.extend([
    {{"name": "test-admin", "api_token": {admin!r}}},
    {{"name": "test-metrics", "api_token": {metrics!r}}},
])
c.JupyterHub.load_roles.extend([
    {{"name": "test-admin", "services": ["test-admin"],
      "scopes": ["admin:users", "admin:servers", "admin:server_state", "tokens", "groups"]}},
    {{"name": "test-metrics", "services": ["test-metrics"], "scopes": ["read:metrics"]}},
])
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proxy_command() -> str | None:
    local = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return str(local)
    from shutil import which

    return which("configurable-http-proxy")


@pytest.fixture(scope="session")
def proxy_available() -> str:
    command = proxy_command()
    if not command:
        pytest.skip("configurable-http-proxy is not installed; `npm ci` (scripts/setup.sh) adds it")
    return command


@dataclass
class HubProcess:
    state: Path
    env: dict[str, str]
    url: str = ""
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    metrics_token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen | None = None
    port: int = 0  # 0: pick a free one at start

    def start(self, timeout: float = 90) -> HubProcess:
        port = self.port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        extra = self.state / "test_extra_config.py"
        extra.write_text(EXTRA_CONFIG.format(admin=self.admin_token, metrics=self.metrics_token))
        env = dict(os.environ)
        env.update({
            "WORKBENCH_STATE_DIR": str(self.state),
            "WORKBENCH_BIND_URL": self.url,
            "WORKBENCH_HUB_BIND_URL": f"http://127.0.0.1:{free_port()}",
            "WORKBENCH_PROXY_API_URL": f"http://127.0.0.1:{free_port()}",
            "WORKBENCH_EXTRA_CONFIG": str(extra),
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        })
        env.update(self.env)
        self.log = open(self.state / "hub.log", "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(CONFIG)], cwd=self.state, env=env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the hub exited early:\n{self.log_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/hub/api/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"the hub did not answer within {timeout}s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        path = self.state / "hub.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self, method: str, path: str, token: str | None = None, **kwargs):
        headers = {"Authorization": f"token {token or self.admin_token}"}
        return requests.request(method, f"{self.url}/hub/api{path}", headers=headers,
                                timeout=30, **kwargs)

    def wait_ready(self, user: str, timeout: float = 120) -> dict:
        """Wait until the user's default server is ready; returns the user model."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.api("GET", f"/users/{user}").json()
            server = (model.get("servers") or {}).get("")
            if server and server.get("ready"):
                return model
            if server is None and model.get("pending") is None:
                raise RuntimeError(f"{user}'s server failed:\n{self.log_text()[-3000:]}")
            time.sleep(0.5)
        raise RuntimeError(f"{user}'s server not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(45)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        # A safety net for servers and services (each in its own session) the hub left behind.
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.pid != os.getpid() and Path(proc.cwd()).is_relative_to(self.state):
                    proc.kill()
            except (psutil.Error, OSError, ValueError):
                continue
        if hasattr(self, "log"):
            self.log.close()


@pytest.fixture
def start_hub(tmp_path, proxy_available):
    """Factory: `start_hub(env={...}, state=...)` starts a hub; all are stopped at teardown."""
    hubs: list[HubProcess] = []

    def start(env: dict[str, str] | None = None, state: Path | None = None) -> HubProcess:
        state = state or tmp_path / f"hub{len(hubs)}"
        state.mkdir(parents=True, exist_ok=True)
        hub = HubProcess(state=state, env=dict(env or {}))
        hubs.append(hub)
        return hub.start()

    yield start
    for hub in hubs:
        hub.stop()


def local_login(hub: HubProcess, name: str, password: str) -> requests.Session:
    """Log in through the hub's own login form (with its XSRF cookie), as a browser would."""
    session = requests.Session()
    session.get(f"{hub.url}/hub/login", timeout=30)
    xsrf = session.cookies.get("_xsrf", path="/hub/")
    response = session.post(
        f"{hub.url}/hub/login", data={"username": name, "password": password, "_xsrf": xsrf},
        timeout=60, allow_redirects=False,
    )
    session.login_response = response  # type: ignore[attr-defined]
    return session


@dataclass
class WorkbenchUp:
    """A running `workbench up` (see `workbench_up`)."""

    process: subprocess.Popen
    url: str
    user: str = ""
    password: str = ""
    # Processes still running under the state folder after Ctrl-C (killed, then listed here).
    leftovers: list = field(default_factory=list)


@contextlib.contextmanager
def workbench_up(cwd: Path, state: Path, env: dict[str, str]):
    """Run `workbench up` from `cwd` on a free port until the hub answers; yield a WorkbenchUp.

    On exit it presses Ctrl-C as a user at the terminal would (SIGINT to its group), waits,
    and kills and records whatever still runs under `state`.
    """
    port = free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "hub_config.cli.main", "up", "--state-dir", str(state),
         "--port", str(port)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    running = WorkbenchUp(process=up, url=f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 120
        while True:
            assert up.poll() is None, up.stdout.read()
            try:
                if requests.get(f"{running.url}/hub/api/", timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "the hub did not answer in 120 s"
            time.sleep(0.5)
        login = dict(line.split(": ", 1) for line in (state / "login.txt").read_text().splitlines())
        running.user, running.password = login["user"], login["password"]
        yield running
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGINT)
            try:
                up.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(up.pid, signal.SIGKILL)
                up.wait(10)
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if Path(proc.cwd()).is_relative_to(state):
                    running.leftovers.append(proc.info["cmdline"])
                    proc.kill()
            except (psutil.Error, OSError, ValueError):
                continue
