"""The tenant's admission policy on PaddleJobs (Kubeflow training-operator v1).

`workbench-<tenant>-paddlejobs`, on every PaddleJob created, changed or deleted in the tenant's
namespace. Whoever asks: `images` (only the tenant's, by digest), `nodes` (at most `max_nodes`,
no elastic scaling), `gpus` (at most `max_gpus_per_node` per node), `resources` (the whole job,
at its limits or the namespace's default limits, fits the tenant's quota; a node counts its
containers and init containers), `deadline` (`activeDeadlineSeconds` set, at most
`max_runtime`), `cleanup` (`cleanPodPolicy` Running or All, `ttlSecondsAfterFinished` set, at
most `MAX_FINISHED_TTL`: a job whose Master ends at once is finished, and the operator holds no
finished job to its deadline), `priority` (no priority class but the tenant's), `token` (job
pods run as the namespace's `default` account with no API token) and `component` (no pod
template labelled as anything but a job worker). In a tenant with a queue, the `queue` rule
refuses every new PaddleJob (`admission.job_policies`: Kueue admits no PaddleJobs). No other
account of the namespace may write PaddleJobs (`owner`). Asked by a notebook user's
own account (`<service_account>-<user>`): `owner` (the user label is theirs on the job and its
pod templates; they stop only their own jobs), `claim` (only their own, `claim-<user>`),
`volumes` (that claim, emptyDir, downwardAPI and their own Secrets only) and `secrets` (only
their own Secrets, `<user>.*`; no ConfigMaps).

A PaddleJob's pods are its replica specs' templates (`variables.specs`, each `r`): the rules of
`rules` reach them through the accessors of `shape`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hub_config.cluster_policy.admission import rules
from hub_config.cluster_policy.admission.cel import (
    OWN_SECRET_VOLUME,
    TEMPLATES,
    byte_count,
    container_gpus,
    container_reads_own,
    every_container,
    job_variables,
    label,
    limit_amount,
    lits,
    millicores,
    of_tenant,
    own_pull_secrets,
    pod_total,
    templates_priority,
    templates_run_as_default,
    volumes_all,
)
from hub_config.tenants import Tenant
from workbench_contract import cluster, labels

POD = "r.template.spec"  # a replica spec's pod spec, inside `variables.specs.all(r, ...)`
META = "r.template.metadata"
SPECS = "object.spec.paddleReplicaSpecs"
RUN_POLICY = "spec.runPolicy"
CLEAN_POD_POLICIES = ("Running", "All")  # the pods still running go when the job ends
# The engine's default TTL (PaddleJobAdapter.ttl_seconds_after_finished): the engine has read
# the job's end by then, and its logs are in the job directory; past it a finished job holds
# only a place in the quota's job count.
MAX_FINISHED_TTL = 86400


def _every_pod(check: Callable[[str], str]) -> str:
    return f"{TEMPLATES}{check(POD)})"


def _every_template(check: Callable[[str], str]) -> str:
    return f"{TEMPLATES}!has({META}) || ({check(META)}))"


def _replicas(spec: str) -> str:
    # The operator makes one pod for a replica spec that states no count.
    return f"(has({spec}.replicas) ? {spec}.replicas : 1)"


def shape(tenant: Tenant) -> rules.JobShape:
    """How the rules on a user's own PaddleJobs reach into one."""
    user, tenant_label, ours = labels.LABEL_USER, labels.LABEL_TENANT, of_tenant(tenant)
    bad_claims = (f"variables.specs.map(r, has({POD}.volumes) ? {POD}.volumes.filter(v, "
                  "has(v.persistentVolumeClaim) && v.persistentVolumeClaim.claimName != "
                  "variables.claim).map(v, v.persistentVolumeClaim.claimName).join(', ') : '')"
                  ".filter(s, s != '').join(', ')")
    return rules.JobShape(
        kind=cluster.PADDLEJOB.kind,
        every_pod=_every_pod,
        every_template=_every_template,
        templates_owned=(f"{TEMPLATES}has({META}) && {label(META, user)} == variables.owner && "
                         f"{label(META, tenant_label)} {ours})"),
        labelled=(f", on the PaddleJob and on every pod template (and {tenant_label}, where "
                  f"set, {tenant.name})"),
        labelled_short="on the PaddleJob and on every pod template",
        reads_own_secrets=(
            f"{_every_pod(lambda pod: volumes_all(pod, OWN_SECRET_VOLUME))} && "
            + _every_pod(lambda pod: f"{own_pull_secrets(pod)} && "
                                     f"{every_container(pod, container_reads_own)}")),
        bad_claims=bad_claims,
    )


