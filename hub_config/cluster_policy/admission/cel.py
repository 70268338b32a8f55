"""CEL for the tenant's admission policies: the pieces every rule is built from.

Literals (`lit`, `lits`, written by `json.dumps`, whose escapes CEL reads the same way; every
value here is validated by the tenants file anyway), label access, `has` chains, every container
of a pod, a pod's images, priority and account, amounts of a resource (a container's, a
pod's), where a job reads Secrets, and the variables each policy starts with (who asks, whose
it is, the user's claim). The rules made of them are in `rules`. Pure: strings in, strings out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from hub_config.cluster_policy.identities import account_username_prefix
from hub_config.tenants import Tenant
from workbench_contract.ownership import CLAIM_PREFIX, SECRET_SEPARATOR
from workbench_contract.resources import GPU_RESOURCE, parse_quantity

# Limits are checked on CREATE, and on UPDATE only when the spec changes: a tenant whose limits
# are lowered keeps its running jobs, and the operator's updates of them still pass.
SPEC_WRITE = ("request.operation == 'CREATE' || "
              "(request.operation == 'UPDATE' && object.spec != oldObject.spec)")
CHECK = "!variables.checkSpec || "
# The start of a rule on what a user's own account writes (deletes are the owner rule's).
WRITES = "!variables.isUser || request.operation == 'DELETE' || "
OWN = "startsWith(variables.secretPrefix)"  # CEL: a Secret's name is the user's
TEMPLATES = "variables.specs.all(r, "  # CEL: the start of a check on every replica spec `r`


# -- CEL pieces ---------------------------------------------------------------------------------

def lit(value: str) -> str:
    """A CEL string literal."""
    return json.dumps(value)


def lits(values: Sequence[str]) -> str:
    """A CEL list of string literals."""
    return "[" + ", ".join(lit(v) for v in values) + "]"


def label(meta: str, key: str) -> str:
    """CEL: label `key` of metadata `meta`, '' when it has none."""
    return f"(has({meta}.labels) && {lit(key)} in {meta}.labels ? {meta}.labels[{lit(key)}] : '')"


def absent_or(expr: str, field: str) -> str:
    """CEL: the start of a check that passes when `expr.field` is absent."""
    return f"!has({expr}.{field}) || "


def has_chain(root: str, path: str) -> str:
    """CEL: every field of dotted `path` under `root` is set (`has(a.b) && has(a.b.c)`)."""
    parts = path.split(".")
    return " && ".join(f"has({root}.{'.'.join(parts[:i + 1])})" for i in range(len(parts)))


def of_tenant(tenant: Tenant) -> str:
    """CEL: the end of a check that a tenant label is unset or the tenant's."""
    return f"in ['', {lit(tenant.name)}]"


def every_container(pod: str, check: Callable[[str], str]) -> str:
    """CEL: `check(c)` holds for every container, init and ephemeral container of pod spec `pod`
    (the three lists have different CEL types, so they are checked one by one)."""
    return " && ".join(
        f"({'' if kind == 'containers' else absent_or(pod, kind)}{pod}.{kind}.all(c, "
        f"{check('c')}))" for kind in ("containers", "initContainers", "ephemeralContainers"))


def allowed_image(container: str, images: str) -> str:
    return f"has({container}.image) && {container}.image in {images}"


def pod_images(pod: str, tenant: Tenant) -> str:
    """CEL: every container of pod spec `pod` runs one of the tenant's images."""
    return every_container(pod, lambda c: allowed_image(c, lits(tenant.image_refs)))


def bad_images(pod: str, tenant: Tenant) -> str:
    """CEL string: the images of pod spec `pod`'s containers that are not the tenant's."""
    return (f"{pod}.containers.filter(c, !({allowed_image('c', lits(tenant.image_refs))}))"
            ".map(c, has(c.image) ? c.image : '(none)').join(', ')")


def pod_priority(pod: str, classes: Sequence[str]) -> str:
    """CEL: pod spec `pod` names no priority class but `classes`."""
    return f"({absent_or(pod, 'priorityClassName')}{pod}.priorityClassName in {lits(classes)})"


def templates_priority(pod: str, classes: Sequence[str]) -> str:
    """CEL: every replica spec's pod spec `pod` names no priority class but `classes`, and no
    priority of its own."""
    return f"{TEMPLATES}{pod_priority(pod, classes)} && !has({pod}.priority))"


def default_account(pod: str, field: str) -> str:
    """CEL: the account field `field` of pod spec `pod` is unset or the namespace's `default`."""
    return f"{absent_or(pod, field)}{pod}.{field} == 'default'"


def templates_run_as_default(pod: str, *fields: str) -> str:
    """CEL: every replica spec's pod spec `pod` runs as `default` (each of the account `fields`)
    and mounts no API token."""
    accounts = " && ".join(f"({default_account(pod, field)})" for field in fields)
    return (f"{TEMPLATES}{accounts} && has({pod}.automountServiceAccountToken) && "
            f"{pod}.automountServiceAccountToken == false)")


