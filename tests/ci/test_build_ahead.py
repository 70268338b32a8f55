"""The build-ahead plugin's plan: which tests wait for built parts, which builds a session
starts, and that one failed build does not stop the next."""

from __future__ import annotations

import subprocess
import time

from tests.build_ahead import BUILDS, REPO, group, needed, script


def test_tests_that_need_no_build_run_first_and_the_node_tier_last():
    paths = ["tests/cluster/node/test_two_nodes.py", "tests/hub_config/test_cli.py",
             "tests/images/test_scan_gate.py", "tests/cluster/test_watch.py",
             "tests/helm/test_chart.py", "tests/test_code_size.py",
             "tests/clusterish/test_x.py"]
    assert sorted(paths, key=group) == [
        "tests/hub_config/test_cli.py", "tests/test_code_size.py", "tests/clusterish/test_x.py",
        "tests/cluster/test_watch.py", "tests/helm/test_chart.py",
        "tests/images/test_scan_gate.py", "tests/cluster/node/test_two_nodes.py"]


def test_a_session_builds_only_what_its_tests_need():
    def names(*paths: str) -> list[str]:
        return [name for name, _ in needed({group(p) for p in paths})]

    assert names("tests/hub_config/test_cli.py") == []
    assert names("tests/helm/test_chart.py") == ["helm"]
    assert names("tests/cluster/test_watch.py", "tests/images/test_scan_gate.py") == [
        "control plane", "trivy"]
    assert names("tests/cluster/node/test_two_nodes.py") == [
        "control plane", "helm", "trivy", "node"]


def test_every_build_is_a_script_of_the_repository():
    for _, argv in BUILDS:
        assert argv[0] == "bash" and (REPO / argv[1]).is_file(), argv


def test_a_failed_build_is_logged_and_the_next_one_still_runs(tmp_path):
    marker = tmp_path / "second-ran"
    text = script([("first", ["false"]), ("second", ["touch", str(marker)])])
    done = subprocess.run(["bash", "-c", text], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert "== first failed" in done.stdout and marker.exists()
    assert done.stdout.splitlines()[-1].startswith("== done")


def test_the_end_of_a_session_stops_what_still_builds_with_its_children():

    from tests.build_ahead import BuildAhead

    plugin = BuildAhead()
    plugin.process = subprocess.Popen(["bash", "-c", "sleep 300 & sleep 300; wait"],
                                      start_new_session=True)
    group_id = plugin.process.pid  # start_new_session: the leader's pid names the group

    def running() -> list[str]:
        # A killed child may linger a moment as a zombie until init reaps it: not running.
        found = subprocess.run(["pgrep", "-g", str(group_id)], capture_output=True, text=True)
        return [pid for pid in found.stdout.split() if _state(pid) not in ("Z", "")]

    # As at the end of a real session: the builds have been running for a while.
    deadline = time.monotonic() + 10
    while len(running()) < 3 and time.monotonic() < deadline:  # bash and its two sleeps
        time.sleep(0.05)
    plugin.pytest_sessionfinish(None, 0)
    assert plugin.process is None
    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running() == [], "the build's children still run"


def _state(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""
