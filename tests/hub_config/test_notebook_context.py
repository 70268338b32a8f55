"""The hub → notebook contract, round-tripped through the hub's real output.

The notebook pod is rendered by `TenantKubeSpawner` with KubeSpawner's own code (`hub_env`), the
notebook container's environment is taken from that pod, and `NotebookContext.from_env` (what
the notebook side reads) must give back what the hub decided: tenant, namespace, limits, images,
uid/gid, the user's storage claim (as Zero to JupyterHub configures it), the job directory on it,
the profile's node selector and the tenant's node-loss toleration. `shared_storage`, which finds the claim, is also tested as data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench_contract.environment import Limits, NotebookContext, Storage

pytest.importorskip("kubespawner", reason="jupyterhub-kubespawner is not installed (hub extra)")

from hub_config.kube_spawner import (  # noqa: E402
    TenantKubeSpawner,
    jobs_dir_on,
    kube_literal,
    shared_storage,
)
from hub_config.tenants import load_tenants  # noqa: E402

from .hub_env import container_env, notebook_env, render_pod  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "hub_config" / "tenants.example.yaml"
TENANTS = load_tenants(EXAMPLE)
HOME = "/home/jovyan"

# Zero to JupyterHub 4.4.0, `singleuser.storage.type: dynamic`: a claim per user, made by
# KubeSpawner (`storage_pvc_ensure`), mounted at the home.
Z2JH_DYNAMIC = {
    "pvc_name_template": "claim-{username}{servername}",
    "volumes": [{"name": "volume-{username}{servername}",
                 "persistentVolumeClaim": {"claimName": "{pvc_name}"}}],
    "volume_mounts": [{"mountPath": HOME, "name": "volume-{username}{servername}"}],
}
# `singleuser.storage.type: static`: one existing claim, a folder of it per user.
Z2JH_STATIC = {
    "volumes": [{"name": "home", "persistentVolumeClaim": {"claimName": "nfs-home"}}],
    "volume_mounts": [{"mountPath": HOME, "name": "home", "subPath": "{username}"}],
}
# A dataset claim next to the home claim: the home's is the user's storage.
WITH_DATASET = {
    "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}},
                *Z2JH_DYNAMIC["volumes"]],
    "volume_mounts": [{"mountPath": "/data", "name": "data"}, *Z2JH_DYNAMIC["volume_mounts"]],
    "pvc_name_template": "claim-{username}{servername}",
}

# (id, tenant, profile, uid, gid, spawner settings, expected storage)
CASES = [
    ("vision-gpu-dynamic-uid1000", "vision", "gpu-small", 1000, 100, Z2JH_DYNAMIC,
     Storage("claim-ada", HOME)),
    ("vision-cpu-dynamic-uid2345", "vision", "cpu-small", 2345, 2345, Z2JH_DYNAMIC,
     Storage("claim-ada", HOME)),
    ("classroom-static-subpath-uid2345", "classroom", "cpu-tiny", 2345, 100, Z2JH_STATIC,
     Storage("nfs-home", HOME, "ada")),
    ("vision-gpu-dataset-and-home", "vision", "gpu-small", 1000, 100, WITH_DATASET,
     Storage("claim-ada", HOME)),
    ("classroom-no-volumes", "classroom", "cpu-tiny", 1000, 100, {}, None),
]


@pytest.mark.parametrize(("tenant_name", "profile_name", "uid", "gid", "settings", "storage"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_notebook_reads_back_what_the_hub_decided(tenant_name, profile_name, uid, gid, settings,
                                                  storage):
    tenant = TENANTS.get(tenant_name)
    profile = tenant.profile(profile_name)
    env = notebook_env(tenant, "ada", uid=uid, gid=gid, profile=profile_name, **settings)
    expected = NotebookContext(
        engine=tenant.job_api,  # the engine of the tenant's job kind goes by its name
        user="ada",
        tenant=tenant.name,
        namespace=tenant.namespace,
        image=tenant.images[0].image,
        allowed_images=tenant.image_refs,
        limits=Limits(max_nodes=tenant.job_limits.max_nodes,
                      max_gpus_per_node=tenant.job_limits.max_gpus_per_node,
                      max_runtime_seconds=tenant.job_limits.max_runtime),
        storage=storage,
        uid=uid,
        gid=gid,
        node_selector=dict(profile.node_selector),
        jobs_dir=f"{HOME}/jobs" if storage else None,
        node_loss_toleration=tenant.node_loss_toleration,
    )
    assert NotebookContext.from_env(env) == expected


@pytest.mark.parametrize("kind", ["paddlejob", "trainjob"])
def test_job_pods_leave_a_lost_node_when_the_tenant_says(kind):
    """The tenant's `node_loss_toleration` (classroom: 120 s, not the default 30) reaches the
    job pods of either kind through the hub's real notebook environment, as it reaches the
    notebook pod itself."""
    from launcher_magic.core.jobdir import JobDir
    from launcher_magic.core.spec import LaunchOptions, build_spec
    from launcher_magic.engines import load_engine
    from launcher_magic.engines.cluster.paddlejob import build_paddlejob
    from launcher_magic.engines.cluster.trainjob import build_trainjob

    tenant = TENANTS.get("classroom")
    pod, _ = render_pod(EXAMPLE, "ada", [tenant.groups[0]], {})
    context = NotebookContext.from_env(container_env(pod))
    spec = build_spec(LaunchOptions(nodes=2, engine=kind), "x = 1\n", context)
    settings = load_engine(kind, context=context).settings(spec)
    job = JobDir(Path(HOME) / "jobs" / spec.job_id)
    if kind == "paddlejob":
        manifest = build_paddlejob(spec, job, settings)
        job_pod = manifest["spec"]["paddleReplicaSpecs"]["Worker"]["template"]["spec"]
    else:
        (patch,) = build_trainjob(spec, job, settings)["spec"]["runtimePatches"]
        (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
        job_pod = rjob["template"]["spec"]["template"]["spec"]
    lost = [{"key": f"node.kubernetes.io/{taint}", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 120} for taint in ("not-ready", "unreachable")]
    assert pod["spec"]["tolerations"] == lost
    assert job_pod["tolerations"] == lost


def test_job_pods_run_as_the_notebook_user():
    """The uid/gid the notebook is told are the ones its pod really runs as."""
    tenant = TENANTS.get("vision")
    pod, _ = render_pod(EXAMPLE, "ada", ["vision-team"], {}, notebook_uid=2345,
                        notebook_gid=3456)
    context = NotebookContext.from_env(container_env(pod))
    security = pod["spec"]["containers"][0]["securityContext"]
    assert (context.uid, context.gid) == (security["runAsUser"], security["runAsGroup"])
    assert (context.uid, context.gid) == (2345, 3456)
    assert context.tenant == tenant.name


def test_several_claims_none_at_home_gives_no_storage_and_warns_once(caplog):
    settings = {
        "volumes": [{"name": "a", "persistentVolumeClaim": {"claimName": "a"}},
                    {"name": "b", "persistentVolumeClaim": {"claimName": "b"}}],
        "volume_mounts": [{"mountPath": "/data/a", "name": "a"},
                          {"mountPath": "/data/b", "name": "b"}],
        "home_mount_path": "/home/someone-else",
    }
    TenantKubeSpawner._warned_storage.clear()
    contexts = []
    for _ in range(2):
        _, spawner = render_pod(EXAMPLE, "ada", ["students"], {}, **settings)
        contexts.append(spawner.workbench_context)
    assert [c.storage for c in contexts] == [None, None]
    assert [c.jobs_dir for c in contexts] == [None, None]
    warnings = [r for r in caplog.records if "no shared storage" in r.getMessage()]
    assert len(warnings) == 1
    assert "home_mount_path" in warnings[0].getMessage()


def _pvc(name: str, claim: str, **extra) -> dict:
    return {"name": name, "persistentVolumeClaim": {"claimName": claim, **extra}}


# (id, volumes, mounts, home, expected)
STORAGE = [
    ("one-claim-at-home", [_pvc("h", "c")], [{"name": "h", "mountPath": HOME}], HOME,
     Storage("c", HOME)),
    ("subpath", [_pvc("h", "c")], [{"name": "h", "mountPath": HOME, "subPath": "ada"}], HOME,
     Storage("c", HOME, "ada")),
    ("one-claim-elsewhere", [_pvc("d", "c")], [{"name": "d", "mountPath": "/work"}], HOME,
     Storage("c", "/work")),
    ("no-volumes", [], [], HOME, None),
    ("home-not-a-claim", [{"name": "h", "emptyDir": {}}], [{"name": "h", "mountPath": HOME}],
     HOME, None),
    ("several-prefer-home", [_pvc("d", "data"), _pvc("h", "home")],
     [{"name": "d", "mountPath": "/data"}, {"name": "h", "mountPath": HOME + "/"}], HOME,
     Storage("home", HOME)),
    ("several-parent-of-home", [_pvc("d", "data"), _pvc("h", "homes")],
     [{"name": "d", "mountPath": "/data"}, {"name": "h", "mountPath": "/home"}], HOME,
     Storage("homes", "/home")),
    ("several-deepest-holder", [_pvc("r", "root"), _pvc("h", "home")],
     [{"name": "r", "mountPath": "/home"}, {"name": "h", "mountPath": HOME}], HOME,
     Storage("home", HOME)),
    ("several-none-at-home", [_pvc("a", "a"), _pvc("b", "b")],
     [{"name": "a", "mountPath": "/a"}, {"name": "b", "mountPath": "/b"}], HOME, None),
    ("sibling-is-not-above", [_pvc("a", "a"), _pvc("b", "b")],
     [{"name": "a", "mountPath": "/home/jov"}, {"name": "b", "mountPath": "/b"}], HOME, None),
    ("read-only-mount-left-out", [_pvc("d", "data"), _pvc("h", "home")],
     [{"name": "d", "mountPath": "/data"}, {"name": "h", "mountPath": HOME, "readOnly": True}],
     HOME, Storage("data", "/data")),
    ("read-only-claim-left-out", [_pvc("h", "home", readOnly=True)],
     [{"name": "h", "mountPath": HOME}], HOME, None),
    ("subpathexpr-left-out", [_pvc("h", "home")],
     [{"name": "h", "mountPath": HOME, "subPathExpr": "$(USER)"}], HOME, None),
    ("mount-of-undeclared-volume", [], [{"name": "h", "mountPath": HOME}], HOME, None),
    ("other-home", [_pvc("d", "data"), _pvc("h", "home")],
     [{"name": "d", "mountPath": "/data"}, {"name": "h", "mountPath": HOME}], "/data/me",
     Storage("data", "/data")),
]


@pytest.mark.parametrize(("volumes", "mounts", "home", "expected"), [c[1:] for c in STORAGE],
                         ids=[c[0] for c in STORAGE])
def test_shared_storage(volumes, mounts, home, expected):
    assert shared_storage(volumes, mounts, home=home) == expected


@pytest.mark.parametrize(("storage", "jobs"), [
    (Storage("c", HOME), f"{HOME}/jobs"),
    (Storage("c", "/home"), f"{HOME}/jobs"),
    (Storage("c", "/data/"), "/data/jobs"),
], ids=["at-home", "above-home", "elsewhere"])
def test_jobs_dir_is_on_the_claim(storage, jobs):
    assert jobs_dir_on(storage, HOME) == jobs


def test_kube_literal_survives_kubespawner_expansion():
    """KubeSpawner formats every `environment` value; JSON must come out as it went in."""
    raw = {"X": '{"nvidia.com/gpu.product": "NVIDIA-H100"}', "Y": "plain {}"}
    assert {k: v.format(username="u") for k, v in kube_literal(raw).items()} == raw


@pytest.mark.parametrize("job_api", ["trainjob", "paddlejob"])
def test_every_engine_the_hub_names_is_a_registered_job_kind(job_api):
    """The hub names a notebook's cluster engine by its tenant's job kind
    (`workbench_contract.jobkinds`, where both sides find the kind); each one it can name must
    be registered, and the tenants file accepts exactly the registered kinds."""
    import dataclasses

    from hub_config.spawn_policy import choose
    from hub_config.tenants import Tenants
    from hub_config.tenants.model import job_api_names
    from workbench_contract.jobkinds import job_kinds

    assert job_api_names() == tuple(job_kinds())
    tenant = dataclasses.replace(TENANTS.tenants[0], job_api=job_api)
    choice = choose(Tenants(tenants=(tenant,)), "ada", tenant.groups, None)
    assert choice.cluster_engine == job_api
    assert job_kinds()[choice.cluster_engine].name == job_api
