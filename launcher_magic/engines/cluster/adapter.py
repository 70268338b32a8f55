"""What a job kind tells the cluster engine: only what differs between kinds.

The cluster engine (`engine.ClusterEngine`) owns the mechanism every kind shares: submitting a
job's objects and taking them back on any failure, the watches, settling a job's end, stopping,
logs, usage and errors. A `JobKindAdapter` supplies the rest, all of it pure (objects in, objects
out; no API request):

- `build`: the job object for a spec;
- `status`: what the job object, its pods (and the kind's events and companion object, where
  it has them) amount to, as the job model's `JobStatus`;
- `rank_pod`: which pod runs a rank, for its log;
- `usage`: what a job object held, for the tenant's GPU-hours;
- the facts: the kind (`workbench_contract.jobkinds`), the container whose log is a rank's, the
  label its controller puts on each pod naming the job, whether Events on the job keep what its
  pods lose, an object of the job's name to read beside it, and how deleting the job reaches
  its pods.

A kind's adapter is named in its `JobKind` (`adapter = "module:Class"`) and built once per engine
with the engine as its traitlets parent, so operators configure it as `c.<Class>.<trait>`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from traitlets.config import LoggingConfigurable

from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import JobSpec
from launcher_magic.core.status import JobStatus
from launcher_magic.engines.base import UsageRecord
from launcher_magic.engines.cluster.objects import ClusterSettings
from workbench_contract.cluster import Api
from workbench_contract.jobkinds import JobKind


@dataclass(frozen=True)
class Observed:
    """What the cluster holds of one job at one moment: its object (None: not found), its pods,
    the events on it (kinds with `watch_events`) and its companion object (kinds with a
    `companion`; None where not found or not readable)."""

    job: Mapping[str, Any] | None
    pods: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    companion: Mapping[str, Any] | None = None


class JobKindAdapter(LoggingConfigurable):
    """One job kind's part of the cluster engine (see the module docstring)."""

    kind: ClassVar[JobKind]
    # The container of a job's pods whose log is a rank's.
    container: ClassVar[str]
    # The label the kind's controller puts on each pod of a job, whose value is the job's name.
    pod_job_label: ClassVar[str]
    # How deleting the job object reaches its dependents (a DeleteOptions propagationPolicy).
    # Foreground keeps the job object until its pods are gone, so one read that finds neither
    # means the job is gone; Background lets it go first, so a stop confirms with a second read.
    delete_propagation: ClassVar[str] = "Foreground"
    # Follow the Events on the kind's job objects too: for kinds whose controller deletes pods
    # at once and keeps their exit codes only in events.
    watch_events: ClassVar[bool] = False
    # An object of the job's name read (never watched) when the job or its pods change: what
    # the kind's status needs beyond them (a TrainJob's JobSet, its restart counter).
    companion: ClassVar[Api | None] = None

    def check(self, spec: JobSpec) -> None:
        """Refuse what this kind cannot run, before anything is made. Raises SpecError."""

    def build(self, spec: JobSpec, job: JobDir, cluster: ClusterSettings,
              queue: str = "") -> dict[str, Any]:
        """The job object for `spec`, whose job directory is `job` (at the same path in the pods);
        `queue` is the tenant's Kueue LocalQueue for a queued kind ("": not queued)."""
        raise NotImplementedError

    def status(self, spec: JobSpec, seen: Observed) -> JobStatus:
        """The JobStatus that what was `seen` of an existing job amounts to."""
        raise NotImplementedError

    def attempt(self, status: JobStatus) -> int:
        """The attempt whose rank records (in the job directory) belong to `status`."""
        return status.restarts

    def rank_pod(self, spec: JobSpec, rank: int, pods: Callable[[], list[dict]]) -> str | None:
        """The name of the pod running `rank` now (None: none made yet); `pods()` lists the
        job's pods where the answer needs them."""
        raise NotImplementedError

    def usage(self, job_object: Mapping[str, Any]) -> UsageRecord:
        """What one of the kind's job objects held."""
        raise NotImplementedError
