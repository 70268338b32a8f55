"""What marks an object of a tenant's bundle as the workbench's, and the check of the names an
operator passes into one.

Every object `workbench apply` makes carries `MANAGED_BY_LABEL` and the tenant label
(`bundle_labels`): `hub_config.cluster_policy.apply` prunes by them, cluster-scoped objects (the
admission policies) included. A malformed parameter is a `ProvisioningError` whose message names
it and says what to write.
"""

from __future__ import annotations

from typing import Any

from hub_config.tenants import Tenant
from workbench_contract import labels
from workbench_contract.resources import is_dns_label

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "paddle-workbench"
FIELD_MANAGER = "paddle-workbench"


class ProvisioningError(ValueError):
    """A provisioning parameter is wrong; the message names it and says what to write."""


def bundle_labels(tenant: Tenant) -> dict[str, str]:
    """Labels on every object of a tenant's bundle (prune selects on them)."""
    return {MANAGED_BY_LABEL: MANAGED_BY, labels.LABEL_TENANT: tenant.name}


def object_meta(tenant: Tenant, name: str, *, namespaced: bool = True) -> dict[str, Any]:
    """`metadata` of the bundle's object `name`: our labels, and the tenant's namespace unless
    the object is cluster-scoped."""
    meta: dict[str, Any] = {"name": name, "labels": bundle_labels(tenant)}
    if namespaced:
        meta["namespace"] = tenant.namespace
    return meta


def in_namespace(name: str) -> dict[str, Any]:
    """A namespace selector for namespace `name` alone."""
    # The API server sets this label on every namespace, so no other namespace can claim it.
    return {"matchLabels": {"kubernetes.io/metadata.name": name}}


def check_name(value: str, what: str) -> str:
    """`value` when it is a DNS-1123 label.

    Raises:
        ProvisioningError: it is not; the message names `what`.
    """
    if not is_dns_label(value):
        raise ProvisioningError(
            f"{what} {value!r} is not a DNS-1123 label; use lowercase letters, digits and '-'"
        )
    return value
