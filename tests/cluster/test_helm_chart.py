"""The chart rendered with the workbench's values, judged by the real API server (tier 3).

Every object of `helm template` goes into a namespace that enforces Pod Security `restricted`
(the labels `workbench apply` gives tenant namespaces): the plain objects for real, the
Deployments and their pod templates (as Pods) with server-side dry run, so admission, schema
validation and Pod Security all answer. A privileged hub, rendered from the same values with one
setting changed, is refused. The hub's install on a real node is not part of this tier.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

client = pytest.importorskip("kubernetes.client", reason="install the test extra (kubernetes)")
pytest.importorskip("cryptography", reason="install the test extra (cryptography)")

from kubernetes.client.exceptions import ApiException  # noqa: E402
from kubernetes.dynamic import DynamicClient  # noqa: E402

from hub_config.cluster_policy.bundle import POD_SECURITY_LABELS  # noqa: E402
from tests.helm import chart  # noqa: E402

# Made for real (a Pod's service account must exist); workloads are dry-run only.
DRY_RUN_KINDS = {"Deployment"}


@pytest.fixture(scope="module")
def helm_bin() -> Path:
    return chart.helm_or_skip()


@pytest.fixture
def restricted_namespace(control_plane) -> Iterator[str]:
    core = client.CoreV1Api(control_plane.api_client())
    name = f"helm-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": dict(POD_SECURITY_LABELS)}})
    yield name
    core.delete_namespace(name)


def _create(dyn: DynamicClient, obj: dict[str, Any], namespace: str, dry_run: bool) -> None:
    resource = dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    body = {**obj, "metadata": {**obj["metadata"], "namespace": namespace}}
    kwargs = {"dry_run": "All"} if dry_run else {}
    resource.create(body=body, namespace=namespace, **kwargs)


def _as_pod(where: str, spec: dict[str, Any], template_labels: dict[str, str]) -> dict[str, Any]:
    name = where.split("/")[1]
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{name}-template", "labels": template_labels},
            "spec": spec}


def _pods(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    templates = {f"{o['kind']}/{o['metadata']['name']}": o["spec"]["template"]["metadata"]
                 for o in objects if o["kind"] in chart.WORKLOADS}
    return [_as_pod(where, spec, templates[where].get("labels") or {})
            for where, spec in chart.pod_specs(objects)]


def test_the_rendered_chart_is_admitted_under_restricted(control_plane, helm_bin, tmp_path,
                                                         restricted_namespace) -> None:
    objects = chart.render(helm_bin, chart.image_values(tmp_path))
    dyn = DynamicClient(control_plane.api_client())
    made = []
    for obj in objects:
        _create(dyn, obj, restricted_namespace, dry_run=obj["kind"] in DRY_RUN_KINDS)
        made.append(f"{obj['kind']}/{obj['metadata']['name']}")
    pods = _pods(objects)
    assert [p["metadata"]["name"] for p in pods] == ["hub-template", "proxy-template"]
    for pod in pods:
        _create(dyn, pod, restricted_namespace, dry_run=True)
    assert {"Deployment/hub", "Deployment/proxy", "ServiceAccount/hub", "Secret/hub",
            "ConfigMap/hub", "Service/proxy-public", "NetworkPolicy/hub"} <= set(made)


@pytest.mark.parametrize("settings, reason", [
    # A privileged container may escalate (the API server refuses the pair as invalid otherwise).
    (["hub.containerSecurityContext.privileged=true",
      "hub.containerSecurityContext.allowPrivilegeEscalation=true"], "privileged"),
    (["hub.podSecurityContext.runAsNonRoot=false"], "runAsNonRoot"),
], ids=["privileged-hub", "hub-may-run-as-root"])
def test_a_weakened_hub_is_refused(control_plane, helm_bin, tmp_path, restricted_namespace,
                                   settings: list[str], reason: str) -> None:
    objects = chart.render(helm_bin, chart.image_values(tmp_path), set_values=settings)
    dyn = DynamicClient(control_plane.api_client())
    account = chart.find(objects, "ServiceAccount", "hub")
    _create(dyn, account, restricted_namespace, dry_run=False)
    hub = next(p for p in _pods(objects) if p["metadata"]["name"] == "hub-template")
    with pytest.raises(ApiException) as refused:
        _create(dyn, hub, restricted_namespace, dry_run=True)
    assert refused.value.status == 403
    message = json.loads(refused.value.body)["message"]
    assert 'violates PodSecurity "restricted:latest"' in message
    assert reason in message
