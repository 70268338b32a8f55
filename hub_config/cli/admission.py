"""ValidatingAdmissionPolicies: the API server, not the user's kernel, enforces a tenant's limits.

The magic checks a job against the tenant's limits before it submits it, but it runs in the
user's kernel, which the user controls. These policies make the API server refuse the same things
whoever asks, with a message that starts with `workbench rule <name>:`, so it says which rule
refused. `admission_policies(tenant, ...)` gives five policies, each with a binding to the
tenant's namespace:

- `workbench-<tenant>-paddlejobs`. Every PaddleJob created, or whose spec is changed, whoever
  asks: `images` (only the tenant's, by digest), `nodes` (at most `max_nodes`, no elastic
  scaling), `gpus` (at most `max_gpus_per_node` per node), `resources` (the whole job, at its
  limits or the namespace's default limits, fits the tenant's quota), `deadline`
  (`activeDeadlineSeconds` set, at most `max_runtime`), `priority` (no priority class but the
  tenant's) and `token` (job pods run as the namespace's `default` account with no API token).
  No other account of the namespace may write PaddleJobs (`owner`: the shared notebook account
  of earlier versions would be held to no owner). Asked by a notebook user's own account
  (`<service_account>-<user>`, `user_account_prefix`):
  `owner` (the user label is theirs on the job and its pod templates; they stop only their own
  jobs), `claim` (only their own, `claim-<user>`), `volumes` (that claim, emptyDir, downwardAPI
  and their own Secrets only) and `secrets` (only their own Secrets, `<user>.*`; no ConfigMaps).
- `workbench-<tenant>-pods`: every pod created or changed (the hub's notebook pods, the
  operator's worker pods): `images` and `priority`. Users create no pods themselves (RBAC).
- `workbench-<tenant>-trainjobs` and `-jobsets`: the same rules for Kubeflow Trainer v2 jobs
  and the JobSets made of them (`trainjob_admission`), and a queued tenant's own queue.
- `workbench-<tenant>-secrets`: a notebook user's account creates only Opaque Secrets named
  `<user>.*` and labelled as theirs, and changes or deletes only its own (`secrets`). The
  kubernetes engine keeps a job's `--env` values in such a Secret.

Why one policy per tenant with the tenant's values written into its CEL, not one shared policy
with a parameter object per tenant: the parameter object would be a ConfigMap (or a CRD to install
first) whose strings CEL must parse, and whoever may write it would be part of the security
boundary; values inside the policy can be changed only by whoever may change cluster-scoped
admission policies, and each policy is one plain object carrying the tenant's label, which
`workbench apply --prune` selects on. The cost, one policy per tenant for the API server to
compile, is small.

Every builder is pure (tenant in, dicts out). CEL string literals are written by `json.dumps`,
whose escapes CEL reads the same way; every value here (names, image references by digest) is
validated by the tenants file anyway.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hub_config.tenants import Tenant
from workbench_contract import labels
from workbench_contract.ownership import CLAIM_PREFIX, SECRET_SEPARATOR
from workbench_contract.resources import GPU_RESOURCE, parse_quantity

API_VERSION = "admissionregistration.k8s.io/v1"
POLICY_KIND = "ValidatingAdmissionPolicy"
BINDING_KIND = "ValidatingAdmissionPolicyBinding"

MESSAGE_PREFIX = "workbench rule"
# Rules about what may be asked for answer 422 Invalid; rules about whose it is, 403 Forbidden.
INVALID, FORBIDDEN = "Invalid", "Forbidden"

_TEMPLATE = "r.template.spec"  # a replica spec's pod spec, inside `variables.specs.all(r, ...)`


def _lit(value: str) -> str:
    return json.dumps(value)


def _lits(values: Sequence[str]) -> str:
    return "[" + ", ".join(_lit(v) for v in values) + "]"


def policy_name(tenant: Tenant, what: str) -> str:
    return f"workbench-{tenant.name}-{what}"


def user_account_prefix(tenant: Tenant) -> str:
    """Every notebook user's service account is this prefix + their user name."""
    return f"{tenant.service_account}-"


def _is_user(tenant: Tenant) -> str:
    prefix = f"system:serviceaccount:{tenant.namespace}:{user_account_prefix(tenant)}"
    return f"request.userInfo.username.startsWith({_lit(prefix)})"


