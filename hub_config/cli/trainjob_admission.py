"""ValidatingAdmissionPolicies on TrainJobs and JobSets: the tenant's rules for Trainer v2 jobs.

`admission.admission_policies` adds these beside its PaddleJob, pod and Secret policies:

- `workbench-<tenant>-trainjobs`, on every TrainJob created, changed or deleted in the tenant's
  namespace. Whoever asks: `runtime` (only the workbench's Paddle ClusterTrainingRuntime, no
  initializer, no hand-over to another cluster), `images`, `nodes`, `gpus`, `resources` (the
  whole job fits the quota; a queued tenant's GPUs may reach what it can borrow), `deadline`,
  `priority` (no Kueue workload priority class but the tenant's), `queue` (a queued tenant's
  jobs go through its own LocalQueue: the queue label must name it, so a user can neither skip
  the queue nor name another one) and `token` (no service account in the pod patches).
  No other account of the namespace may write TrainJobs (`owner`). Asked by a notebook user's own
  account: `owner` (the user label is theirs on the TrainJob, and no template of its runtime
  patches names another user; they stop only their own), `claim`, `volumes` and `secrets` (the patches
  mount only their claim, emptyDir, downwardAPI and their own Secrets; the environment reads
  only their own Secrets).
- `workbench-<tenant>-jobsets`, on every JobSet (the Trainer makes one of each TrainJob; users
  may not, by RBAC): `images`, `priority` and `token` (pods run as the namespace's `default`
  account with no API token), as for PaddleJobs.

The CEL is built from the same helpers as the PaddleJob policy (`admission`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hub_config.cli import admission as a
from hub_config.cli.kueue import LOCAL_QUEUE, gpu_ceiling
from hub_config.tenants import Tenant
from workbench_contract import labels
from workbench_contract.ownership import CLAIM_PREFIX, SECRET_SEPARATOR
from workbench_contract.resources import GPU_RESOURCE, parse_quantity

RUNTIME = "paddle-workbench"  # deploy/k8s/trainer/paddle-runtime.yaml
# Its copies, one per --max-restarts value 0..10 (deploy/k8s/trainer/runtimes.py; the trainjob
# engine's runtime_name and MAX_RESTARTS_LIMIT, held equal by a test).
RUNTIMES = (RUNTIME, *(f"{RUNTIME}-restarts-{n}" for n in range(11)))
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
TRAINER_CONTROLLER = "trainer.kubeflow.org/trainjob-controller"

_TRAINER = "object.spec.trainer"
_RESOURCES = f"{_TRAINER}.resourcesPerNode"
# Pod templates of the runtime patches, as a list (one per patch) of lists (one per replicated
# job) of pod templates; checks run `variables.pods.all(l, l.all(t, ...))`.
_PODS = ("has(object.spec.runtimePatches) ? object.spec.runtimePatches.filter(p, "
         "has(p.trainingRuntimeSpec) && has(p.trainingRuntimeSpec.template) && "
         "has(p.trainingRuntimeSpec.template.spec) && "
         "has(p.trainingRuntimeSpec.template.spec.replicatedJobs)).map(p, "
         "p.trainingRuntimeSpec.template.spec.replicatedJobs.filter(j, has(j.template) && "
         "has(j.template.spec) && has(j.template.spec.template)).map(j, j.template.spec.template)"
         ") : []")
# The same for the JobSet templates' metadata (one per patch).
_JOBSET_META = ("has(object.spec.runtimePatches) ? object.spec.runtimePatches.filter(p, "
                "has(p.trainingRuntimeSpec) && has(p.trainingRuntimeSpec.template)).map(p, "
                "p.trainingRuntimeSpec.template) : []")


def _each_pod(check: str) -> str:
    """CEL: `check` (on pod template `t`) holds for every pod template of every patch."""
    return f"variables.pods.all(l, l.all(t, {check}))"


def _pod_spec_check(check: str) -> str:
    return _each_pod(f"!has(t.spec) || ({check})")


def _per_node(resource: str, scale: int, fallback: str) -> str:
    key = a._lit(resource)
    return (f"(has({_TRAINER}) && has({_RESOURCES}) && has({_RESOURCES}.limits) && "
            f"{key} in {_RESOURCES}.limits ? int(quantity(string({_RESOURCES}.limits[{key}]))"
            f".asApproximateFloat() * {float(scale)!r} + 0.5) : {fallback})")


def _gpus_per_node() -> str:
    key = a._lit(GPU_RESOURCE)
    request = (f"(has({_TRAINER}) && has({_RESOURCES}) && has({_RESOURCES}.requests) && "
               f"{key} in {_RESOURCES}.requests ? "
               f"quantity(string({_RESOURCES}.requests[{key}])).asInteger() : 0)")
    return _per_node(GPU_RESOURCE, 1, request)


def _variables(tenant: Tenant, default_cpu: str, default_memory: str) -> list[dict[str, str]]:
    cpu_default = str(int(parse_quantity(default_cpu) * 1000))
    memory_default = str(int(parse_quantity(default_memory)))
    nodes = f"(has({_TRAINER}) && has({_TRAINER}.numNodes) ? {_TRAINER}.numNodes : 1)"
    return [
        {"name": "checkSpec", "expression": a._SPEC_WRITE},
        *a._user_variables(tenant),
        {"name": "claim", "expression": f"{a._lit(CLAIM_PREFIX)} + variables.owner"},
        {"name": "pods", "expression": _PODS},
        {"name": "jobsetMeta", "expression": _JOBSET_META},
        {"name": "nodes", "expression": nodes},
        {"name": "nodeGpus", "expression": _gpus_per_node()},
        {"name": "jobCpu", "expression": f"variables.nodes * {_per_node('cpu', 1000, cpu_default)}"},
        {"name": "jobMemory",
         "expression": f"variables.nodes * {_per_node('memory', 1, memory_default)}"},
        {"name": "jobGpus", "expression": "variables.nodes * variables.nodeGpus"},
    ]


def _limit_rules(tenant: Tenant, priority_classes: Sequence[str]) -> list[dict[str, Any]]:
    limits, quota, name = tenant.job_limits, tenant.quota, tenant.name
    check, v = a._CHECK, a._validation
    images = a._lits(tenant.image_refs)
    image = f"{_TRAINER}.image"
    allowed = f"tenant {name}'s images, pinned by digest: {', '.join(tenant.image_refs)}"
    ceiling = gpu_ceiling(tenant)
    gpu_fit = f" && variables.jobGpus <= {ceiling}"
    fits = f"tenant {name}'s quota: cpu={quota.cpu}, memory={quota.memory}, GPUs={ceiling}"
    deadline = "object.spec.activeDeadlineSeconds"
    maximum = f"at most {limits.max_runtime} (tenant {name}'s maximum runtime)"
    runtime = (f"object.spec.runtimeRef.name in {a._lits(RUNTIMES)} && "
               "(!has(object.spec.runtimeRef.kind) || "
               "object.spec.runtimeRef.kind == 'ClusterTrainingRuntime') && "
               "!has(object.spec.initializer) && (!has(object.spec.managedBy) || "
               f"object.spec.managedBy == {a._lit(TRAINER_CONTROLLER)})")
    priority = a._label("object.metadata", PRIORITY_LABEL)
    rules = [
        v("runtime", check + f"({runtime})",
          f"a TrainJob must use the workbench's Paddle runtime (ClusterTrainingRuntime "
          f"{RUNTIME} or {RUNTIME}-restarts-<0..10>), with no initializer and no other "
          "manager"),
        v("images", check + f"(has({_TRAINER}) && has({image}) && {image} in {images})",
          f"the trainer image must be one of {allowed}",
          f"(has({_TRAINER}) && has({image}) ? {image} : '(none)') + "
          f"{a._lit(' is not one of ' + allowed)}"),
        v("nodes", check + f"variables.nodes <= {limits.max_nodes}",
          f"a job may have at most {limits.max_nodes} nodes in tenant {name}",
          f"'the job asks for ' + string(variables.nodes) + "
          f"{a._lit(f' nodes; tenant {name} allows at most {limits.max_nodes} per job')}"),
        v("gpus", check + f"variables.nodeGpus <= {limits.max_gpus_per_node}",
          f"a node may have at most {limits.max_gpus_per_node} GPUs in tenant {name}",
          f"'a node of the job asks for ' + string(variables.nodeGpus) + "
          f"{a._lit(f' GPUs; tenant {name} allows at most {limits.max_gpus_per_node} per node')}"),
        v("resources",
          check + (f"(variables.jobCpu <= {int(parse_quantity(quota.cpu) * 1000)} && "
                   f"variables.jobMemory <= {int(parse_quantity(quota.memory))}{gpu_fit})"),
          f"the whole job (nodes x each node's limits) must fit {fits}",
          "'the whole job needs cpu=' + string(variables.jobCpu) + 'm, memory=' + "
          "string(variables.jobMemory / 1048576) + 'Mi, GPUs=' + string(variables.jobGpus) + "
          f"{a._lit(f' (nodes x limits); it must fit {fits}')}"),
        v("deadline", check + f"(has({deadline}) && {deadline} > 0 && "
                              f"{deadline} <= {limits.max_runtime})",
          f"spec.activeDeadlineSeconds must be set, {maximum}",
          f"{a._lit(f'spec.activeDeadlineSeconds must be set, {maximum}; the job has ')} + "
          f"(has({deadline}) ? string({deadline}) : 'none')"),
        v("priority", check + f"({priority} == '' || {priority} in "
                              f"{a._lits(priority_classes)})",
          f"no workload priority class but tenant {name}'s "
          f"({', '.join(priority_classes) or 'none'}) may be set ({PRIORITY_LABEL})"),
        v("token", check + _pod_spec_check(
            "!has(t.spec.serviceAccountName) || t.spec.serviceAccountName == 'default'"),
          "job pods run as the namespace's default service account: a runtime patch may not "
          "name another"),
    ]
    if tenant.queue is not None:
        queue = a._label("object.metadata", QUEUE_LABEL)
        rules.append(v(
            "queue", f"request.operation == 'DELETE' || {queue} == {a._lit(LOCAL_QUEUE)}",
            f"tenant {name}'s jobs wait in its own queue: the label {QUEUE_LABEL} must be "
            f"{LOCAL_QUEUE}",
            f"{a._lit(f'the label {QUEUE_LABEL} must be {LOCAL_QUEUE} (tenant {name} queue); the job has ')}"
            f" + ({queue} == '' ? 'none' : {queue})", a.FORBIDDEN))
    return rules


def _owner_rules(tenant: Tenant) -> list[dict[str, Any]]:
    user, tenant_label = labels.LABEL_USER, labels.LABEL_TENANT
    writes = "!variables.isUser || request.operation == 'DELETE' || "
    our_tenant = f"in ['', {a._lit(tenant.name)}]"
    owner_of_old = a._label("oldObject.metadata", user)
    own = "startsWith(variables.secretPrefix)"
    # Other managers' patches (Kueue adds one at admission) may leave the labels out, but no
    # template may name another user or tenant.
    template_owned = (f"!has(t.metadata) || ({a._label('t.metadata', user)} in ['', "
                      f"variables.owner] && {a._label('t.metadata', tenant_label)} {our_tenant})")
    jobset_owned = (f"variables.jobsetMeta.all(m, !has(m.metadata) || "
                    f"{a._label('m.metadata', user)} in ['', variables.owner])")
    volumes = "!has(t.spec.volumes) || t.spec.volumes.all(v, "
    env = (f"(!has({_TRAINER}) || !has({_TRAINER}.env) || {_TRAINER}.env.all(e, "
           "!has(e.valueFrom) || ((!has(e.valueFrom.secretKeyRef) || "
           f"(has(e.valueFrom.secretKeyRef.name) && e.valueFrom.secretKeyRef.name.{own})) && "
           "!has(e.valueFrom.configMapKeyRef))))")
    v = a._validation
    return [
        v("owner", f"!variables.isUser || request.operation == 'CREATE' || {owner_of_old} == "
                   "variables.owner",
          "you may stop (delete) or change only your own TrainJobs",
          f"'TrainJob ' + oldObject.metadata.name + ' belongs to ' + {owner_of_old} + "
          f"{a._lit(f' (label {user}); you may stop (delete) or change only your own TrainJobs')}",
          a.FORBIDDEN),
        v("owner", writes + (f"({a._label('object.metadata', user)} == variables.owner && "
                             f"{a._label('object.metadata', tenant_label)} {our_tenant} && "
                             f"{jobset_owned} && {_each_pod(template_owned)})"),
          f"the label {user} must be your user name on the TrainJob, and no template of its "
          f"runtime patches may name another user (or a {tenant_label} but {tenant.name})",
          f"{a._lit(f'the label {user} must be ')} + variables.owner + "
          f"{a._lit(' (you) on the TrainJob and on its runtime patches where set; the TrainJob has ')} + "
          f"{a._label('object.metadata', user)}", a.FORBIDDEN),
        v("claim", writes + _pod_spec_check(
            volumes + "!has(v.persistentVolumeClaim) || "
                      "v.persistentVolumeClaim.claimName == variables.claim)"),
          f"a job may mount only your own claim ({CLAIM_PREFIX}<you>)",
          "'a job may mount only your own claim ' + variables.claim", a.FORBIDDEN),
        v("volumes", writes + _pod_spec_check(
            volumes + "has(v.persistentVolumeClaim) || has(v.emptyDir) || has(v.downwardAPI) "
                      "|| has(v.secret))"),
          "a job's volumes may be your claim, emptyDir, downwardAPI and your own Secrets only",
          reason=a.FORBIDDEN),
        v("secrets", writes + "(" + _pod_spec_check(
            f"({volumes}!has(v.secret) || (has(v.secret.secretName) && "
            f"v.secret.secretName.{own}))) && (!has(t.spec.imagePullSecrets) || "
            f"t.spec.imagePullSecrets.all(s, has(s.name) && s.name.{own}))") + f" && {env})",
          f"a job may read only your own Secrets (named <you>{SECRET_SEPARATOR}...) and no "
          "ConfigMaps",
          "'a job may read only your own Secrets (named ' + variables.secretPrefix + "
          "'<name>) and no ConfigMaps'", a.FORBIDDEN),
    ]


def trainjob_policy(tenant: Tenant, *, default_cpu: str, default_memory: str,
                    priority_classes: Sequence[str] = ()) -> dict[str, Any]:
    """The policy on TrainJobs in the tenant's namespace (rules: see the module docstring)."""
    return a._policy(tenant, "trainjobs", ("trainer.kubeflow.org", "trainjobs", "DELETE"),
                     _variables(tenant, default_cpu, default_memory),
                     [*_limit_rules(tenant, priority_classes), a._only_users_rule(tenant),
                      *_owner_rules(tenant)])


