"""The job directory: everything about one job, on the user's (shared) storage.

    <jobs root>/<job-id>/
        spec.json              the JobSpec
        cell.py                the notebook cell, as the user wrote it
        main.py                what `paddle.distributed.launch` runs on every rank (runs cell.py)
        <files>                copied with --files, beside the cell
        status.json            the last known JobStatus (written atomically by one writer: the
                               local supervisor, or the kernel side of a cluster engine)
        supervisor.pid         local engine: the supervisor's pid and start time
        supervisor.log         local engine: the supervisor's own output
        logs/attempt-<a>/node-<n>/workerlog.<local rank>   per-rank logs (Paddle's naming)
        logs/attempt-<a>/node-<n>/launch.log               the node's launcher output
        ranks/attempt-<a>/rank-<r>.json                    each rank's own record of how it ended
        checkpoints/           written by launcher_magic.checkpoint
        visualdl/              VisualDL logs
        progress.json          rank 0's progress: step, total, throughput, last scalars
        push.pkl, pull.pkl     variables sent in with --push, rank 0's results for --pull

A job directory appears whole or not at all: it is built under a hidden name and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from launcher_magic.core.spec import JobSpec
from launcher_magic.core.status import JobStatus
from workbench_contract.environment import jobs_root

# What a job directory holds of its own: `--files` may not bring anything of these names.
RESERVED_NAMES = frozenset({
    "spec.json", "cell.py", "main.py", "status.json", "supervisor.pid", "supervisor.log", "logs",
    "ranks", "checkpoints", "visualdl", "launcher_magic", "workbench_contract", "push.pkl",
    "pull.pkl", "progress.json", "history.json",
})

MAIN_SCRIPT = """\
# Written by Paddle Workbench. Every rank runs this file (started by `paddle.distributed.launch`
# or forked by its node): it records how the rank ends and runs the notebook cell (cell.py) as
# __main__.
from launcher_magic.training.worker import main

main(__file__)
"""


class JobNotFound(LookupError):
    """No job matches what the user typed."""


class JobUnreadable(ValueError):
    """A job's directory is there but its spec cannot be read (edited by hand, half copied)."""


