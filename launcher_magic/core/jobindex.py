"""An index of the jobs folder, so that `%paddle_jobs` need not read every job directory.

`<jobs root>/.index.json` remembers, per job directory, its spec (which never changes) and, once
the job has ended, its final status (a terminal status never changes either, `core/status.py`)
and its last checkpoint step. An entry is trusted only for the very directory it was made from:

- the spec, while the directory has the same inode (a job deleted and made again is another) and
  `spec.json` the same modification time;
- the final status and checkpoint, while moreover the directory and `status.json` have the same
  modification times: the directory's changes whenever a file at its top is created, replaced or
  removed (a new `status.json` written atomically), the file's when it is written in place.

Everything else (a new job, a job still running, an entry that no longer matches) is read from its
directory again, and jobs whose directory is gone drop out. So the index is a cache that any
process may rebuild from the directories: no writer of a job has to update it, and a lost, stale
or corrupt index file costs one full read, never a wrong answer. Two kernels writing it at once
each write a whole file (atomically); the last one wins and both are valid.

A folder of a few jobs gets no index file (reading them all takes milliseconds): it is written
once the folder holds `MIN_JOBS` jobs, and kept up to date from then on.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from launcher_magic.core.jobdir import JobDir, JobHandle
from launcher_magic.core.spec import JobSpec
from launcher_magic.core.status import JobStatus

INDEX_FILE = ".index.json"
VERSION = 1
# A final status is remembered only once its files are this old (nanoseconds): file times tick
# in steps of a few milliseconds, so a write in the same step would not change them.
SETTLED_NS = 2_000_000_000
MIN_JOBS = 50  # fewer jobs than this: no index file unless there is one already


@dataclass(frozen=True)
class IndexedJob:
    """One job as the index hands it out.

    `status` and `checkpoint_step` are the job's final ones when the index could vouch for them;
    `status` is None when the job has to be asked (it runs, or the index does not know it).
    """

    handle: JobHandle
    status: JobStatus | None = None
    checkpoint_step: int | None = None


@dataclass(frozen=True)
class _Stamp:
    """What identifies one state of a job directory: its inode, its modification time and those
    of its spec and status files (0: no status file)."""

    inode: int
    mtime_ns: int
    spec_ns: int
    status_ns: int
    status_size: int

    @property
    def spec_key(self) -> list[int]:
        return [self.inode, self.spec_ns]

    @property
    def status_key(self) -> list[int]:
        return [self.mtime_ns, self.status_ns, self.status_size]

    def settled(self, now_ns: int) -> bool:
        """Whether the directory and its status were last changed long enough ago that a change
        made right after this stamp would show in the times (file times tick coarsely)."""
        return now_ns - max(self.mtime_ns, self.status_ns) > SETTLED_NS


class JobIndex:
    """The jobs under `root`, read through `<root>/.index.json`.

    Use: `jobs()` lists them (oldest first), `record(...)` remembers each job that has ended,
    `save()` writes the index back if anything changed. Not thread-safe: one per call.
    """

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.path = self.root / INDEX_FILE
        self._entries: dict[str, dict] = {}
        self._stamps: dict[str, _Stamp] = {}
        self._changed = False

    def _load(self) -> dict[str, dict]:
        try:
            with open(self.path) as handle:
                data = json.load(handle)
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return {}
        jobs = data.get("jobs")
        return jobs if isinstance(jobs, dict) else {}

    def _scan(self) -> dict[str, _Stamp]:
        """Every job directory under the root (not hidden, holding a spec), with its stamp."""
        found = {}
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return {}
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                stat = entry.stat(follow_symlinks=False)
                spec = os.stat(os.path.join(entry.path, "spec.json"))
            except OSError:
                continue  # gone meanwhile, or no spec: not a job (yet)
            try:
                status = os.stat(os.path.join(entry.path, "status.json"))
                status_ns, status_size = status.st_mtime_ns, status.st_size
            except OSError:
                status_ns = status_size = 0
            found[entry.name] = _Stamp(stat.st_ino, stat.st_mtime_ns, spec.st_mtime_ns, status_ns,
                                       status_size)
        return found

    def jobs(self) -> list[IndexedJob]:
        """Every readable job under the root, oldest first (by its spec's creation time).

        Final statuses come from the index where it can vouch for them; anything else is read
        from the job's directory. A directory whose spec cannot be read is left out.
        """
        cached = self._load()
        self._stamps = self._scan()
        if set(cached) - set(self._stamps):
            self._changed = True  # directories deleted since: their entries go
        self._entries = {}
        listed = []
        for job_id, stamp in self._stamps.items():
            entry = cached.get(job_id)
            if not (isinstance(entry, dict) and entry.get("spec_key") == stamp.spec_key):
                entry = self._read_entry(job_id, stamp)
                if entry is None:
                    continue
            try:
                spec = JobSpec.from_dict(entry["spec"])
                final = None
                if entry.get("status") and entry.get("status_key") == stamp.status_key:
                    final = JobStatus.from_dict(entry["status"])
            except (KeyError, TypeError, ValueError):
                entry = self._read_entry(job_id, stamp)
                if entry is None:
                    continue
                spec, final = JobSpec.from_dict(entry["spec"]), None
            self._entries[job_id] = entry
            handle = JobHandle(spec, JobDir(self.root / job_id))
            listed.append(IndexedJob(handle, final, entry.get("checkpoint_step")
                                     if final is not None else None))
        return sorted(listed, key=lambda job: job.handle.spec.created_at)

    def _read_entry(self, job_id: str, stamp: _Stamp) -> dict | None:
        """A fresh entry (spec only) read from the job's directory; None if it cannot be read."""
        try:
            spec = JobDir(self.root / job_id).read_spec()
        except (OSError, ValueError, TypeError):
            return None
        self._changed = True
        return {"spec_key": stamp.spec_key, "spec": spec.to_dict()}

    def record(self, job: JobHandle, status: JobStatus, checkpoint_step: int | None) -> None:
        """Remember how `job` (listed by the last `jobs()`) ended; ignores a job still running.

        The stamp is the one `jobs()` saw before the status was read, so a status written after
        that changes the directory and the entry is not trusted next time.
        """
        stamp, entry = self._stamps.get(job.job_id), self._entries.get(job.job_id)
        if (stamp is None or entry is None or not status.state.is_terminal()
                or not stamp.settled(time.time_ns())):
            return
        if (entry.get("status_key") == stamp.status_key and entry.get("status") == status.to_dict()
                and entry.get("checkpoint_step") == checkpoint_step):
            return
        entry.update(status_key=stamp.status_key, status=status.to_dict(),
                     checkpoint_step=checkpoint_step)
        self._changed = True

    def save(self) -> None:
        """Write the index if it changed. A root that cannot be written is no error: the index
        only saves time."""
        if not self._changed or not self.root.is_dir():
            return
        if len(self._entries) < MIN_JOBS and not self.path.exists():
            return
        try:
            _write_compact(self.path, {"version": VERSION, "jobs": self._entries})
        except OSError:
            return
        self._changed = False


def _write_compact(path: Path, data) -> None:
    """Write JSON atomically and compactly (the C encoder: a thousand jobs in milliseconds)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
