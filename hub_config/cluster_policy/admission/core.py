"""The tenant's admission policies on what every workload of its namespace is made of: pods and
Secrets.

- `workbench-<tenant>-pods`: every pod created or changed (the hub's notebook pods, the job
  operators' worker pods): `images` (only the tenant's, by digest), `priority` (no priority
  class but the tenant's) and `notebook` (only the hub's own account makes a pod labelled as a
  notebook, which the NetworkPolicies let further than any other). Users create no pods
  themselves (RBAC).
- `workbench-<tenant>-secrets`: a notebook user's own account creates only Opaque Secrets named
  `<user>.*` and labelled as theirs, and changes or deletes only its own (`secrets`). The
  cluster engine keeps a job's `--env` values in such a Secret.
- `workbench-<tenant>-networkpolicies`: a notebook user's own account creates only a job's own
  NetworkPolicy, of the one shape the cluster engine makes, and changes or deletes only its own
  (`network`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub_config.cluster_policy.admission import rules
from hub_config.cluster_policy.admission.cel import (
    check_spec_variable,
    is_user,
    label,
    lit,
    pod_priority,
    user_variables,
)
from hub_config.tenants import Tenant
from workbench_contract import labels
from workbench_contract.cluster import Api
from workbench_contract.ownership import SECRET_SEPARATOR

POD = Api("", "v1", "pods", "Pod")
SECRET = Api("", "v1", "secrets", "Secret")
NETWORK_POLICY = Api("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy")


def pod_policy(tenant: Tenant, *, hub: str, priority_classes: Sequence[str] = ()
               ) -> dict[str, Any]:
    """The policy on every pod in the tenant's namespace: the tenant's images and priority
    classes only (the hub's notebook pods and the operators' worker pods alike), and pods
    labelled as notebooks made by the hub only (`hub`: its account's API server username)."""
    return rules.policy(
        tenant, "pods", POD, [check_spec_variable()],
        [rules.container_images_rule(tenant, "object.spec", templates=False),
         rules.priority_rule(tenant, priority_classes,
                             pod_priority("object.spec", priority_classes)),
         rules.notebook_rule(hub)],
        deletes=False)


def secret_policy(tenant: Tenant) -> dict[str, Any]:
    """What a notebook user's own account may do with Secrets (its Role lets it create, patch
    and delete them, never read them): create Opaque Secrets named `<user>.*` labelled as the
    user's, and change or delete only those. Opaque matters: a Secret of type
    `kubernetes.io/service-account-token` would be filled with another account's token."""
    user, v, forbidden = labels.LABEL_USER, rules.validation, rules.FORBIDDEN
    validations = [
        v("secrets",
          "request.operation != 'CREATE' || object.metadata.name.startsWith("
          "variables.secretPrefix)",
          f"your Secrets must be named <you>{SECRET_SEPARATOR}<name>",
          "'your Secrets must be named ' + variables.secretPrefix + '<name>, not ' + "
          "object.metadata.name", forbidden),
        v("secrets",
          f"request.operation == 'CREATE' || {label('oldObject.metadata', user)} == "
          "variables.owner",
          "you may change or delete only your own Secrets",
          "'Secret ' + oldObject.metadata.name + ' is not yours; you may change or delete "
          "only your own Secrets'", forbidden),
        v("secrets",
          "request.operation == 'DELETE' || ((!has(object.type) || object.type == 'Opaque') "
          f"&& {label('object.metadata', user)} == variables.owner)",
          f"your Secrets must be of type Opaque and carry the label {user}=<you>",
          f"{lit(f'your Secrets must be of type Opaque and carry the label {user}=')} + "
          "variables.owner", forbidden),
    ]
    # Only a user's own account is held to this; the hub and the garbage collector are not.
    return rules.policy(tenant, "secrets", SECRET, user_variables(tenant), validations,
                        deletes=True,
                        match_conditions=[{"name": "notebook-user",
                                           "expression": is_user(tenant)}])


def _selects_the_job(selector: str) -> str:
    """CEL: `selector` (a podSelector's holder) selects by the job label, set to the policy's
    name, and the user label, set to the user, and by nothing else."""
    job, user = lit(labels.LABEL_JOB), lit(labels.LABEL_USER)
    pods, chosen = f"{selector}.podSelector", f"{selector}.podSelector.matchLabels"
    return (f"has({pods}) && !has({pods}.matchExpressions) && has({chosen}) && "
            f"{chosen}.size() == 2 && {job} in {chosen} && {user} in {chosen} && "
            f"{chosen}[{job}] == object.metadata.name && {chosen}[{user}] == variables.owner")


def _only_the_job(rules_field: str, peers: str) -> str:
    """CEL: the policy's `rules_field` (ingress, egress) is one rule on every port whose
    `peers` (from, to) are the job's own pods only."""
    listed = f"object.spec.{rules_field}"
    return (f"has({listed}) && {listed}.size() == 1 && {listed}.all(r, !has(r.ports) && "
            f"has(r.{peers}) && r.{peers}.size() == 1 && r.{peers}.all(p, "
            f"!has(p.namespaceSelector) && !has(p.ipBlock) && {_selects_the_job('p')}))")


def network_policy_policy(tenant: Tenant) -> dict[str, Any]:
    """What a notebook user's own account may do with NetworkPolicies (its Role lets it
    create, patch and delete them, for its jobs): create only a job's own policy
    (`workbench_contract.job_network`: the job's pods reach each other) labelled as the user's,
    hand it to its job (a patch of owner references, never of the spec) and delete only its
    own. Any wider policy would open the tenant's default deny."""
    user, v, forbidden = labels.LABEL_USER, rules.validation, rules.FORBIDDEN
    shape = (f"{_selects_the_job('object.spec')} && object.spec.policyTypes.size() == 2 && "
             "'Ingress' in object.spec.policyTypes && 'Egress' in object.spec.policyTypes && "
             f"{_only_the_job('ingress', 'from')} && {_only_the_job('egress', 'to')}")
    mine = f"{label('object.metadata', user)} == variables.owner"
    was_mine = f"{label('oldObject.metadata', user)} == variables.owner"
    validations = [
        v("network", f"request.operation != 'CREATE' || ({shape} && {mine})",
          "your NetworkPolicies may only be a job's own, as the workbench makes it: named as "
          f"the job, selecting and letting in the job's pods only (label {labels.LABEL_JOB}), "
          f"labelled {user}=<you>", reason=forbidden),
        v("network", f"request.operation != 'UPDATE' || (object.spec == oldObject.spec && "
                     f"{mine} && {was_mine})",
          "you may hand your job's NetworkPolicy to its job, not change what it allows",
          reason=forbidden),
        v("network", f"request.operation != 'DELETE' || {was_mine}",
          "you may delete only your own jobs' NetworkPolicies", reason=forbidden),
    ]
    return rules.policy(tenant, "networkpolicies", NETWORK_POLICY, user_variables(tenant),
                        validations, deletes=True,
                        match_conditions=[{"name": "notebook-user", "expression": is_user(tenant)}])


def core_policies(tenant: Tenant, *, hub: str, priority_classes: Sequence[str] = ()
                  ) -> list[dict[str, Any]]:
    """The policies on pods, Secrets and NetworkPolicies, in that order (`hub`: see
    `pod_policy`)."""
    return [pod_policy(tenant, hub=hub, priority_classes=priority_classes),
            secret_policy(tenant), network_policy_policy(tenant)]