def _user_variables(tenant: Tenant) -> list[dict[str, str]]:
    """`isUser`: a notebook user's own account asks; `owner`: that user ('' for others)."""
    length = len(f"system:serviceaccount:{tenant.namespace}:{user_account_prefix(tenant)}")
    return [
        {"name": "isUser", "expression": _is_user(tenant)},
        {"name": "owner",
         "expression": f"variables.isUser ? request.userInfo.username.substring({length}) : ''"},
        {"name": "secretPrefix", "expression": f"variables.owner + {_lit(SECRET_SEPARATOR)}"},
    ]


def _label(meta: str, key: str) -> str:
    """CEL: label `key` of metadata `meta`, '' when it has none."""
    return f"(has({meta}.labels) && {_lit(key)} in {meta}.labels ? {meta}.labels[{_lit(key)}] : '')"


def _absent_or(expr: str, field: str) -> str:
    """CEL: the start of a check that passes when `expr.field` is absent."""
    return f"!has({expr}.{field}) || "


def _every_container(pod: str, check: Callable[[str], str]) -> str:
    """CEL: `check(c)` holds for every container, init and ephemeral container of pod spec `pod`
    (the three lists have different CEL types, so they are checked one by one)."""
    return " && ".join(
        f"({'' if kind == 'containers' else _absent_or(pod, kind)}{pod}.{kind}.all(c, "
        f"{check('c')}))" for kind in ("containers", "initContainers", "ephemeralContainers"))


def _allowed_image(container: str, images: str) -> str:
    return f"has({container}.image) && {container}.image in {images}"


def _amount(container: str, resource: str, scale: int, fallback: str) -> str:
    """CEL int: the container's limit of `resource` x `scale` (millicores for CPU, bytes for
    memory), or the CEL int `fallback` when it states no limit."""
    res, key = f"{container}.resources", _lit(resource)
    # asApproximateFloat is exact for any realistic amount; + 0.5 rounds 0.1 x 1000 to 100.
    return (f"(has({res}) && has({res}.limits) && {key} in {res}.limits ? "
            f"int(quantity(string({res}.limits[{key}])).asApproximateFloat() * {float(scale)!r} "
            f"+ 0.5) : {fallback})")


def _gpus(container: str) -> str:
    """CEL int: the container's GPUs (limit, else request: either may state them)."""
    res, key = f"{container}.resources", _lit(GPU_RESOURCE)
    request = (f"(has({res}) && has({res}.requests) && {key} in {res}.requests ? "
               f"quantity(string({res}.requests[{key}])).asInteger() : 0)")
    return _amount(container, GPU_RESOURCE, 1, request)


def _per_pod(pod: str, amount: Callable[[str], str]) -> str:
    """CEL int: the sum of `amount(c)` over the regular containers of pod spec `pod`."""
    return f"{pod}.containers.map(c, {amount('c')}).sum()"


def _replicas(spec: str) -> str:
    # The operator makes one pod for a replica spec that states no count.
    return f"(has({spec}.replicas) ? {spec}.replicas : 1)"


def _validation(rule: str, expression: str, message: str, message_expression: str | None = None,
                reason: str = INVALID) -> dict[str, Any]:
    """One CEL rule; its messages start with `workbench rule <rule>: `."""
    lead = f"{MESSAGE_PREFIX} {rule}: "
    item: dict[str, Any] = {"expression": expression, "message": lead + message,
                            "reason": reason}
    if message_expression:
        item["messageExpression"] = f"{_lit(lead)} + ({message_expression})"
    return item


# Limits are checked on CREATE, and on UPDATE only when the spec changes: a tenant whose limits
# are lowered keeps its running jobs, and the operator's updates of them still pass.
_SPEC_WRITE = ("request.operation == 'CREATE' || "
               "(request.operation == 'UPDATE' && object.spec != oldObject.spec)")
_CHECK = "!variables.checkSpec || "


def _image_rule(tenant: Tenant, job: bool) -> dict[str, Any]:
    """`images`: every container of the pod (of every pod template of the job) is allowed."""
    images, pod = _lits(tenant.image_refs), (_TEMPLATE if job else "object.spec")
    allowed = f"tenant {tenant.name}'s images, pinned by digest: {', '.join(tenant.image_refs)}"
    check = _every_container(pod, lambda c: _allowed_image(c, images))
    bad = (f"{pod}.containers.filter(c, !({_allowed_image('c', images)}))"
           ".map(c, has(c.image) ? c.image : '(none)').join(', ')")
    if job:
        check = f"variables.specs.all(r, {check})"
        bad = f"variables.specs.map(r, {bad}).filter(s, s != '').join(', ')"
    return _validation("images", _CHECK + check,
                       f"every container image must be one of {allowed}",
                       f"{bad} + {_lit(' is not one of ' + allowed)}")


