"""Tenant provisioning against the real control plane: the namespace bundle is admitted, apply is
idempotent and reports what changed, prune deletes only with the flag and only what is ours, and
the notebook pods KubeSpawner renders are admitted under Pod Security `restricted` while a
privileged variant is refused."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

client = pytest.importorskip("kubernetes.client", reason="install the test extra (kubernetes)")
pytest.importorskip("cryptography", reason="install the test extra (cryptography)")

import tenancy  # noqa: E402  (tests/cluster is on sys.path)
from tenancy import (  # noqa: E402
    HUB_SERVICE_ACCOUNT,
    call,
    deprovision,
    make_tenant,
    notebook_user,
    provision,
    tenant_data,
    unique,
    wait_allowed,
)

from hub_config.cli import main as cli_main  # noqa: E402
from hub_config.cluster_policy.apply import (  # noqa: E402
    CONFIGURED,
    CREATED,
    PRUNED,
    UNCHANGED,
    apply_objects,
)
from hub_config.cluster_policy.bundle import (  # noqa: E402
    POD_SECURITY_LABELS,
    QUOTA_NAME,
    namespace_bundle,
)
from hub_config.cluster_policy.identities import (  # noqa: E402
    user_identity,
    user_service_account,
)
from hub_config.cluster_policy.metadata import MANAGED_BY, MANAGED_BY_LABEL  # noqa: E402
from hub_config.tenants import Quota  # noqa: E402

hub_account = tenancy.hub_account  # fixtures shared by the tenancy tests
tenants = tenancy.tenants


def _actions(results) -> dict[tuple[str, str], str]:
    return {(r.kind, r.name): r.action for r in results}


@pytest.fixture
def tenant(control_plane):
    """An unprovisioned tenant; deprovisioned after the test if it was provisioned."""
    made = make_tenant("prov")
    yield made
    deprovision(control_plane, made)


def test_apply_creates_the_bundle_then_reports_unchanged_then_configured(
        control_plane, hub_account, tenant):
    api = control_plane.api_client()
    core = client.CoreV1Api(api)
    bundle = namespace_bundle(tenant, hub_namespace=hub_account)

    first = provision(control_plane, tenant, hub_account)
    assert [(r.kind, r.name) for r in first] == [(o["kind"], o["metadata"]["name"])
                                                 for o in bundle]
    assert {r.action for r in first} == {CREATED}
    # The admission policies are cluster-scoped and carry our labels, so prune can find them.
    policies = client.AdmissionregistrationV1Api(api).list_validating_admission_policy(
        label_selector=f"{MANAGED_BY_LABEL}={MANAGED_BY},workbench.paddle.org/tenant="
                       f"{tenant.name}").items
    assert sorted(p.metadata.name for p in policies) == [
        f"workbench-{tenant.name}-{what}" for what in ("jobsets", "networkpolicies", "paddlejobs",
                                                        "pods", "secrets", "trainjobs")]
    ns = core.read_namespace(tenant.namespace)
    for key, value in {**POD_SECURITY_LABELS, MANAGED_BY_LABEL: MANAGED_BY}.items():
        assert ns.metadata.labels[key] == value
    quota = core.read_namespaced_resource_quota(QUOTA_NAME, tenant.namespace)
    assert quota.status.hard["requests.nvidia.com/gpu"] == "8"
    assert quota.status.hard["count/paddlejobs.kubeflow.org"] == "10"

    second = apply_objects(api, bundle)
    assert {r.action for r in second} == {UNCHANGED}, second

    # A quota change touches the ResourceQuota only. A dry run reports it and changes nothing.
    bigger = dataclasses.replace(tenant, quota=Quota(gpus=16, cpu="32", memory="128Gi",
                                                     pods=20, jobs=10))
    changed = namespace_bundle(bigger, hub_namespace=hub_account)
    dry = apply_objects(api, changed, dry_run=True)
    assert _actions(dry)[("ResourceQuota", QUOTA_NAME)] == CONFIGURED
    assert all(r.dry_run for r in dry)
    assert core.read_namespaced_resource_quota(QUOTA_NAME, tenant.namespace).spec.hard[
        "requests.nvidia.com/gpu"] == "8"

    third = apply_objects(api, changed)
    # The ResourceQuota, and the job policies, which hold every job to the quota.
    assert [(r.kind, r.name) for r in third if r.action != UNCHANGED] == [
        ("ValidatingAdmissionPolicy", f"workbench-{tenant.name}-paddlejobs"),
        ("ValidatingAdmissionPolicy", f"workbench-{tenant.name}-trainjobs"),
        ("ResourceQuota", QUOTA_NAME)]
    assert _actions(third)[("ResourceQuota", QUOTA_NAME)] == CONFIGURED
    assert core.read_namespaced_resource_quota(QUOTA_NAME, tenant.namespace).spec.hard[
        "requests.nvidia.com/gpu"] == "16"


def test_dry_run_of_a_new_tenant_creates_nothing(control_plane, hub_account, tenant):
    results = provision(control_plane, tenant, hub_account, dry_run=True)
    assert {r.action for r in results} == {CREATED} and all(r.dry_run for r in results)
    core = client.CoreV1Api(control_plane.api_client())
    assert tenant.namespace not in {n.metadata.name for n in core.list_namespace().items}


def test_prune_deletes_only_with_the_flag_and_only_our_objects(control_plane, hub_account,
                                                                tenants):
    api = control_plane.api_client()
    net = client.NetworkingV1Api(api)
    mine, neighbour = tenants("mine"), tenants("nbr")
    # Someone else's policy in our namespace: no managed-by label, so never ours to delete.
    foreign = {"metadata": {"name": "someone-elses", "labels": {"team": "x"}},
               "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    net.create_namespaced_network_policy(mine.namespace, foreign)
    dropped = "notebook-from-hub"
    dropped_policy = f"workbench-{mine.name}-pods"  # cluster-scoped: found by its labels
    fewer = [o for o in namespace_bundle(mine, hub_namespace=hub_account)
             if o["metadata"]["name"] not in (dropped, dropped_policy)]

    without_flag = apply_objects(api, fewer)
    assert PRUNED not in {r.action for r in without_flag}
    net.read_namespaced_network_policy(dropped, mine.namespace)  # still there

    with_flag = apply_objects(api, fewer, prune_tenants=[mine.name])
    assert [(r.kind, r.namespace, r.name) for r in with_flag if r.action == PRUNED] == [
        ("ValidatingAdmissionPolicy", "", dropped_policy),
        ("ValidatingAdmissionPolicyBinding", "", dropped_policy),
        ("NetworkPolicy", mine.namespace, dropped)]
    admission = client.AdmissionregistrationV1Api(api)
    assert dropped_policy not in {
        p.metadata.name for p in admission.list_validating_admission_policy().items}
    admission.read_validating_admission_policy(f"workbench-{neighbour.name}-pods")
    left = {p.metadata.name for p in net.list_namespaced_network_policy(mine.namespace).items}
    assert dropped not in left and "someone-elses" in left
    # Scoped to `mine`: the neighbour's identical policy (not rendered here) is untouched.
    net.read_namespaced_network_policy(dropped, neighbour.namespace)


def _token_kubeconfig(plane, path: Path, namespace: str, account: str) -> Path:
    core = client.CoreV1Api(plane.api_client())
    token = core.create_namespaced_service_account_token(
        account, namespace, {"spec": {"expirationSeconds": 3600}}).status.token
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "plane", "cluster": {
            "server": plane.server, "certificate-authority": str(plane.ca_file)}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "plane", "user": "sa"}}],
    }))
    return path


def test_workbench_apply_command_end_to_end(control_plane, hub_account, tenant, tmp_path,
                                            capsys):
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump({"tenants": [tenant_data(tenant.name)]}))
    argv = ["apply", "--tenants", str(tenants_file), "--tenant", tenant.name,
            "--kubeconfig", str(control_plane.kubeconfig), "--hub-namespace", hub_account]
    count = len(namespace_bundle(tenant, hub_namespace=hub_account))

    assert cli_main.main(argv) == 0
    out = capsys.readouterr().out
    print(out)
    assert f"{count} created, 0 configured, 0 unchanged, 0 pruned" in out
    assert cli_main.main(argv) == 0
    assert f"0 created, 0 configured, {count} unchanged, 0 pruned" in capsys.readouterr().out

    # A notebook's own token is not an operator's: one line, exit 2, no traceback.
    notebook_user(control_plane, tenant, "ada")
    account_config = _token_kubeconfig(control_plane, tmp_path / "sa.kubeconfig",
                                       tenant.namespace, user_service_account(tenant, "ada"))
    other = tenant_data(unique("other"))
    tenants_file.write_text(yaml.safe_dump({"tenants": [other]}))
    refused = ["apply", "--tenants", str(tenants_file), "--kubeconfig", str(account_config)]
    assert cli_main.main(refused) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("workbench apply: forbidden:") and "cannot get" in err


# --- notebook pods rendered by KubeSpawner --------------------------------------------------

# KubeSpawner reads a kube config when constructed; rendering a manifest makes no API call, so
# this one points nowhere.
OFFLINE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


def _render_notebook_pods(tenants_file: Path, tenant, monkeypatch, tmp_path) -> list[dict]:
    """One notebook pod per profile of `tenant`, rendered by KubeSpawner's own code."""
    pytest.importorskip("kubespawner", reason="jupyterhub-kubespawner is not installed (hub "
                                              "extra)")
    import kubernetes_asyncio.config.kube_config as kube_config
    from kubernetes_asyncio.client import ApiClient

    from hub_config.kube_spawner import TenantKubeSpawner
    from hub_config.spawn_policy import profile_slug

    offline = tmp_path / "offline.kubeconfig"
    offline.write_text(OFFLINE_KUBECONFIG)
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(offline))
    monkeypatch.setenv("KUBECONFIG", str(offline))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)

    async def render(profile, index: int) -> dict:
        name = f"user{index}"
        user = SimpleNamespace(name=name, id=index, url=f"/user/{name}/", escaped_name=name,
                               groups=[SimpleNamespace(name=tenant.groups[0])])
        spawner = TenantKubeSpawner(_mock=True, user=user, tenants_file=str(tenants_file))
        spawner.user_options = {"profile": profile_slug(tenant, profile)}
        await spawner.load_user_options()
        assert spawner.namespace == tenant.namespace
        async with ApiClient() as api:
            return api.sanitize_for_serialization(await spawner.get_pod_manifest())

    async def render_all() -> list[dict]:
        return [await render(p, i) for i, p in enumerate(tenant.profiles)]

    return asyncio.run(render_all())