def atomic_write_json(path: Path, data) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path):
    with open(path) as handle:
        return json.load(handle)


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a text file (reads only the end of big files)."""
    if count <= 0:
        return []
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            block = min(size, max(4096, count * 200))
            handle.seek(size - block)
            data = handle.read()
    except FileNotFoundError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if block < size:
        lines = lines[1:]  # the first line was cut by the seek
    return lines[-count:]


class JobDir:
    """Paths and file I/O of one job directory."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"JobDir({str(self.path)!r})"

    @property
    def job_id(self) -> str:
        return self.path.name

    spec_path = property(lambda self: self.path / "spec.json")
    cell_path = property(lambda self: self.path / "cell.py")
    main_path = property(lambda self: self.path / "main.py")
    status_path = property(lambda self: self.path / "status.json")
    logs_dir = property(lambda self: self.path / "logs")
    ranks_dir = property(lambda self: self.path / "ranks")
    checkpoints_dir = property(lambda self: self.path / "checkpoints")
    visualdl_dir = property(lambda self: self.path / "visualdl")
    # What happened to the job that its state forgets (a node that lost its machine), in words.
    history_path = property(lambda self: self.path / "history.json")

    def node_log_dir(self, attempt: int, node: int) -> Path:
        return self.logs_dir / f"attempt-{attempt}" / f"node-{node}"

    def launch_log(self, attempt: int, node: int) -> Path:
        return self.node_log_dir(attempt, node) / "launch.log"

    def rank_log(self, attempt: int, rank: int, nproc_per_node: int) -> Path:
        node, local = divmod(rank, nproc_per_node)
        return self.node_log_dir(attempt, node) / f"workerlog.{local}"

    def rank_record(self, attempt: int, rank: int) -> Path:
        return self.ranks_dir / f"attempt-{attempt}" / f"rank-{rank}.json"

    def read_spec(self) -> JobSpec:
        return JobSpec.from_dict(read_json(self.spec_path))

    def read_status(self) -> JobStatus | None:
        try:
            return JobStatus.from_dict(read_json(self.status_path))
        except FileNotFoundError:
            return None

    def write_status(self, status: JobStatus) -> None:
        atomic_write_json(self.status_path, status.to_dict())

    def read_history(self) -> tuple[str, ...]:
        try:
            entries = read_json(self.history_path)
        except (OSError, ValueError):
            return ()
        return tuple(e for e in entries if isinstance(e, str)) if isinstance(entries, list) else ()

    def write_history(self, history: tuple[str, ...]) -> None:
        atomic_write_json(self.history_path, list(history))

    def read_rank_records(self, attempt: int) -> dict[int, dict]:
        records = {}
        folder = self.ranks_dir / f"attempt-{attempt}"
        for path in folder.glob("rank-*.json"):
            try:
                record = read_json(path)
            except (OSError, ValueError):
                continue  # being written right now; the next poll reads it
            records[int(record["rank"])] = record
        return records

    @classmethod
    def create(
        cls, root: Path, spec: JobSpec, cell: str, files: Iterable[Path] = ()
    ) -> JobDir:
        """Make the job directory whole: spec, cell, main script, copied files, empty folders.

        Raises:
            FileExistsError: a job with this id exists already.
        """
        root.mkdir(parents=True, exist_ok=True)
        final = root / spec.job_id
        if final.exists():
            raise FileExistsError(f"job directory {final} exists already")
        staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{spec.job_id}."))
        try:
            job = cls(staging)
            for folder in (job.logs_dir, job.ranks_dir, job.checkpoints_dir, job.visualdl_dir):
                folder.mkdir()
            for source in files:
                target = staging / source.name
                if source.is_dir():
                    shutil.copytree(source, target)
                else:
                    shutil.copy2(source, target)
            job.cell_path.write_text(cell if cell.endswith("\n") else cell + "\n")
            job.main_path.write_text(MAIN_SCRIPT)
            atomic_write_json(job.spec_path, spec.to_dict())
            job.write_status(JobStatus(job_id=spec.job_id))
            # mkdtemp made it 0700: keep the user's umask (0700 on a shared machine)
            umask = os.umask(0)
            os.umask(umask)
            staging.chmod(0o777 & ~umask)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(final)


@dataclass(frozen=True)
class JobHandle:
    """A job as every engine method takes it: its spec and its directory, read once.

    Cheap to pass around and safe to share between threads (both parts are immutable).
    """

    spec: JobSpec
    dir: JobDir

    @property
    def job_id(self) -> str:
        return self.spec.job_id

    @classmethod
    def open(cls, path: Path | str) -> JobHandle:
        """The job in directory `path`. Raises OSError or ValueError for a broken directory."""
        job = JobDir(path)
        return cls(job.read_spec(), job)


def list_jobs(root: Path) -> list[JobDir]:
    """Every job under `root`, oldest first (by the spec's creation time)."""
    jobs = []
    if root.is_dir():
        for path in root.iterdir():
            if not path.name.startswith(".") and (path / "spec.json").is_file():
                jobs.append(JobDir(path))

    def created(job: JobDir) -> float:
        try:
            return float(read_json(job.spec_path).get("created_at", 0))
        except (OSError, ValueError):
            return 0.0

    return sorted(jobs, key=created)


def resolve(root: Path, ref: str) -> JobDir:
    """A job by id, or the newest job with that name.

    Raises:
        JobNotFound: with the ids a user could have meant.
    """
    ref = ref.strip()
    if ref and "/" not in ref and not ref.startswith(".") and (root / ref / "spec.json").is_file():
        return JobDir(root / ref)
    jobs = list_jobs(root)
    named = [job for job in jobs if job.job_id.rsplit("-", 1)[0] == ref]
    if named:
        return named[-1]
    known = ", ".join(job.job_id for job in jobs[-5:]) or "none yet"
    raise JobNotFound(f"no job {ref!r} in {root}; recent jobs: {known} (see %paddle_jobs)")


__all__ = ["JobDir", "JobHandle", "JobNotFound", "JobUnreadable", "RESERVED_NAMES", "atomic_write_json", "jobs_root",
           "list_jobs", "read_json", "resolve", "tail_lines"]