def _priority_rule(tenant: Tenant, classes: Sequence[str], job: bool) -> dict[str, Any]:
    allowed, pod = _lits(classes), (_TEMPLATE if job else "object.spec")
    check = f"({_absent_or(pod, 'priorityClassName')}{pod}.priorityClassName in {allowed})"
    if job:
        scheduling = "object.spec.runPolicy.schedulingPolicy"
        check = (f"(!has(object.spec.runPolicy) || !has({scheduling}) || "
                 f"!has({scheduling}.priorityClass) || {scheduling}.priorityClass in {allowed}) "
                 f"&& variables.specs.all(r, {check} && !has({pod}.priority))")
    return _validation(
        "priority", _CHECK + check,
        f"no priority class but tenant {tenant.name}'s ({', '.join(classes) or 'none'}) may be "
        "set" + (", on the job or its pods, and no pod priority" if job else ""))


def _limit_rules(tenant: Tenant, priority_classes: Sequence[str]) -> list[dict[str, Any]]:
    """The tenant's limits on a PaddleJob, whoever submits it."""
    limits, quota, name, pod = tenant.job_limits, tenant.quota, tenant.name, _TEMPLATE
    gpus = _per_pod(pod, _gpus)
    deadline = "object.spec.runPolicy.activeDeadlineSeconds"
    has_deadline = f"has(object.spec.runPolicy) && has({deadline})"
    maximum = f"at most {limits.max_runtime} (tenant {name}'s maximum runtime)"
    fits = (f"tenant {name}'s quota: cpu={quota.cpu}, memory={quota.memory}, "
            f"GPUs={quota.gpus}")
    no_elastic = " and no elastic scaling (spec.elasticPolicy)"
    elastic = (f"the job asks for elastic scaling (spec.elasticPolicy), which tenant {name} "
               "does not allow")
    return [
        _image_rule(tenant, job=True),
        _validation(
            "nodes",
            _CHECK + f"(!has(object.spec.elasticPolicy) && variables.nodes <= {limits.max_nodes})",
            f"a job may have at most {limits.max_nodes} nodes in tenant {name}{no_elastic}",
            f"has(object.spec.elasticPolicy) ? {_lit(elastic)} : 'the job asks for ' + "
            f"string(variables.nodes) + "
            f"{_lit(f' nodes; tenant {name} allows at most {limits.max_nodes} per job')}"),
        _validation(
            "gpus",
            _CHECK + f"variables.specs.all(r, {gpus} <= {limits.max_gpus_per_node})",
            f"a node may have at most {limits.max_gpus_per_node} GPUs in tenant {name}",
            f"'a node of the job asks for ' + string(variables.specs.map(r, {gpus}).max()) + "
            f"{_lit(f' GPUs; tenant {name} allows at most {limits.max_gpus_per_node} per node')}"),
        _validation(
            "resources",
            _CHECK + (f"(variables.jobCpu <= {int(parse_quantity(quota.cpu) * 1000)} && "
                      f"variables.jobMemory <= {int(parse_quantity(quota.memory))} && "
                      f"variables.jobGpus <= {quota.gpus})"),
            f"the whole job (nodes x each node's limits) must fit {fits}",
            "'the whole job needs cpu=' + string(variables.jobCpu) + 'm, memory=' + "
            "string(variables.jobMemory / 1048576) + 'Mi, GPUs=' + string(variables.jobGpus) + "
            f"{_lit(f' (nodes x limits); it must fit {fits}')}"),
        _validation(
            "deadline",
            _CHECK + f"({has_deadline} && {deadline} > 0 && {deadline} <= {limits.max_runtime})",
            f"spec.runPolicy.activeDeadlineSeconds must be set, {maximum}",
            f"{_lit(f'spec.runPolicy.activeDeadlineSeconds must be set, {maximum}; the job has ')}"
            f" + ({has_deadline} ? string({deadline}) : 'none')"),
        _priority_rule(tenant, priority_classes, job=True),
        _validation(
            "token",
            _CHECK + (f"variables.specs.all(r, ({_absent_or(pod, 'serviceAccountName')}"
                      f"{pod}.serviceAccountName == 'default') && "
                      f"({_absent_or(pod, 'serviceAccount')}{pod}.serviceAccount == 'default') "
                      f"&& has({pod}.automountServiceAccountToken) && "
                      f"{pod}.automountServiceAccountToken == false)"),
            "job pods run as the namespace's default service account with "
            "automountServiceAccountToken: false, so they carry no API token"),
    ]


