"""Build what takes minutes on a cold machine while the tests that need none of it run.

On a fresh machine the control plane, the node's binaries, Helm and Trivy are Go builds of 25
minutes or so on 2 cores, each made the first time a fixture needs it, while the test run waits.
When a session holds tests that need them, this plugin:

- starts those builds at once in the background, one after another under ``nice`` (the tests
  keep the CPU they ask for; the builds take what is idle while tests wait on kernels, servers
  and pods), with their output in ``test-output/build-ahead.log``;
- runs the tests that need none of them first, then the ones that do (the cluster tier last,
  its real-node tests at the very end), each group in its usual order.

Each fixture still runs its build script as before. The scripts hold a lock per cache, so a
fixture that comes while its part is building waits for it, then finds it cached; a warm cache
makes every background build a check of seconds. A background build that fails only means the
fixture builds again and reports the failure. At the end of the session whatever still builds is
stopped with its process group: nothing is left running.

Under pytest-xdist (``make test PYTEST_WORKERS="-n 2"``), the real-node tier is one work unit
and every other test another: one worker runs the node tier while the other runs the rest in the
order above, so the longest tier no longer waits for all the others. The node tier holds the
machine's one node (a second worker starting one would wait for the first), so it is never split;
the other tiers stay on one worker so that each session fixture (the control plane, the images,
the hub) starts once. The builds then start once, in the controlling process, as soon as the
first worker has collected.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOG = REPO / "test-output" / "build-ahead.log"

# The builds in the order the deferred tests need them: the control plane (the cluster tier, and
# the node tier), the node's binaries (the node tier, which starts beside the others under
# xdist), Helm (the chart tier, and the hub's release on the node), Trivy (the images tier; the
# node's images are pushed unscanned, SCAN=off, and the images tier is where the gate is tested).
BUILDS = (
    ("control plane", ["bash", "deploy/controlplane/build.sh"]),
    ("node", ["bash", "deploy/node/build.sh"]),
    ("helm", ["bash", "deploy/helm/build.sh"]),
    ("trivy", ["bash", "scripts/build-trivy.sh"]),
)

NODE_TIER = "tests/cluster/node"

# Tests that need parts of BUILDS, by folder, in the order they run after every other test, and
# the parts each folder's tests need.
DEFERRED = {
    "tests/cluster": ("control plane",),
    "tests/helm": ("helm",),
    "tests/images": ("trivy",),
    NODE_TIER: ("control plane", "node", "helm"),
}
_FOLDERS = list(DEFERRED)


def group(path: str) -> int:
    """Where a test file (relative to the repository) runs: 0 with the tests that need no build,
    else 1 + the index of its folder in DEFERRED (the most specific folder wins)."""
    found = [folder for folder in _FOLDERS if path.startswith(folder + "/")]
    return 1 + _FOLDERS.index(max(found, key=len)) if found else 0


def needed(groups) -> list[tuple[str, list[str]]]:
    """The builds the given groups' tests need, in BUILDS order."""
    names = {name for g in groups if g for name in DEFERRED[_FOLDERS[g - 1]]}
    return [(name, argv) for name, argv in BUILDS if name in names]


def script(builds) -> str:
    """The shell text that runs `builds` one after another, each announced in the log; a failed
    build does not stop the next one."""
    lines = []
    for name, argv in builds:
        lines.append(f"echo \"== {name}: $(date +%T)\"")
        lines.append(" ".join(argv) + f" >/dev/null || echo \"== {name} failed\"")
    lines.append("echo \"== done: $(date +%T)\"")
    return "\n".join(lines)


def xdist_unit(path: str) -> str:
    """The xdist work unit of a test file (relative to the repository): the real-node tier, or
    everything else."""
    return "real-node" if path.startswith(NODE_TIER + "/") else "other-tiers"


class BuildAhead:
    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session, config, items) -> None:
        groups = {id(item): group(_relative(item)) for item in items}
        if not any(groups.values()):
            return
        # sorted() is stable: each group keeps pytest's order, so module fixtures stay together.
        items[:] = sorted(items, key=lambda item: groups[id(item)])
        if config.getoption("collectonly") or hasattr(config, "workerinput"):
            return  # an xdist worker: the controlling process builds
        self.start(set(groups.values()))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_make_scheduler(self, config, log):
        """Every load-sharing xdist mode keeps the real-node tier on one worker (``each`` runs
        every test on every worker and is left to xdist)."""
        if config.getvalue("dist") == "each":
            return None
        from xdist.scheduler import LoadScopeScheduling

        class TierScheduling(LoadScopeScheduling):
            """Work units are the tiers of ``xdist_unit``, each in its collected order."""

            def _split_scope(self, nodeid: str) -> str:
                return xdist_unit(nodeid.split("::", 1)[0])

        return TierScheduling(config, log)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids) -> None:
        """The controlling process of an xdist session: build for what the workers collected."""
        if self.process is None:
            self.start({group(nodeid.split("::", 1)[0]) for nodeid in ids})

    def start(self, groups: set[int]) -> None:
        builds = needed(groups)
        if not builds:
            return
        LOG.parent.mkdir(exist_ok=True)
        env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/local/go/bin"}
        with open(LOG, "w") as log:
            self.process = subprocess.Popen(
                ["nice", "-n", "19", "bash", "-c", script(builds)],
                cwd=REPO, env=env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def pytest_sessionfinish(self, session, exitstatus) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:  # its session is not made yet: it has started nothing
            process.kill()
            process.wait()


def _relative(item: pytest.Item) -> str:
    try:
        return item.path.relative_to(REPO).as_posix()
    except ValueError:
        return ""


def register(config) -> None:
    """Plug this in (tests/conftest.py's pytest_configure)."""
    config.pluginmanager.register(BuildAhead(), "build-ahead")
