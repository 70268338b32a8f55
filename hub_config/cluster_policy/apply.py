"""Server-side apply of rendered manifests, with a summary per object and an opt-in prune.

`apply_objects(api_client, objects)` sends each object as a server-side apply patch
(`application/apply-patch+yaml`, field manager `paddle-workbench`, conflicts forced: the tenants
file is the source of truth for the fields we set) and reports, per object, whether the API
server `created` it, `configured` (changed) it or left it `unchanged`. Applying the same objects
twice reports all `unchanged` the second time.

Nothing is deleted unless `prune=True`: then objects labelled as ours
(`app.kubernetes.io/managed-by=paddle-workbench`) of the tenants in scope that are no longer
rendered are deleted (`pruned`). Objects without our label are never touched.

Only the kinds of the namespace bundle are known (`KINDS`); the API paths are built from them,
so no discovery round trips are needed. Errors from the API server surface as `ApplyError`
with one line naming the object and what to do.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from hub_config.cluster_policy.metadata import FIELD_MANAGER, MANAGED_BY, MANAGED_BY_LABEL
from workbench_contract import cluster, labels

CREATED, CONFIGURED, UNCHANGED, PRUNED = "created", "configured", "unchanged", "pruned"


@dataclass(frozen=True)
class Kind:
    """Where the API server serves one kind."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    def collection(self, namespace: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            return f"{base}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{self.plural}"

    def path(self, name: str, namespace: str | None) -> str:
        return f"{self.collection(namespace)}/{name}"


# In apply order (the admission policies before anything that lets a user in); prune goes
# through them in the same order, Namespace first, so a pruned namespace's contents are skipped.
KINDS = (
    Kind("v1", "Namespace", "namespaces", False),
    Kind("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy",
         "validatingadmissionpolicies", False),
    Kind("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding",
         "validatingadmissionpolicybindings", False),
    Kind("v1", "ServiceAccount", "serviceaccounts", True),
    Kind("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    Kind("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    Kind("v1", "ResourceQuota", "resourcequotas", True),
    Kind("v1", "LimitRange", "limitranges", True),
    Kind("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies", True),
    # Kueue, for tenants with a queue (`kueue`); listing them where Kueue is not installed
    # finds nothing to prune.
    *(Kind(api.api_version, api.kind, api.plural, namespaced) for api, namespaced in (
        (cluster.RESOURCE_FLAVOR, False), (cluster.CLUSTERQUEUE, False),
        (cluster.LOCALQUEUE, True))),
)
_BY_KIND = {(k.api_version, k.kind): k for k in KINDS}


class ApplyError(RuntimeError):
    """The API server refused or could not be reached; the message is one line for the operator."""


@dataclass(frozen=True)
class ApplyResult:
    """What happened to one object."""

    kind: str
    namespace: str
    name: str
    action: str  # created | configured | unchanged | pruned
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "name": self.name,
                "action": self.action, "dry_run": self.dry_run}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ApplyResult:
        return cls(kind=data["kind"], namespace=data.get("namespace") or "", name=data["name"],
                   action=data["action"], dry_run=bool(data.get("dry_run", False)))


def kind_of(obj: dict[str, Any]) -> Kind:
    """The `Kind` of a manifest; ApplyError for a kind this module does not apply."""
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key not in _BY_KIND:
        known = ", ".join(k.kind for k in KINDS)
        raise ApplyError(f"cannot apply {key[1]} ({key[0]}): only these kinds are known: {known}")
    return _BY_KIND[key]


def _describe(kind: Kind, name: str, namespace: str | None) -> str:
    return f"{kind.kind} {namespace}/{name}" if namespace else f"{kind.kind} {name}"


