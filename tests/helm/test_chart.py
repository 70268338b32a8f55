"""The Zero to JupyterHub chart with the workbench's values: `helm lint` and `helm template` by the
real Helm, and the rendered objects checked as data (tier 1: no cluster).

The API server's own verdict on the same objects (Pod Security `restricted`) is in
tests/cluster/test_helm_chart.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from hub_config.cluster_policy.bundle import namespace_bundle
from hub_config.cluster_policy.network import HUB_COMPONENT_LABEL
from hub_config.tenants import load_tenants
from tests.helm import chart
from workbench_contract import labels
from workbench_contract.ownership import user_claim

EXAMPLE_TENANTS = chart.ROOT / "hub_config" / "tenants.example.yaml"


def test_helm_is_the_pinned_release(helm_bin: Path) -> None:
    done = chart.helm(helm_bin, "version", "--template", "{{.Version}}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "v4.3.2"


def test_lint_is_clean(helm_bin: Path, images_file: Path) -> None:
    done = chart.helm(helm_bin, "lint", str(chart.CHART), "--strict", "--namespace",
                      chart.NAMESPACE, "-f", str(chart.VALUES), "-f", str(images_file))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout
    assert "[WARNING]" not in done.stdout and "[ERROR]" not in done.stdout


def test_template_is_clean(helm_bin: Path, images_file: Path) -> None:
    done = chart.helm(helm_bin, "template", chart.RELEASE, str(chart.CHART), "--namespace",
                      chart.NAMESPACE, "-f", str(chart.VALUES), "-f", str(images_file))
    assert done.returncode == 0 and done.stderr == "", done.stderr


def test_lint_fails_on_a_value_the_chart_refuses(helm_bin: Path, images_file: Path) -> None:
    # Objects the API server would refuse by name fail a strict lint: a clean lint means something.
    done = chart.helm(helm_bin, "lint", str(chart.CHART), "--strict", "-f", str(chart.VALUES),
                      "-f", str(images_file), "--set", "fullnameOverride=Work_Bench")
    assert done.returncode != 0
    assert "object name does not conform" in done.stdout + done.stderr


def test_template_fails_on_a_setting_the_chart_no_longer_accepts(helm_bin, images_file) -> None:
    with pytest.raises(AssertionError, match="rbac.enabled must as of version 2.0.0"):
        chart.render(helm_bin, images_file, set_values=["rbac.enabled=false"])


def _schema_errors(values: dict[str, Any]) -> list[str]:
    """The chart's own schema (values.schema.yaml) on the values the hub reads. Helm checks only
    a values.schema.json, which the chart's release tool writes from this file on publishing;
    the chart as vendored has none, so Helm would let a misspelt key pass."""
    import jsonschema

    schema = yaml.safe_load((chart.CHART / "values.schema.yaml").read_text())
    # The chart adds these two to what it hands the hub; they are not values.
    values = {k: v for k, v in values.items() if k not in ("Chart", "Release")}
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(values)]


def test_the_values_follow_the_chart_schema(rendered) -> None:
    assert _schema_errors(chart.chart_values(rendered)) == []


def test_the_schema_check_catches_a_misspelt_key(helm_bin, images_file) -> None:
    objects = chart.render(helm_bin, images_file, set_values=["hub.imagee.name=x"])
    assert any("'imagee' was unexpected" in e for e in _schema_errors(chart.chart_values(objects)))


def test_only_the_hub_and_the_proxy_run(rendered: list[dict[str, Any]]) -> None:
    # prePuller, userScheduler, userPlaceholder, autohttps: off (each needs an image of its own).
    workloads = sorted(where for where, _ in chart.pod_specs(rendered))
    assert workloads == ["Deployment/hub", "Deployment/proxy"]
    kinds = {obj["kind"] for obj in rendered}
    assert not kinds & {"DaemonSet", "StatefulSet", "Job", "PriorityClass"}


def test_images_are_the_workbench_images_by_digest(rendered: list[dict[str, Any]]) -> None:
    images = {where: [c["image"] for c in chart.containers(spec)]
              for where, spec in chart.pod_specs(rendered)}
    assert images == {"Deployment/hub": [chart.REFS["hub"]],
                      "Deployment/proxy": [chart.REFS["proxy"]]}
    single = chart.chart_values(rendered)["singleuser"]["image"]
    assert f"{single['name']}:{single['tag']}" == chart.REFS["cpu"]


def test_without_the_images_file_no_real_image_is_named(helm_bin: Path) -> None:
    # The placeholders of workbench-values.yaml name no registry that could answer.
    objects = chart.render(helm_bin)
    images = [c["image"] for _, spec in chart.pod_specs(objects) for c in chart.containers(spec)]
    assert len(images) >= 2, "no pod rendered: nothing was checked"  # the hub's and the proxy's
    for image in images:
        assert image.startswith("set-by-image-values.invalid/"), image


@pytest.mark.parametrize("refs, message", [
    ({"hub": "registry.test/workbench/hub:1.0", "proxy": chart.REFS["proxy"],
      "cpu": chart.REFS["cpu"]}, "hub image 'registry.test/workbench/hub:1.0' is not pinned"),
    ({"hub": chart.REFS["hub"], "cpu": chart.REFS["cpu"]}, "no proxy= line"),
], ids=["tag-not-digest", "missing-proxy"])
def test_image_values_refuses_what_is_not_a_digest(refs: dict[str, str], message: str) -> None:
    done = chart.run_image_values("".join(f"{k}={v}\n" for k, v in refs.items()))
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("where", ["Deployment/hub", "Deployment/proxy"])
def test_hub_and_proxy_pods_meet_pod_security_restricted(rendered, where: str) -> None:
    spec = dict(chart.pod_specs(rendered))[where]
    assert chart.restricted_problems(spec) == []


@pytest.mark.parametrize("setting, problem", [
    ("hub.containerSecurityContext.privileged=true", "hub: privileged"),
    ("hub.containerSecurityContext.allowPrivilegeEscalation=true",
     "hub: allowPrivilegeEscalation is not false"),
    ("proxy.chp.containerSecurityContext.seccompProfile.type=Unconfined",
     "chp: seccompProfile is 'Unconfined', not RuntimeDefault"),
    ("proxy.chp.containerSecurityContext.runAsUser=0", "chp: runs as uid 0"),
], ids=["privileged-hub", "escalating-hub", "unconfined-proxy", "root-proxy"])
def test_the_restricted_check_catches_a_weakened_value(helm_bin, images_file, setting: str,
                                                      problem: str) -> None:
    objects = chart.render(helm_bin, images_file, set_values=[setting])
    found = [p for _, spec in chart.pod_specs(objects) for p in chart.restricted_problems(spec)]
    assert problem in found


def test_the_hub_has_no_cluster_wide_rights(rendered: list[dict[str, Any]]) -> None:
    kinds = {obj["kind"] for obj in rendered}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    # Nor a Role in its own namespace: it spawns only into tenant namespaces.
    assert not kinds & {"Role", "RoleBinding"}


def test_workbench_apply_binds_the_service_account_the_chart_makes(rendered) -> None:
    account = next(obj for obj in rendered if obj["kind"] == "ServiceAccount")
    hub_pod = dict(chart.pod_specs(rendered))["Deployment/hub"]
    assert hub_pod["serviceAccountName"] == account["metadata"]["name"]
    tenant = load_tenants(EXAMPLE_TENANTS).tenants[0]
    bundle = namespace_bundle(tenant, hub_namespace=chart.NAMESPACE,
                              hub_service_account=account["metadata"]["name"])
    binding = next(obj for obj in bundle if obj["kind"] == "RoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "hub",
                                    "namespace": chart.NAMESPACE}]
    # The tenant's NetworkPolicy lets the chart's hub and proxy pods (by their labels) in.
    policy = next(obj for obj in bundle if obj["metadata"]["name"] == "notebook-from-hub")
    allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"][0]
    assert allowed["key"] == HUB_COMPONENT_LABEL
    for name in ("hub", "proxy"):
        pod_labels = chart.find(rendered, "Deployment", name)["spec"]["template"]["metadata"][
            "labels"]
        assert pod_labels[allowed["key"]] in allowed["values"]


def test_notebooks_in_tenant_namespaces_may_reach_the_hub(rendered) -> None:
    # The hub's NetworkPolicy admits notebook pods of namespaces `workbench apply` labels.
    tenant = load_tenants(EXAMPLE_TENANTS).tenants[0]
    namespace_labels = namespace_bundle(tenant)[0]["metadata"]["labels"]
    ingress = chart.find(rendered, "NetworkPolicy", "hub")["spec"]["ingress"]
    matches = [
        peer for rule in ingress for peer in rule.get("from") or []
        if peer.get("namespaceSelector", {}).get("matchLabels", {}).items()
        <= namespace_labels.items()
        and peer.get("podSelector", {}).get("matchLabels") == {
            labels.LABEL_COMPONENT: labels.COMPONENT_NOTEBOOK}
    ]
    assert matches


def _secret_names(container: dict[str, Any]) -> list[str]:
    return [e["name"] for e in container.get("env") or []
            if any(word in e["name"] for word in ("SECRET", "TOKEN", "PASSWORD", "KEY"))]


def test_no_secret_sits_in_an_env_value_or_argv(rendered: list[dict[str, Any]]) -> None:
    secrets = chart.secret_strings(rendered)
    assert secrets  # the chart's generated tokens: what must not leak
    specs = chart.pod_specs(rendered)
    assert specs, "no pod rendered: nothing was checked"
    for where, spec in specs:
        for container in chart.containers(spec):
            plain = [e.get("value") or "" for e in container.get("env") or []]
            argv = [*(container.get("command") or []), *(container.get("args") or [])]
            for text in plain + argv:
                assert not any(s in text for s in secrets), f"{where}: a secret in {text!r}"
            for entry in container.get("env") or []:
                if entry["name"] in _secret_names(container):
                    assert "value" not in entry, f"{where}: {entry['name']} is a plain value"
                    assert "secretKeyRef" in entry["valueFrom"]


def test_the_secret_check_catches_a_secret_written_in(helm_bin, images_file) -> None:
    objects = chart.render(helm_bin, images_file,
                           set_values=["hub.extraEnv.WORKBENCH_OIDC_CLIENT_SECRET=hunter2"])
    hub = chart.containers(dict(chart.pod_specs(objects))["Deployment/hub"])[0]
    entry = next(e for e in hub["env"] if e["name"] == "WORKBENCH_OIDC_CLIENT_SECRET")
    assert entry.get("value") == "hunter2"  # so the test above would fail on it


def test_prometheus_scrapes_the_hub_metrics_with_a_read_only_token(rendered) -> None:
    service = chart.find(rendered, "Service", "hub")
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/hub/metrics"
    monitor = yaml.safe_load(chart.SERVICE_MONITOR.read_text())
    # The ServiceMonitor selects the rendered hub Service, on a port it has ...
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"][
        "labels"].items()
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == annotations["prometheus.io/path"]
    # ... the job label the hub alerts expect (deploy/monitoring: job="jupyterhub") ...
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "jupyterhub"
    # ... and a token the chart really keeps, of a service that may read metrics only.
    credentials = endpoint["authorization"]["credentials"]
    secret = chart.find(rendered, "Secret", credentials["name"])
    assert credentials["key"] in secret["data"]
    service_name = credentials["key"].split(".")[2]
    roles = chart.chart_values(rendered)["hub"]["loadRoles"]
    granted = [r["scopes"] for r in roles.values() if service_name in r.get("services", [])]
    assert granted == [["read:metrics"]]


def test_the_hub_loads_the_workbench_config(rendered) -> None:
    values = chart.chart_values(rendered)
    extra = "\n".join(values["hub"]["extraConfig"].values())
    assert "configure_in_cluster(c, os.environ)" in extra
    hub = chart.containers(dict(chart.pod_specs(rendered))["Deployment/hub"])[0]
    env = {e["name"]: e for e in hub["env"]}
    tenants_file = env["WORKBENCH_TENANTS_FILE"]["value"]
    mounts = {m["name"]: m for m in hub["volumeMounts"]}
    volumes = {v["name"]: v for v in dict(chart.pod_specs(rendered))["Deployment/hub"]["volumes"]}
    mounted = [name for name, m in mounts.items()
               if tenants_file.startswith(m["mountPath"].rstrip("/") + "/")
               and "configMap" in volumes[name]]
    assert mounted, f"{tenants_file} is not on a ConfigMap volume"
    assert mounts[mounted[0]].get("readOnly") is True
    # The chart's own single culler is off: the tenants' cullers replace it.
    assert values["cull"]["enabled"] is False


def test_each_user_gets_the_claim_job_pods_mount(rendered) -> None:
    """The chart's storage values, made into KubeSpawner settings as the chart's config file does
    (files/hub/jupyterhub_config.py, `storage_type == "dynamic"`), give the notebook pod the
    claim `user_claim(user)` and tell the notebook that claim for its jobs."""
    pytest.importorskip("kubespawner", reason="jupyterhub-kubespawner is not installed (hub "
                                              "extra)")
    from tests.hub_config.hub_env import render_pod

    storage = chart.chart_values(rendered)["singleuser"]["storage"]
    assert storage["type"] == "dynamic"
    assert storage["dynamic"]["storageAccessModes"] == ["ReadWriteMany"]
    volume = storage["dynamic"]["volumeNameTemplate"]
    tenant = load_tenants(EXAMPLE_TENANTS).tenants[0]
    pod, spawner = render_pod(
        EXAMPLE_TENANTS, "Ada.Lovelace", [tenant.groups[0]],
        pvc_name_template=storage["dynamic"]["pvcNameTemplate"],
        volumes=[{"name": volume, "persistentVolumeClaim": {"claimName": "{pvc_name}"}}],
        volume_mounts=[{"name": volume, "mountPath": storage["homeMountPath"]}],
    )
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == [user_claim(spawner.user_label)] == [spawner.pvc_name]
    assert spawner.workbench_context.storage.claim == user_claim(spawner.user_label)
