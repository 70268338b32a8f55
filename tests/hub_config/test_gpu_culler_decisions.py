"""The GPU-idle decision as data (hub_config.gpu_idle): observations + policies + now + warnings
-> actions. No Prometheus, no hub; the live test (test_gpu_culler_live.py) runs the real ones.
"""

from __future__ import annotations

import pytest

from hub_config.gpu_culler import server_url
from hub_config.gpu_idle import (
    CLEAR,
    JOB,
    REPORT,
    SERVER,
    STOP,
    WARN,
    Action,
    GpuIdlePolicy,
    Observation,
    PolicyError,
    decide,
    idle_queries,
    observations_from_results,
    policies_from_tenants,
)

POLICY = GpuIdlePolicy(utilisation_below=20, for_seconds=7200, warn_after=5400, stop_jobs=False)
POLICIES = {"vision": POLICY, "jobs-too": GpuIdlePolicy(20, 7200, 5400, stop_jobs=True)}


def obs(idle: float, kind: str = SERVER, tenant: str = "vision", util: float = 5.0,
        name: str = "") -> Observation:
    return Observation(kind=kind, tenant=tenant, user="ann", name=name, namespace="wb-vision",
                       utilisation=util, idle_seconds=idle, pod="jupyter-ann")


def verbs(actions: list[Action]) -> list[str]:
    return [a.verb for a in actions]


# (id, observation, warned-at (None: not warned), now, expected verbs, warned afterwards?)
CASES = [
    ("busy", obs(0, util=80), None, 10_000, [], False),
    ("idle-under-warn", obs(5399), None, 10_000, [], False),
    ("idle-at-warn", obs(5400), None, 10_000, [WARN], True),
    ("warned-still-idle", obs(6000), 9_000, 10_000, [], True),
    ("past-limit-after-grace", obs(7200), 8_000, 10_000, [STOP], False),
    ("past-limit-within-grace", obs(7200), 9_000, 10_000, [], True),
    ("past-limit-never-warned", obs(9000), None, 10_000, [WARN], True),
    ("busy-again-after-warning", obs(0, util=50), 9_000, 10_000, [CLEAR], False),
    ("no-policy-tenant", obs(99_999, tenant="other"), None, 10_000, [], False),
    ("idle-job-policy-keeps-jobs", obs(7200, kind=JOB, name="resnet"), None, 10_000, [REPORT],
     True),
    ("idle-job-reported-once", obs(9000, kind=JOB, name="resnet"), 9_000, 10_000, [], True),
    ("idle-job-policy-stops-jobs", obs(7200, kind=JOB, tenant="jobs-too", name="resnet"),
     8_000, 10_000, [STOP], False),
]


