"""The jobs folder's index (`core/jobindex.py`) stays right while jobs come, end and go.

Jobs here are real job directories (`JobDir.create`) whose status files are written as their one
writer writes them (atomically); `%paddle_jobs`'s rows come from `history.read_rows` with the
real local engine. File times are set into the past where a test needs the index to trust an
entry (the index does not trust a status written in the last two seconds). Nothing here times.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from launcher_magic.core import jobindex
from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.jobindex import INDEX_FILE, JobIndex
from launcher_magic.core.processes import start_time
from launcher_magic.core.spec import JobSpec, Resources
from launcher_magic.core.status import JobState, JobStatus
from launcher_magic.kernel import history
from launcher_magic.kernel.launch import Launcher

T0 = 1_700_000_000.0


def _make(root: Path, job_id: str, state: JobState | None = None, created: float = T0,
          nodes: int = 2) -> JobDir:
    spec = JobSpec(job_id=job_id, name=job_id.rsplit("-", 1)[0], engine="local", nodes=nodes,
                   resources=Resources(nproc_per_node=1), created_at=created)
    job = JobDir.create(root, spec, "x = 1\n")
    if state is not None:
        _set_state(job, state)
    return job


def _set_state(job: JobDir, state: JobState) -> None:
    status = JobStatus(job_id=job.job_id, state=state, started_at=T0,
                       finished_at=T0 + 60 if state.is_terminal() else None)
    job.write_status(status)


def _age(root: Path) -> None:
    """Make every job's files an hour old, as a finished job's are."""
    past = time.time() - 3600
    for path in root.iterdir():
        if path.name.startswith("."):
            continue
        for item in (path / "spec.json", path / "status.json", path):
            if item.exists():
                os.utime(item, (past, past))


def _states(root: Path) -> dict[str, str]:
    """What `%paddle_jobs` reads: job id -> state shown."""
    return {row.job_id: row.state.value
            for row in history.read_rows(Launcher({"PADDLE_WORKBENCH_JOBS_DIR": str(root)}),
                                         time.time())}


def _from_index(root: Path) -> set[str]:
    """The jobs whose final status the index vouches for (their directories go unread)."""
    return {job.handle.job_id for job in JobIndex(root).jobs() if job.status is not None}


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """A jobs folder that gets an index however few jobs it holds."""
    monkeypatch.setattr(jobindex, "MIN_JOBS", 0)
    path = tmp_path / "jobs"
    path.mkdir()
    return path


def test_a_folder_of_a_few_jobs_gets_no_index_file_until_it_grows(tmp_path, monkeypatch):
    monkeypatch.setattr(jobindex, "MIN_JOBS", 3)
    root = tmp_path / "jobs"
    for n in range(2):
        _make(root, f"few-{n}", JobState.SUCCEEDED, created=T0 + n)
    _age(root)
    assert _states(root) == {"few-0": "Succeeded", "few-1": "Succeeded"}
    assert not (root / INDEX_FILE).exists()
    _make(root, "few-2", JobState.FAILED, created=T0 + 2)
    _age(root)
    _states(root)
    assert (root / INDEX_FILE).is_file()
    shutil.rmtree(root / "few-2")  # fewer again: the index that exists is kept right
    assert _states(root) == {"few-0": "Succeeded", "few-1": "Succeeded"}
    assert set(json.loads((root / INDEX_FILE).read_text())["jobs"]) == {"few-0", "few-1"}


def test_ended_jobs_come_from_the_index_and_new_ones_are_read(root):
    for n in range(3):
        _make(root, f"old-{n}", JobState.SUCCEEDED, created=T0 + n)
    _age(root)
    assert _states(root) == {f"old-{n}": "Succeeded" for n in range(3)}
    assert (root / INDEX_FILE).is_file()
    assert _from_index(root) == {"old-0", "old-1", "old-2"}

    _make(root, "new-0", JobState.FAILED, created=T0 + 10)  # just written: read, not trusted
    assert _states(root) == {**{f"old-{n}": "Succeeded" for n in range(3)}, "new-0": "Failed"}
    assert _from_index(root) == {"old-0", "old-1", "old-2"}
    _age(root)
    _states(root)
    assert "new-0" in _from_index(root)
    # Oldest first, as `%paddle_jobs` lists them.
    assert [job.handle.job_id for job in JobIndex(root).jobs()] == [
        "old-0", "old-1", "old-2", "new-0"]


def test_a_running_job_is_asked_and_shows_stopped_once_stopped(root):
    """A running job is asked of its engine every time (here its supervisor is this live test
    process, which is what the local engine checks); once its writer records Stopped, the row
    says so and the index keeps it."""
    job = _make(root, "live-0", JobState.RUNNING)
    (job.path / "supervisor.pid").write_text(f"{os.getpid()} {start_time(os.getpid())}\n")
    _age(root)
    assert _states(root) == {"live-0": "Running"}
    assert _states(root) == {"live-0": "Running"}
    assert _from_index(root) == set()
    _set_state(job, JobState.STOPPED)  # the writer's atomic replace: a new status file
    assert _states(root) == {"live-0": "Stopped"}
    _age(root)
    assert _states(root) == {"live-0": "Stopped"}
    assert _from_index(root) == {"live-0"}


def test_deleted_jobs_leave_the_index(root):
    for n in range(3):
        _make(root, f"job-{n}", JobState.SUCCEEDED, created=T0 + n)
    _age(root)
    _states(root)
    shutil.rmtree(root / "job-1")
    assert set(_states(root)) == {"job-0", "job-2"}
    saved = json.loads((root / INDEX_FILE).read_text())
    assert set(saved["jobs"]) == {"job-0", "job-2"}


def test_a_job_made_again_under_the_same_id_is_read_again(root):
    _make(root, "same-0", JobState.SUCCEEDED, nodes=2)
    _age(root)
    _states(root)
    assert _from_index(root) == {"same-0"}
    shutil.rmtree(root / "same-0")
    _make(root, "same-0", JobState.FAILED, nodes=4)
    _age(root)
    rows = history.read_rows(Launcher({"PADDLE_WORKBENCH_JOBS_DIR": str(root)}), time.time())
    assert [(row.job_id, row.state.value, row.nodes) for row in rows] == [("same-0", "Failed", 4)]


def test_a_status_rewritten_in_place_is_read_again(root):
    job = _make(root, "edit-0", JobState.SUCCEEDED)
    _age(root)
    _states(root)
    assert _from_index(root) == {"edit-0"}
    data = json.loads(job.status_path.read_text())
    data["finished_at"] = T0 + 7200
    job.status_path.write_text(json.dumps(data))  # in place: the directory does not change
    rows = history.read_rows(Launcher({"PADDLE_WORKBENCH_JOBS_DIR": str(root)}), time.time())
    assert rows[0].finished_at == T0 + 7200


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "jobs": {"a-0": 3}}',
                                     '{"version": 99, "jobs": {}}', "[]"],
                         ids=["broken", "bad-entry", "other-version", "not-a-map"])
def test_a_broken_index_costs_a_full_read_never_a_wrong_row(root, content):
    _make(root, "a-0", JobState.SUCCEEDED)
    _make(root, "b-0", JobState.FAILED, created=T0 + 1)
    _age(root)
    (root / INDEX_FILE).write_text(content)
    assert _states(root) == {"a-0": "Succeeded", "b-0": "Failed"}
    _age(root)
    _states(root)
    assert _from_index(root) == {"a-0", "b-0"}


def test_a_stale_entry_for_a_job_still_running_is_not_trusted(root):
    """An index written by hand (or by an older kernel) that calls a running job finished is
    not believed once the directory has changed since."""
    job = _make(root, "run-0", JobState.SUCCEEDED)
    _age(root)
    _states(root)
    shutil.rmtree(job.path)
    _make(root, "run-0", JobState.RUNNING)
    assert _from_index(root) == set()
