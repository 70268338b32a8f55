"""The spawn policy (hub_config.spawn_policy) as data: tenant choice, image allowlist, spawn
options and what a notebook is told (the notebook context)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub_config.services.idle_culler import NEVER, culler_services
from hub_config.spawn_policy import SpawnRefused, choose, notebook_context
from hub_config.tenants import Tenants, load_tenants
from workbench_contract import environment as names

EXAMPLE = Path(__file__).resolve().parents[2] / "hub_config" / "tenants.example.yaml"
GPU = "registry.example.com/workbench/notebook-gpu@sha256:" \
      "e3c5ba51dba85ab0c990db5e309f4d7bdb282470fb02aee75b9022c1399e91c8"


@pytest.fixture(scope="module")
def tenants() -> Tenants:
    return load_tenants(EXAMPLE)


def test_groups_pick_the_tenant_and_defaults(tenants):
    choice = choose(tenants, "ann", ["vision-team"], {})
    assert (choice.tenant.name, choice.profile.name) == ("vision", "cpu-small")
    assert choice.image.image == GPU


def test_user_in_two_tenants_chooses_by_slug_or_tenant_else_file_order(tenants):
    groups = ["vision-team", "students"]
    assert choose(tenants, "u", groups, {}).tenant.name == "vision"  # documented rule
    assert choose(tenants, "u", groups, {"profile": "classroom--cpu-tiny"}).tenant.name == "classroom"
    assert choose(tenants, "u", groups, {"tenant": "classroom"}).profile.name == "cpu-tiny"


@pytest.mark.parametrize("groups, options, status, message", [
    ([], {}, 403, "is not a member of any tenant"),
    (["other"], {}, 403, "your groups: other"),
    (["students"], {"tenant": "vision"}, 403, "not a member of tenant 'vision'"),
    (["students"], {"profile": "vision--gpu-small"}, 400, "not offered by tenant 'classroom'"),
    (["students"], {"image": GPU}, 400, "is not on the allowlist of tenant 'classroom'"),
    (["vision-team"], {"image": "docker.io/library/python:3"}, 400, "not on the allowlist"),
    (["vision-team"], {"cmd": ["sh"]}, 400, "Spawn option 'cmd' is not accepted"),
    (["vision-team"], {"image": ["a"]}, 400, "must be an image reference"),
], ids=["no-groups", "no-tenant", "foreign-tenant", "foreign-profile", "foreign-image",
        "unlisted-image", "smuggled-key", "image-not-string"])
def test_refusals(tenants, groups, options, status, message):
    with pytest.raises(SpawnRefused) as info:
        choose(tenants, "u", groups, options)
    assert info.value.status == status
    assert message in info.value.message


def test_image_by_display_name(tenants):
    choice = choose(tenants, "u", ["vision-team"], {"image": "PaddlePaddle 3.0 CPU"})
    assert choice.image.image.startswith("registry.example.com/workbench/notebook-cpu@sha256:")


# (id, groups, profile slug, notebook_context keywords, fields of the context that follow)
CONTEXTS = [
    ("local-classroom", ["students"], "classroom--cpu-tiny",
     {"engine": "local", "jobs_dir": "/h/jobs"},
     {"tenant": "classroom", "namespace": "wb-classroom", "engine": "local", "jobs_dir": "/h/jobs",
      "limits": names.Limits(max_nodes=2, max_gpus_per_node=0, max_runtime_seconds=3600),
      "node_selector": {}, "storage": None, "uid": None, "gid": None}),
    ("kube-vision-gpu", ["vision-team"], "vision--gpu-small",
     {"engine": "trainjob", "jobs_dir": "/home/jovyan/jobs", "uid": 2345, "gid": 100,
      "storage": names.Storage("claim-ann", "/home/jovyan")},
     {"tenant": "vision", "namespace": "wb-vision", "engine": "trainjob",
      "limits": names.Limits(max_nodes=4, max_gpus_per_node=8, max_runtime_seconds=86400),
      "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100"}, "uid": 2345, "gid": 100,
      "storage": names.Storage("claim-ann", "/home/jovyan")}),
]


@pytest.mark.parametrize(("groups", "slug", "given", "expected"), [c[1:] for c in CONTEXTS],
                         ids=[c[0] for c in CONTEXTS])
def test_notebook_context_is_the_contract_and_round_trips(tenants, groups, slug, given, expected):
    choice = choose(tenants, "ann", groups, {"profile": slug})
    given = dict(given)
    engine = given.pop("engine")
    context = notebook_context(choice, "ann", engine, **given)
    for name, value in expected.items():
        assert getattr(context, name) == value, name
    assert context.user == "ann"
    assert context.image == choice.image.image
    assert context.allowed_images == choice.tenant.image_refs
    # What the notebook side reads back from the environment is what the hub decided.
    assert names.NotebookContext.from_env(context.to_env()) == context


def test_one_culler_per_tenant_confined_to_its_groups(tenants):
    services, roles = culler_services(tenants, python="py", cull_every=7)
    by_name = {s["name"]: s["command"] for s in services}
    assert by_name["idle-culler-vision"] == [
        "py", "-m", "jupyterhub_idle_culler", "--timeout=3600", "--max-age=0", "--cull-every=7"]
    assert "--max-age=28800" in by_name["idle-culler-classroom"]
    classroom = next(r for r in roles if r["name"] == "idle-culler-classroom")
    assert classroom["services"] == ["idle-culler-classroom"]
    # every scope is filtered to the tenant's groups: no unfiltered (hub-wide) scope
    assert all("!group=" in s for s in classroom["scopes"])
    assert "delete:servers!group=students" in classroom["scopes"]
    assert not any("vision-team" in s for s in classroom["scopes"])


def test_culler_timeouts_zero_means_off(tenants):
    data = tenants.to_dict()
    data["tenants"][0]["idle"] = {"server_timeout": 0, "max_age": 0}
    data["tenants"][1]["idle"] = {"server_timeout": 0, "max_age": 600}
    services, _ = culler_services(Tenants.from_dict(data), python="py")
    assert [s["name"] for s in services] == ["idle-culler-classroom"]
    assert f"--timeout={NEVER}" in services[0]["command"]
