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
- System accounts (the hub runs as root in CI): each hub (`HubProcess`, `workbench_up`) gets its
  own account prefix (`wb<hex>-`, so concurrent runs never share an account) and a homes folder
  under /tmp that accounts can reach (pytest's own temp root is 0700). At the end the accounts'
  processes are killed and recorded, and the accounts removed with their homes
  (`remove_accounts`), and with what the hub made for them elsewhere: their lines in the cron and
  at deny files and their runtime folders (`forget_accounts`). `HubProcess` links `<state>/home` to its homes folder, with homes named by
  hub user, so `hub.state / "home" / name` is still a user's home.
- `allow_accounts_to_run_python()`: what `workbench up` does as root before starting the hub: the
  folders on the way to this Python environment and the repository become traversable (o+x).
- `run_cell(ws, code, session, timeout)`: runs code on a kernel over its websocket.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
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


AS_ROOT = os.geteuid() == 0


def account_prefix() -> str:
    """A prefix of system accounts no other hub on this machine uses."""
    return f"wb{secrets.token_hex(3)}-"


def public_dir(prefix: str) -> Path:
    """A new folder under /tmp that other accounts can pass through (for homes, trees)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


def allow_accounts_to_run_python(*extra: Path) -> None:
    """Make the folders on the way to this Python, the repository and `extra` traversable."""
    from hub_config.accounts import access_problems, grant_traversal, python_paths

    grant_traversal(access_problems(python_paths(sys.executable, [str(REPO), *map(str, extra)])))


def account_processes(prefix: str) -> list:
    """Processes that run as one of the accounts with this prefix (not those that have exited
    and wait to be reaped)."""
    uids = {entry.pw_uid for entry in pwd.getpwall() if entry.pw_name.startswith(prefix)}
    found = []
    for proc in psutil.process_iter(["pid", "uids", "cmdline", "status"]):
        with contextlib.suppress(psutil.Error):
            if (proc.info["uids"] and proc.info["uids"].real in uids
                    and proc.info["status"] != psutil.STATUS_ZOMBIE):
                found.append(proc)
    return found


def remove_accounts(prefix: str) -> list[list[str]]:
    """Kill the processes of the accounts with this prefix, remove the accounts and their homes;
    returns the command lines of the processes that were still running."""
    left = []
    for proc in account_processes(prefix):
        with contextlib.suppress(psutil.Error):
            left.append(proc.info["cmdline"])
            proc.kill()
    for entry in pwd.getpwall():
        if entry.pw_name.startswith(prefix):
            for _ in range(20):  # userdel refuses while the password file is locked
                if subprocess.run(["userdel", "--remove", entry.pw_name],
                                  capture_output=True).returncode in (0, 6):
                    break
                time.sleep(0.25)
    # The servers' cgroups, in case a hub was killed before it could remove them.
    from hub_config.local_limits import ServerCgroup

    parents = {folder.parent for folder in ServerCgroup.for_account("x").dirs.values()}
    for folder in (f for parent in parents if parent.is_dir() for f in parent.glob(prefix + "*")):
        for _ in range(50):
            with contextlib.suppress(FileNotFoundError):
                try:
                    folder.rmdir()
                except OSError:  # busy while the killed processes are accounted
                    time.sleep(0.1)
                    continue
            break
    forget_accounts(prefix)
    return left


def forget_accounts(prefix: str) -> None:
    """Take the accounts with this prefix out of the cron and at deny files, and remove their
    runtime folders: what the hub makes for an account outside its home."""
    from hub_config.account_lockdown import DENY_FILES, undeny
    from hub_config.local_spawner import TenantLocalSpawner

    for path in DENY_FILES:
        if path.exists():
            undeny([line.strip() for line in path.read_text().splitlines()
                    if line.strip().startswith(prefix)], path)
    runtime_root = Path(TenantLocalSpawner.runtime_root.default_value)
    for folder in runtime_root.glob(prefix + "*") if runtime_root.is_dir() else ():
        shutil.rmtree(folder, ignore_errors=True)


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
    prefix: str = field(default_factory=account_prefix)
    homes: Path | None = None

    def start(self, timeout: float = 90) -> HubProcess:
        port = self.port or free_port()
        self.url = f"http://127.0.0.1:{port}"
        extra = self.state / "test_extra_config.py"
        config = EXTRA_CONFIG.format(admin=self.admin_token, metrics=self.metrics_token)
        if AS_ROOT and self.homes is None:
            self.homes = public_dir("wb-homes-")
            allow_accounts_to_run_python(self.homes)
            (self.state / "home").symlink_to(self.homes)
            config += (f"c.TenantLocalSpawner.account_prefix = {self.prefix!r}\n"
                       'c.TenantLocalSpawner.home_template = "{username}"\n')
        extra.write_text(config)
        env = dict(os.environ)
        env.update({
            "WORKBENCH_STATE_DIR": str(self.state),
            "WORKBENCH_BIND_URL": self.url,
            "WORKBENCH_HUB_BIND_URL": f"http://127.0.0.1:{free_port()}",
            "WORKBENCH_PROXY_API_URL": f"http://127.0.0.1:{free_port()}",
            "WORKBENCH_EXTRA_CONFIG": str(extra),
            "WORKBENCH_TENANTS_FILE": str(EXAMPLE_TENANTS),  # a test's env may name another
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
        })
        if self.homes is not None:
            env["WORKBENCH_HOMES_DIR"] = str(self.homes)
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

    def account(self, user: str) -> pwd.struct_passwd:
        """The system account that serves hub user `user` (as root)."""
        from hub_config.accounts import account_name

        return pwd.getpwnam(account_name(user, self.prefix))

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
        if self.homes is not None:
            remove_accounts(self.prefix)
            shutil.rmtree(self.homes, ignore_errors=True)
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


def login_and_spawn(url: str, user: str, password: str, timeout: float = 180
                    ) -> tuple[str, float]:
    """Log in through the hub's form, make a token, start the user's server through the API:
    (the token, seconds from the spawn request to the hub calling the server ready)."""
    class Hub:  # what local_login needs
        pass
    hub = Hub()
    hub.url = url
    browser = local_login(hub, user, password)
    assert browser.login_response.status_code == 302, browser.login_response.text[:2000]
    xsrf = browser.cookies.get("_xsrf", path="/hub/")
    token = browser.post(f"{url}/hub/api/users/{user}/tokens", headers={"X-XSRFToken": xsrf},
                         json={"note": "e2e"}, timeout=30).json()["token"]
    auth = {"Authorization": f"token {token}"}
    began = time.monotonic()
    spawn = requests.post(f"{url}/hub/api/users/{user}/server", headers=auth, timeout=120)
    assert spawn.status_code in (201, 202), spawn.text
    deadline = began + timeout
    model: dict = {}
    while time.monotonic() < deadline:
        model = requests.get(f"{url}/hub/api/users/{user}", headers=auth, timeout=30).json()
        if (model["servers"].get("") or {}).get("ready"):
            return token, time.monotonic() - began
        time.sleep(0.5)
    raise AssertionError(f"{user}'s server was not ready in {timeout:.0f}s: {model}")


@dataclass
class WorkbenchUp:
    """A running `workbench up` (see `workbench_up`)."""

    process: subprocess.Popen
    url: str
    user: str = ""
    password: str = ""
    # Processes still running under the state folder or as the hub's accounts after Ctrl-C
    # (killed, then listed here).
    leftovers: list = field(default_factory=list)
    prefix: str = ""  # of the accounts this hub makes (as root)
    homes: Path | None = None  # their homes (None: not made by this one)
    output: str = ""  # what `workbench up` printed, once it has exited
    extra_config: Path | None = None  # the hub's extra config (as root: the accounts' prefix)

    def account(self, user: str) -> pwd.struct_passwd:
        from hub_config.accounts import account_name

        return pwd.getpwnam(account_name(user, self.prefix))


@contextlib.contextmanager
def workbench_up(cwd: Path, state: Path, env: dict[str, str],
                 tenants: Path | None = EXAMPLE_TENANTS,
                 as_user: pwd.struct_passwd | None = None, preexec_fn=None,
                 after: WorkbenchUp | None = None):
    """Run `workbench up` from `cwd` on a free port until the hub answers; yield a WorkbenchUp.

    `tenants` is passed as `--tenants` (None: none, so `workbench up` picks or writes one).
    `as_user`: run it as that account instead (a normal user's workbench). As root, the hub's
    accounts get a prefix of their own and homes in a fresh folder under /tmp. `preexec_fn`
    runs in the child before `workbench up` (e.g. to start it with SIGINT ignored). `after`: a
    workbench this one follows on the same state folder: its accounts and homes are reused, and
    left for that one to remove.
    On exit it presses Ctrl-C as a user at the terminal would (SIGINT to its group), waits,
    and kills and records whatever still runs under `state` or as the hub's accounts, then
    removes the accounts.
    """
    port = free_port()
    argv = [sys.executable, "-m", "hub_config.cli.main", "up", "--state-dir", str(state),
            "--port", str(port)]
    argv += ["--tenants", str(tenants)] if tenants else []
    env = dict(env)
    prefix, homes, identity = account_prefix(), None, {}
    if as_user is not None:
        identity = {"user": as_user.pw_uid, "group": as_user.pw_gid, "extra_groups": []}
        env.update(HOME=as_user.pw_dir, USER=as_user.pw_name, LOGNAME=as_user.pw_name)
    elif AS_ROOT and after is not None:
        prefix, config = after.prefix, after.extra_config
        env["WORKBENCH_EXTRA_CONFIG"] = str(config)
        argv += ["--homes-dir", str(after.homes)]
    elif AS_ROOT:
        homes = public_dir("wb-homes-")
        config = public_dir("wb-config-") / "accounts.py"
        config.write_text(f"c.TenantLocalSpawner.account_prefix = {prefix!r}\n")
        env["WORKBENCH_EXTRA_CONFIG"] = str(config)
        argv += ["--homes-dir", str(homes)]
    up = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True,
                          preexec_fn=preexec_fn, **identity)
    running = WorkbenchUp(process=up, url=f"http://127.0.0.1:{port}", prefix=prefix, homes=homes)
    if env.get("WORKBENCH_EXTRA_CONFIG"):
        running.extra_config = Path(env["WORKBENCH_EXTRA_CONFIG"])
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
        login_file = state / "login.txt"
        if login_file.exists():
            login = dict(line.split(": ", 1) for line in login_file.read_text().splitlines())
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
        running.output = up.stdout.read()
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if Path(proc.cwd()).is_relative_to(state):
                    running.leftovers.append(proc.info["cmdline"])
                    proc.kill()
            except (psutil.Error, OSError, ValueError):
                continue
        if homes is not None:
            running.leftovers += remove_accounts(prefix)
            shutil.rmtree(homes, ignore_errors=True)
            shutil.rmtree(Path(env["WORKBENCH_EXTRA_CONFIG"]).parent, ignore_errors=True)


def run_cell(ws, code: str, session: str, timeout: float) -> tuple[str, str]:
    """Execute code over a kernel's websocket; return (status, all text output).

    The status is the execute reply's ("ok", "error"), "died" when the kernel restarts or dies
    meanwhile (its output so far is returned), or "timeout".
    """
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "test",
                   "session": session, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    texts, status, idle = [], None, False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (status and idle):
        ws.settimeout(max(1.0, deadline - time.monotonic()))
        msg = json.loads(ws.recv())
        kind, content = msg["msg_type"], msg["content"]
        if kind == "status" and content["execution_state"] in ("restarting", "dead"):
            return "died", "".join(texts)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if kind == "stream":
            texts.append(content["text"])
        elif kind in ("display_data", "execute_result", "update_display_data"):
            texts.append(str(content["data"].get("text/plain", "")))
            texts.append(str(content["data"].get("text/html", "")))
        elif kind == "error":
            texts.append("\n".join(content["traceback"]))
        elif kind == "execute_reply":
            status = content["status"]
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
    return status or "timeout", "".join(texts)
