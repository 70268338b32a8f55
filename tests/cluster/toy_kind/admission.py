"""The hub side of the toy kind: the tenant's admission policy on `batch/v1` Jobs.

`workbench-<tenant>-jobs`: every Job created or changed in the tenant's namespace runs the
tenant's images, at most its `max_nodes` pods at once, under its deadline; and, the kind's own
rule, `indexed`: a Job is Indexed with as many completions as pods at once (one pod per node,
each once), so a Job cannot stand in for a long-running service. Built from the policy package's
shared rules; only where a Job keeps these things is written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub_config.cluster_policy.admission import rules
from hub_config.cluster_policy.admission.cel import check_spec_variable
from hub_config.tenants import Tenant
from toy_kind import TOY

POD = "object.spec.template.spec"


def indexed_job_policies(tenant: Tenant, *, default_cpu: str, default_memory: str,
                         priority_classes: Sequence[str] = ()) -> list[dict[str, Any]]:
    nodes = "(has(object.spec.parallelism) ? object.spec.parallelism : 1)"
    indexed = rules.validation(
        "indexed",
        "!variables.checkSpec || (has(object.spec.completionMode) && "
        "object.spec.completionMode == 'Indexed' && has(object.spec.completions) && "
        f"object.spec.completions == {nodes})",
        f"a Job in tenant {tenant.name} is Indexed, with completions equal to its parallelism "
        "(one pod per node)")
    return [rules.policy(
        tenant, "jobs", TOY.api,
        [check_spec_variable(), {"name": "nodes", "expression": nodes}],
        [rules.container_images_rule(tenant, POD, templates=False), rules.nodes_rule(tenant),
         rules.deadline_rule(tenant, "spec.activeDeadlineSeconds"), indexed],
        deletes=False)]
