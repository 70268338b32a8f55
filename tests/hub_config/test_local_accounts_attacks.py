"""The multi-tenant promise on one machine, attacked for real.

A real `workbench up` as root, three users with real accounts, servers and kernels: ann and bob in
tenant `alpha`, cat in tenant `beta`. Each victim has a file in their home, a running job (a rank
that sleeps), a VisualDL board and a kernel. Every row of `ATTACKS` is code that the attacker's
own kernel runs, as a hostile user would type it into a notebook; it prints ATTACK-SUCCEEDED or
ATTACK-DENIED with the error that stopped it. A row fails the test when the attack succeeds or
fails for the wrong reason (a wrong path is not a defence). Where it makes sense the same code
runs in the victim's own kernel first (the control): it must succeed there, which proves the row
aims at the real thing.

Each row runs twice: within a tenant (ann attacks bob) and across tenants (cat attacks ann).
The findings it covers: homes inside the hub's state (`../../login.txt`), a readable database and
cookie secret, other users' tokens in `/proc/<pid>/environ` of servers, kernels and job ranks, a
hub any user could kill, open job folders; servers and boards reachable by others; and kernels
whose output anyone could hear (TCP sockets found by owner in `/proc/net/tcp`, subscribed to with
no key; `kernel_sockets.py` has the attacker's side); a running job's listeners, which took any
connection on the machine's loopback.
Further tests here: the profile's limits bind the server, its kernels and its jobs (cgroups), and
a broken edit of the tenants file does not break logins.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from .conftest import (
    AS_ROOT,
    EXAMPLE_TENANTS,
    REPO,
    local_login,
    psutil,
    public_dir,
    requests,
    run_cell,
    workbench_up,
)

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")
pytest.importorskip("paddle", reason="paddlepaddle is not installed (paddle extra)")
pytest.importorskip("visualdl", reason="visualdl is not installed (notebook extra)")
pytestmark = [
    pytest.mark.timeout(1200), pytest.mark.kernel, pytest.mark.paddle,
    pytest.mark.skipif(not AS_ROOT, reason="system accounts need root (CI runs as root)"),
]

PASSWORD = "correct horse battery"
USERS = {"ann": "alpha-team", "bob": "alpha-team", "cat": "beta-team"}
PROFILES = {"alpha-team": "alpha--small", "beta-team": "beta--tiny"}
LIMITS = {"alpha--small": (1.0, 3 * 2**30), "beta--tiny": (0.5, 512 * 2**20)}
PAIRS = {"same-tenant": ("ann", "bob"), "other-tenant": ("cat", "ann")}


def tenants_file(path: Path) -> Path:
    example = yaml.safe_load(EXAMPLE_TENANTS.read_text())["tenants"]
    image = example[1]["images"]
    common = {"quota": {"gpus": 0, "cpu": "4", "memory": "8Gi", "pods": 10, "jobs": 5},
              "images": image, "job_limits": {"max_nodes": 2, "max_gpus_per_node": 0,
                                               "max_runtime": 3600},
              "idle": {"server_timeout": 3600, "max_age": 0}}
    tenants = [
        {"name": "alpha", "groups": ["alpha-team"], "namespace": "wb-alpha", **common,
         "profiles": [{"name": "small", "description": "1 CPU, 3 GiB",
                       "cpu": {"guarantee": 0.5, "limit": 1},
                       "memory": {"guarantee": "512Mi", "limit": "3Gi"}}]},
        {"name": "beta", "groups": ["beta-team"], "namespace": "wb-beta", **common,
         "profiles": [{"name": "tiny", "description": "0.5 CPU, 512 MiB",
                       "cpu": {"guarantee": 0.25, "limit": 0.5},
                       "memory": {"guarantee": "256Mi", "limit": "512Mi"}}]},
    ]
    path.write_text(yaml.safe_dump({"tenants": tenants}))
    return path


@dataclass
class User:
    """A logged-in user with a running server and a kernel driven over its websocket."""

    name: str
    token: str
    account: object  # pwd.struct_passwd
    ws: object = None
    session: str = field(default_factory=lambda: uuid.uuid4().hex)
    facts: dict = field(default_factory=dict)  # what an attacker aims at

    def run(self, code: str, timeout: float = 180) -> str:
        status, output = run_cell(self.ws, code, self.session, timeout)
        assert status == "ok", f"{self.name}: {status}\n{output}"
        return output

    def processes(self, *words: str) -> list:
        """This account's live processes whose command line has all `words`."""
        found = []
        for proc in psutil.process_iter(["uids", "cmdline", "status"]):
            argv = " ".join(proc.info["cmdline"] or [])
            if (proc.info["uids"] and proc.info["uids"].real == self.account.pw_uid
                    and proc.info["status"] != psutil.STATUS_ZOMBIE
                    and all(w in argv for w in words)):
                found.append(proc)
        return found


