"""`workbench up` run by a normal user: it serves that one user, in their own home, and says so.

The test makes an ordinary account (as root, which CI is), runs `workbench up` as that account,
and checks: the message, the server running as the account in its home, nobody else's spawn, and
`--add-user` refused (there are no accounts to give anyone else without root).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import time

import pytest

from hub_config.accounts import account_name, ensure_account
from hub_config.users import add_user

from .conftest import (
    AS_ROOT,
    REPO,
    account_prefix,
    allow_accounts_to_run_python,
    local_login,
    psutil,
    public_dir,
    remove_accounts,
    workbench_up,
)

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not AS_ROOT, reason="makes an ordinary account to run as: needs root "
                       "(CI runs as root)"),
]
PASSWORD = "correct horse battery"


@pytest.fixture
def operator():
    """An ordinary account, able to run this Python; removed with its processes at the end."""
    prefix, homes = account_prefix(), public_dir("wb-homes-")
    allow_accounts_to_run_python(homes)
    name = account_name("solo", prefix)
    try:
        yield ensure_account(name, homes / name)
    finally:
        left = remove_accounts(prefix)
        subprocess.run(["rm", "-rf", str(homes)], check=False)
        assert not left, f"left running: {left}"


def test_a_normal_users_workbench_serves_only_them(operator, proxy_available):
    state = operator.home / "state"
    env = dict(os.environ, WORKBENCH_PROXY_COMMAND=proxy_available, WORKBENCH_CULLER="0",
               PYTHONPATH=str(REPO))
    with workbench_up(REPO, state, env, as_user=pwd.getpwnam(operator.name)) as up:
        me = operator.name.lower()
        assert up.user == me
        session = local_login(type("Hub", (), {"url": up.url}), me, up.password)
        assert session.login_response.status_code == 302
        xsrf = session.cookies.get("_xsrf", path="/hub/")
        headers = {"X-XSRFToken": xsrf}
        spawn = session.post(f"{up.url}/hub/api/users/{me}/server", headers=headers, timeout=120)
        assert spawn.status_code in (201, 202), spawn.text
        server = wait_for_server(operator.uid)
        environ = dict(line.split("=", 1) for line in open(
            f"/proc/{server.pid}/environ").read().split("\0") if "=" in line)
        assert environ["HOME"] == str(operator.home) and environ["USER"] == operator.name
        assert server.cwd() == str(operator.home)
        assert (operator.home / "paddle-quickstart.ipynb").exists()

        # Someone else in the users file (written there by hand) gets a page that says why.
        add_user(state / "users.yaml", "mallory", ["vision-team"], PASSWORD)
        os.chown(state / "users.yaml", operator.uid, operator.gid)
        other = local_login(type("Hub", (), {"url": up.url}), "mallory", PASSWORD)
        assert other.login_response.status_code == 302
        refused = other.post(f"{up.url}/hub/api/users/mallory/server", timeout=60,
                             headers={"X-XSRFToken": other.cookies.get("_xsrf", path="/hub/")})
        assert refused.status_code == 403, refused.text
        assert f"serves only {me}" in refused.json()["message"]

        added = subprocess.run(
            [sys.executable, "-m", "hub_config.cli.main", "up", "--state-dir", str(state),
             "--add-user", "eve", "--groups", "students"], capture_output=True, text=True,
            env={**env, "HOME": str(operator.home)}, user=operator.uid, group=operator.gid,
            extra_groups=[], timeout=120)
        assert added.returncode == 2 and "run it as root to add users" in added.stderr, added
        stopped = session.delete(f"{up.url}/hub/api/users/{me}/server", headers=headers,
                                 timeout=120)
        assert stopped.status_code in (202, 204), stopped.text
    assert up.process.returncode == 0, up.output
    assert f"serves only {me}" in up.output, up.output
    assert not up.leftovers, up.leftovers


def wait_for_server(uid: int, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in psutil.process_iter(["uids", "cmdline"]):
            if proc.info["uids"] and proc.info["uids"].real == uid and any(
                    "jupyterhub.singleuser" in arg for arg in proc.info["cmdline"] or []):
                return proc
        time.sleep(0.5)
    raise AssertionError("the server did not start")
