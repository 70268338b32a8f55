"""The GPU-idle decision as data (hub_config.services.gpu_idle): observations + policies + now + warnings
-> actions, and which hub server a GPU series is (the namespace and the hub's record, never pod
labels). No Prometheus, no hub; the live test (test_gpu_culler_live.py) runs the real ones.
The policies come from the tenants file through the tenants loader, as the hub reads it.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path

import pytest
import yaml

from hub_config.services.gpu_culler import CullerError, GpuIdleCuller, read_policies, server_url
from hub_config.services.gpu_idle import (
    CLEAR,
    JOB,
    REPORT,
    SERVER,
    STOP,
    WARN,
    Action,
    HubServer,
    Observation,
    attribute_servers,
    decide,
    hub_servers,
    idle_queries,
    namespaces_of,
    observations_from_results,
)
from hub_config.tenants import GpuIdlePolicy, TenantsFileError, load_tenants

EXAMPLE = Path(__file__).resolve().parents[2] / "hub_config" / "tenants.example.yaml"

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


@pytest.mark.parametrize(("policy", "warns", "grace"), [
    (GpuIdlePolicy(20, 7200, 5400), True, 1800),
    (GpuIdlePolicy(20, 3600, 0), False, 0),
    (GpuIdlePolicy(20, 600, 600), False, 0),
], ids=["warns-then-stops", "warn-after-zero", "warn-at-stop"])
def test_warning_phase_and_grace(policy: GpuIdlePolicy, warns: bool, grace: int) -> None:
    assert policy.warns is warns
    assert policy.grace == grace


def _tenants_file(tmp_path: Path, gpu=None, **vision) -> Path:
    """The example tenants file with the vision tenant's idle.gpu (and other fields) replaced."""
    data = yaml.safe_load(EXAMPLE.read_text())
    tenant = data["tenants"][0]
    assert tenant["name"] == "vision"
    if gpu is not None:
        tenant["idle"] = {**tenant["idle"], "gpu": copy.deepcopy(gpu)}
    tenant.update(vision)
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("gpu", "field"),
    [({"utilisation_below": 120, "for": 7200}, "idle.gpu.utilisation_below"),
     ({"utilisation_below": 20, "for": "2h"}, "idle.gpu.for"),
     ({"utilisation_below": 20, "for": 7200, "warn_after": -1}, "idle.gpu.warn_after"),
     ({"utilisation_below": 20, "for": 600, "warn_after": 900}, "idle.gpu.warn_after"),
     ({"utilisation_below": 20, "for": 7200, "stop_jobs": "yes"}, "idle.gpu.stop_jobs"),
     ({"utilisation_below": 20, "for": 7200, "warn_afer": 60}, "idle.gpu.warn_afer"),
     ("idle", "idle.gpu")],
    ids=["threshold-over-100", "duration-as-text", "negative-warn", "warn-after-the-stop",
         "stop-jobs-text", "misspelt-key", "not-a-map"],
)
def test_bad_policies_name_file_tenant_and_key(tmp_path: Path, gpu, field: str) -> None:
    path = _tenants_file(tmp_path, gpu)
    with pytest.raises(CullerError) as err:
        read_policies(path)
    message = str(err.value)
    assert f"{path}: tenant 'vision', field '{field}': " in message
    assert "\n" not in message
    # One loader, one message: the culler says exactly what the hub's loader says.
    with pytest.raises(TenantsFileError) as loader:
        load_tenants(path)
    assert message == str(loader.value)


def test_a_file_the_hub_refuses_is_refused_by_the_culler_too(tmp_path: Path) -> None:
    """A valid idle.gpu does not make a broken tenant acceptable: the whole file is validated."""
    path = _tenants_file(tmp_path, namespace="Not A Label")
    with pytest.raises(CullerError, match="field 'namespace': 'Not A Label' is not a DNS-1123"):
        read_policies(path)


def test_missing_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(CullerError) as err:
        read_policies(tmp_path / "absent.yaml")
    assert "no such tenants file" in str(err.value)
    assert "--GpuIdleCuller.tenants_file" in str(err.value)


def test_policies_come_from_the_tenants_model() -> None:
    policies = read_policies(EXAMPLE)
    # classroom has no idle.gpu: never culled, so it has no policy at all.
    assert policies == {"vision": GpuIdlePolicy(20, 7200, 5400, False)}
    assert policies["vision"] == load_tenants(EXAMPLE).get("vision").idle.gpu
    assert GpuIdlePolicy.from_dict(policies["vision"].to_dict()) == policies["vision"]


def test_command_line_tenants_file_is_read_each_round(tmp_path: Path) -> None:
    """`--tenants-file` configures the culler; a malformed file fails the round before any
    request is made, with the loader's one-line message."""
    path = _tenants_file(tmp_path, {"utilisation_below": 20, "for": "2h"})
    culler = GpuIdleCuller()
    culler.parse_command_line([f"--tenants-file={path}", "--dry-run",
                               "--prometheus-url=http://127.0.0.1:9"])
    assert culler.tenants_file == str(path) and culler.dry_run
    with pytest.raises(CullerError) as err:
        asyncio.run(culler.cull_once(now=0))
    assert str(err.value).startswith(f"{path}: tenant 'vision', field 'idle.gpu.for': ")


def test_round_trips_through_dicts() -> None:
    action = Action(WARN, obs(5400), "because")
    assert Action.from_dict(action.to_dict()) == action
    assert Observation.from_dict({**obs(1).to_dict(), "unknown": 1}) == obs(1)