def _env_refs(container: str) -> str:
    """CEL: the container's environment reads only the user's own Secrets and no ConfigMap."""
    own = "startsWith(variables.secretPrefix)"
    key_ref, from_ref, c = "e.valueFrom.secretKeyRef", "f.secretRef", container
    env = (f"({_absent_or(c, 'env')}{c}.env.all(e, {_absent_or('e', 'valueFrom')}"
           f"(({_absent_or('e.valueFrom', 'secretKeyRef')}(has({key_ref}.name) && "
           f"{key_ref}.name.{own})) && !has(e.valueFrom.configMapKeyRef))))")
    env_from = (f"({_absent_or(c, 'envFrom')}{c}.envFrom.all(f, "
                f"({_absent_or('f', 'secretRef')}(has({from_ref}.name) && {from_ref}.name.{own}))"
                " && !has(f.configMapRef)))")
    return f"{env} && {env_from}"


def _only_users_rule(tenant: Tenant) -> dict[str, Any]:
    """`owner`: no account of the namespace but a user's own may write PaddleJobs; any other
    (the shared notebook account of earlier versions, `default`) would be held to no owner."""
    accounts = f"system:serviceaccount:{tenant.namespace}:"
    not_a_user = (f" is not a user's own notebook account ({user_account_prefix(tenant)}<user>);"
                  " only those may submit, change or stop jobs here")
    return _validation(
        "owner", f"!request.userInfo.username.startsWith({_lit(accounts)}) || variables.isUser",
        "only a user's own notebook account may submit, change or stop jobs here",
        f"request.userInfo.username + {_lit(not_a_user)}", FORBIDDEN)


def _owner_rules(tenant: Tenant) -> list[dict[str, Any]]:
    """What a notebook user's own account may do with PaddleJobs: its own only."""
    user, tenant_label, pod, meta = labels.LABEL_USER, labels.LABEL_TENANT, _TEMPLATE, \
        "r.template.metadata"
    writes = "!variables.isUser || request.operation == 'DELETE' || "
    our_tenant = f"in ['', {_lit(tenant.name)}]"
    every_volume = f"variables.specs.all(r, {_absent_or(pod, 'volumes')}{pod}.volumes.all(v, "
    own = "startsWith(variables.secretPrefix)"
    bad_claims = (f"variables.specs.map(r, has({pod}.volumes) ? {pod}.volumes.filter(v, "
                  "has(v.persistentVolumeClaim) && v.persistentVolumeClaim.claimName != "
                  "variables.claim).map(v, v.persistentVolumeClaim.claimName).join(', ') : '')"
                  ".filter(s, s != '').join(', ')")
    owner_of_old = _label("oldObject.metadata", user)
    return [
        _validation(
            "owner",
            f"!variables.isUser || request.operation == 'CREATE' || {owner_of_old} == "
            "variables.owner",
            "you may stop (delete) or change only your own PaddleJobs",
            f"'PaddleJob ' + oldObject.metadata.name + ' belongs to ' + {owner_of_old} + "
            f"{_lit(f' (label {user}); you may stop (delete) or change only your own PaddleJobs')}",
            FORBIDDEN),
        _validation(
            "owner",
            writes + (f"({_label('object.metadata', user)} == variables.owner && "
                      f"{_label('object.metadata', tenant_label)} {our_tenant} && "
                      f"variables.specs.all(r, has({meta}) && {_label(meta, user)} == "
                      f"variables.owner && {_label(meta, tenant_label)} {our_tenant}))"),
            f"the label {user} must be your user name, on the PaddleJob and on every pod "
            f"template (and {tenant_label}, where set, {tenant.name})",
            f"{_lit(f'the label {user} must be ')} + variables.owner + "
            f"{_lit(' (you) on the PaddleJob and on every pod template; the PaddleJob has ')} + "
            f"{_label('object.metadata', user)}",
            FORBIDDEN),
        _validation(
            "claim",
            writes + every_volume + f"{_absent_or('v', 'persistentVolumeClaim')}"
            "v.persistentVolumeClaim.claimName == variables.claim))",
            f"a job may mount only your own claim ({CLAIM_PREFIX}<you>)",
            f"'a job may mount only your own claim ' + variables.claim + '; not ' + {bad_claims}",
            FORBIDDEN),
        _validation(
            "volumes",
            writes + every_volume + "has(v.persistentVolumeClaim) || has(v.emptyDir) || "
            "has(v.downwardAPI) || has(v.secret)))",
            "a job's volumes may be your claim, emptyDir, downwardAPI and your own Secrets only",
            reason=FORBIDDEN),
        _validation(
            "secrets",
            writes + (f"({every_volume}{_absent_or('v', 'secret')}(has(v.secret.secretName) && "
                      f"v.secret.secretName.{own}))) && variables.specs.all(r, "
                      f"({_absent_or(pod, 'imagePullSecrets')}{pod}.imagePullSecrets.all(s, "
                      f"has(s.name) && s.name.{own})) && {_every_container(pod, _env_refs)}))"),
            f"a job may read only your own Secrets (named <you>{SECRET_SEPARATOR}...) and no "
            "ConfigMaps",
            "'a job may read only your own Secrets (named ' + variables.secretPrefix + "
            "'<name>) and no ConfigMaps'",
            FORBIDDEN),
    ]


