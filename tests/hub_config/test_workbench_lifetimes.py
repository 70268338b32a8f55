"""The embedded default as a service: its fault table, each row tried for real.

A real `workbench up` (a real hub, proxy and idle cullers; as root, a user's server as their own
account) is killed, signalled, started twice, or loses its hub:

| fault | what must follow |
|---|---|
| SIGKILL of `workbench up` | nothing of the workbench left within a few seconds (hub, proxy, services, the user's server) |
| a second start on a held state folder | refused, naming the holder's pid; nothing started |
| a start after a SIGKILL of `workbench up` and its hub | the leftovers (proxy, services) stopped and said so; serves with the users and their server's record intact |
| SIGINT with SIGINT ignored (started in the background), SIGTERM, SIGHUP | a clean stop: exit 0, nothing left |
| the hub killed alone | `workbench up` starts it again, says so, and serves |

Processes of a workbench are found as `workbench up` finds them: by the state folder marked in
their environment (`hub_config.instance`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from hub_config.instance import leftovers
from tests.launcher_magic.support import wait_until

from .conftest import (
    AS_ROOT,
    EXAMPLE_TENANTS,
    REPO,
    account_processes,
    login_and_spawn,
    psutil,
    requests,
    workbench_up,
)

pytestmark = pytest.mark.timeout(600)


def _hub_pid(up) -> int | None:
    """The pid of `workbench up`'s hub, or None while there is not exactly one (a killed hub is
    a zombie until it is reaped, and a new one is being started)."""
    hubs = []
    for child in psutil.Process(up.process.pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "jupyterhub" in " ".join(
                    child.cmdline()):
                hubs.append(child.pid)
        except psutil.Error:  # gone, or a zombie, as we looked
            continue
    return hubs[0] if len(hubs) == 1 else None


def _answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/hub/api/", timeout=2).ok
    except requests.RequestException:
        return False


def _user(url: str, user: str, token: str) -> dict:
    return requests.get(f"{url}/hub/api/users/{user}", timeout=30,
                        headers={"Authorization": f"token {token}"}).json()


def test_sigkill_of_workbench_up_leaves_nothing(tmp_path, proxy_available):
    state = tmp_path / "state"
    with workbench_up(REPO, state, dict(os.environ)) as up:
        login_and_spawn(up.url, up.user, up.password)
        marked = leftovers(state)
        commands = " ".join(p.command for p in marked)
        assert "jupyterhub" in commands and "configurable-http-proxy" in commands, commands
        assert "idle_culler" in commands, commands  # the hub's services carry the mark too
        os.kill(up.process.pid, signal.SIGKILL)
        gone = wait_until(lambda: not leftovers(state) and not _answers(up.url), timeout=60)
        assert gone, [p.command for p in leftovers(state)]
        if AS_ROOT:  # the user's server went with the hub
            assert wait_until(lambda: not account_processes(up.prefix), timeout=30), \
                [p.info["cmdline"] for p in account_processes(up.prefix)]
    assert not up.leftovers, up.leftovers


def test_a_second_start_on_a_held_folder_is_refused(tmp_path, proxy_available):
    state = tmp_path / "state"
    with workbench_up(REPO, state, dict(os.environ)) as up:
        before = {p.pid for p in leftovers(state)}
        second = subprocess.run(
            [sys.executable, "-m", "hub_config.cli.main", "up", "--state-dir", str(state),
             "--port", "1", "--tenants", str(EXAMPLE_TENANTS)],
            capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert (f"{state} is in use by another workbench (process {up.process.pid})"
                in second.stderr), second.stderr
        assert {p.pid for p in leftovers(state)} == before  # nothing started, nothing stopped
        assert _answers(up.url)
    assert up.process.returncode == 0 and not up.leftovers, (up.output, up.leftovers)


def test_a_start_after_a_crash_reclaims_what_was_left_and_serves(tmp_path, proxy_available):
    state = tmp_path / "state"
    with workbench_up(REPO, state, dict(os.environ)) as first:
        token, _ = login_and_spawn(first.url, first.user, first.password)
        hub = _hub_pid(first)
        assert hub, "no hub running"
        # The harshest crash: `workbench up` and its hub killed at once (the OOM killer, say):
        # the proxy and the services are left, and so is the user's server.
        os.kill(first.process.pid, signal.SIGKILL)
        os.kill(hub, signal.SIGKILL)
        first.process.wait(30)
        left = {p.pid for p in leftovers(state)}
        assert left, "the crash left nothing to reclaim"
        with workbench_up(REPO, state, dict(os.environ), after=first) as second:
            assert first.user == second.user and first.password == second.password
            server = _user(second.url, second.user, token)["servers"].get("")
            assert server and server["ready"], server  # the server's record is intact
        # It stops what is still running of what the crash left: each process it names is one
        # of them (one may have ended by itself meanwhile: CI saw 2 of 3 stopped).
        said = re.search(r"Stopped (\d+) process\(es\) a workbench left running on .* when it "
                         r"was killed: (.*)", second.output)
        assert said, second.output
        stopped = {int(pid) for pid in re.findall(r"(?:^|; )(\d+) ", said.group(2))}
        assert 1 <= int(said.group(1)) == len(stopped) and stopped <= left, (left, said.group(0))
        assert second.process.returncode == 0 and not second.leftovers, second.leftovers


@pytest.mark.parametrize("signum, ignore_sigint", [
    (signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGHUP, False),
], ids=["sigint-in-the-background", "sigterm", "sighup"])
def test_stop_signals_stop_everything(tmp_path, proxy_available, signum, ignore_sigint):
    state = tmp_path / "state"

    def background():  # how a shell without job control starts `workbench up &`
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    with workbench_up(REPO, state, dict(os.environ),
                      preexec_fn=background if ignore_sigint else None) as up:
        assert leftovers(state)
        os.kill(up.process.pid, signum)
        assert up.process.wait(120) == 0
        assert not leftovers(state), [p.command for p in leftovers(state)]
    assert "Stopping the workbench..." in up.output, up.output
    assert not up.leftovers, up.leftovers


def test_a_killed_hub_is_started_again(tmp_path, proxy_available):
    state = tmp_path / "state"
    with workbench_up(REPO, state, dict(os.environ)) as up:
        hub = _hub_pid(up)
        assert hub, "no hub running"
        os.kill(hub, signal.SIGKILL)
        again = wait_until(lambda: _answers(up.url) and _hub_pid(up) not in (None, hub),
                           timeout=120)
        assert again, "the hub was not started again"
        token, _ = login_and_spawn(up.url, up.user, up.password)  # it serves: log in, spawn
        assert _user(up.url, up.user, token)["name"] == up.user
        time.sleep(0.5)
    assert ("The hub ended unexpectedly (killed by SIGKILL): starting it again (restart 1 of 3 "
            "within 10 min)") in up.output, up.output
    assert up.process.returncode == 0 and not up.leftovers, (up.output, up.leftovers)
