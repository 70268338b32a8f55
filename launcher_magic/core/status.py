"""Job and rank status: one enum for every engine, and the status record the panel shows.

A terminal state never changes back: `JobStatus.moved_to` raises if asked to, so a bug that
would resurrect a finished job fails loudly instead of showing a wrong panel.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum


class JobState(str, Enum):
    # Waiting in the tenant's queue (Kueue) for quota; PENDING is admitted, nodes starting.
    QUEUED = "Queued"
    PENDING = "Pending"
    RUNNING = "Running"
    RESTARTING = "Restarting"
    STOPPING = "Stopping"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"

    def is_terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.STOPPED)


class RankState(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    STOPPED = "Stopped"

    def is_terminal(self) -> bool:
        return self in (RankState.SUCCEEDED, RankState.FAILED, RankState.STOPPED)


class TerminalStateError(RuntimeError):
    """Something tried to move a finished job to another state."""


def _from_known(cls, data: Mapping):
    known = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in known}


def _with_rank_state(cls, data: Mapping) -> dict:
    """The fields of `cls` in `data`, its `state` a RankState (Pending when absent)."""
    values = _from_known(cls, data)
    values["state"] = RankState(values.get("state", RankState.PENDING))
    return values


@dataclass(frozen=True)
class RankStatus:
    """One training process: global rank, the node it runs on, its state and exit code, and the
    machine of that node where a cluster engine knows it (`NodeStatus.host`)."""

    rank: int
    node: int
    state: RankState = RankState.PENDING
    exit_code: int | None = None
    error: str | None = None
    finished_at: float | None = None
    host: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping) -> RankStatus:
        return cls(**_with_rank_state(cls, data))


@dataclass(frozen=True)
class NodeStatus:
    """One node (a process group locally, a worker pod in a cluster). `host`: the Kubernetes
    node its pod was scheduled to (None until it is, and for local jobs, which all run here)."""

    node: int
    state: RankState = RankState.PENDING
    exit_code: int | None = None
    pid: int | None = None
    host: str | None = None
    # When its machine was lost (a cluster engine: the pod was evicted from a node that had
    # stopped answering, or removed from one taken out of service); None while it was not.
    lost_at: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping) -> NodeStatus:
        return cls(**_with_rank_state(cls, data))


@dataclass(frozen=True)
class JobStatus:
    """The last known status of a job, as written by its engine."""

    job_id: str
    state: JobState = JobState.PENDING
    message: str = ""
    restarts: int = 0
    nodes: tuple[NodeStatus, ...] = ()
    ranks: tuple[RankStatus, ...] = ()
    failed_rank: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = field(default_factory=time.time)
    # The local engine's supervisor process; None for other engines.
    supervisor_pid: int | None = None

    def moved_to(self, state: JobState, message: str = "", **changes) -> JobStatus:
        """A copy in `state`; raises TerminalStateError when leaving a terminal state."""
        if self.state.is_terminal() and state != self.state:
            raise TerminalStateError(
                f"job {self.job_id} is {self.state.value}; it cannot become {state.value}"
            )
        now = time.time()
        if state.is_terminal() and "finished_at" not in changes:
            changes["finished_at"] = self.finished_at or now
        return replace(self, state=state, message=message, updated_at=now, **changes)

    def elapsed(self, now: float | None = None) -> float:
        if self.started_at is None:
            return 0.0
        end = self.finished_at or (time.time() if now is None else now)
        return max(0.0, end - self.started_at)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["state"] = self.state.value
        for item in data["nodes"] + data["ranks"]:
            item["state"] = RankState(item["state"]).value
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> JobStatus:
        values = _from_known(cls, data)
        values["state"] = JobState(values.get("state", JobState.PENDING))
        values["nodes"] = tuple(NodeStatus.from_dict(n) for n in values.get("nodes", ()))
        values["ranks"] = tuple(RankStatus.from_dict(r) for r in values.get("ranks", ()))
        return cls(**values)
