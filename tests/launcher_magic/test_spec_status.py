"""JobSpec, its validation and the status model, as plain data."""

from __future__ import annotations

import pytest

from launcher_magic.core.spec import (
    JobSpec,
    LaunchOptions,
    build_spec,
    normalise_name,
    parse_duration,
)
from launcher_magic.core.status import JobState, JobStatus, RankState, TerminalStateError
from workbench_contract.environment import NotebookContext

HUB_ENV = {
    "PADDLE_WORKBENCH_TENANT": "vision",
    "PADDLE_WORKBENCH_NAMESPACE": "wb-vision",
    "PADDLE_WORKBENCH_USER": "ada",
    "PADDLE_WORKBENCH_ENGINE": "kubernetes",
    "PADDLE_WORKBENCH_IMAGE": "reg.example/nb@sha256:" + "b" * 64,
    "PADDLE_WORKBENCH_MAX_RUNTIME_SECONDS": "7200",
}


def test_spec_takes_defaults_from_the_hub_environment():
    spec = build_spec(LaunchOptions(nodes=2, gpus=1), "train()", NotebookContext.from_env(HUB_ENV), now=1.0, suffix="abc123")
    assert spec.job_id == "job-abc123"
    assert (spec.tenant, spec.namespace, spec.user) == ("vision", "wb-vision", "ada")
    assert spec.engine == "kubernetes"
    assert spec.image == HUB_ENV["PADDLE_WORKBENCH_IMAGE"]
    assert spec.timeout_seconds == 7200  # the tenant's maximum runtime when --timeout is absent
    assert spec.resources.nproc_per_node == 1 and spec.resources.gpus_per_node == 1
    assert spec.world_size == 2


def test_explicit_options_win_over_defaults():
    spec = build_spec(
        LaunchOptions(nodes=1, nproc_per_node=3, name="My_Model.v2", engine="local",
                      timeout="15m", env=("A=1", "B=x=y")),
        "train()", NotebookContext.from_env(HUB_ENV),
    )
    assert spec.name == "my-model-v2"
    assert spec.engine == "local"
    assert spec.timeout_seconds == 900
    assert dict(spec.env) == {"A": "1", "B": "x=y"}
    assert spec.world_size == 3


def test_spec_round_trips_and_ignores_unknown_keys():
    spec = build_spec(LaunchOptions(nodes=2, files=("data.csv",), visualdl=True), "x=1", NotebookContext())
    data = spec.to_dict()
    data["field_from_the_future"] = 42
    data["resources"]["also_new"] = True
    assert JobSpec.from_dict(data) == spec


@pytest.mark.parametrize("raw, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200),
                                          ("1d", 86400)])
def test_durations(raw, seconds):
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw, name", [("MNIST", "mnist"), ("my_job", "my-job"),
                                       (" a b ", "a-b"), ("x..y", "x-y"), ("-ok-", "ok")])
def test_names_are_normalised(raw, name):
    assert normalise_name(raw) == name


def test_gpus_set_processes_per_node():
    spec = build_spec(LaunchOptions(nodes=2, gpus=4), "x", NotebookContext())
    assert spec.resources.nproc_per_node == 4


def test_terminal_states_never_change():
    status = JobStatus(job_id="j").moved_to(JobState.RUNNING).moved_to(JobState.SUCCEEDED)
    assert status.finished_at is not None
    for state in (JobState.RUNNING, JobState.FAILED, JobState.RESTARTING):
        with pytest.raises(TerminalStateError):
            status.moved_to(state)
    assert status.moved_to(JobState.SUCCEEDED).state == JobState.SUCCEEDED


def test_status_round_trips():
    from launcher_magic.core.status import NodeStatus, RankStatus

    status = JobStatus(
        job_id="j", state=JobState.FAILED, restarts=1, failed_rank=1,
        nodes=(NodeStatus(node=0, state=RankState.FAILED, exit_code=1, pid=10, host="gpu-a"),),
        ranks=(RankStatus(rank=1, node=0, state=RankState.FAILED, exit_code=1, error="E",
                          host="gpu-a"),),
    )
    data = status.to_dict()
    data["unknown"] = "ignored"
    assert JobStatus.from_dict(data) == status
    # A record written before ranks had a machine still loads: the machine is unknown.
    for item in data["nodes"] + data["ranks"]:
        del item["host"]
    old = JobStatus.from_dict(data)
    assert old.nodes[0].host is None and old.ranks[0].host is None
    assert [s for s in JobState if s.is_terminal()] == [
        JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED]