def wait_for(what: str, probe, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"no {what} within {timeout:.0f}s")


def add_users(state: Path, tenants: Path) -> None:
    for name, group in USERS.items():
        subprocess.run(
            [sys.executable, "-m", "hub_config.cli.main", "up", "--state-dir", str(state),
             "--tenants", str(tenants), "--add-user", name, "--groups", group],
            env={**os.environ, "PYTHONPATH": str(REPO), "WORKBENCH_PASSWORD": PASSWORD},
            check=True, capture_output=True, timeout=120)


def start_user(url: str, name: str, up) -> User:
    session = local_login(type("Hub", (), {"url": url}), name, PASSWORD)
    assert session.login_response.status_code == 302, name
    xsrf = session.cookies.get("_xsrf", path="/hub/")
    token = session.post(f"{url}/hub/api/users/{name}/tokens", headers={"X-XSRFToken": xsrf},
                         json={"note": "attack table"}, timeout=30).json()["token"]
    auth = {"Authorization": f"token {token}"}
    spawn = requests.post(f"{url}/hub/api/users/{name}/server", headers=auth, timeout=120,
                          json={"profile": PROFILES[USERS[name]]})
    assert spawn.status_code in (201, 202), spawn.text
    wait_for(f"server of {name}", lambda: (requests.get(
        f"{url}/hub/api/users/{name}", headers=auth, timeout=30).json()["servers"].get("")
        or {}).get("ready"))
    kernel = requests.post(f"{url}/user/{name}/api/kernels", headers=auth, json={},
                           timeout=60).json()
    ws = websocket.create_connection(
        f"{url.replace('http', 'ws')}/user/{name}/api/kernels/{kernel['id']}/channels",
        header=[f"Authorization: token {token}"], timeout=60)
    return User(name=name, token=token, account=up.account(name), ws=ws)


VICTIM_SETUP = """
%load_ext launcher_magic
"""
SLEEPER = """%%paddle_launch --detach --name sleeper
import socket, time
listener = socket.socket()  # as a rank's endpoint or rank 0's TCP store listens
listener.bind(("127.0.0.1", 0))
listener.listen()
with open("listener-port", "w") as out:
    out.write(str(listener.getsockname()[1]))
time.sleep(3000)
"""
BOARD = """
import glob, json, os
from launcher_magic.kernel import visualdl
with open(os.path.expanduser("~/secret.txt"), "w") as out:
    out.write("only for my eyes")
job_dir = glob.glob(os.path.expanduser("~/jobs/sleeper-*"))[0]
board = visualdl.start(os.path.join(job_dir, "visualdl")).instance
print("FACTS", json.dumps({"job_dir": job_dir, "board_port": board.port,
                           "board_path": board.public_path, "records": str(visualdl.records_dir()),
                           "home": os.path.expanduser("~")}))
"""


