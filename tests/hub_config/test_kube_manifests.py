"""Pod manifests for every tenant x profile, rendered by KubeSpawner's own code without a cluster,
checked for the tenancy and security properties and validated against the Kubernetes schemas."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kubespawner", reason="jupyterhub-kubespawner is not installed (hub extra)")
kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="kubernetes-validate is not installed (test extra)"
)

from tornado import web  # noqa: E402

from hub_config.cluster_policy.identities import user_service_account  # noqa: E402
from hub_config.kube_spawner import (  # noqa: E402
    HUB_TOKEN_ENV,
    TenantKubeSpawner,
    hub_token_from_secret,
    token_secret,
)
from hub_config.spawn_policy import profile_slug  # noqa: E402
from hub_config.tenants import load_tenants, parse_quantity  # noqa: E402
from workbench_contract import environment as names  # noqa: E402
from workbench_contract import labels  # noqa: E402
from workbench_contract.pod_security import restricted_security_contexts  # noqa: E402
from workbench_contract.resources import GPU_RESOURCE  # noqa: E402

from .hub_env import container_env, fake_user, offline_kubeconfig, render_pod  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "hub_config" / "tenants.example.yaml"
TENANTS = load_tenants(EXAMPLE)
CASES = [(t, p) for t in TENANTS.tenants for p in t.profiles]
KUBERNETES_VERSION = "1.30.0"


def render(groups: list[str], options: dict, name: str = "ann@example.org", **traits
           ) -> tuple[dict, TenantKubeSpawner]:
    return render_pod(EXAMPLE, name, groups, options, **traits)


@pytest.mark.parametrize("tenant, profile", CASES, ids=[f"{t.name}-{p.name}" for t, p in CASES])
def test_pod_manifest_per_tenant_and_profile(tenant, profile):
    pod, spawner = render([tenant.groups[0]], {"profile": profile_slug(tenant, profile)})
    spec = pod["spec"]
    (container,) = spec["containers"]

    assert spawner.namespace == tenant.namespace
    assert pod["metadata"]["labels"][labels.LABEL_TENANT] == tenant.name
    assert pod["metadata"]["labels"][labels.LABEL_COMPONENT] == labels.COMPONENT_NOTEBOOK
    # The user's own account (ann@example.org's label-safe name), and the user label says so.
    user = pod["metadata"]["labels"][labels.LABEL_USER]
    assert user == spawner.user_label and user.startswith("ann-example-org")
    assert spec["serviceAccountName"] == user_service_account(tenant, user)
    assert container_env(pod)[names.USER] == user
    assert container["image"] in tenant.image_refs

    # Pod Security "restricted"
    psc, csc = spec["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc["runAsNonRoot"] is True and csc["runAsUser"] == 1000
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not csc.get("privileged")
    assert not spec.get("initContainers")
    # Everything the shared builder sets (the same as for job worker pods) reaches the pod.
    shared_psc, shared_csc = restricted_security_contexts(1000, 100)
    assert shared_psc.items() <= psc.items() and shared_csc.items() <= csc.items()

    limits = container["resources"]["limits"]
    requests = container["resources"]["requests"]
    if profile.gpus:
        assert limits[GPU_RESOURCE] == str(profile.gpus)
    else:
        assert GPU_RESOURCE not in limits
    assert float(limits["cpu"]) == profile.cpu.limit_value
    assert int(limits["memory"]) == parse_quantity(profile.memory.limit)
    assert int(requests["memory"]) == parse_quantity(profile.memory.guarantee)
    assert spec.get("nodeSelector", {}) == dict(profile.node_selector)
    # The profile's tolerations, then the tenant's bound on a lost node (not Kubernetes' 300 s).
    lost = [{"key": f"node.kubernetes.io/{taint}", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": tenant.node_loss_toleration}
            for taint in ("not-ready", "unreachable")]
    assert spec["tolerations"] == [dict(t) for t in profile.tolerations] + lost

    env = container_env(pod)
    assert env[names.TENANT] == tenant.name
    assert env[names.NAMESPACE] == tenant.namespace
    # The tenant's job kind picks the engine, which goes by the kind's name.
    assert env[names.ENGINE] == tenant.job_api
    assert env[names.IMAGE] == container["image"]
    assert env[names.MAX_NODES] == str(tenant.job_limits.max_nodes)

    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/user/ann@example.org/api"
        assert container[probe]["httpGet"]["port"] == 8888

    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_a_profiles_own_node_loss_toleration_is_kept(tmp_path):
    """An operator's profile that tolerates an unreachable node itself (forever: no seconds)
    keeps that; the tenant's bound is added for the other node-loss taint only."""
    data = TENANTS.to_dict()
    vision = data["tenants"][0]
    forever = {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
               "effect": "NoExecute"}
    vision["profiles"][0]["tolerations"] = [forever]
    vision["node_loss_toleration"] = 45
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump(data))
    pod, _ = render_pod(tenants_file, "ann@example.org", [vision["groups"][0]], {})
    assert pod["spec"]["tolerations"] == [forever, {
        "key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
        "tolerationSeconds": 45}]


