"""GPU-idle culling, the pure part: tenant policies, observations, and the decision.

`decide(observations, policies, now, warned)` turns what Prometheus says about each notebook
server and job into actions, following each tenant's `idle.gpu` policy:

- idle for `warn_after` seconds: **warn** (once per idle period);
- idle for `for` seconds: **stop** the server, or the job when the policy says `stop_jobs`; a job
  whose policy does not stop jobs is **reported** once instead;
- never stop without a warning first: when the culler first sees something already past `for`
  (it was restarted, or `warn_after` was skipped), it warns now and stops `for - warn_after`
  seconds later, so every user gets the same grace period;
- busy again after a warning: **clear** the warning;
- a tenant without a GPU policy is never touched.

"Idle for N seconds" means the GPU utilisation, as a mean over a short window, has stayed under
the tenant's threshold for the last N seconds, the same test as the WorkbenchNotebookGPUIdle alert.
The queries that measure it are built here too (`idle_queries`), and their results become
observations in `observations_from_results`; the culler service only does the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields

SERVER = "server"
JOB = "job"

WARN = "warn"
STOP = "stop"
CLEAR = "clear"
REPORT = "report"


class PolicyError(ValueError):
    """A tenant's idle.gpu policy is malformed; the message names the tenant and the key."""


@dataclass(frozen=True)
class GpuIdlePolicy:
    """One tenant's `idle.gpu` block. Durations are seconds."""

    utilisation_below: float = 20.0
    for_seconds: float = 7200.0
    warn_after: float = 5400.0
    stop_jobs: bool = False

    @property
    def grace(self) -> float:
        """Seconds between the warning and the stop (0: no warning phase)."""
        return self.for_seconds - self.warn_after if self.warns else 0.0

    @property
    def warns(self) -> bool:
        return 0 < self.warn_after < self.for_seconds

    def to_dict(self) -> dict:
        return {"utilisation_below": self.utilisation_below, "for": self.for_seconds,
                "warn_after": self.warn_after, "stop_jobs": self.stop_jobs}

    @classmethod
    def from_dict(cls, data: Mapping, tenant: str = "?") -> GpuIdlePolicy:
        """Validate an `idle.gpu` mapping; unknown keys are ignored. Raises PolicyError."""
        if not isinstance(data, Mapping):
            raise PolicyError(f"tenant {tenant}: idle.gpu must be a mapping, got {data!r}")
        where = f"tenant {tenant}: idle.gpu"

        def number(key: str, default: float, low: float, high: float = math.inf) -> float:
            raw = data.get(key, default)
            if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= raw <= high:
                raise PolicyError(f"{where}.{key}={raw!r} must be a number from {low:g} to "
                                  f"{high:g}; fix it in the tenants file")
            return float(raw)

        below = number("utilisation_below", cls.utilisation_below, 0, 100)
        for_seconds = number("for", cls.for_seconds, 1)
        warn_after = number("warn_after", min(cls.warn_after, for_seconds), 0)
        stop_jobs = data.get("stop_jobs", False)
        if not isinstance(stop_jobs, bool):
            raise PolicyError(f"{where}.stop_jobs={stop_jobs!r} must be true or false")
        return cls(below, for_seconds, warn_after, stop_jobs)


def policies_from_tenants(data: Mapping | None) -> dict[str, GpuIdlePolicy]:
    """The GPU-idle policies of a parsed tenants.yaml, by tenant name.

    Reads only `tenants[].name` and `tenants[].idle.gpu`; tenants without `idle.gpu` are left out
    (never culled). Raises PolicyError for a malformed file or policy.
    """
    tenants = (data or {}).get("tenants") if isinstance(data, Mapping) else None
    if not isinstance(tenants, list):
        raise PolicyError("the tenants file has no 'tenants:' list")
    policies = {}
    for entry in tenants:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise PolicyError(f"a tenant without a name: {entry!r}; give each tenant 'name:'")
        idle = entry.get("idle") or {}
        if not isinstance(idle, Mapping):
            raise PolicyError(f"tenant {entry['name']}: idle must be a mapping, got {idle!r}")
        gpu = idle.get("gpu")
        if gpu is not None:
            policies[entry["name"]] = GpuIdlePolicy.from_dict(gpu, entry["name"])
    return policies


@dataclass(frozen=True)
class Observation:
    """What Prometheus says about one notebook server or one job right now."""

    kind: str  # SERVER or JOB
    tenant: str
    user: str
    name: str  # the server name ("" = the default server) or the job name
    namespace: str
    utilisation: float  # percent, the mean over the smoothing window
    idle_seconds: float  # how long the utilisation has stayed under the tenant's threshold
    pod: str = ""  # the notebook pod (servers only)

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.tenant}/{self.user}/{self.name}"

    def describe(self) -> str:
        if self.kind == JOB:
            return f"job {self.name!r} of {self.user!r} (tenant {self.tenant})"
        server = f"server {self.name!r}" if self.name else "default server"
        return f"{server} of {self.user!r} (tenant {self.tenant})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Observation:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass(frozen=True)