def jobset_policy(tenant: Tenant, *, priority_classes: Sequence[str] = ()) -> dict[str, Any]:
    """The policy on JobSets in the tenant's namespace: images, priority and token, on every
    pod template of every replicated job."""
    pod = "r.template.spec.template.spec"
    images = a._lits(tenant.image_refs)
    allowed = f"tenant {tenant.name}'s images, pinned by digest: {', '.join(tenant.image_refs)}"
    each = "variables.specs.all(r, "
    classes = a._lits(priority_classes)
    v = a._validation
    return a._policy(
        tenant, "jobsets", ("jobset.x-k8s.io", "jobsets", None),
        [{"name": "checkSpec", "expression": a._SPEC_WRITE},
         {"name": "specs", "expression": "object.spec.replicatedJobs.filter(r, "
                                         "has(r.template.spec.template.spec))"}],
        [v("images", a._CHECK + each + a._every_container(
            pod, lambda c: a._allowed_image(c, images)) + ")",
           f"every container image must be one of {allowed}"),
         v("priority", a._CHECK + each + f"({a._absent_or(pod, 'priorityClassName')}"
                                          f"{pod}.priorityClassName in {classes}) && "
                                          f"!has({pod}.priority))",
           f"no priority class but tenant {tenant.name}'s "
           f"({', '.join(priority_classes) or 'none'}) may be set, and no pod priority"),
         v("token", a._CHECK + each + f"({a._absent_or(pod, 'serviceAccountName')}"
                                       f"{pod}.serviceAccountName == 'default') && "
                                       f"has({pod}.automountServiceAccountToken) && "
                                       f"{pod}.automountServiceAccountToken == false)",
           "job pods run as the namespace's default service account with "
           "automountServiceAccountToken: false, so they carry no API token")])