@pytest.mark.parametrize(("observation", "warned_at", "now", "expected", "still_warned"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide(observation, warned_at, now, expected, still_warned) -> None:
    warned = {} if warned_at is None else {observation.key: warned_at}
    actions, state = decide([observation], POLICIES, now, warned)
    assert verbs(actions) == expected
    assert (observation.key in state) is still_warned
    for action in actions:
        assert action.target == observation
        assert action.reason  # every action carries its reason for the log


def test_stop_reason_says_why() -> None:
    actions, _ = decide([obs(7300, util=3)], POLICIES, 10_000, {obs(0).key: 1_000})
    assert "under 20 % for 7300 s" in actions[0].reason
    assert "limit is 7200 s" in actions[0].reason


def test_a_full_idle_period_warns_then_stops_once() -> None:
    """Walk one server through time, round by round, as the culler does."""
    warned: dict[str, float] = {}
    timeline = []
    running = True
    for now in range(0, 10_001, 300):
        observed = [obs(float(now))] if running else []  # a stopped server is no longer observed
        actions, warned = decide(observed, POLICIES, now, warned)
        timeline += [(now, a.verb) for a in actions]
        running = running and STOP not in verbs(actions)
    assert timeline == [(5400, WARN), (7200, STOP)]


def test_no_warning_phase_stops_directly() -> None:
    policies = {"vision": GpuIdlePolicy(20, 3600, 0)}
    actions, _ = decide([obs(3600)], policies, 10_000, {})
    assert verbs(actions) == [STOP]


def test_vanished_servers_leave_the_warning_state() -> None:
    _, state = decide([], POLICIES, 10_000, {obs(0).key: 9_000})
    assert state == {}


@pytest.mark.parametrize(
    ("gpu", "message"),
    [({"utilisation_below": 120}, "utilisation_below=120"),
     ({"for": "2h"}, "for='2h'"),
     ({"warn_after": -1}, "warn_after=-1"),
     ({"stop_jobs": "yes"}, "stop_jobs='yes'"),
     ("idle", "must be a mapping")],
    ids=["threshold-over-100", "duration-as-text", "negative-warn", "stop-jobs-text", "not-a-map"],
)
def test_bad_policies_name_tenant_and_key(gpu, message) -> None:
    with pytest.raises(PolicyError) as err:
        policies_from_tenants({"tenants": [{"name": "vision", "idle": {"gpu": gpu}}]})
    assert message in str(err.value) and "vision" in str(err.value)


def test_policies_read_only_name_and_idle_gpu() -> None:
    data = {"tenants": [
        {"name": "vision", "namespace": "wb-vision", "quota": {"gpus": "not checked here"},
         "idle": {"server_timeout": 3600, "gpu": {"utilisation_below": 15, "for": 600,
                                                   "warn_after": 300, "stop_jobs": True}}},
        {"name": "edu", "idle": {"server_timeout": 600}},
    ]}
    policies = policies_from_tenants(data)
    assert policies == {"vision": GpuIdlePolicy(15, 600, 300, True)}
    assert GpuIdlePolicy.from_dict(policies["vision"].to_dict()) == policies["vision"]


def test_round_trips_through_dicts() -> None:
    action = Action(WARN, obs(5400), "because")
    assert Action.from_dict(action.to_dict()) == action
    assert Observation.from_dict({**obs(1).to_dict(), "unknown": 1}) == obs(1)


def test_queries_select_one_tenant_and_use_the_policy() -> None:
    queries = idle_queries("m", 'we"ird', GpuIdlePolicy(15, 600, 300), window=30, step=10)
    assert all('m{tenant="we\\"ird"}' in q for q in queries.values())
    assert "[30s]" in queries["current"]
    assert ">= 15" in queries["since_busy"]
    assert "[610s:10s]" in queries["age"]


def _row(value: float, **labels: str) -> dict:
    return {"metric": {"tenant": "vision", "namespace": "wb-vision", **labels},
            "value": [0, str(value)]}


def test_observations_from_query_results() -> None:
    ann = {"pod": "jupyter-ann", "user": "ann"}
    bob = {"pod": "jupyter-bob", "user": "bob", "server": "exp"}
    results = {
        "current": [_row(4, **ann), _row(60, **bob), _row(3, pod="stray")],
        "age": [_row(900, **ann), _row(900, **bob)],
        "since_busy": [_row(400, **bob)],
    }
    found = {o.user: o for o in observations_from_results(SERVER, results, POLICY)}
    assert set(found) == {"ann", "bob"}  # no user label: never acted on
    assert found["ann"].idle_seconds == 900  # never busy within the lookback: its age
    assert found["bob"].idle_seconds == 0  # busy right now
    assert found["bob"].name == "exp"


@pytest.mark.parametrize(("user", "server", "path"), [
    ("ann", "", "/hub/api/users/ann/server"),
    ("ann", "exp 1", "/hub/api/users/ann/servers/exp%201"),
    ("../admin", "", "/hub/api/users/..%2Fadmin/server"),
    ("ann", "../../users/bob/server", "/hub/api/users/ann/servers/..%2F..%2Fusers%2Fbob%2Fserver"),
], ids=["default", "named", "user-traversal", "server-traversal"])
def test_server_urls_cannot_leave_their_path(user: str, server: str, path: str) -> None:
    assert server_url("http://hub:8081/hub/api/", user, server) == "http://hub:8081" + path