def prepare_victim(user: User, up, state: Path) -> None:
    """The victim's secret file, sleeping job and board, and where their processes are."""
    user.run(VICTIM_SETUP)
    user.run(SLEEPER, timeout=300)
    facts = json.loads(user.run(BOARD).split("FACTS", 1)[1].strip().splitlines()[0])
    # The rank's own record names its pid (a rank forked by the warm interpreter has no
    # command line of its own to find it by); it must be a live process of this account.
    record = Path(facts["job_dir"]) / "ranks" / "attempt-0" / "rank-0.json"
    rank = wait_for(f"{user.name}'s job rank", lambda: [
        p for p in user.processes() if record.exists()
        and p.pid == json.loads(record.read_text())["pid"]])[0]
    server = user.processes("jupyterhub.singleuser")[0]
    kernel = user.processes("ipykernel_launcher")[0]
    argv = kernel.info["cmdline"]
    server_env = dict(line.split("=", 1) for line in Path(
        f"/proc/{server.pid}/environ").read_text().split("\0") if "=" in line)
    rank_log = wait_for(f"{user.name}'s rank log",
                        lambda: sorted(Path(facts["job_dir"]).glob("logs/*/*/workerlog.*")))[0]
    port = wait_for(f"{user.name}'s job listener", lambda: (
        Path(facts["job_dir"]) / "listener-port").exists() and int(
        (Path(facts["job_dir"]) / "listener-port").read_text()))
    facts.update({
        "job_port": port,
        "victim": user.name, "uid": user.account.pw_uid, "server_pid": server.pid,
        "kernel_pid": kernel.pid,
        "rank_pid": rank.pid, "connection_file": argv[argv.index("-f") + 1],
        "server_port": urlsplit(server_env["JUPYTERHUB_SERVICE_URL"]).port,
        "rank_log": str(rank_log),
    })
    user.facts = facts


@pytest.fixture(scope="module")
def site(proxy_available):
    """`workbench up` as root with ann, bob and cat running servers, kernels, jobs and boards."""
    # Under /tmp rather than pytest's temp root (0700), so that only the state folder's own mode
    # stands between a user and the hub's files.
    root = public_dir("wb-attacks-")
    tenants = tenants_file(root / "tenants.yaml")
    state = root / "state"
    env = dict(os.environ, WORKBENCH_PROXY_COMMAND=proxy_available, WORKBENCH_CULLER="0",
               PYTHONPATH=str(REPO))
    with workbench_up(REPO, state, env, tenants=tenants) as up:
        add_users(state, tenants)
        users = {name: start_user(up.url, name, up) for name in USERS}
        for name in ("ann", "bob"):
            prepare_victim(users[name], up, state)
        hub_pid = int((state / "jupyterhub.pid").read_text())
        proxy_pid = int((state / "jupyterhub-proxy.pid").read_text())
        proxy_argv = psutil.Process(proxy_pid).cmdline()
        shared = {"hub": up.url, "state": str(state), "hub_pid": hub_pid, "proxy_pid": proxy_pid,
                  "proxy_api_port": int(proxy_argv[proxy_argv.index("--api-port") + 1])}
        for user in users.values():
            user.facts.update(shared)
        try:
            yield up, users, state, tenants
        finally:
            for user in users.values():
                user.ws.close()
    shutil.rmtree(root, ignore_errors=True)
    assert not up.leftovers, f"left running after Ctrl-C: {up.leftovers}"


@dataclass(frozen=True)
class Attack:
    """One row: code the attacker's kernel runs (`F` holds the victim's facts; `get` fetches a
    URL without following redirects; `me` is whoever runs it), how it must be stopped, and the
    control: "victim" (the victim's own kernel must succeed), "root" (the target exists) or
    "job" (the victim's job listens on its port, seen where the job is)."""

    id: str
    code: str
    denied_by: str = "PermissionError"  # or "HTTP", or "Nothing" (the attack heard nothing)
    control: str | None = "victim"  # or "root", or "job" (the job's listener is listening)
    target: str = ""  # for a "root" control: the path that must exist
    victim_setup: str = ""  # code the victim's kernel runs first (what the attack aims at)


CHATTER = ("from tests.hub_config.kernel_sockets import chatter\n"
           "chatter('VICTIM-KERNEL-OUTPUT')")


def state_file(name: str) -> Attack:
    return Attack(f"hub-state-{name}", f"return open(F['state'] + '/{name}', 'rb').read()",
                  control="root", target=name)