def _request(api_client, method: str, path: str, *, query: Sequence[tuple[str, str]] = (),
             body: Any = None, content_type: str | None = None,
             missing_ok: bool = False) -> dict[str, Any] | None:
    """One API call: the decoded JSON body; None on 404 when `missing_ok`; else ApplyError."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    headers = {"Accept": "application/json"}
    if content_type:
        headers["Content-Type"] = content_type
    request = api_client.param_serialize(method, path, query_params=list(query),
                                         header_params=headers, body=body,
                                         auth_settings=["BearerToken"])
    try:
        response = api_client.call_api(*request)
        response.read()
    except HTTPError as err:
        host = api_client.configuration.host
        raise ApplyError(f"cannot reach the API server at {host} ({type(err).__name__}); "
                         "check --kubeconfig and that the cluster is up") from None
    except ApiException as err:
        raise ApplyError(f"{method} {path}: {err.status} {err.reason}") from None
    if response.status == 404 and missing_ok:
        return None
    text = response.data.decode("utf-8", "replace") if response.data else ""
    if not 200 <= response.status <= 299:
        raise ApplyError(_refusal(method, path, response.status, text))
    return json.loads(text) if text else {}


def _refusal(method: str, path: str, status: int, text: str) -> str:
    try:
        message = json.loads(text).get("message") or text
    except ValueError:
        message = text
    message = " ".join(str(message).split())
    if status == 401:
        return (f"the API server did not accept the credentials ({message}); "
                "check --kubeconfig")
    if status == 403:
        return (f"forbidden: {message}; apply needs rights to create namespaces, admission "
                "policies, RBAC objects, quotas and network policies (a cluster operator's "
                "kubeconfig)")
    return f"{method} {path} refused ({status}): {message}"


# Fields the server owns or bumps on every write: ignored when deciding "unchanged".
_VOLATILE_METADATA = ("managedFields", "resourceVersion", "generation")


def _comparable(obj: dict[str, Any] | None) -> dict[str, Any] | None:
    if obj is None:
        return None
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _VOLATILE_METADATA}
    return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}


def apply_object(api_client, obj: dict[str, Any], *, dry_run: bool = False,
                 new_namespaces: frozenset[str] = frozenset()) -> ApplyResult:
    """Server-side apply one object; what the API server did with it.

    With `dry_run`, objects inside `new_namespaces` (namespaces this dry run would create) are
    reported as created without asking the server, which would answer "namespace not found".
    """
    kind = kind_of(obj)
    meta = obj.get("metadata") or {}
    name, ns = meta.get("name"), meta.get("namespace") if kind.namespaced else None
    if not name or (kind.namespaced and not ns):
        raise ApplyError(f"{kind.kind} without metadata.name/namespace cannot be applied")
    path = kind.path(name, ns)
    if dry_run and ns in new_namespaces:
        return ApplyResult(kind.kind, ns, name, CREATED, dry_run)
    before = _request(api_client, "GET", path, missing_ok=True)
    query = [("fieldManager", FIELD_MANAGER), ("force", "true")]
    if dry_run:
        query.append(("dryRun", "All"))
    after = _request(api_client, "PATCH", path, query=query, body=obj,
                     content_type="application/apply-patch+yaml")
    if before is None:
        action = CREATED
    elif _comparable(before) == _comparable(after):
        action = UNCHANGED
    else:
        action = CONFIGURED
    return ApplyResult(kind.kind, ns or "", name, action, dry_run)


def _owned(api_client, kind: Kind, selector: str) -> list[tuple[str, str]]:
    """(namespace, name) of every object of `kind` that carries our labels, cluster-wide."""
    # missing_ok: a kind the cluster does not serve (Kueue not installed) has nothing to prune.
    listed = _request(api_client, "GET", kind.collection(), query=[("labelSelector", selector)],
                      missing_ok=True)
    items = (listed or {}).get("items") or []
    return [((i["metadata"].get("namespace") or ""), i["metadata"]["name"]) for i in items]


def prune_selector(tenants: Iterable[str] | None) -> str:
    """Label selector for the objects prune may consider: ours, of these tenants (None: all)."""
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
    if tenants is not None:
        names = sorted(set(tenants))
        if not names:
            raise ApplyError("prune needs at least one tenant in scope")
        selector += f",{labels.LABEL_TENANT} in ({','.join(names)})"
    return selector


def prune(api_client, rendered: Sequence[dict[str, Any]], *, tenants: Iterable[str] | None,
          dry_run: bool = False) -> list[ApplyResult]:
    """Delete our objects (of `tenants`; None: of every tenant) that `rendered` no longer has.

    Objects inside a namespace that is itself pruned go with it and are not listed separately.
    """
    keep = {(kind_of(o).kind, (o["metadata"].get("namespace") or "") if kind_of(o).namespaced
             else "", o["metadata"]["name"]) for o in rendered}
    selector = prune_selector(tenants)
    results: list[ApplyResult] = []
    gone_namespaces: set[str] = set()
    for kind in KINDS:  # Namespace first, so its contents can be skipped
        for ns, name in _owned(api_client, kind, selector):
            if (kind.kind, ns, name) in keep or ns in gone_namespaces:
                continue
            query = [("dryRun", "All")] if dry_run else []
            _request(api_client, "DELETE", kind.path(name, ns or None), query=query,
                     missing_ok=True)  # already gone (say, its namespace is terminating)
            if kind.kind == "Namespace":
                gone_namespaces.add(name)
            results.append(ApplyResult(kind.kind, ns, name, PRUNED, dry_run))
    return results


def apply_objects(api_client, objects: Sequence[dict[str, Any]], *, prune_tenants:
                  Iterable[str] | None = None, prune_all: bool = False,
                  dry_run: bool = False) -> list[ApplyResult]:
    """Apply `objects` in order; then, only if asked, prune.

    Prune runs when `prune_tenants` names tenants (only their objects are considered) or when
    `prune_all` is set (every object labelled as ours, across all tenants: this deletes the
    namespace of a tenant that is gone from the tenants file, and everything in it).
    """
    for obj in objects:
        kind_of(obj)  # refuse an unknown kind before anything is written
    results: list[ApplyResult] = []
    new_namespaces: set[str] = set()
    for obj in objects:
        result = apply_object(api_client, obj, dry_run=dry_run,
                              new_namespaces=frozenset(new_namespaces))
        if result.kind == "Namespace" and result.action == CREATED:
            new_namespaces.add(result.name)
        results.append(result)
    if prune_all:
        results += prune(api_client, objects, tenants=None, dry_run=dry_run)
    elif prune_tenants is not None:
        results += prune(api_client, objects, tenants=prune_tenants, dry_run=dry_run)
    return results


def summary_table(results: Sequence[ApplyResult]) -> str:
    """The results as an aligned text table with a totals line."""
    rows = [("KIND", "NAMESPACE", "NAME", "RESULT")]
    rows += [(r.kind, r.namespace or "-", r.name, r.action + (" (dry run)" if r.dry_run else ""))
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    counts = {a: sum(1 for r in results if r.action == a)
              for a in (CREATED, CONFIGURED, UNCHANGED, PRUNED)}
    lines.append(", ".join(f"{n} {a}" for a, n in counts.items()))
    return "\n".join(lines)