def paddlejob_policy(tenant: Tenant, *, default_cpu: str, default_memory: str,
                     priority_classes: Sequence[str] = ()) -> dict[str, Any]:
    """The policy on PaddleJobs in the tenant's namespace (rules: see the module docstring).

    `default_cpu`/`default_memory` are the namespace's default container limits (its
    LimitRange), counted for containers that state none; `priority_classes` are the classes the
    tenant may use (none by default).
    """
    pod, specs = _TEMPLATE, "object.spec.paddleReplicaSpecs"
    cpu_default = str(int(parse_quantity(default_cpu) * 1000))
    memory_default = str(int(parse_quantity(default_memory)))

    def total(amount: Callable[[str], str]) -> str:
        return f"variables.specs.map(r, {_replicas('r')} * {_per_pod(pod, amount)}).sum()"

    variables = [
        {"name": "checkSpec", "expression": _SPEC_WRITE},
        *_user_variables(tenant),
        {"name": "claim", "expression": f"{_lit(CLAIM_PREFIX)} + variables.owner"},
        {"name": "replicaSpecs", "expression": f"{specs}.map(k, {specs}[k])"},
        # The replica specs with a pod template (the operator refuses the others).
        {"name": "specs", "expression": "variables.replicaSpecs.filter(r, has(r.template) && "
                                        "has(r.template.spec))"},
        {"name": "nodes", "expression": f"variables.replicaSpecs.map(r, {_replicas('r')}).sum()"},
        {"name": "jobCpu", "expression": total(lambda c: _amount(c, "cpu", 1000, cpu_default))},
        {"name": "jobMemory",
         "expression": total(lambda c: _amount(c, "memory", 1, memory_default))},
        {"name": "jobGpus", "expression": total(_gpus)},
    ]
    return _policy(tenant, "paddlejobs", ("kubeflow.org", "paddlejobs", "DELETE"), variables,
                   [*_limit_rules(tenant, priority_classes), _only_users_rule(tenant),
                    *_owner_rules(tenant)])


def pod_policy(tenant: Tenant, *, priority_classes: Sequence[str] = ()) -> dict[str, Any]:
    """The policy on every pod in the tenant's namespace: the tenant's images and priority
    classes only (the hub's notebook pods and the operator's worker pods alike)."""
    return _policy(tenant, "pods", ("", "pods", None),
                   [{"name": "checkSpec", "expression": _SPEC_WRITE}],
                   [_image_rule(tenant, job=False),
                    _priority_rule(tenant, priority_classes, job=False)])


