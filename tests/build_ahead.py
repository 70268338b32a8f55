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
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LOG = REPO / "test-output" / "build-ahead.log"

# The builds in the order the deferred tests need them: the control plane (the cluster tier,
# run first of those), Helm (the chart tier), Trivy (the images tier, and the CPU image of the
# node tier), the node's binaries (the node tier, run last).
BUILDS = (
    ("control plane", ["bash", "deploy/controlplane/build.sh"]),
    ("helm", ["bash", "deploy/helm/build.sh"]),
    ("trivy", ["bash", "scripts/build-trivy.sh"]),
    ("node", ["bash", "deploy/node/build.sh"]),
)

# Tests that need parts of BUILDS, by folder, in the order they run after every other test, and
# the parts each folder's tests need.
DEFERRED = {
    "tests/cluster": ("control plane",),
    "tests/helm": ("helm",),
    "tests/images": ("trivy",),
    "tests/cluster/node": ("control plane", "helm", "trivy", "node"),
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
        if config.getoption("collectonly"):
            return
        LOG.parent.mkdir(exist_ok=True)
        env = {**os.environ, "PATH": os.environ.get("PATH", "") + ":/usr/local/go/bin"}
        with open(LOG, "w") as log:
            self.process = subprocess.Popen(
                ["nice", "-n", "19", "bash", "-c", script(needed(set(groups.values())))],
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