ATTACKS = [
    Attack("home-file", "return open(F['home'] + '/secret.txt').read()"),
    Attack("home-listing", "return os.listdir(F['home'])"),
    Attack("job-directory", "return os.listdir(F['job_dir'])"),
    Attack("job-cell", "return open(F['job_dir'] + '/cell.py').read()"),
    Attack("job-rank-log", "return open(F['rank_log']).read()"),
    # The first user's password used to be two folders up from every home.
    state_file("login.txt"),
    state_file("jupyterhub.sqlite"),
    state_file("jupyterhub_cookie_secret"),
    state_file("users.yaml"),
    state_file("tenants.in-use.yaml"),
    state_file("jupyterhub.log"),
    # Tokens: JUPYTERHUB_API_TOKEN in the environment of the victim's processes.
    Attack("server-environ", "return open(f\"/proc/{F['server_pid']}/environ\", 'rb').read()"),
    Attack("kernel-environ", "return open(f\"/proc/{F['kernel_pid']}/environ\", 'rb').read()"),
    Attack("job-rank-environ", "return open(f\"/proc/{F['rank_pid']}/environ\", 'rb').read()"),
    Attack("kernel-connection-key", "return open(F['connection_file']).read()"),
    # The kernel's sockets, found as anyone can (TCP by owner, IPC paths in /proc/net/unix),
    # while the victim's kernel prints: subscribing to IOPub needs no key.
    Attack("kernel-iopub-subscribe", "heard = eavesdrop(kernel_endpoints(F))\n"
                                     "    if not heard:\n"
                                     "        raise Denied(f'nothing from {kernel_endpoints(F)}')\n"
                                     "    return [(where, frames[0], b'VICTIM-KERNEL-OUTPUT'"
                                     " in b''.join(frames)) for where, frames in heard][:3]",
           denied_by="Nothing",
           victim_setup=CHATTER),
    Attack("kernel-ipc-connect", "paths = ipc_sockets(os.path.dirname(F['connection_file']))\n"
                                 "    assert paths, 'no IPC socket of the kernel found'\n"
                                 "    return connect_unix(paths)"),
    # A port the victim's running job listens on (its rendezvous, TCP store and rank endpoints
    # take any connection): the job has a network of its own, so nothing outside it gets in.
    Attack("job-listener", "import socket\n"
                           "    return socket.create_connection(('127.0.0.1', F['job_port']),"
                           " timeout=5).close()", denied_by="ConnectionRefusedError",
           control="job"),
    Attack("hub-environ", "return open(f\"/proc/{F['hub_pid']}/environ\", 'rb').read()",
           control=None),
    Attack("proxy-environ", "return open(f\"/proc/{F['proxy_pid']}/environ\", 'rb').read()",
           control=None),
    # Signals: 0 checks the permission exactly as SIGKILL would, without killing anything.
    Attack("signal-hub", "return os.kill(F['hub_pid'], 0)", control=None),
    Attack("signal-proxy", "return os.kill(F['proxy_pid'], 0)", control=None),
    Attack("signal-server", "return os.kill(F['server_pid'], 0)"),
    Attack("signal-job-rank", "return os.kill(F['rank_pid'], 0)"),
    # The victim's server and the hub's API, with the attacker's own token.
    Attack("server-through-proxy", "return get(f\"{F['hub']}/user/{F['victim']}/api/contents\","
                                   " token())", denied_by="HTTP"),
    Attack("server-port-directly", "return get(f\"http://127.0.0.1:{F['server_port']}/user/"
                                   "{F['victim']}/api/contents\", token())", denied_by="HTTP"),
    Attack("hub-api-victim", "return get(f\"{F['hub']}/hub/api/users/{F['victim']}\", token())",
           denied_by="HTTP"),
    Attack("proxy-api", "return get(f\"http://127.0.0.1:{F['proxy_api_port']}/api/routes\")",
           denied_by="HTTP", control=None),
    # VisualDL: steal the board's key (if readable), then use it on each route to the board.
    Attack("visualdl-key-records", "return os.listdir(F['records'])"),
    Attack("visualdl-board-directly", "return get(f\"http://127.0.0.1:{F['board_port']}"
                                      "{F['board_path']}/api/runs\", board_key())",
           denied_by="HTTP"),
    Attack("visualdl-through-own-server", "return get(f\"{F['hub']}/user/{me}/proxy/absolute/"
                                          "{F['board_port']}/api/runs\", {**token(), "
                                          "**board_key()})", denied_by="HTTP"),
    Attack("visualdl-through-victims-server", "return get(f\"{F['hub']}/user/{F['victim']}/"
                                              "proxy/absolute/{F['board_port']}/api/runs\", "
                                              "{**token(), **board_key()})", denied_by="HTTP"),
    # Limits: a process cannot leave its cgroup or raise its own limit.
    Attack("cgroup-escape", "return open('/sys/fs/cgroup/memory/cgroup.procs', 'w')"
                            ".write(str(os.getpid()))", control=None),
    Attack("cgroup-raise-limit", "p = [l.split(':')[2].strip() for l in open('/proc/self/cgroup') "
                                 "if ':memory:' in l][0]\n"
                                 "    return open(f'/sys/fs/cgroup/memory{p}/memory.limit_in_bytes',"
                                 " 'w').write('-1')", control=None),
]