def secret_policy(tenant: Tenant) -> dict[str, Any]:
    """What a notebook user's own account may do with Secrets (its Role lets it create, patch
    and delete them, never read them): create Opaque Secrets named `<user>.*` labelled as the
    user's, and change or delete only those. Opaque matters: a Secret of type
    `kubernetes.io/service-account-token` would be filled with another account's token."""
    user = labels.LABEL_USER
    validations = [
        _validation(
            "secrets",
            "request.operation != 'CREATE' || object.metadata.name.startsWith("
            "variables.secretPrefix)",
            f"your Secrets must be named <you>{SECRET_SEPARATOR}<name>",
            "'your Secrets must be named ' + variables.secretPrefix + '<name>, not ' + "
            "object.metadata.name", FORBIDDEN),
        _validation(
            "secrets",
            f"request.operation == 'CREATE' || {_label('oldObject.metadata', user)} == "
            "variables.owner",
            "you may change or delete only your own Secrets",
            "'Secret ' + oldObject.metadata.name + ' is not yours; you may change or delete "
            "only your own Secrets'", FORBIDDEN),
        _validation(
            "secrets",
            "request.operation == 'DELETE' || ((!has(object.type) || object.type == 'Opaque') "
            f"&& {_label('object.metadata', user)} == variables.owner)",
            f"your Secrets must be of type Opaque and carry the label {user}=<you>",
            f"{_lit(f'your Secrets must be of type Opaque and carry the label {user}=')} + "
            "variables.owner", FORBIDDEN),
    ]
    # Only a user's own account is held to this; the hub and the garbage collector are not.
    return _policy(tenant, "secrets", ("", "secrets", "DELETE"), _user_variables(tenant),
                   validations, match_conditions=[{"name": "notebook-user",
                                                   "expression": _is_user(tenant)}])


def _policy(tenant: Tenant, what: str, resource: tuple[str, str, str | None],
            variables: list[dict[str, str]], validations: list[dict[str, Any]],
            match_conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """A policy on `resource` (group, plural, and "DELETE" when deletes are checked too) in the
    tenant's namespace. Its metadata is filled in by `admission_policies`."""
    group, plural, delete = resource
    operations = ["CREATE", "UPDATE"] + ([delete] if delete else [])
    spec: dict[str, Any] = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "namespaceSelector": _namespace_selector(tenant),
            "resourceRules": [{"apiGroups": [group], "apiVersions": ["*"],
                               "operations": operations, "resources": [plural]}]},
        **({"matchConditions": match_conditions} if match_conditions else {}),
        "variables": variables,
        "validations": validations,
    }
    return {"apiVersion": API_VERSION, "kind": POLICY_KIND,
            "metadata": {"name": policy_name(tenant, what)}, "spec": spec}


def _namespace_selector(tenant: Tenant) -> dict[str, Any]:
    # The API server sets this label on every namespace, so no other namespace can claim it.
    return {"matchLabels": {"kubernetes.io/metadata.name": tenant.namespace}}


def binding(policy: dict[str, Any], tenant: Tenant) -> dict[str, Any]:
    """The binding that puts `policy` in force in the tenant's namespace: requests it refuses
    are denied (not only audited or warned about)."""
    return {
        "apiVersion": API_VERSION, "kind": BINDING_KIND,
        "metadata": json.loads(json.dumps(policy["metadata"])),
        "spec": {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": _namespace_selector(tenant)}},
    }


def admission_policies(tenant: Tenant, *, object_labels: Mapping[str, str], default_cpu: str,
                       default_memory: str, priority_classes: Sequence[str] = ()
                       ) -> list[dict[str, Any]]:
    """The tenant's policies, each followed by its binding, all labelled `object_labels`.

    `default_cpu`/`default_memory`: the namespace's default container limits (see
    `paddlejob_policy`); `priority_classes`: the priority classes the tenant may use.
    """
    # Imported here: the TrainJob rules are built from this module's helpers.
    from hub_config.cli.trainjob_admission import jobset_policy, trainjob_policy

    policies = [
        paddlejob_policy(tenant, default_cpu=default_cpu, default_memory=default_memory,
                         priority_classes=priority_classes),
        trainjob_policy(tenant, default_cpu=default_cpu, default_memory=default_memory,
                        priority_classes=priority_classes),
        jobset_policy(tenant, priority_classes=priority_classes),
        pod_policy(tenant, priority_classes=priority_classes),
        secret_policy(tenant),
    ]
    objects: list[dict[str, Any]] = []
    for policy in policies:
        policy["metadata"]["labels"] = dict(object_labels)
        objects += [policy, binding(policy, tenant)]
    return objects
