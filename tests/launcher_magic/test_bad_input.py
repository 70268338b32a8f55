"""Bad input to the magics: a UsageError that says what to fix, and nothing created or started."""

from __future__ import annotations

import psutil
import pytest
from IPython.core.error import UsageError

import launcher_magic.engines.local.engine as local_engine

CELL = "print('hello')\n"

# (id, magic line, cell, extra environment, text the message must contain)
CASES = [
    ("unknown-option", "--nodez 2", CELL, {}, "unrecognized arguments: --nodez"),
    ("nodes-zero", "--nodes 0", CELL, {}, "--nodes 0 must be at least 1"),
    ("nodes-negative", "--nodes -3", CELL, {}, "--nodes -3 must be at least 1"),
    ("nodes-not-a-number", "--nodes two", CELL, {}, "invalid int value: 'two'"),
    ("nproc-zero", "--nproc-per-node 0", CELL, {}, "--nproc-per-node 0 must be at least 1"),
    ("gpus-negative", "--gpus -1", CELL, {}, "--gpus -1 must be 0 or more"),
    ("restarts-negative", "--max-restarts -1", CELL, {}, "--max-restarts -1 must be 0 or more"),
    ("empty-cell", "--nodes 2", "  \n\n", {}, "the cell is empty"),
    ("name-invalid", "--name 'my job!'", CELL, {}, "is not a valid job name"),
    ("name-too-long", "--name " + "a" * 41, CELL, {}, "at most 40"),
    ("name-only-dashes", "--name=---", CELL, {}, "is not a valid job name"),
    ("files-missing", "--files no-such-file.py", CELL, {}, "--files no-such-file.py: no such file"),
    ("nodes-over-limit", "--nodes 3", CELL, {"PADDLE_WORKBENCH_MAX_NODES": "2"},
     "over your tenant's limit of 2 nodes"),
    ("gpus-over-limit", "--gpus 4", CELL, {"PADDLE_WORKBENCH_MAX_GPUS_PER_NODE": "2"},
     "over your tenant's limit of 2 GPUs per node"),
    ("timeout-over-limit", "--timeout 2h", CELL, {"PADDLE_WORKBENCH_MAX_RUNTIME_SECONDS": "3600"},
     "over your tenant's maximum runtime of 3600 s"),
    ("timeout-garbage", "--timeout soon", CELL, {}, "is not a duration"),
    ("env-malformed", "--env NOEQUALS", CELL, {}, "is not KEY=VALUE"),
    ("env-reserved", "--env PADDLE_MASTER=x:1", CELL, {}, "set by the workbench"),
    ("cpu-garbage", "--cpu lots", CELL, {}, "is not a positive Kubernetes quantity"),
    ("memory-zero", "--memory 0Gi", CELL, {}, "is not a positive Kubernetes quantity"),
    ("engine-unknown", "--engine slurm", CELL, {}, "the 'slurm' engine is not installed"),
    ("files-reserved", "--files logs", CELL, {}, "the job directory has its own logs"),
    ("storage-without-mount", "--nodes 1", CELL, {"PADDLE_WORKBENCH_STORAGE_CLAIM": "claim-ada"},
     "PADDLE_WORKBENCH_STORAGE_MOUNT is not"),
    ("image-not-allowed", "--image evil/miner:latest", CELL,
     {"PADDLE_WORKBENCH_ALLOWED_IMAGES": "reg.example/paddle@sha256:" + "a" * 64},
     "is not allowed for your tenant"),
    ("gpus-without-gpus", "--gpus 1", CELL, {}, "this machine has none visible"),
    ("limit-malformed", "--nodes 1", CELL, {"PADDLE_WORKBENCH_MAX_NODES": "many"},
     "PADDLE_WORKBENCH_MAX_NODES='many' is not a whole number"),
    ("node-loss-malformed", "--nodes 1", CELL,
     {"PADDLE_WORKBENCH_NODE_LOSS_TOLERATION_SECONDS": "-5"},
     "PADDLE_WORKBENCH_NODE_LOSS_TOLERATION_SECONDS='-5' must not be negative"),
]


