"""The tenant's admission policies on TrainJobs (Kubeflow Trainer v2) and the JobSets made of
them.

- `workbench-<tenant>-trainjobs`, on every TrainJob created, changed or deleted in the tenant's
  namespace. Whoever asks: `runtime` (only the workbench's Paddle ClusterTrainingRuntime or one
  of its restart copies, no initializer, no hand-over to another cluster), `images`, `nodes`,
  `gpus`, `resources` (the whole job fits the quota; a queued tenant's GPUs may reach what it
  can borrow), `deadline`, `priority` (no Kueue workload priority class but the tenant's),
  `queue` (a queued tenant's jobs go through its own LocalQueue), `token` (no service
  account in the pod patches) and `component` (no template of the patches labelled as anything
  but a job worker). No other account of the namespace may write TrainJobs (`owner`). Asked by
  a notebook user's own account: `owner` (the user label is theirs on the TrainJob, and no
  template of its runtime patches names another user; they stop only their own), `claim`,
  `volumes` and `secrets` (the patches mount only their claim, emptyDir, downwardAPI and their
  own Secrets; the environment reads only their own Secrets).
- `workbench-<tenant>-jobsets`, on every JobSet (the Trainer makes one of each TrainJob; users
  may not, by RBAC): `images`, `gpus`, `priority` and `token` (pods run as the namespace's
  `default` account with no API token), as for PaddleJobs.

GPUs in init containers: the runtime patches of a TrainJob cannot ask for resources at all
(Trainer v2.3.0's schema gives their containers and init containers a name, env,
securityContext and volumeMounts only; the API server drops or, strictly, refuses the rest), so
the TrainJob's GPUs are `resourcesPerNode`'s. What the Trainer makes of the runtime and the
patches is the JobSet, and there `gpus` counts every pod's containers and init containers.

A TrainJob's pods are the pod templates of its runtime patches (`variables.pods`, a list per
patch of the templates of its replicated jobs): the rules of `rules` reach them through
the accessors of `shape`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from hub_config.cluster_policy.admission import rules
from hub_config.cluster_policy.admission.cel import (
    OWN_SECRET_VOLUME,
    TEMPLATES,
    byte_count,
    check_spec_variable,
    default_account,
    env_reads_own,
    gpu_amount,
    job_variables,
    label,
    limit_amount,
    lit,
    lits,
    millicores,
    of_tenant,
    own_pull_secrets,
    pod_images,
    templates_priority,
    templates_run_as_default,
    volumes_all,
)
from hub_config.cluster_policy.kueue import gpu_ceiling
from hub_config.tenants import Tenant
from workbench_contract import cluster, labels

SPEC = "object.spec"
TRAINER = f"{SPEC}.trainer"
IMAGE = f"{TRAINER}.image"
PER_NODE = "trainer.resourcesPerNode"  # under SPEC
# Pod templates of the runtime patches, as a list (one per patch) of lists (one per replicated
# job) of pod templates; checks run `variables.pods.all(l, l.all(t, ...))`.
PODS = ("has(object.spec.runtimePatches) ? object.spec.runtimePatches.filter(p, "
        "has(p.trainingRuntimeSpec) && has(p.trainingRuntimeSpec.template) && "
        "has(p.trainingRuntimeSpec.template.spec) && "
        "has(p.trainingRuntimeSpec.template.spec.replicatedJobs)).map(p, "
        "p.trainingRuntimeSpec.template.spec.replicatedJobs.filter(j, has(j.template) && "
        "has(j.template.spec) && has(j.template.spec.template)).map(j, j.template.spec.template)"
        ") : []")
# The same for the JobSet templates' metadata (one per patch).
JOBSET_META = ("has(object.spec.runtimePatches) ? object.spec.runtimePatches.filter(p, "
               "has(p.trainingRuntimeSpec) && has(p.trainingRuntimeSpec.template)).map(p, "
               "p.trainingRuntimeSpec.template) : []")
JOBSET_POD = "r.template.spec.template.spec"  # a replicated job's pod spec, in a JobSet


def _each_template(check: str) -> str:
    """CEL: `check` (on pod template `t`) holds for every pod template of every patch."""
    return f"variables.pods.all(l, l.all(t, {check}))"


def _every_pod(check: Callable[[str], str]) -> str:
    return _each_template(f"!has(t.spec) || ({check('t.spec')})")


def _every_template(check: Callable[[str], str]) -> str:
    return _each_template(f"!has(t.metadata) || ({check('t.metadata')})")


def shape(tenant: Tenant) -> rules.JobShape:
    """How the rules on a user's own TrainJobs reach into one."""
    user, tenant_label, ours = labels.LABEL_USER, labels.LABEL_TENANT, of_tenant(tenant)
    # Other managers' patches (Kueue adds one at admission) may leave the labels out, but no
    # template may name another user or tenant.
    template_owned = (f"!has(t.metadata) || ({label('t.metadata', user)} in ['', "
                      f"variables.owner] && {label('t.metadata', tenant_label)} {ours})")
    jobset_owned = (f"variables.jobsetMeta.all(m, !has(m.metadata) || "
                    f"{label('m.metadata', user)} in ['', variables.owner])")
    reads_own = _every_pod(lambda pod: f"({volumes_all(pod, OWN_SECRET_VOLUME)}) && "
                                       f"{own_pull_secrets(pod)}")
    return rules.JobShape(
        kind=cluster.TRAINJOB.kind,
        every_pod=_every_pod,
        every_template=_every_template,
        templates_owned=f"{jobset_owned} && {_each_template(template_owned)}",
        labelled=(f" on the TrainJob, and no template of its runtime patches may name another "
                  f"user (or a {tenant_label} but {tenant.name})"),
        labelled_short="on the TrainJob and on its runtime patches where set",
        reads_own_secrets=f"{reads_own} && {env_reads_own(TRAINER, f'!has({TRAINER}) || ')}",
    )


