"""GPU-idle culling, the pure part: tenant policies, observations, and the decision.

`decide(observations, policies, now, warned)` turns what Prometheus says about each notebook
server and job into actions, following each tenant's `idle.gpu` policy (the tenants model's
`GpuIdlePolicy`, validated by the tenants loader like the rest of the file):

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

Whose server a GPU series is comes from the hub, never from pod labels (anyone who can create a
pod writes those): the tenant is the one whose namespace the series is in (`namespaces_of`), and
the server is the hub's own record of which pod in which namespace each server runs
(`hub_servers`, `attribute_servers`). A series that matches no hub server is never acted on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace

from hub_config.tenants import GpuIdlePolicy, Tenants

SERVER = "server"
JOB = "job"

WARN = "warn"
STOP = "stop"
CLEAR = "clear"
REPORT = "report"


def policies_from_tenants(tenants: Tenants) -> dict[str, GpuIdlePolicy]:
    """The GPU-idle policies of loaded tenants, by tenant name.

    Takes what `hub_config.tenants.load_tenants` returns, so the file is parsed and validated in
    one place (its errors name the file, tenant and field). Tenants without `idle.gpu` are left
    out: they are never culled.
    """
    return {t.name: t.idle.gpu for t in tenants.tenants if t.idle.gpu is not None}


def namespaces_of(tenants: Tenants) -> dict[str, str]:
    """Each tenant's namespace, by tenant name (the loader makes namespaces unique)."""
    return {t.name: t.namespace for t in tenants.tenants}


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


def idle_queries(metric: str, namespace: str, policy: GpuIdlePolicy, window: float,
                 step: float) -> dict[str, str]:
    """The PromQL the culler sends for one tenant's namespace and one kind (servers or jobs).

    The series are selected by namespace, which the DCGM exporter attributes from the kubelet and
    no pod can choose, never by the `tenant` pod label, which whoever creates a pod writes.
    - `current`: the utilisation now, as a mean over `window` seconds (also: what is running);
    - `age`: seconds since the first sample within the lookback (how long it has been observed);
    - `since_busy`: seconds since the windowed mean was last at or above the threshold.
    The lookback is one step longer than the longest duration of the policy.
    """
    selector = f'{metric}{{namespace="{_escape(namespace)}"}}'
    smooth = f"avg_over_time({selector}[{_seconds(window)}])"
    lookback = f"[{_seconds(max(policy.for_seconds, policy.warn_after) + step)}:{_seconds(step)}]"
    return {
        "current": smooth,
        "age": f"time() - min_over_time(timestamp({selector}){lookback})",
        "since_busy": f"time() - max_over_time(timestamp({smooth} >= "
                      f"{policy.utilisation_below:g}){lookback})",
    }


def observations_from_results(kind: str, results: Mapping[str, list[dict]],
                              policy: GpuIdlePolicy, tenant: str) -> list[Observation]:
    """Observations from the `idle_queries` results (Prometheus instant-vector `result` lists) of
    `tenant`'s namespace.

    Idle time is the age when the utilisation was never high within the lookback, else the time
    since it last was; anything at or above the threshold right now is not idle at all.
    The tenant is the caller's (the namespace's), never a label. A server is identified by its
    namespace and pod only, and has no user or name yet: `attribute_servers` takes those from the
    hub. A job is its namespace, user and job labels (jobs are not hub servers).
    """
    def identity(labels: Mapping[str, str]) -> tuple:
        if kind == JOB:
            return (labels.get("namespace", ""), labels.get("user", ""),
                    labels.get("workbench_job", ""))
        return (labels.get("namespace", ""), labels.get("pod", ""))

    def by_identity(name: str) -> dict[tuple, float]:
        return {identity(row["metric"]): float(row["value"][1]) for row in results.get(name, [])}

    ages, since_busy = by_identity("age"), by_identity("since_busy")
    found: dict[tuple, Observation] = {}
    for row in results.get("current", []):
        labels = row["metric"]
        utilisation = float(row["value"][1])
        ident = identity(labels)
        if not all(ident) or math.isnan(utilisation):
            continue  # nothing that names a pod (or a job): nothing the culler may act on
        idle = 0.0
        if utilisation < policy.utilisation_below:
            idle = min(ages.get(ident, 0.0), since_busy.get(ident, math.inf))
        obs = Observation(
            kind=kind, tenant=tenant,
            user=labels.get("user", "") if kind == JOB else "",
            name=labels.get("workbench_job", "") if kind == JOB else "",
            namespace=labels.get("namespace", ""), utilisation=utilisation,
            idle_seconds=max(idle, 0.0), pod=labels.get("pod", "") if kind == SERVER else "",
        )
        # A pod whose labels changed has two series for a while: the less idle one counts.
        if ident not in found or obs.idle_seconds < found[ident].idle_seconds:
            found[ident] = obs
    return list(found.values())


@dataclass(frozen=True)
class HubServer:
    """A server as the hub records it: its owner and name, and where its pod runs (the
    `namespace` and `pod_name` KubeSpawner keeps in the server's state)."""

    user: str
    name: str  # "" = the default server
    namespace: str
    pod: str


def hub_servers(users: Iterable[Mapping]) -> dict[tuple[str, str], HubServer]:
    """The hub's servers by (namespace, pod), from user models of the hub's REST API
    (`GET /users?state=active`, whose server models carry `state` for a token with
    `admin:server_state`). Servers whose state names no pod (not KubeSpawner's) are left out.

    Raises ValueError, naming the scope to give, when the models lack servers or state.
    """
    found: dict[tuple[str, str], HubServer] = {}
    for user in users:
        servers = user.get("servers")
        if servers is None:
            raise ValueError("the hub's user models carry no servers; give this service the "
                             "scope read:servers")
        for name, server in servers.items():
            if "state" not in server:
                raise ValueError("the hub's server models carry no state, so pods cannot be "
                                 "matched to servers; give this service the scope "
                                 "admin:server_state")
            state = server.get("state") or {}
            pod, namespace = state.get("pod_name"), state.get("namespace")
            if pod and namespace:
                found[(namespace, pod)] = HubServer(user["name"], name, namespace, pod)
    return found


def attribute_servers(observations: Iterable[Observation],
                      servers: Mapping[tuple[str, str], HubServer],
                      ) -> tuple[list[Observation], list[Observation]]:
    """(attributed, unknown): server observations whose (namespace, pod) is a hub server get that
    server's user and name; the others, whatever their labels claim, are unknown and must not be
    acted on. Job observations pass through unchanged."""
    attributed, unknown = [], []
    for obs in observations:
        if obs.kind != SERVER:
            attributed.append(obs)
            continue
        server = servers.get((obs.namespace, obs.pod))
        if server is None:
            unknown.append(obs)
        else:
            attributed.append(replace(obs, user=server.user, name=server.name))
    return attributed, unknown


def _seconds(value: float) -> str:
    return f"{max(int(math.ceil(value)), 1)}s"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