def test_image_choice_from_the_form_is_used():
    cpu = TENANTS.get("vision").images[1].image
    pod, _ = render(["vision-team"], {"profile": "vision--gpu-small", "image": cpu})
    assert pod["spec"]["containers"][0]["image"] == cpu


@pytest.mark.parametrize("groups, options, status, message", [
    (["vision-team"], {"image": "docker.io/library/ubuntu:latest"}, 400, "not on the allowlist"),
    (["vision-team"], {"image--unlisted-choice": "evil.io/x@sha256:" + "0" * 64}, 400,
     "not on the allowlist"),
    (["vision-team"], {"profile": "vision--gpu-small", "privileged": True}, 400, "not accepted"),
    (["nobody"], {}, 403, "not a member of any tenant"),
], ids=["unlisted-image", "unlisted-free-text", "extra-key", "no-tenant"])
def test_refused_before_any_pod_is_built(groups, options, status, message):
    with pytest.raises(web.HTTPError) as info:
        render(groups, options)
    assert info.value.status_code == status
    assert message in info.value.jupyterhub_message


def test_operator_config_cannot_weaken_the_security_context():
    pod, _ = render(["students"], {}, "ann", privileged=True, allow_privilege_escalation=True,
                    container_security_context={"runAsUser": 0})
    csc = pod["spec"]["containers"][0]["securityContext"]
    assert csc["runAsUser"] == 1000 and not csc["privileged"]
    assert csc["allowPrivilegeEscalation"] is False


def test_privileged_init_container_is_refused():
    with pytest.raises(web.HTTPError, match="privileged or root init container"):
        render(["students"], {}, "ann",
               init_containers=[{"name": "block-metadata", "image": "busybox",
                                 "securityContext": {"privileged": True}}])


def test_profile_list_offers_only_the_users_tenants():
    async def go():
        spawner = TenantKubeSpawner(_mock=True, user=fake_user("ann", ["students"]),
                                    tenants_file=str(EXAMPLE))
        return spawner.profile_list(spawner)
    with offline_kubeconfig():
        profiles = asyncio.run(go())
    assert [p["slug"] for p in profiles] == ["classroom--cpu-tiny"]
    image_option = profiles[0]["profile_options"]["image"]
    assert image_option["unlisted_choice"] == {"enabled": False}
    assert list(image_option["choices"]) == list(TENANTS.get("classroom").image_refs)


def test_the_hub_token_is_in_no_pod_spec_but_in_the_servers_secret():
    token = "hub-token-3f9c2a"
    pod, spawner = render(["students"], {}, "ann", api_token=token)
    assert token not in repr(pod)  # colleagues may read pod specs
    env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
    secret = f"{spawner.pod_name}-token"
    for name in HUB_TOKEN_ENV:
        assert env[name] == {"name": name, "valueFrom": {"secretKeyRef": {
            "name": secret, "key": "token"}}}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)