def _variables(tenant: Tenant, default_cpu: str, default_memory: str) -> list[dict[str, str]]:
    def total(amount: Callable[[str], str]) -> str:
        return f"variables.specs.map(r, {_replicas('r')} * {pod_total(POD, amount)}).sum()"

    cpu, memory = str(millicores(default_cpu)), str(byte_count(default_memory))
    return [
        *job_variables(tenant),
        {"name": "replicaSpecs", "expression": f"{SPECS}.map(k, {SPECS}[k])"},
        # The replica specs with a pod template (the operator refuses the others).
        {"name": "specs", "expression": "variables.replicaSpecs.filter(r, has(r.template) && "
                                        "has(r.template.spec))"},
        {"name": "nodes", "expression": f"variables.replicaSpecs.map(r, {_replicas('r')}).sum()"},
        {"name": "jobCpu",
         "expression": total(lambda c: limit_amount(c, "resources", "cpu", 1000, cpu))},
        {"name": "jobMemory",
         "expression": total(lambda c: limit_amount(c, "resources", "memory", 1, memory))},
        {"name": "jobGpus", "expression": total(container_gpus)},
    ]


def _limit_rules(tenant: Tenant, classes: Sequence[str]) -> list[dict[str, Any]]:
    """The tenant's limits on a PaddleJob, whoever submits it."""
    scheduling = "object.spec.runPolicy.schedulingPolicy"
    job_priority = (f"(!has(object.spec.runPolicy) || !has({scheduling}) || "
                    f"!has({scheduling}.priorityClass) || "
                    f"{scheduling}.priorityClass in {lits(classes)})")
    return [
        rules.container_images_rule(tenant, POD, templates=True),
        rules.nodes_rule(tenant, elastic="spec.elasticPolicy"),
        rules.template_gpus_rule(tenant, POD),
        rules.resources_rule(tenant, tenant.quota.gpus),
        rules.deadline_rule(tenant, f"{RUN_POLICY}.activeDeadlineSeconds"),
        *rules.cleanup_rules(RUN_POLICY, CLEAN_POD_POLICIES, MAX_FINISHED_TTL),
        rules.priority_rule(tenant, classes,
                            f"{job_priority} && {templates_priority(POD, classes)}",
                            scope=", on the job or its pods, and no pod priority"),
        rules.token_rule(templates_run_as_default(POD, "serviceAccountName", "serviceAccount")),
        rules.component_rule(shape(tenant)),
        rules.job_label_rule(shape(tenant)),
    ]


def paddlejob_policies(tenant: Tenant, *, default_cpu: str, default_memory: str,
                       priority_classes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The policy on PaddleJobs in the tenant's namespace (rules: see the module docstring).

    `default_cpu`/`default_memory` are the namespace's default container limits (its
    LimitRange), counted for containers that state none; `priority_classes` are the classes the
    tenant may use (none by default).
    """
    return [rules.policy(
        tenant, "paddlejobs", cluster.PADDLEJOB, _variables(tenant, default_cpu, default_memory),
        [*_limit_rules(tenant, priority_classes), rules.only_users_rule(tenant),
         *rules.owner_rules(tenant, shape(tenant))], deletes=True)]
