"""ValidatingAdmissionPolicies: the API server, not the user's kernel, enforces a tenant's limits.

The notebook checks a job against the tenant's limits before it submits it, but it runs in the
user's kernel, which the user controls. These policies make the API server refuse the same things
whoever asks, with a message that starts with `workbench rule <name>:`, so it says which rule
refused. `admission_policies(tenant, ...)` gives, each with a binding to the tenant's namespace:

- for every registered job kind (`workbench_contract.jobkinds`), the policies its `admission`
  builder returns (`paddlejob`: PaddleJobs; `trainjob`: TrainJobs and the JobSets made of them);
  in a tenant with a queue, every kind that Kueue does not admit (`JobKind.queued`) also gets
  the `queue` rule, which refuses each new job of it, whoever asks;
- the policies on pods and Secrets (`core`).

The rules themselves are written once, in `rules` (from the CEL pieces of `cel`); a kind's
module says only where its objects keep what the rules check. Adding a kind is its module and
its registration; nothing here names it.

Why one policy per tenant with the tenant's values written into its CEL, not one shared policy
with a parameter object per tenant: the parameter object would be a ConfigMap (or a CRD to install
first) whose strings CEL must parse, and whoever may write it would be part of the security
boundary; values inside the policy can be changed only by whoever may change cluster-scoped
admission policies, and each policy is one plain object carrying the tenant's label, which
`workbench apply --prune` selects on. The cost, one policy per tenant for the API server to
compile, is small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hub_config.cluster_policy.admission import rules
from hub_config.cluster_policy.admission.core import core_policies
from hub_config.tenants import Tenant
from workbench_contract.jobkinds import JobKind, job_kinds, load_object


def unqueued(tenant: Tenant, kind: JobKind, policies: list[dict[str, Any]],
             queued: Sequence[str]) -> list[dict[str, Any]]:
    """`policies`, the policies of `kind`, a kind Kueue does not admit, with the `queue` rule
    that refuses every new job of it in the queued `tenant` (`queued`: the kinds it does admit).

    The rule goes last into the kind's own policy on its API: the API server answers with the
    first refusal, so a job that breaks another rule too still hears of that one (and whoever
    waits for a policy to be enforced sees the same refusal in either tenant). A kind whose
    builder made no policy on its API gets one of its own."""
    rule = rules.unqueued_rule(tenant, kind.api.kind, queued)
    own = [policy for policy in policies if rules.targets(policy, kind.api)]
    for policy in own:
        policy["spec"]["validations"].append(rule)
    if not own:
        policies.append(rules.policy(tenant, f"{kind.api.plural}-queue", kind.api, [], [rule],
                                     deletes=False))
    return policies


def job_policies(tenant: Tenant, *, default_cpu: str, default_memory: str,
                 priority_classes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The policies of every registered job kind, kind by kind in name order (each kind's
    `admission` builder, loaded by its `module:attribute`; in a tenant with a queue, the kinds
    Kueue does not admit with the `queue` rule, see `unqueued`)."""
    kinds = job_kinds().values()
    queued = [kind.name for kind in kinds if kind.queued]
    policies: list[dict[str, Any]] = []
    for kind in kinds:
        build = load_object(kind.admission)
        built = build(tenant, default_cpu=default_cpu, default_memory=default_memory,
                      priority_classes=priority_classes)
        if tenant.queue is not None and not kind.queued:
            built = unqueued(tenant, kind, list(built), queued)
        policies += built
    return policies


def admission_policies(tenant: Tenant, *, object_labels: Mapping[str, str], hub: str,
                       default_cpu: str, default_memory: str,
                       priority_classes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The tenant's policies, each followed by its binding, all labelled `object_labels`.

    `hub`: the hub's service account as the API server names it (the only one that may make
    notebook pods); `default_cpu`/`default_memory`: the namespace's default container limits
    (its LimitRange), counted for containers that state none; `priority_classes`: the priority
    classes the tenant may use.

    Raises:
        ImportError, AttributeError: a registered kind's `admission` names nothing importable.
    """
    policies = [
        *job_policies(tenant, default_cpu=default_cpu, default_memory=default_memory,
                      priority_classes=priority_classes),
        *core_policies(tenant, hub=hub, priority_classes=priority_classes),
    ]
    objects: list[dict[str, Any]] = []
    for policy in policies:
        policy["metadata"]["labels"] = dict(object_labels)
        objects += [policy, rules.binding(policy, tenant)]
    return objects
