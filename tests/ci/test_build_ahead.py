"""The build-ahead plugin's plan: which tests wait for built parts, which builds a session
starts, and that one failed build does not stop the next."""

from __future__ import annotations

import subprocess
import sys
import textwrap
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
    # The node's images are pushed unscanned (SCAN=off): the node tier needs no Trivy.
    assert names("tests/cluster/node/test_two_nodes.py") == ["control plane", "node", "helm"]


# A session of two workers over a tree laid out like this repository's tests: each test writes
# which worker ran it, in order.
_CONFTEST = """
from tests_under import build_ahead


def pytest_configure(config):
    build_ahead.register(config)
"""
_TEST = """
import os


def test_{name}(tmp_path_factory):
    with open(os.environ["RAN_LOG"], "a") as log:
        log.write("{path} " + os.environ["PYTEST_XDIST_WORKER"] + "\\n")
"""


def test_under_xdist_the_node_tier_runs_on_one_worker_and_the_rest_on_the_other(tmp_path):
    root = tmp_path / "tree"
    package = root / "tests_under"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "build_ahead.py").write_text((REPO / "tests" / "build_ahead.py").read_text())
    (root / "conftest.py").write_text(_CONFTEST)
    paths = ["tests/cluster/node/test_a.py", "tests/cluster/node/test_b.py",
             "tests/hub/test_c.py", "tests/hub/test_d.py", "tests/cluster/test_e.py",
             "tests/test_f.py"]
    for i, path in enumerate(paths):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(textwrap.dedent(_TEST.format(name=i, path=path)))
    log = tmp_path / "ran.log"
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider",
                           "-q", "tests"], cwd=root, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "RAN_LOG": str(log)})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = [line.split() for line in log.read_text().splitlines()]
    assert sorted(path for path, _ in ran) == sorted(paths)
    node = {worker for path, worker in ran if path.startswith("tests/cluster/node/")}
    rest = {worker for path, worker in ran if not path.startswith("tests/cluster/node/")}
    assert len(node) == 1 and len(rest) == 1 and node != rest, ran
    # The rest keeps the session's order: the cluster tier after the tests that need no build.
    order = [path for path, _ in ran if not path.startswith("tests/cluster/node/")]
    assert order[-1] == "tests/cluster/test_e.py", order


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