RUNNER = '''
import glob, json, os, urllib.error, urllib.request
from tests.hub_config.kernel_sockets import (connect_unix, eavesdrop, ipc_sockets,
                                             kernel_endpoints)
F = json.loads({facts!r})
me = {me!r}


class Denied(Exception):
    """The attack reached its targets and got nothing back (there is no error to show)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {{}})
    with urllib.request.build_opener(_NoRedirect).open(request, timeout=30) as response:
        return response.status, response.read()[:120]


def token():
    return {{"Authorization": "token " + os.environ["JUPYTERHUB_API_TOKEN"]}}


def board_key():
    try:
        for path in glob.glob(F["records"] + "/*.json"):
            record = json.load(open(path))
            if record["port"] == F["board_port"]:
                return {{"X-Workbench-VisualDL-Token": record["token"]}}
    except OSError:
        pass
    return {{}}


def attack():
    {code}


try:
    print("ATTACK-SUCCEEDED", repr(attack())[:200])
except urllib.error.HTTPError as error:
    print("ATTACK-DENIED HTTP", error.code)
except PermissionError:
    print("ATTACK-DENIED PermissionError")
except ConnectionRefusedError:
    print("ATTACK-DENIED ConnectionRefusedError")
except Denied as why:
    print("ATTACK-DENIED Nothing", why)
except Exception as error:
    print("ATTACK-ERROR", type(error).__name__, error)
'''


def attempt(runner: User, facts: dict, attack: Attack) -> str:
    output = runner.run(RUNNER.format(facts=json.dumps(facts), me=runner.name, code=attack.code))
    return next(line for line in output.splitlines() if line.startswith("ATTACK-"))


def denied(line: str, attack: Attack) -> bool:
    if attack.denied_by == "HTTP":
        return re.fullmatch(r"ATTACK-DENIED HTTP (302|401|403|404)", line) is not None
    if attack.denied_by == "Nothing":
        return line.startswith("ATTACK-DENIED Nothing")
    return line == f"ATTACK-DENIED {attack.denied_by}"


@pytest.mark.parametrize("pair", list(PAIRS), ids=list(PAIRS))
@pytest.mark.parametrize("attack", ATTACKS, ids=[a.id for a in ATTACKS])
def test_attack_fails(site, attack, pair):
    up, users, state, _ = site
    attacker, victim = (users[name] for name in PAIRS[pair])
    if attack.victim_setup:
        victim.run(attack.victim_setup)
    if attack.control == "victim":
        control = attempt(victim, victim.facts, attack)
        assert control.startswith("ATTACK-SUCCEEDED"), f"the control failed: {control}"
    elif attack.control == "root":
        assert (state / attack.target).stat().st_size > 0
    elif attack.control == "job":
        assert listening(victim.facts["rank_pid"], victim.facts["job_port"]), victim.facts
    line = attempt(attacker, victim.facts, attack)
    assert denied(line, attack), f"{attacker.name} -> {victim.name}: {line}"


def listening(pid: int, port: int) -> bool:
    """Whether `port` listens on TCP in the network namespace of process `pid`."""
    lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    return any(fields[1].endswith(f":{port:04X}") and fields[3] == "0A"
               for fields in (line.split() for line in lines))


