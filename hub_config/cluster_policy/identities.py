"""Each notebook user's own identity in their tenant's namespace: a service account and the
binding of the notebook Role to it.

The hub makes both at a spawn (`hub_config.kube_spawner`), before the pod, so the API server can
tell users apart; the admission policies read the user back from the account's name
(`user_account_prefix`, `account_username_prefix`). Pure builders: tenant and user in, names and
dicts out.
"""

from __future__ import annotations

from typing import Any

from hub_config.tenants import Tenant
from workbench_contract import labels

NOTEBOOK_ROLE = "workbench-notebook"


def user_account_prefix(tenant: Tenant) -> str:
    """Every notebook user's service account is this prefix + their user name."""
    return f"{tenant.service_account}-"


def account_username_prefix(tenant: Tenant) -> str:
    """How the API server names (`request.userInfo.username`) every user's account, up to the
    user name: `system:serviceaccount:<namespace>:<prefix>`."""
    return f"system:serviceaccount:{tenant.namespace}:{user_account_prefix(tenant)}"


def user_service_account(tenant: Tenant, user: str) -> str:
    """The name of `user`'s own service account in the tenant's namespace, which their notebook
    runs as; `user` is KubeSpawner's `{username}` (a DNS label, the value of the user label)."""
    return f"{user_account_prefix(tenant)}{user}"


def user_identity(tenant: Tenant, user: str) -> list[dict[str, Any]]:
    """`user`'s service account and the RoleBinding of the notebook Role to it, which the hub
    creates at a spawn (`hub_config.kube_spawner`). Labelled with the tenant and the user, not as
    ours: `workbench apply --prune` leaves them alone (they go with the namespace)."""
    account = user_service_account(tenant, user)
    meta = {"name": account, "namespace": tenant.namespace,
            "labels": {labels.LABEL_TENANT: tenant.name, labels.LABEL_USER: user}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": NOTEBOOK_ROLE},
         "subjects": [{"kind": "ServiceAccount", "name": account,
                       "namespace": tenant.namespace}]},
    ]
