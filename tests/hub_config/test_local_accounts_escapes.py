"""A hub user's account starts nothing outside its server: the ways out, tried for real.

A hub user's processes belong in their server's cgroup, where the profile's limits bind them and
where stopping or culling the server ends them. Whatever the account could start some other way
would escape both: a cron job, an `at` job, or an ssh login with a key the user writes into
`~/.ssh/authorized_keys` (OpenSSH with PAM lets a key in to an account whose password is locked
with `!`). A real `workbench up` as root serves one user; their own kernel tries each way, as a
user would type it into a notebook, and each must be refused. ssh goes to a private sshd on a
free loopback port (the default authentication, `UsePAM yes`), with a control: an account made
the way earlier versions made them (`/bin/bash`, `!`), which the same sshd lets in with the same
key. Last, the server's terminals still give the user a shell, whatever the account's login shell.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import (
    AS_ROOT,
    REPO,
    account_prefix,
    free_port,
    login_and_spawn,
    public_dir,
    remove_accounts,
    requests,
    run_cell,
    workbench_up,
)

websocket = pytest.importorskip("websocket", reason="websocket-client is not installed")
pytestmark = [
    pytest.mark.timeout(600), pytest.mark.kernel,
    pytest.mark.skipif(not AS_ROOT, reason="system accounts need root (CI runs as root)"),
]
CRON_SPOOL = Path("/var/spool/cron/crontabs")


@dataclass
class Member:
    """The one hub user of the fixture's `workbench up`, with a kernel on their server."""

    url: str
    name: str
    token: str
    account: pwd.struct_passwd
    ws: object

    def run(self, code: str, timeout: float = 120) -> str:
        status, output = run_cell(self.ws, code, uuid.uuid4().hex, timeout)
        assert status == "ok", output
        return output

    def command(self, argv: list[str], stdin: str = "") -> tuple[int, str]:
        """Run `argv` from the kernel, as the account; (exit status, what it printed)."""
        output = self.run(
            "import subprocess\n"
            f"r = subprocess.run({argv!r}, input={stdin!r}, capture_output=True, text=True)\n"
            "print('EXIT', r.returncode, (r.stdout + r.stderr).replace(chr(10), ' | '))")
        line = next(line for line in output.splitlines() if line.startswith("EXIT "))
        _, status, said = (line.split(" ", 2) + [""])[:3]
        return int(status), said


@pytest.fixture(scope="module")
def member(proxy_available):
    """`workbench up` as root, its first user logged in, their server and a kernel running."""
    root = public_dir("wb-escapes-")
    env = dict(os.environ, WORKBENCH_PROXY_COMMAND=proxy_available, WORKBENCH_CULLER="0",
               PYTHONPATH=str(REPO))
    try:
        with workbench_up(REPO, root / "state", env) as up:
            token, _ = login_and_spawn(up.url, up.user, up.password)
            auth = {"Authorization": f"token {token}"}
            kernel = requests.post(f"{up.url}/user/{up.user}/api/kernels", headers=auth,
                                   json={}, timeout=60).json()
            ws = websocket.create_connection(
                f"{up.url.replace('http', 'ws')}/user/{up.user}/api/kernels/{kernel['id']}"
                "/channels", header=[f"Authorization: token {token}"], timeout=60)
            try:
                yield Member(url=up.url, name=up.user, token=token,
                             account=up.account(up.user), ws=ws)
            finally:
                ws.close()
        assert not up.leftovers, f"left running after Ctrl-C: {up.leftovers}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- cron and at --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scheduler:
    """A way to have something run later, outside the server: the command the account runs,
    what it is fed, and the words of the refusal."""

    id: str
    argv: list[str]
    stdin: str
    refusal: str


SCHEDULERS = [
    Scheduler("crontab", ["crontab", "-"], "* * * * * touch $HOME/escaped-by-cron\n",
              "not allowed to use this program"),
    Scheduler("at", ["at", "now + 5 minutes"], "touch $HOME/escaped-by-at\n",
              "do not have permission to use at"),
]


def queued_at_jobs(account: str) -> list[str]:
    """The numbers of the `at` jobs queued for `account` (as root, `atq` lists everyone's)."""
    listing = subprocess.run(["atq"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listing.splitlines() if line.split()[-1:] == [account]]


def forget_schedules(account: str) -> None:
    """Remove whatever a failed row left scheduled for `account`."""
    (CRON_SPOOL / account).unlink(missing_ok=True)
    jobs = queued_at_jobs(account) if shutil.which("atq") else []
    if jobs:
        subprocess.run(["atrm", *jobs], capture_output=True)


@pytest.mark.parametrize("way", SCHEDULERS, ids=[s.id for s in SCHEDULERS])
def test_an_account_cannot_schedule_anything(member, way):
    if not shutil.which(way.argv[0]):
        pytest.skip(f"{way.argv[0]} is not installed (scripts/system-packages.txt adds it)")
    account = member.account.pw_name
    try:
        status, said = member.command(way.argv, way.stdin)
        assert status != 0 and way.refusal in said, f"{way.id} accepted a job: {said}"
        assert not (CRON_SPOOL / account).exists()
        if shutil.which("atq"):
            assert queued_at_jobs(account) == []
    finally:
        forget_schedules(account)


# ---- ssh ----------------------------------------------------------------------------------------


@dataclass
class Sshd:
    port: int
    key: Path  # the client's private key
    public_key: str
    log: Path

    def login(self, account: str, command: str = "echo SSH-RAN-$(id -u)"
              ) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-i", str(self.key), "-p", str(self.port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "ConnectTimeout=20", f"{account}@127.0.0.1", command],
            capture_output=True, text=True, timeout=60)


SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {folder}/host_key
PidFile {folder}/sshd.pid
UsePAM yes
LogLevel VERBOSE
"""


@pytest.fixture
def sshd(tmp_path):
    """A private sshd on a free loopback port (the default authentication, PAM on); its log."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not (os.access(binary, os.X_OK) and shutil.which("ssh")):
        pytest.skip("openssh-server is not installed (scripts/system-packages.txt adds it)")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(tmp_path / name)], check=True)
    port = free_port()
    config = tmp_path / "sshd_config"
    config.write_text(SSHD_CONFIG.format(port=port, folder=tmp_path))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    log = tmp_path / "sshd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, "-D", "-e", "-f", str(config)], stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, log.read_text()
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, "sshd did not listen in 30 s"
            time.sleep(0.2)
        yield Sshd(port=port, key=tmp_path / "client_key", log=log,
                   public_key=(tmp_path / "client_key.pub").read_text())
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(30)


@pytest.fixture
def old_style_account():
    """An account made as earlier versions made hub accounts (`/bin/bash`, password `!`)."""
    prefix, homes = account_prefix(), public_dir("wb-homes-")
    name = f"{prefix}control"
    subprocess.run(["useradd", "--create-home", "--home-dir", str(homes / name), "--shell",
                    "/bin/bash", "--user-group", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        remove_accounts(prefix)
        shutil.rmtree(homes, ignore_errors=True)


AUTHORIZE = """
import os
os.makedirs(os.path.expanduser("~/.ssh"), mode=0o700, exist_ok=True)
with open(os.path.expanduser("~/.ssh/authorized_keys"), "a") as keys:
    keys.write({key!r})
os.chmod(os.path.expanduser("~/.ssh/authorized_keys"), 0o600)
print("AUTHORIZED")
"""


def test_an_account_cannot_log_in_with_ssh(member, sshd, old_style_account):
    control = old_style_account.pw_name
    keys = f"{old_style_account.pw_dir}/.ssh"
    subprocess.run(["runuser", "-u", control, "--", "sh", "-c", f"mkdir -p -m 700 {keys} && "
                    f"cat >> {keys}/authorized_keys && chmod 600 {keys}/authorized_keys"],
                   input=sshd.public_key, text=True, check=True, capture_output=True)
    let_in = sshd.login(control)
    assert let_in.returncode == 0 and f"SSH-RAN-{old_style_account.pw_uid}" in let_in.stdout, (
        f"the control failed: {let_in.stderr}\n{sshd.log.read_text()}")

    account = member.account.pw_name
    assert "AUTHORIZED" in member.run(AUTHORIZE.format(key=sshd.public_key))
    attempt = sshd.login(account)
    log = sshd.log.read_text()
    assert "SSH-RAN" not in attempt.stdout, f"{account} ran a command over ssh:\n{log}"
    assert attempt.returncode != 0
    # Not even a session without a command (`ssh -N`, a tunnel): the key is never accepted.
    assert f"Accepted publickey for {account} " not in log, log


# ---- what the account still has: its server's terminals -----------------------------------------


def test_a_terminal_still_gets_a_shell(member):
    auth = {"Authorization": f"token {member.token}"}
    server = f"{member.url}/user/{member.name}"
    terminal = requests.post(f"{server}/api/terminals", headers=auth, timeout=60).json()["name"]
    ws = websocket.create_connection(
        f"{server.replace('http', 'ws')}/terminals/websocket/{terminal}",
        header=[f"Authorization: token {member.token}"], timeout=60)
    seen = ""
    try:
        ws.send(json.dumps(["stdin", "echo TERM-$((6 * 7))-$(id -u)-$0-$SHELL\r"]))
        deadline = time.monotonic() + 60
        while "TERM-42-" not in seen and time.monotonic() < deadline:
            ws.settimeout(max(1.0, deadline - time.monotonic()))
            kind, *rest = json.loads(ws.recv())
            seen += rest[0] if kind == "stdout" and rest else ""
    finally:
        ws.close()
        requests.delete(f"{server}/api/terminals/{terminal}", headers=auth, timeout=30)
    assert "TERM-42-" in seen, f"no answer from the terminal's shell: {seen!r}"
    answer = seen[seen.index("TERM-42-"):].split()[0]
    assert answer == f"TERM-42-{member.account.pw_uid}-/bin/bash-/bin/bash", seen