class Action:
    """One thing the culler does (or, in dry-run mode, would do), with its reason."""

    verb: str  # WARN, STOP, CLEAR or REPORT
    target: Observation
    reason: str

    def to_dict(self) -> dict:
        return {"verb": self.verb, "target": self.target.to_dict(), "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping) -> Action:
        return cls(data["verb"], Observation.from_dict(data["target"]), data["reason"])


def decide(observations: Iterable[Observation], policies: Mapping[str, GpuIdlePolicy],
           now: float, warned: Mapping[str, float]) -> tuple[list[Action], dict[str, float]]:
    """Actions for this round, and the warning state for the next one.

    Args:
        observations: the servers and jobs Prometheus reports now.
        policies: GPU-idle policy by tenant name; tenants without one are skipped.
        now: the current time (seconds); only compared with the times in `warned`.
        warned: observation key -> when it was warned (or reported), from the previous round.
    Returns:
        (actions, warned): the warning state keeps only what is still observed and still idle.
    """
    actions: list[Action] = []
    state: dict[str, float] = {}
    for obs in observations:
        policy = policies.get(obs.tenant)
        if policy is None:
            continue
        key, idle = obs.key, obs.idle_seconds
        measured = (f"GPU utilisation under {policy.utilisation_below:g} % for {idle:.0f} s "
                    f"(now {obs.utilisation:.0f} %)")
        if idle >= policy.for_seconds:
            limit = f"{measured}; the tenant's limit is {policy.for_seconds:.0f} s"
            if obs.kind == JOB and not policy.stop_jobs:
                state[key] = warned.get(key, now)
                if key not in warned:
                    actions.append(Action(REPORT, obs, f"{limit}; the policy does not stop jobs"))
            elif policy.warns and key not in warned:
                state[key] = now
                actions.append(Action(WARN, obs, f"{limit}; stopping in {policy.grace:.0f} s "
                                                 "unless the GPUs get busy"))
            elif policy.warns and now - warned[key] < policy.grace:
                state[key] = warned[key]  # still in the grace period the warning promised
            else:
                actions.append(Action(STOP, obs, limit))
        elif policy.warns and idle >= policy.warn_after:
            state[key] = warned.get(key, now)
            if key not in warned:
                left = policy.for_seconds - idle
                actions.append(Action(WARN, obs, f"{measured}; it will be stopped after "
                                                 f"{policy.for_seconds:.0f} s idle "
                                                 f"(in about {left:.0f} s)"))
        elif key in warned:
            actions.append(Action(CLEAR, obs, f"GPUs busy again (now {obs.utilisation:.0f} %)"))
    return actions, state


def idle_queries(metric: str, tenant: str, policy: GpuIdlePolicy, window: float,
                 step: float) -> dict[str, str]:
    """The PromQL the culler sends for one tenant and one kind (servers or jobs).

    - `current`: the utilisation now, as a mean over `window` seconds (also: what is running);
    - `age`: seconds since the first sample within the lookback (how long it has been observed);
    - `since_busy`: seconds since the windowed mean was last at or above the threshold.
    The lookback is one step longer than the longest duration of the policy.
    """
    selector = f'{metric}{{tenant="{_escape(tenant)}"}}'
    smooth = f"avg_over_time({selector}[{_seconds(window)}])"
    lookback = f"[{_seconds(max(policy.for_seconds, policy.warn_after) + step)}:{_seconds(step)}]"
    return {
        "current": smooth,
        "age": f"time() - min_over_time(timestamp({selector}){lookback})",
        "since_busy": f"time() - max_over_time(timestamp({smooth} >= "
                      f"{policy.utilisation_below:g}){lookback})",
    }


def observations_from_results(kind: str, results: Mapping[str, list[dict]],
                              policy: GpuIdlePolicy) -> list[Observation]:
    """Observations from the `idle_queries` results (Prometheus instant-vector `result` lists).

    Idle time is the age when the utilisation was never high within the lookback, else the time
    since it last was; anything at or above the threshold right now is not idle at all.
    """
    def identity(labels: Mapping[str, str]) -> tuple:
        if kind == JOB:
            return (labels.get("namespace", ""), labels.get("user", ""),
                    labels.get("workbench_job", ""))
        return (labels.get("namespace", ""), labels.get("pod", ""), labels.get("user", ""),
                labels.get("server", ""))

    def by_identity(name: str) -> dict[tuple, float]:
        return {identity(row["metric"]): float(row["value"][1]) for row in results.get(name, [])}

    ages, since_busy = by_identity("age"), by_identity("since_busy")
    observations = []
    for row in results.get("current", []):
        labels = row["metric"]
        utilisation = float(row["value"][1])
        if not labels.get("user") or math.isnan(utilisation):
            continue  # not mappable to a hub user: nothing the culler may act on
        ident = identity(labels)
        idle = 0.0
        if utilisation < policy.utilisation_below:
            idle = min(ages.get(ident, 0.0), since_busy.get(ident, math.inf))
        observations.append(Observation(
            kind=kind, tenant=labels.get("tenant", ""), user=labels["user"],
            name=labels.get("workbench_job", "") if kind == JOB else labels.get("server", ""),
            namespace=labels.get("namespace", ""), utilisation=utilisation,
            idle_seconds=max(idle, 0.0), pod=labels.get("pod", "") if kind == SERVER else "",
        ))
    return observations


def _seconds(value: float) -> str:
    return f"{max(int(math.ceil(value)), 1)}s"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
