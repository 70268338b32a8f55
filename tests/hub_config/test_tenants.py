"""The tenants file: the example loads, data round-trips, and every malformed file gets a message
that names the file, the tenant and the field."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from hub_config.tenants import Tenants, TenantsCache, TenantsFileError, load_tenants, parse_quantity

EXAMPLE = Path(__file__).resolve().parents[2] / "hub_config" / "tenants.example.yaml"
DIGEST = "registry.example.com/workbench/notebook-cpu@sha256:" + "a" * 64


def good() -> dict:
    return {"tenants": [{
        "name": "vision",
        "groups": ["vision-team"],
        "namespace": "wb-vision",
        "quota": {"gpus": 8, "cpu": "64", "memory": "256Gi", "pods": 50, "jobs": 10},
        "profiles": [{
            "name": "gpu-small", "description": "1 GPU",
            "cpu": {"guarantee": 2, "limit": 8}, "memory": {"guarantee": "8Gi", "limit": "32Gi"},
            "gpus": 1,
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        }],
        "images": [{"name": "CPU", "image": DIGEST}],
        "job_limits": {"max_nodes": 4, "max_gpus_per_node": 8, "max_runtime": 86400},
        "idle": {"server_timeout": 3600, "max_age": 0},
    }]}


def write(tmp_path: Path, data) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_example_file_has_two_valid_tenants():
    tenants = load_tenants(EXAMPLE)
    assert [t.name for t in tenants.tenants] == ["vision", "classroom"]
    assert tenants.get("vision").profile("gpu-small").gpus == 1
    assert tenants.for_groups(["students"])[0].name == "classroom"


def test_round_trip_and_unknown_keys_tolerated_by_from_dict():
    tenants = load_tenants(EXAMPLE)
    assert Tenants.from_dict(tenants.to_dict(), strict=True) == tenants
    data = tenants.to_dict()
    data["tenants"][0]["future_field"] = 1  # written by a newer version
    assert Tenants.from_dict(data) == tenants


def _mutate(path: str, value):
    """A malformed copy of `good()`: set (or with value=DELETE, remove) a dotted path."""
    def make():
        data = copy.deepcopy(good())
        node = data
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node[key]
        last = keys[-1]
        if value is DELETE:
            del node[last]
        elif last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value
        return data
    return make


DELETE = object()
T = "tenants.0"
P = f"{T}.profiles.0"

MALFORMED = [
    ("no-tenants-key", lambda: {"tenant": []}, "field 'tenant': is not a known field"),
    ("empty-tenants", lambda: {"tenants": []}, "field 'tenants': must list at least one tenant"),
    ("tenants-not-list", lambda: {"tenants": {"a": 1}}, "field 'tenants': must be a list"),
    ("name-not-dns", _mutate(f"{T}.name", "Vision_Team"), "field 'tenants[0].name': 'Vision_Team' is not a DNS-1123 label"),
    ("missing-namespace", _mutate(f"{T}.namespace", DELETE), "tenant 'vision', field 'namespace': is required"),
    ("namespace-not-dns", _mutate(f"{T}.namespace", "WB"), "tenant 'vision', field 'namespace': 'WB' is not a DNS-1123 label"),
    ("no-groups", _mutate(f"{T}.groups", []), "tenant 'vision', field 'groups': must name at least one group"),
    ("groups-not-list", _mutate(f"{T}.groups", "vision-team"), "tenant 'vision', field 'groups': must be a list"),
    ("typo-field", _mutate(f"{T}.node_selecter", {}), "tenant 'vision', field 'node_selecter': is not a known field"),
    ("quota-gpus-negative", _mutate(f"{T}.quota.gpus", -1), "tenant 'vision', field 'quota.gpus': must be at least 0"),
    ("quota-gpus-bool", _mutate(f"{T}.quota.gpus", True), "tenant 'vision', field 'quota.gpus': must be a whole number"),
    ("quota-memory-bad", _mutate(f"{T}.quota.memory", "lots"), "tenant 'vision', field 'quota.memory': 'lots' is not a Kubernetes memory quantity"),
    ("quota-missing-pods", _mutate(f"{T}.quota.pods", DELETE), "tenant 'vision', field 'quota.pods': is required"),
    ("no-profiles", _mutate(f"{T}.profiles", []), "tenant 'vision', field 'profiles': must offer at least one profile"),
    ("profile-cpu-bad", _mutate(f"{P}.cpu.limit", "eight"), "tenant 'vision', field 'profiles[0].cpu.limit': 'eight' is not a Kubernetes CPU quantity"),
    ("guarantee-over-limit", _mutate(f"{P}.memory.guarantee", "64Gi"), "tenant 'vision', field 'profiles[0].memory.guarantee': 64Gi is more than the limit 32Gi"),
    ("profile-gpus-over-quota", _mutate(f"{P}.gpus", 9), "tenant 'vision', field 'profiles[0].gpus': 9 GPUs exceed the tenant's quota of 8"),
    ("toleration-operator", _mutate(f"{P}.tolerations.0.operator", "Maybe"), "field 'profiles[0].tolerations[0].operator': 'Maybe' is not a toleration operator"),
    ("toleration-effect", _mutate(f"{P}.tolerations.0.effect", "Evict"), "field 'profiles[0].tolerations[0].effect': 'Evict' is not a taint effect"),
    ("selector-not-mapping", _mutate(f"{P}.node_selector", ["gpu"]), "field 'profiles[0].node_selector': must be a mapping"),
    ("no-images", _mutate(f"{T}.images", []), "tenant 'vision', field 'images': must allow at least one image"),
    ("image-by-tag", _mutate(f"{T}.images.0.image", "registry.example.com/nb:latest"), "field 'images[0].image': 'registry.example.com/nb:latest' is not pinned by digest"),
    ("image-no-registry", _mutate(f"{T}.images.0.image", "nb@sha256:" + "a" * 64), "is not pinned by digest"),
    ("image-short-digest", _mutate(f"{T}.images.0.image", "r.io/nb@sha256:abc"), "is not pinned by digest"),
    ("job-max-nodes-zero", _mutate(f"{T}.job_limits.max_nodes", 0), "tenant 'vision', field 'job_limits.max_nodes': must be at least 1"),
    ("job-runtime-text", _mutate(f"{T}.job_limits.max_runtime", "1d"), "tenant 'vision', field 'job_limits.max_runtime': must be a whole number"),
    ("job-gpus-over-quota", _mutate(f"{T}.job_limits.max_gpus_per_node", 16), "field 'job_limits.max_gpus_per_node': 16 exceeds the tenant's GPU quota of 8"),
    ("idle-negative", _mutate(f"{T}.idle.server_timeout", -5), "tenant 'vision', field 'idle.server_timeout': must be at least 0"),
    ("gpu-idle-percent", _mutate(f"{T}.idle.gpu", {"utilisation_below": 120, "for": 60}), "field 'idle.gpu.utilisation_below': is a percentage"),
    ("job-api-unknown", _mutate(f"{T}.job_api", "mpijob"), "tenant 'vision', field 'job_api': must be one of paddlejob, trainjob, got 'mpijob'"),
    ("queue-unqueued-kind", lambda: {"tenants": [{**good()["tenants"][0], "job_api": "paddlejob", "queue": {}}]}, "tenant 'vision', field 'queue': job_api paddlejob is not queued by Kueue; set job_api to a kind that is (trainjob) or remove the queue"),
    ("node-loss-negative", _mutate(f"{T}.node_loss_toleration", -1), "tenant 'vision', field 'node_loss_toleration': must be at least 0, got -1"),
    ("node-loss-text", _mutate(f"{T}.node_loss_toleration", "30s"), "tenant 'vision', field 'node_loss_toleration': must be a whole number, got str '30s'"),
    ("node-loss-milliseconds", _mutate(f"{T}.node_loss_toleration", 30000), "tenant 'vision', field 'node_loss_toleration': must be at most 3600, got 30000 (seconds; Kubernetes' own default is 300)"),
    ("gpu-warn-after-stop", _mutate(f"{T}.idle.gpu", {"utilisation_below": 20, "for": 60, "warn_after": 90}), "field 'idle.gpu.warn_after': 90s is later than the stop"),
]


@pytest.mark.parametrize("make, message", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_tenant_file_is_refused_with_file_tenant_and_field(tmp_path, make, message):
    path = write(tmp_path, make())
    with pytest.raises(TenantsFileError) as info:
        load_tenants(path)
    text = str(info.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text


def test_duplicate_tenant_and_namespace_are_refused(tmp_path):
    data = good()
    twin = copy.deepcopy(data["tenants"][0])
    twin["name"] = "vision2"
    data["tenants"].append(twin)
    with pytest.raises(TenantsFileError, match="tenant 'vision2', field 'namespace': 'wb-vision' "
                       "is already used by tenant 'vision'"):
        load_tenants(write(tmp_path, data))


@pytest.mark.parametrize("text, message", [
    ("tenants: [\n", "not valid YAML at line"),
    ("- just\n- a list\n", "must be a mapping"),
], ids=["broken-yaml", "top-level-list"])
def test_unreadable_files(tmp_path, text, message):
    with pytest.raises(TenantsFileError, match=message):
        load_tenants(write(tmp_path, text))


def test_missing_file_says_what_to_do(tmp_path):
    with pytest.raises(TenantsFileError, match="no such tenants file; create it"):
        load_tenants(tmp_path / "nope.yaml")


@pytest.mark.parametrize("raw, value", [
    ("500m", 0.5), (2, 2.0), ("32Gi", 32 * 2**30), ("1G", 1e9), ("0.5", 0.5),
], ids=["millicores", "int", "gibi", "giga", "fraction"])
def test_parse_quantity(raw, value):
    assert parse_quantity(raw) == pytest.approx(value)


def test_cache_reloads_an_edited_file(tmp_path):
    path = write(tmp_path, good())
    cache = TenantsCache(path)
    assert cache.get().tenants[0].job_limits.max_nodes == 4
    data = good()
    data["tenants"][0]["job_limits"]["max_nodes"] = 2
    data["tenants"][0]["groups"].append("more")  # different size, so the change is seen
    path.write_text(yaml.safe_dump(data))
    assert cache.get().tenants[0].job_limits.max_nodes == 2


def test_node_loss_toleration_is_30_seconds_unless_the_tenant_says(tmp_path):
    """Without a say a tenant's pods leave a lost node after 30 s, not Kubernetes' 300; a value
    of the file is kept, 0 (evict at once) included, and written back."""
    assert load_tenants(write(tmp_path, good())).get("vision").node_loss_toleration == 30
    for seconds in (0, 45, 3600):
        data = _mutate(f"{T}.node_loss_toleration", seconds)()
        tenant = load_tenants(write(tmp_path, data)).get("vision")
        assert tenant.node_loss_toleration == seconds
        assert tenant.to_dict()["node_loss_toleration"] == seconds
    assert load_tenants(EXAMPLE).get("classroom").node_loss_toleration == 120


def test_gpu_idle_policy_warns_before_stopping_by_default():
    from hub_config.tenants import GpuIdlePolicy

    policy = GpuIdlePolicy.from_dict({"utilisation_below": 20, "for": 7200})
    assert policy.warn_after == 5400 and policy.warns and policy.grace == 1800


def test_cache_keeps_the_last_good_rules_while_an_edit_is_broken(tmp_path, caplog):
    """Finding 8: a broken edit while the hub runs must not turn every login into an error. The
    last good rules stay, the error is logged once naming the file, and a fix takes effect."""
    path = write(tmp_path, good())
    cache = TenantsCache(path)
    assert cache.get().tenants[0].job_limits.max_nodes == 4
    path.write_text("tenants: [ {name: vision\n")  # a half-typed edit
    with caplog.at_level("ERROR"):
        assert cache.get().tenants[0].job_limits.max_nodes == 4
        assert cache.get().tenants[0].job_limits.max_nodes == 4
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(path) in errors[0] and "not valid YAML" in errors[0], errors
    path.unlink()  # removed: still the last good rules
    assert cache.get().tenants[0].name == "vision"
    data = good()
    data["tenants"][0]["job_limits"]["max_nodes"] = 2
    write(tmp_path, data)
    assert cache.get().tenants[0].job_limits.max_nodes == 2


def test_cache_raises_when_there_is_no_good_version_to_keep(tmp_path):
    path = write(tmp_path, "tenants: [ {name: vision\n")
    with pytest.raises(TenantsFileError, match="not valid YAML"):
        TenantsCache(path).get()