def cgroup_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    return {part[1]: part[2] for part in (line.split(":", 2) for line in lines)}


def cgroup_value(pid: int, controller: str, name: str) -> str:
    path = cgroup_of(pid)[controller].lstrip("/")
    return (Path("/sys/fs/cgroup") / controller / path / name).read_text().strip()


def test_profiles_bind_each_server_its_kernels_and_its_jobs(site):
    _, users, _, _ = site
    for user in users.values():
        cpu, memory = LIMITS[PROFILES[USERS[user.name]]]
        server = user.processes("jupyterhub.singleuser")[0].pid
        assert cgroup_value(server, "cpu", "cpu.cfs_quota_us") == str(int(cpu * 100_000))
        assert cgroup_value(server, "cpu", "cpu.cfs_period_us") == "100000"
        assert cgroup_value(server, "memory", "memory.limit_in_bytes") == str(memory)
        assert f"/workbench/{user.account.pw_name}" in cgroup_of(server)["memory"]
        others = [p.pid for p in user.processes() if p.pid != server]
        assert others  # kernels, and for ann and bob the job and the board
        for pid in others:
            assert cgroup_of(pid) == cgroup_of(server), (user.name, pid)
    ann = users["ann"]
    assert cgroup_of(ann.facts["rank_pid"]) == cgroup_of(ann.facts["server_pid"])


def test_a_kernel_cannot_take_more_memory_than_its_profile(site):
    """cat's profile allows 512 MiB: a kernel that takes 1 GiB is stopped, and cat's server
    lives on."""
    up, users, _, _ = site
    cat = users["cat"]
    server = cat.processes("jupyterhub.singleuser")[0].pid
    kills = int(re.search(r"oom_kill (\d+)", cgroup_value(server, "memory",
                                                          "memory.oom_control")).group(1))
    auth = {"Authorization": f"token {cat.token}"}
    kernel = requests.post(f"{up.url}/user/cat/api/kernels", headers=auth, json={},
                           timeout=60).json()
    ws = websocket.create_connection(
        f"{up.url.replace('http', 'ws')}/user/cat/api/kernels/{kernel['id']}/channels",
        header=[f"Authorization: token {cat.token}"], timeout=60)
    try:
        status, output = run_cell(ws, "big = b'x' * (1 << 30)\nprint('ALLOCATED', len(big))",
                                  uuid.uuid4().hex, 180)
    finally:
        ws.close()
    assert "ALLOCATED" not in output
    assert status == "died" or "MemoryError" in output, (status, output)
    after = int(re.search(r"oom_kill (\d+)", cgroup_value(server, "memory",
                                                          "memory.oom_control")).group(1))
    assert after > kills or "MemoryError" in output
    model = requests.get(f"{up.url}/hub/api/users/cat", headers=auth, timeout=30).json()
    assert model["servers"][""]["ready"]


def test_the_hubs_state_and_the_users_files_are_private(site):
    _, users, state, _ = site
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path in state.iterdir():
        if path.is_file():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    for user in users.values():
        home = Path(user.account.pw_dir)
        assert not home.is_relative_to(state)
        assert (stat.S_IMODE(home.stat().st_mode), home.stat().st_uid) == (
            0o700, user.account.pw_uid)
        assert stat.S_IMODE((home / "jobs").stat().st_mode) == 0o700
    job = Path(users["bob"].facts["job_dir"])
    for path in (job / "cell.py", job / "spec.json", *job.glob("logs/*/*/*")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_broken_tenants_file_keeps_logins_working(site):
    up, users, state, tenants = site
    good = tenants.read_text()
    log = state / "jupyterhub.log"
    try:
        tenants.write_text("tenants: [\n")
        wait_for("the warning in the hub log", lambda: "the hub keeps the last valid version"
                 in log.read_text(errors="replace"), timeout=60)
        session = local_login(type("Hub", (), {"url": up.url}), "bob", PASSWORD)
        assert session.login_response.status_code == 302
        assert session.get(f"{up.url}/hub/home", timeout=30).status_code == 200
    finally:
        tenants.write_text(good)