def test_hub_token_from_secret_moves_every_copy_of_the_token():
    env = {"JUPYTERHUB_API_TOKEN": "t0k", "JPY_API_TOKEN": "t0k", "COPY": "t0k", "HOME": "/h"}
    moved = hub_token_from_secret(env, "t0k", "jupyter-ann-token")
    ref = {"valueFrom": {"secretKeyRef": {"name": "jupyter-ann-token", "key": "token"}}}
    assert moved == {"JUPYTERHUB_API_TOKEN": ref, "JPY_API_TOKEN": ref, "COPY": ref,
                     "HOME": "/h"}
    # No token yet (a render without a hub): nothing else is taken for it.
    assert hub_token_from_secret({"EMPTY": "", "JPY_API_TOKEN": ""}, "", "s")["EMPTY"] == ""


def test_token_secret_is_opaque_and_labelled_as_the_users():
    secret = token_secret("jupyter-ann-token", "wb-classroom", "t0k",
                          {labels.LABEL_USER: "ann"})
    assert secret["type"] == "Opaque" and secret["stringData"] == {"token": "t0k"}
    assert secret["metadata"] == {"name": "jupyter-ann-token", "namespace": "wb-classroom",
                                  "labels": {labels.LABEL_USER: "ann"}}
    kubernetes_validate.validate(secret, KUBERNETES_VERSION, strict=True)


def _pod_on(node: str, *conditions: dict) -> dict:
    """A running notebook pod as the pod reflector holds it (the API server's JSON); with a
    DisruptionTarget condition it is also marked for deletion, as an eviction leaves it."""
    evicted = {"deletionTimestamp": "2026-12-07T18:00:30Z"} if conditions else {}
    return {"metadata": {"name": "jupyter-ann", "namespace": "ns", **evicted},
            "spec": {"nodeName": node},
            "status": {"phase": "Running", "podIP": "10.0.0.9", "conditions": list(conditions),
                       "containerStatuses": [{"name": "notebook", "ready": True,
                                              "state": {"running": {}}}]}}


LOST = {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager",
        "message": "Taint manager: deleting due to NoExecute taint",
        "lastTransitionTime": "2026-12-07T18:00:00Z"}


@pytest.mark.parametrize("conditions, expected", [
    ((), None),
    ((LOST,), 1),
    (({**LOST, "reason": "DeletionByPodGC"},), 1),
    # Evicted for another reason (preempted, drained): not a lost machine; KubeSpawner decides.
    (({**LOST, "reason": "PreemptionByScheduler"},), None),
    (({**LOST, "status": "False"},), None),
], ids=["running", "taint-manager", "pod-gc", "preempted", "condition-false"])
def test_a_server_whose_machine_was_lost_is_reported_stopped(monkeypatch, conditions, expected):
    """KubeSpawner's own poll calls a pod with a running container running, even once it is
    Terminating on a machine that stopped answering; the tenant spawner calls it stopped."""
    from types import SimpleNamespace

    from kubespawner import KubeSpawner

    async def no_watch(self, replace=False):
        return None

    monkeypatch.setattr(KubeSpawner, "_start_watching_pods", no_watch)
    async def poll():
        spawner = TenantKubeSpawner(_mock=True, user=fake_user("ann", ["vision-team"]),
                                    tenants_file=str(EXAMPLE), namespace="ns",
                                    pod_name_template="jupyter-ann")
        pods = {"ns/jupyter-ann": _pod_on("node-b", *conditions)}
        monkeypatch.setitem(TenantKubeSpawner.reflectors, spawner._get_reflector_key("pods"),
                            SimpleNamespace(pods=pods))
        return await spawner.poll()

    with offline_kubeconfig():
        assert asyncio.run(poll()) == expected