def test_kubespawner_notebook_pods_are_admitted_and_a_privileged_one_is_not(
        control_plane, hub_account, tenants, tmp_path, monkeypatch):
    tenant = tenants("nb")
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump({"tenants": [tenant_data(tenant.name)]}))
    pods = _render_notebook_pods(tenants_file, tenant, monkeypatch, tmp_path)
    assert len(pods) == 2  # cpu-small and gpu-small

    # The hub creates them with its own token: this also proves the hub's RoleBinding. Each
    # runs as its user's own account, which the hub makes first (as at a spawn).
    hub = control_plane.service_account_client(hub_account, HUB_SERVICE_ACCOUNT)
    pods_path = f"/api/v1/namespaces/{tenant.namespace}/pods"
    wait_allowed(hub, pods_path, "the hub's RoleBinding to take effect")
    paths = {"ServiceAccount": f"/api/v1/namespaces/{tenant.namespace}/serviceaccounts",
             "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{tenant.namespace}"
                            "/rolebindings"}
    for manifest in pods:
        user = manifest["metadata"]["labels"]["workbench.paddle.org/user"]
        assert manifest["spec"]["serviceAccountName"] == user_service_account(tenant, user)
        for obj in user_identity(tenant, user):
            status, message = call(hub, "POST", paths[obj["kind"]], obj)
            assert status == 201, f"{obj['kind']} {user}: {status} {message}"
    for manifest in pods:
        status, message = call(hub, "POST", pods_path, manifest)
        assert status == 201, f"{manifest['metadata']['name']}: {status} {message}"

    privileged = copy.deepcopy(pods[0])
    privileged["metadata"]["name"] += "-privileged"
    privileged["spec"]["containers"][0]["securityContext"].update(
        {"privileged": True, "allowPrivilegeEscalation": True})
    status, message = call(hub, "POST", pods_path, privileged)
    assert status == 403, message
    assert 'violates PodSecurity "restricted:latest"' in message
    assert "privileged" in message
    core = client.CoreV1Api(control_plane.api_client())
    names = {p.metadata.name for p in core.list_namespaced_pod(tenant.namespace).items}
    assert names == {p["metadata"]["name"] for p in pods}