def limit_amount(root: str, path: str, resource: str, scale: int, fallback: str) -> str:
    """CEL int: the limit of `resource` x `scale` (millicores for CPU, bytes for memory) of the
    resources at `root.path` (a container's `resources`, a TrainJob's `resourcesPerNode`), or
    the CEL int `fallback` when they state no limit."""
    res, key = f"{root}.{path}", lit(resource)
    # asApproximateFloat is exact for any realistic amount; + 0.5 rounds 0.1 x 1000 to 100.
    return (f"({has_chain(root, path)} && has({res}.limits) && {key} in {res}.limits ? "
            f"int(quantity(string({res}.limits[{key}])).asApproximateFloat() * {float(scale)!r} "
            f"+ 0.5) : {fallback})")


def gpu_amount(root: str, path: str) -> str:
    """CEL int: the GPUs of the resources at `root.path` (limit, else request: either may state
    them)."""
    res, key = f"{root}.{path}", lit(GPU_RESOURCE)
    request = (f"({has_chain(root, path)} && has({res}.requests) && {key} in {res}.requests ? "
               f"quantity(string({res}.requests[{key}])).asInteger() : 0)")
    return limit_amount(root, path, GPU_RESOURCE, 1, request)


def container_gpus(container: str) -> str:
    """CEL int: the GPUs of `container` (a container of a pod spec)."""
    return gpu_amount(container, "resources")


def pod_total(pod: str, amount: Callable[[str], str]) -> str:
    """CEL int: `amount(c)` summed over the containers and init containers of pod spec `pod`
    (list by list: their CEL types differ).

    Init containers run before the others, so the pod needs at most the larger of the two; the
    sum is an upper bound that needs no care for sidecars (restartable init containers, which
    run alongside). Ephemeral containers are left out: they may state no resources, and no pod
    is created with them."""
    init = f"{pod}.initContainers"
    return (f"({pod}.containers.map(c, {amount('c')}).sum() + "
            f"(has({init}) ? {init}.map(c, {amount('c')}).sum() : 0))")


def millicores(quantity: str) -> int:
    return int(parse_quantity(quantity) * 1000)


def byte_count(quantity: str) -> int:
    return int(parse_quantity(quantity))


def env_reads_own(holder: str, unless: str = "") -> str:
    """CEL: the `env` of `holder` (a container) reads only the user's own Secrets and no
    ConfigMap; `unless` is a CEL start (`!has(x) || `) that passes when `holder` is absent."""
    key_ref = "e.valueFrom.secretKeyRef"
    return (f"({unless}{absent_or(holder, 'env')}{holder}.env.all(e, "
            f"{absent_or('e', 'valueFrom')}(({absent_or('e.valueFrom', 'secretKeyRef')}"
            f"(has({key_ref}.name) && {key_ref}.name.{OWN})) && "
            "!has(e.valueFrom.configMapKeyRef))))")


def container_reads_own(container: str) -> str:
    """CEL: the container's environment (`env` and `envFrom`) reads only the user's own Secrets
    and no ConfigMap."""
    from_ref, c = "f.secretRef", container
    env_from = (f"({absent_or(c, 'envFrom')}{c}.envFrom.all(f, "
                f"({absent_or('f', 'secretRef')}(has({from_ref}.name) && {from_ref}.name.{OWN}))"
                " && !has(f.configMapRef)))")
    return f"{env_reads_own(c)} && {env_from}"


OWN_SECRET_VOLUME = (f"{absent_or('v', 'secret')}(has(v.secret.secretName) && "
                     f"v.secret.secretName.{OWN})")


def own_pull_secrets(pod: str) -> str:
    """CEL: pod spec `pod` pulls images only with the user's own Secrets."""
    return (f"({absent_or(pod, 'imagePullSecrets')}{pod}.imagePullSecrets.all(s, "
            f"has(s.name) && s.name.{OWN}))")


def volumes_all(pod: str, check: str) -> str:
    """CEL: `check` holds for every volume `v` of pod spec `pod`."""
    return f"{absent_or(pod, 'volumes')}{pod}.volumes.all(v, {check})"


# -- variables ----------------------------------------------------------------------------------

def service_account_username(namespace: str, name: str) -> str:
    """How the API server names (`request.userInfo.username`) service account `name` of
    `namespace`."""
    return f"system:serviceaccount:{namespace}:{name}"


def is_user(tenant: Tenant) -> str:
    """CEL: a notebook user's own account asks."""
    return f"request.userInfo.username.startsWith({lit(account_username_prefix(tenant))})"


def user_variables(tenant: Tenant) -> list[dict[str, str]]:
    """`isUser`: a notebook user's own account asks; `owner`: that user ('' for others);
    `secretPrefix`: how the user's Secrets' names start."""
    length = len(account_username_prefix(tenant))
    return [
        {"name": "isUser", "expression": is_user(tenant)},
        {"name": "owner",
         "expression": f"variables.isUser ? request.userInfo.username.substring({length}) : ''"},
        {"name": "secretPrefix", "expression": f"variables.owner + {lit(SECRET_SEPARATOR)}"},
    ]


def check_spec_variable() -> dict[str, str]:
    """`checkSpec`: the request writes a spec (the limit rules check nothing else)."""
    return {"name": "checkSpec", "expression": SPEC_WRITE}


def job_variables(tenant: Tenant) -> list[dict[str, str]]:
    """What every job policy starts with: `checkSpec`, the user's variables and `claim`, the
    user's own storage claim."""
    return [check_spec_variable(), *user_variables(tenant),
            {"name": "claim", "expression": f"{lit(CLAIM_PREFIX)} + variables.owner"}]