@pytest.fixture(autouse=True)
def no_gpus(monkeypatch):
    # This machine has no GPU; say so explicitly, so the cases hold on one that has.
    monkeypatch.setattr(local_engine, "detect_gpus", lambda: [])


def _children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


@pytest.mark.parametrize("line, cell, env, message", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_a_usage_error_and_leaves_nothing(shell, jobs_root, monkeypatch,
                                                        line, cell, env, message):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    before = _children()
    with pytest.raises(UsageError) as error:
        shell.run_cell_magic("paddle_launch", line, cell)
    assert message in str(error.value)
    assert list(jobs_root.iterdir()) == []  # no job directory, not even a hidden one
    assert _children() <= before  # no process started


@pytest.mark.parametrize("magic, line, message", [
    ("paddle_logs", "nosuchjob", "no job 'nosuchjob'"),
    ("paddle_stop", "nosuchjob", "no job 'nosuchjob'"),
    ("paddle_stop", "", "needs a job id or name"),
    ("paddle_jobs", "extra", "takes no arguments"),
    ("paddle_logs", "", "the following arguments are required: job"),
], ids=["logs-unknown-job", "stop-unknown-job", "stop-no-job", "jobs-extra-args", "logs-no-job"])
def test_line_magics_refuse_bad_input(shell, magic, line, message):
    with pytest.raises(UsageError) as error:
        shell.run_line_magic(magic, line)
    assert message in str(error.value)


def test_an_engine_not_installed_is_a_usage_error(shell, monkeypatch, jobs_root):
    import launcher_magic.engines as engines
    import workbench_contract.jobkinds as jobkinds

    monkeypatch.setattr(engines, "entry_points", lambda group: [])
    monkeypatch.setattr(jobkinds, "entry_points", lambda group: [])  # no job kind either
    import launcher_magic.kernel.magics as magics

    monkeypatch.setattr(magics, "_LAUNCHER", None)  # no engine loaded yet
    with pytest.raises(UsageError) as error:
        shell.run_cell_magic("paddle_launch", "--engine trainjob", CELL)
    assert "the 'trainjob' engine is not installed in this environment (installed: none)" in str(error.value)
    assert list(jobs_root.iterdir()) == []


def test_a_bug_is_one_line_that_says_so_and_keeps_its_traceback_for_tb(shell, monkeypatch,
                                                                         jobs_root):
    """A KeyError inside the launch is the workbench's bug, not a usage error the user can fix:
    the magic says so in one line, and `%tb` still has the whole chain."""
    from launcher_magic.kernel import launch

    def broken(self, spec):
        raise KeyError("max_nodes")

    monkeypatch.setattr(launch.Launcher, "_refuse_a_second_copy", broken)
    with pytest.raises(UsageError) as error:
        shell.run_cell_magic("paddle_launch", "--nodes 1", CELL)
    message = str(error.value)
    assert message.startswith("%paddle_launch failed unexpectedly (KeyError: 'max_nodes')")
    assert "bug in Paddle Workbench" in message and "%tb" in message
    assert isinstance(error.value.__cause__, KeyError)  # what %tb shows, below the one line
    assert list(jobs_root.iterdir()) == []
    assert KeyError not in launch.USER_ERRORS and LookupError not in launch.USER_ERRORS


def test_the_old_engine_name_runs_paddlejobs_and_says_it_is_deprecated(monkeypatch):
    from launcher_magic.core.spec import LaunchOptions, build_spec
    from launcher_magic.kernel.launch import Launcher
    from workbench_contract.environment import NotebookContext

    launcher = Launcher(env={"PADDLE_WORKBENCH_ENGINE": "kubernetes"})
    engine = launcher.engine("kubernetes")
    assert engine is launcher.engine("paddlejob")  # one engine, one set of watches
    assert engine.name == "paddlejob"
    spec = build_spec(LaunchOptions(nodes=1), CELL, NotebookContext(engine="kubernetes"))
    (note,) = engine.notes(spec)
    assert note == ("the engine name 'kubernetes' is deprecated: say --engine paddlejob (each "
                    "job a Kubeflow training-operator v1 PaddleJob)")
