"""The RBAC matrix, by real requests: what a user's own notebook service account in tenant A
(and the hub's service account) can do in A, in B and cluster-wide, counted from HTTP statuses.

Every cell is one real API request with that account's TokenRequest token; a cell counts as a
success for any answer but 403 (the allowed ones are all 2xx: the probe pods are kept Pending,
so reading a log answers 204 without needing a kubelet). Every object that a request in B would
touch exists (the admin made it), so a 403 there is RBAC, not a 404.
Run with `pytest -s` to see the tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

client = pytest.importorskip("kubernetes.client", reason="install the test extra (kubernetes)")
pytest.importorskip("cryptography", reason="install the test extra (cryptography)")

import tenancy  # noqa: E402  (tests/cluster is on sys.path)
from tenancy import (  # noqa: E402
    HUB_SERVICE_ACCOUNT,
    USER_LABEL,
    call,
    notebook_user,
    paddlejob,
    pod,
    wait_allowed,
)

from hub_config.cluster_policy.bundle import QUOTA_NAME  # noqa: E402

hub_account = tenancy.hub_account  # fixtures shared by the tenancy tests
tenants = tenancy.tenants

JOBS = "/apis/kubeflow.org/v1/namespaces/{ns}/paddlejobs"
CORE = "/api/v1/namespaces/{ns}"


@dataclass(frozen=True)
class Probe:
    """One request template: `{ns}` is the namespace, `{job}`/`{pod}`/`{secret}` its objects."""

    label: str
    method: str
    path: str
    body: dict | None = None
    query: tuple[tuple[str, str], ...] = ()


WATCH = (("watch", "true"), ("timeoutSeconds", "1"))
OWN_SECRET = {"metadata": {"name": "ada.probe-env", "labels": {USER_LABEL: "ada"}},
              "stringData": {"API_KEY": "k"}}
NOTEBOOK_ALLOWED = (
    Probe("create paddlejob", "POST", JOBS, paddlejob("probe", owner="ada")),
    Probe("get paddlejob", "GET", JOBS + "/{job}"),
    Probe("list paddlejobs", "GET", JOBS),
    Probe("watch paddlejobs", "GET", JOBS, query=WATCH),
    Probe("get pod", "GET", CORE + "/pods/{pod}"),
    Probe("list pods", "GET", CORE + "/pods"),
    Probe("watch pods", "GET", CORE + "/pods", query=WATCH),
    Probe("read pod log", "GET", CORE + "/pods/{pod}/log"),
    Probe("list events", "GET", CORE + "/events"),
    Probe("read quota", "GET", CORE + f"/resourcequotas/{QUOTA_NAME}"),
    # A job's --env Secret: made, given to its job, deleted; the policies keep it the user's.
    Probe("create own secret", "POST", CORE + "/secrets", OWN_SECRET),
    Probe("patch own secret", "PATCH", CORE + "/secrets/ada.probe-env",
          {"metadata": {"labels": {"workbench.paddle.org/job": "probe"}}}),
    Probe("delete own secret", "DELETE", CORE + "/secrets/ada.probe-env"),
    Probe("delete paddlejob", "DELETE", JOBS + "/{job}"),
)
# Neither account may grant anyone more than it has (here: admin to every authenticated user).
ESCALATE = Probe("create rolebinding", "POST",
                 "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
                 {"metadata": {"name": "escalate"},
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": "admin"},
                  "subjects": [{"kind": "Group", "name": "system:authenticated"}]})
NOTEBOOK_FORBIDDEN = (
    Probe("get secret", "GET", CORE + "/secrets/{secret}"),
    Probe("list secrets", "GET", CORE + "/secrets"),
    Probe("create pod", "POST", CORE + "/pods", pod("direct")),
    Probe("delete pod", "DELETE", CORE + "/pods/{pod}"),
    ESCALATE,
    Probe("edit quota", "PATCH", CORE + f"/resourcequotas/{QUOTA_NAME}",
          {"spec": {"hard": {"requests.nvidia.com/gpu": "100"}}}),
)
CLUSTER_FORBIDDEN = (
    Probe("create namespace", "POST", "/api/v1/namespaces", {"metadata": {"name": "wb-rogue"}}),
    Probe("list namespaces", "GET", "/api/v1/namespaces"),
    Probe("list nodes", "GET", "/api/v1/nodes"),
)
HUB_ALLOWED = (
    # A user's own account, bound to the notebook Role (`user_identity`), before their pod.
    Probe("create serviceaccount", "POST", CORE + "/serviceaccounts",
          {"metadata": {"name": "notebook-probe"}}),
    Probe("bind the notebook role", "POST",
          "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
          {"metadata": {"name": "notebook-probe"},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                       "name": "workbench-notebook"},
           "subjects": [{"kind": "ServiceAccount", "name": "notebook-probe",
                         "namespace": "{ns}"}]}),
    # The server's hub token, written into its Secret (never read back).
    Probe("create token secret", "POST", CORE + "/secrets",
          {"metadata": {"name": "jupyter-probe-token"}, "stringData": {"token": "t"}}),
    Probe("patch token secret", "PATCH", CORE + "/secrets/jupyter-probe-token",
          {"stringData": {"token": "t2"}}),
    Probe("create pod", "POST", CORE + "/pods", pod("hub-made", unschedulable=True)),
    Probe("get pod", "GET", CORE + "/pods/{pod}"),
    Probe("list pods", "GET", CORE + "/pods"),
    Probe("watch pods", "GET", CORE + "/pods", query=WATCH),
    Probe("list events", "GET", CORE + "/events"),
    Probe("create pvc", "POST", CORE + "/persistentvolumeclaims", {
        "metadata": {"name": "claim-user"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
    Probe("delete pod", "DELETE", CORE + "/pods/hub-made"),
)
HUB_FORBIDDEN = (
    Probe("get secret", "GET", CORE + "/secrets/{secret}"),
    Probe("list secrets", "GET", CORE + "/secrets"),
    Probe("delete secret", "DELETE", CORE + "/secrets/{secret}"),
    Probe("create paddlejob", "POST", JOBS, paddlejob("hub-job")),
    ESCALATE,
)


def _seed(plane, namespace: str, job: str | None) -> dict[str, str]:
    """Objects every probe in `namespace` can aim at (made by the admin)."""
    api = plane.api_client()
    core = client.CoreV1Api(api)
    names = {"ns": namespace, "pod": "seed-pod", "secret": "seed-secret", "job": job or ""}
    core.create_namespaced_pod(namespace, pod("seed-pod", unschedulable=True))
    core.create_namespaced_secret(namespace, {"metadata": {"name": "seed-secret"},
                                              "stringData": {"token": "do-not-read"}})
    if job:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            "kubeflow.org", "v1", namespace, "paddlejobs", paddlejob(job))
    return names


def _fill(value, names: dict[str, str]):
    """`value` (a probe's body) with `{ns}` and the like filled in, at any depth."""
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


def _run(api_client, probes, names: dict[str, str]) -> list[tuple[str, int, str]]:
    """Run each probe for real: (label, HTTP status, message)."""
    rows = []
    for probe in probes:
        path = probe.path.format(**names)
        status, message = call(api_client, probe.method, path, _fill(probe.body, names),
                               list(probe.query))
        rows.append((probe.label, status, message))
    return rows


def _verdict(status: int) -> str:
    if status == 403:
        return "denied"
    return f"ALLOWED {status}"


def _table(title: str, columns: list[str], rows: dict[str, list[int | None]]) -> str:
    width = max(len(label) for label in rows) + 2
    lines = [title, "".ljust(width) + "".join(c.ljust(18) for c in columns)]
    for label, statuses in rows.items():
        cells = ["-" if s is None else _verdict(s) for s in statuses]
        lines.append(label.ljust(width) + "".join(c.ljust(18) for c in cells))
    return "\n".join(lines)


def test_notebook_account_rbac_matrix(control_plane, tenants):
    a, b = tenants("a"), tenants("b")
    names_a = _seed(control_plane, a.namespace, job=None)
    names_b = _seed(control_plane, b.namespace, job="b-job")
    names_a["job"] = "probe"  # the job the notebook creates in its own namespace
    notebook = notebook_user(control_plane, a, "ada")  # ada's own account, as the hub makes it

    probes = NOTEBOOK_ALLOWED + NOTEBOOK_FORBIDDEN
    own = _run(notebook, probes, names_a)
    other = _run(notebook, probes, names_b)
    cluster = _run(notebook, CLUSTER_FORBIDDEN, {})

    rows: dict[str, list[int | None]] = {
        label: [status_a, status_b, None]
        for (label, status_a, _), (_, status_b, _) in zip(own, other, strict=True)}
    rows.update({label: [None, None, status] for label, status, _ in cluster})
    print("\n" + _table(f"ada's notebook account in tenant A ({a.namespace}), real requests:",
                        ["in A (own)", "in B (other)", "cluster"], rows))

    cross_tenant = [(label, status, msg) for label, status, msg in other if status != 403]
    print(f"cross-tenant successes: {len(cross_tenant)} of {len(other)} requests into B")
    assert cross_tenant == [], f"cross-tenant successes: {cross_tenant}"
    assert [c for c in cluster if c[1] != 403] == []
    allowed = {p.label for p in NOTEBOOK_ALLOWED}
    for label, status, message in own:
        if label in allowed:
            assert 200 <= status <= 299, f"{label} in own namespace: {status} {message}"
        else:
            assert status == 403, f"{label} in own namespace was allowed: {status}"
    # The objects in B are untouched.
    custom = client.CustomObjectsApi(control_plane.api_client())
    custom.get_namespaced_custom_object("kubeflow.org", "v1", b.namespace, "paddlejobs", "b-job")


def test_hub_account_reaches_provisioned_namespaces_only(control_plane, hub_account, tenants,
                                                         namespace):
    a = tenants("h")
    names = _seed(control_plane, a.namespace, job=None)
    outside = _seed(control_plane, namespace, job=None)  # a namespace nobody provisioned
    hub = control_plane.service_account_client(hub_account, HUB_SERVICE_ACCOUNT)
    wait_allowed(hub, CORE.format(ns=a.namespace) + "/pods", "the hub RoleBinding to apply")

    own = _run(hub, HUB_ALLOWED + HUB_FORBIDDEN, names)
    elsewhere = _run(hub, HUB_ALLOWED + HUB_FORBIDDEN, outside)
    rows: dict[str, list[int | None]] = {
        label: [sa, sb] for (label, sa, _), (_, sb, _) in zip(own, elsewhere, strict=True)}
    print("\n" + _table("hub account, real requests:",
                        ["tenant namespace", "unprovisioned"], rows))

    assert [e for e in elsewhere if e[1] != 403] == []
    allowed = {p.label for p in HUB_ALLOWED}
    for label, status, message in own:
        if label in allowed:
            assert status in (200, 201), f"hub {label}: {status} {message}"
        else:
            assert status == 403, f"hub {label} was allowed: {status}"

