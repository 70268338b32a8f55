"""`workbench service`: the systemd unit, checked by systemd itself; and the pure parts of the
embedded default's lifetimes (the state folder's lock, the bounded hub log, the restart budget).

This machine's PID 1 is not systemd, so the unit is written and verified
(`systemd-analyze verify`, which parses it and checks its command), not started here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hub_config.bounded_log import BoundedLog
from hub_config.cli.service import verify
from hub_config.hub_process import RestartBudget, how_it_ended
from hub_config.instance import StateHeld, StateLock, holder
from hub_config.systemd_unit import UNIT_NAME, unit_text


def _workbench(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hub_config.cli.main", *argv],
                          capture_output=True, text=True, timeout=120)


def test_the_unit_passes_systemds_own_check_and_a_broken_one_does_not(tmp_path):
    unit = tmp_path / UNIT_NAME
    unit.write_text(unit_text(sys.executable, state_dir=tmp_path / "state", port=8123))
    assert verify(unit) == ""
    text = unit.read_text()
    assert f"ExecStart={sys.executable} -m hub_config.cli.main up --state-dir {tmp_path}/state " \
           "--port 8123 --homes-dir /home" in text
    for setting in ("KillMode=mixed", "Restart=on-failure", "Delegate=yes", "ProtectSystem=true"):
        assert setting in text.splitlines()
    unit.write_text(text.replace("KillMode=mixed", "KillMode=gently"))
    assert "kill mode" in verify(unit)
    unit.write_text(text.replace(sys.executable, "/no/such/python"))
    assert "/no/such/python" in verify(unit)


def test_service_install_status_uninstall(tmp_path):
    units, state = tmp_path / "units", tmp_path / "state"
    options = ["--unit-dir", str(units), "--state-dir", str(state), "--port", "8124"]
    installed = _workbench("service", "install", *options)
    assert installed.returncode == 0, installed.stderr
    assert "verified with systemd-analyze" in installed.stdout
    if not Path("/run/systemd/system").is_dir():
        assert "systemd is not the init system here, so nothing was started" in installed.stdout
    assert (units / UNIT_NAME).is_file()
    status = _workbench("service", "status", *options)
    assert status.returncode == 0 and "installed" in status.stdout, status.stdout
    assert f"state folder: {state} not in use" in status.stdout
    removed = _workbench("service", "uninstall", *options)
    assert removed.returncode == 0 and not (units / UNIT_NAME).exists(), removed.stdout
    assert f"Kept the state folder {state}" in removed.stdout
    assert _workbench("service", "status", *options).returncode == 1


def test_a_held_state_folder_cannot_be_taken_and_is_free_when_released(tmp_path):
    first, second = StateLock(tmp_path), StateLock(tmp_path)
    first.acquire()
    with pytest.raises(StateHeld) as held:
        second.acquire()
    assert held.value.pid == holder(tmp_path) and f"(process {held.value.pid})" in str(held.value)
    first.release()
    second.acquire()  # a lock's holder that ends (or is killed) leaves it free
    second.release()


def test_the_hub_log_stays_within_its_bound(tmp_path):
    log = BoundedLog(tmp_path / "jupyterhub.log", max_bytes=1000, backups=3)
    for n in range(500):
        log.write(f"line {n:04d} {'x' * 40}\n".encode())
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["jupyterhub.log", "jupyterhub.log.1", "jupyterhub.log.2", "jupyterhub.log.3"]
    assert all((tmp_path / name).stat().st_size <= 1000 for name in files)
    assert log.tail(1) == [f"line 0499 {'x' * 40}"]  # the newest line is in the current file
    newest_old = (tmp_path / "jupyterhub.log.1").read_text().splitlines()[-1]
    assert int(newest_old.split()[1]) == int(log.tail(100)[0].split()[1]) - 1  # nothing lost


def test_a_hub_that_keeps_dying_spends_its_restarts():
    now = [0.0]
    budget = RestartBudget(restarts=3, window=600, clock=lambda: now[0])
    assert [budget.take() for _ in range(3)] == [1, 2, 3]
    assert budget.take() is None
    now[0] = 601.0  # the window moved on
    assert budget.take() == 1
    assert how_it_ended(-signal.SIGKILL) == "killed by SIGKILL"
    assert how_it_ended(3) == "exit status 3"