def _variables(tenant: Tenant, default_cpu: str, default_memory: str) -> list[dict[str, str]]:
    cpu, memory = str(millicores(default_cpu)), str(byte_count(default_memory))
    nodes = f"(has({TRAINER}) && has({TRAINER}.numNodes) ? {TRAINER}.numNodes : 1)"
    return [
        *job_variables(tenant),
        {"name": "pods", "expression": PODS},
        {"name": "jobsetMeta", "expression": JOBSET_META},
        {"name": "nodes", "expression": nodes},
        {"name": "nodeGpus", "expression": gpu_amount(SPEC, PER_NODE)},
        {"name": "jobCpu",
         "expression": f"variables.nodes * {limit_amount(SPEC, PER_NODE, 'cpu', 1000, cpu)}"},
        {"name": "jobMemory",
         "expression": f"variables.nodes * {limit_amount(SPEC, PER_NODE, 'memory', 1, memory)}"},
        {"name": "jobGpus", "expression": "variables.nodes * variables.nodeGpus"},
    ]


def _runtime_rule() -> dict[str, Any]:
    """`runtime`: the workbench's Paddle runtime or one of its restart copies, no initializer,
    no other manager (a hand-over to another cluster)."""
    runtime = cluster.TRAINING_RUNTIME.kind
    check = (f"object.spec.runtimeRef.name in {lits(cluster.runtime_names())} && "
             "(!has(object.spec.runtimeRef.kind) || "
             f"object.spec.runtimeRef.kind == '{runtime}') && "
             "!has(object.spec.initializer) && (!has(object.spec.managedBy) || "
             f"object.spec.managedBy == {lit(cluster.TRAINER_CONTROLLER)})")
    # The copies' names, with the range of counts in place of one.
    copies = cluster.runtime_name(cluster.RUNTIME, f"<0..{cluster.MAX_RESTARTS_LIMIT}>")
    return rules.validation(
        "runtime", rules.CHECK + f"({check})",
        f"a TrainJob must use the workbench's Paddle runtime ({runtime} {cluster.RUNTIME} or "
        f"{copies}), with no initializer and no other manager")


def _limit_rules(tenant: Tenant, classes: Sequence[str]) -> list[dict[str, Any]]:
    """The tenant's limits on a TrainJob, whoever submits it."""
    priority = label("object.metadata", cluster.PRIORITY_LABEL)
    found = [
        _runtime_rule(),
        rules.images_rule(
            tenant, f"(has({TRAINER}) && has({IMAGE}) && {IMAGE} in {lits(tenant.image_refs)})",
            what="the trainer image", bad=f"(has({TRAINER}) && has({IMAGE}) ? {IMAGE} : '(none)')"),
        rules.nodes_rule(tenant),
        rules.gpus_rule(tenant, lambda most: f"variables.nodeGpus <= {most}",
                        "variables.nodeGpus"),
        rules.resources_rule(tenant, gpu_ceiling(tenant)),
        rules.deadline_rule(tenant, "spec.activeDeadlineSeconds"),
        rules.priority_rule(tenant, classes, f"({priority} == '' || {priority} in {lits(classes)})",
                            what="workload ", scope=f" ({cluster.PRIORITY_LABEL})"),
        rules.token_rule(_every_pod(lambda pod: default_account(pod, "serviceAccountName")),
                         ": a runtime patch may not name another"),
        rules.component_rule(shape(tenant)),
        rules.job_label_rule(shape(tenant)),
    ]
    return found + ([rules.queue_rule(tenant)] if tenant.queue is not None else [])


def trainjob_policy(tenant: Tenant, *, default_cpu: str, default_memory: str,
                    priority_classes: Sequence[str] = ()) -> dict[str, Any]:
    """The policy on TrainJobs in the tenant's namespace (rules: see the module docstring)."""
    return rules.policy(
        tenant, "trainjobs", cluster.TRAINJOB, _variables(tenant, default_cpu, default_memory),
        [*_limit_rules(tenant, priority_classes), rules.only_users_rule(tenant),
         *rules.owner_rules(tenant, shape(tenant))], deletes=True)


def jobset_policy(tenant: Tenant, *, priority_classes: Sequence[str] = ()) -> dict[str, Any]:
    """The policy on JobSets in the tenant's namespace: images, GPUs per node (containers and
    init containers), priority and token, on every pod template of every replicated job."""
    pod = JOBSET_POD
    return rules.policy(
        tenant, "jobsets", cluster.JOBSET,
        [check_spec_variable(),
         {"name": "specs", "expression": "object.spec.replicatedJobs.filter(r, "
                                         f"has({pod}))"}],
        [rules.images_rule(tenant, f"{TEMPLATES}{pod_images(pod, tenant)})"),
         rules.template_gpus_rule(tenant, pod),
         rules.priority_rule(tenant, priority_classes, templates_priority(pod, priority_classes),
                             scope=", and no pod priority"),
         rules.token_rule(templates_run_as_default(pod, "serviceAccountName"))],
        deletes=False)


def trainjob_policies(tenant: Tenant, *, default_cpu: str, default_memory: str,
                      priority_classes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The TrainJob kind's policies: on TrainJobs and on the JobSets made of them."""
    return [trainjob_policy(tenant, default_cpu=default_cpu, default_memory=default_memory,
                            priority_classes=priority_classes),
            jobset_policy(tenant, priority_classes=priority_classes)]