def test_queries_select_one_namespace_and_use_the_policy() -> None:
    queries = idle_queries("m", 'we"ird', GpuIdlePolicy(15, 600, 300), window=30, step=10)
    assert all('m{namespace="we\\"ird"}' in q for q in queries.values())
    # The tenant label is written by whoever creates the pod: it selects nothing.
    assert not any("tenant" in q for q in queries.values())
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
        "current": [_row(4, **ann), _row(60, **bob), _row(3, user="carl")],
        "age": [_row(900, **ann), _row(900, **bob)],
        "since_busy": [_row(400, **bob)],
    }
    found = {o.pod: o for o in observations_from_results(SERVER, results, POLICY, "vision")}
    assert set(found) == {"jupyter-ann", "jupyter-bob"}  # no pod: nothing to match, never acted on
    assert found["jupyter-ann"].idle_seconds == 900  # never busy within the lookback: its age
    assert found["jupyter-bob"].idle_seconds == 0  # busy right now
    # Whose server it is, and which one, is the hub's to say (attribute_servers), not a label's.
    assert {(o.user, o.name) for o in found.values()} == {("", "")}


def test_the_tenant_is_the_namespace_not_the_label() -> None:
    forged = {"pod": "evil-0", "user": "bob", "tenant": "vision", "namespace": "wb-classroom"}
    results = {"current": [_row(1, **forged)], "age": [_row(900, **forged)]}
    (found,) = observations_from_results(SERVER, results, POLICY, "classroom")
    assert found.tenant == "classroom"
    assert namespaces_of(load_tenants(EXAMPLE)) == {"vision": "wb-vision",
                                                     "classroom": "wb-classroom"}


def _models(*servers: tuple[str, str, dict]) -> list[dict]:
    """User models as `GET /hub/api/users?state=active` returns them to a token with
    admin:server_state: (user, server name, server state)."""
    users: dict[str, dict] = {}
    for user, name, state in servers:
        users.setdefault(user, {"name": user, "servers": {}})["servers"][name] = {
            "name": name, "ready": True, "state": state}
    return list(users.values())


HUB = hub_servers(_models(
    ("ann", "", {"pod_name": "jupyter-ann", "namespace": "wb-vision"}),
    ("bob", "", {"pod_name": "jupyter-bob", "namespace": "wb-vision"}),
    # KubeSpawner's pod name of a user whose name it had to escape.
    ("alice@example.com", "", {"pod_name": "jupyter-alice-example-com---ff8d9819",
                               "namespace": "wb-vision"}),
    ("carl", "exp", {"pod_name": "jupyter-carl--exp", "namespace": "wb-vision"}),
    ("dora", "", {"pid": 4242}),  # not KubeSpawner's: no pod to match
))


def _server_obs(namespace: str, pod: str, tenant: str = "vision") -> Observation:
    return Observation(kind=SERVER, tenant=tenant, user="", name="", namespace=namespace,
                       utilisation=1.0, idle_seconds=9999, pod=pod)


# (id, observation, the hub server it is: (user, name), or None: acted on never)
ATTRIBUTION = [
    ("own-pod", _server_obs("wb-vision", "jupyter-ann"), ("ann", "")),
    ("escaped-user-name", _server_obs("wb-vision", "jupyter-alice-example-com---ff8d9819"),
     ("alice@example.com", "")),
    ("named-server", _server_obs("wb-vision", "jupyter-carl--exp"), ("carl", "exp")),
    ("pod-labelled-as-bob-in-another-namespace",
     _server_obs("wb-classroom", "evil-0", tenant="classroom"), None),
    ("same-pod-name-in-another-namespace",
     _server_obs("wb-classroom", "jupyter-bob", tenant="classroom"), None),
    ("job-pod-labelled-as-a-notebook", _server_obs("wb-vision", "resnet-worker-1"), None),
]


@pytest.mark.parametrize(("observation", "expected"), [c[1:] for c in ATTRIBUTION],
                         ids=[c[0] for c in ATTRIBUTION])
def test_servers_are_the_hubs_record_of_namespace_and_pod(observation, expected) -> None:
    attributed, unknown = attribute_servers([observation], HUB)
    if expected is None:
        assert (attributed, unknown) == ([], [observation])
    else:
        assert unknown == []
        assert [(o.user, o.name) for o in attributed] == [expected]


def test_jobs_pass_through_attribution() -> None:
    job = obs(10, kind=JOB, name="resnet")
    assert attribute_servers([job], HUB) == ([job], [])


def test_hub_servers_keep_only_pods_and_say_which_scope_is_missing() -> None:
    assert set(HUB) == {("wb-vision", "jupyter-ann"), ("wb-vision", "jupyter-bob"),
                        ("wb-vision", "jupyter-alice-example-com---ff8d9819"),
                        ("wb-vision", "jupyter-carl--exp")}
    assert HUB[("wb-vision", "jupyter-carl--exp")] == HubServer(
        "carl", "exp", "wb-vision", "jupyter-carl--exp")
    no_state = [{"name": "ann", "servers": {"": {"name": "", "ready": True}}}]
    with pytest.raises(ValueError, match="admin:server_state"):
        hub_servers(no_state)
    with pytest.raises(ValueError, match="read:servers"):
        hub_servers([{"name": "ann"}])


@pytest.mark.parametrize(("user", "server", "path"), [
    ("ann", "", "/hub/api/users/ann/server"),
    ("ann", "exp 1", "/hub/api/users/ann/servers/exp%201"),
    ("../admin", "", "/hub/api/users/..%2Fadmin/server"),
    ("ann", "../../users/bob/server", "/hub/api/users/ann/servers/..%2F..%2Fusers%2Fbob%2Fserver"),
], ids=["default", "named", "user-traversal", "server-traversal"])
def test_server_urls_cannot_leave_their_path(user: str, server: str, path: str) -> None:
    assert server_url("http://hub:8081/hub/api/", user, server) == "http://hub:8081" + path
