"""The rules of the tenant's admission policies, each written once for every kind of object.

Each rule is one CEL validation whose messages start with `workbench rule <name>: `, so a
refusal says which rule refused. A rule's message is written here once; what differs between
kinds of job is the CEL that reaches into the object (where its pod templates, node count or
deadline are), which each kind's module passes in (`JobShape` and the arguments below), built
from the pieces of `cel`.

- rules on what may be asked for, whoever asks: `images_rule`, `nodes_rule`, `gpus_rule`
  (`template_gpus_rule`), `resources_rule`, `deadline_rule`, `cleanup_rules`, `priority_rule`,
  `token_rule`, `component_rule`, `job_label_rule`, `queue_rule` and `unqueued_rule`;
- rules on who may make what: `notebook_rule` (pods labelled as notebooks: the hub only);
- rules on whose it is, for a notebook user's own account: `only_users_rule`, `owner_rules`;
- the objects: `policy` (a ValidatingAdmissionPolicy on one API in the tenant's namespace) and
  `binding` (which puts it in force there).

Pure: tenant in, dicts out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hub_config.cluster_policy.admission.cel import (
    CHECK,
    TEMPLATES,
    WRITES,
    absent_or,
    bad_images,
    byte_count,
    container_gpus,
    has_chain,
    label,
    lit,
    lits,
    millicores,
    of_tenant,
    pod_images,
    pod_total,
    service_account_username,
    volumes_all,
)
from hub_config.cluster_policy.identities import user_account_prefix
from hub_config.cluster_policy.kueue import cluster_queue_name
from hub_config.cluster_policy.metadata import in_namespace
from hub_config.tenants import Tenant
from workbench_contract import labels
from workbench_contract.cluster import LOCAL_QUEUE, QUEUE_LABEL, Api
from workbench_contract.ownership import CLAIM_PREFIX, SECRET_SEPARATOR

API_VERSION = "admissionregistration.k8s.io/v1"
POLICY_KIND = "ValidatingAdmissionPolicy"
BINDING_KIND = "ValidatingAdmissionPolicyBinding"

MESSAGE_PREFIX = "workbench rule"
# Rules about what may be asked for answer 422 Invalid; rules about whose it is, 403 Forbidden.
INVALID, FORBIDDEN = "Invalid", "Forbidden"
NO_TOKEN = " with automountServiceAccountToken: false, so they carry no API token"


@dataclass(frozen=True)
class JobShape:
    """Where one kind of job keeps what the rules check, as CEL (for `component_rule` and the
    rules on a user's own jobs, `owner_rules`)."""

    kind: str  # as messages name it: "PaddleJob"
    # CEL: check(pod spec) holds for every pod template of the job.
    every_pod: Callable[[Callable[[str], str]], str]
    # CEL: check(metadata) holds for every pod template's metadata, where a template has any.
    every_template: Callable[[Callable[[str], str]], str]
    templates_owned: str  # CEL: the job's templates name no other user (or tenant)
    labelled: str  # message: where the user label must be, after "must be your user name"
    labelled_short: str  # messageExpression: the same, after "must be <user> (you) "
    reads_own_secrets: str  # CEL: the job reads only the user's own Secrets, no ConfigMap
    bad_claims: str | None = None  # CEL string: the claims it mounts that are not the user's


# -- rules on what may be asked for (whoever asks) ---------------------------------------------

def validation(rule: str, expression: str, message: str, message_expression: str | None = None,
               reason: str = INVALID) -> dict[str, Any]:
    """One CEL rule; its messages start with `workbench rule <rule>: `."""
    lead = f"{MESSAGE_PREFIX} {rule}: "
    item: dict[str, Any] = {"expression": expression, "message": lead + message,
                            "reason": reason}
    if message_expression:
        item["messageExpression"] = f"{lit(lead)} + ({message_expression})"
    return item


def images_rule(tenant: Tenant, check: str, *, what: str = "every container image",
                bad: str | None = None) -> dict[str, Any]:
    """`images`: `check` (CEL) says `what` is one of the tenant's images; `bad` (CEL string),
    where given, names the images that are not."""
    allowed = f"tenant {tenant.name}'s images, pinned by digest: {', '.join(tenant.image_refs)}"
    return validation("images", CHECK + check, f"{what} must be one of {allowed}",
                      f"{bad} + {lit(' is not one of ' + allowed)}" if bad else None)


def container_images_rule(tenant: Tenant, pod: str, *, templates: bool) -> dict[str, Any]:
    """`images` on every container of pod spec `pod`, of every replica spec when `templates`."""
    check, bad = pod_images(pod, tenant), bad_images(pod, tenant)
    if templates:
        check = f"{TEMPLATES}{check})"
        bad = f"variables.specs.map(r, {bad}).filter(s, s != '').join(', ')"
    return images_rule(tenant, check, bad=bad)


def nodes_rule(tenant: Tenant, elastic: str | None = None) -> dict[str, Any]:
    """`nodes`: at most the tenant's `max_nodes` (`variables.nodes`); where the kind can scale
    elastically, the field that asks for it (`spec.elasticPolicy`) must be unset."""
    most, name = tenant.job_limits.max_nodes, tenant.name
    check = f"variables.nodes <= {most}"
    message = f"a job may have at most {most} nodes in tenant {name}"
    explain = (f"'the job asks for ' + string(variables.nodes) + "
               f"{lit(f' nodes; tenant {name} allows at most {most} per job')}")
    if elastic:
        check = f"(!has(object.{elastic}) && {check})"
        message += f" and no elastic scaling ({elastic})"
        refusal = f"the job asks for elastic scaling ({elastic}), which tenant {name} does not allow"
        explain = f"has(object.{elastic}) ? {lit(refusal)} : {explain}"
    return validation("nodes", CHECK + check, message, explain)


def gpus_rule(tenant: Tenant, each_node_within: Callable[[int], str], largest: str
              ) -> dict[str, Any]:
    """`gpus`: `each_node_within(n)` (CEL) says no node asks for more than n GPUs; `largest`
    (CEL int) is the most a node asks for."""
    most, name = tenant.job_limits.max_gpus_per_node, tenant.name
    return validation(
        "gpus", CHECK + each_node_within(most),
        f"a node may have at most {most} GPUs in tenant {name}",
        f"'a node of the job asks for ' + string({largest}) + "
        f"{lit(f' GPUs; tenant {name} allows at most {most} per node')}")


def template_gpus_rule(tenant: Tenant, pod: str) -> dict[str, Any]:
    """`gpus` on every replica spec's pod spec `pod` (`variables.specs`, each `r`): its
    containers and init containers together (`cel.pod_total`)."""
    gpus = pod_total(pod, container_gpus)
    return gpus_rule(tenant, lambda most: f"{TEMPLATES}{gpus} <= {most})",
                     f"variables.specs.map(r, {gpus}).max()")


def resources_rule(tenant: Tenant, gpus: int) -> dict[str, Any]:
    """`resources`: the whole job (`variables.jobCpu`, `jobMemory`, `jobGpus`) fits the tenant's
    quota, with at most `gpus` GPUs."""
    quota = tenant.quota
    fits = f"tenant {tenant.name}'s quota: cpu={quota.cpu}, memory={quota.memory}, GPUs={gpus}"
    return validation(
        "resources",
        CHECK + (f"(variables.jobCpu <= {millicores(quota.cpu)} && "
                 f"variables.jobMemory <= {byte_count(quota.memory)} && "
                 f"variables.jobGpus <= {gpus})"),
        f"the whole job (nodes x each node's limits) must fit {fits}",
        "'the whole job needs cpu=' + string(variables.jobCpu) + 'm, memory=' + "
        "string(variables.jobMemory / 1048576) + 'Mi, GPUs=' + string(variables.jobGpus) + "
        f"{lit(f' (nodes x limits); it must fit {fits}')}")


def deadline_rule(tenant: Tenant, field: str) -> dict[str, Any]:
    """`deadline`: the job's `field` (`spec.<path>.activeDeadlineSeconds`) is set, at most the
    tenant's `max_runtime`."""
    deadline, most = f"object.{field}", tenant.job_limits.max_runtime
    has_deadline = has_chain("object.spec", field.removeprefix("spec."))
    maximum = f"at most {most} (tenant {tenant.name}'s maximum runtime)"
    return validation(
        "deadline", CHECK + f"({has_deadline} && {deadline} > 0 && {deadline} <= {most})",
        f"{field} must be set, {maximum}",
        f"{lit(f'{field} must be set, {maximum}; the job has ')}"
        f" + ({has_deadline} ? string({deadline}) : 'none')")


def cleanup_rules(run_policy: str, policies: Sequence[str], most: int) -> list[dict[str, Any]]:
    """`cleanup`: the job's `<run_policy>.cleanPodPolicy` (`spec.runPolicy`) is one of
    `policies`, and its `ttlSecondsAfterFinished` is set, at most `most` seconds.

    A job can end before its pods do (a PaddleJob whose Master exits at once has Succeeded
    while its Workers train on), and the operator holds only unfinished jobs to their deadline:
    the clean pod policy is what stops such pods. The TTL takes the finished job away, and with
    it its place in the quota's job count."""
    clean, ttl = f"{run_policy}.cleanPodPolicy", f"{run_policy}.ttlSecondsAfterFinished"
    has_clean = has_chain("object.spec", clean.removeprefix("spec."))
    has_ttl = has_chain("object.spec", ttl.removeprefix("spec."))
    allowed = " or ".join(policies)
    clean_msg = f"{clean} must be {allowed}, so that a job's running pods go when it ends"
    ttl_msg = f"{ttl} must be set, at most {most}, so that a finished job goes too"
    return [
        validation("cleanup", CHECK + f"({has_clean} && object.{clean} in {lits(policies)})",
                   clean_msg, f"{lit(clean_msg + '; the job has ')} + "
                              f"({has_clean} ? object.{clean} : 'none')"),
        validation("cleanup", CHECK + f"({has_ttl} && object.{ttl} >= 0 && "
                                      f"object.{ttl} <= {most})",
                   ttl_msg, f"{lit(ttl_msg + '; the job has ')} + "
                            f"({has_ttl} ? string(object.{ttl}) : 'none')"),
    ]


def priority_rule(tenant: Tenant, classes: Sequence[str], check: str, *, what: str = "",
                  scope: str = "") -> dict[str, Any]:
    """`priority`: `check` (CEL) says no `what` priority class but `classes` is set (`scope`:
    where, for the message)."""
    return validation(
        "priority", CHECK + check,
        f"no {what}priority class but tenant {tenant.name}'s ({', '.join(classes) or 'none'}) "
        f"may be set{scope}")


def token_rule(check: str, how: str = NO_TOKEN) -> dict[str, Any]:
    """`token`: `check` (CEL) says job pods run as the namespace's `default` account (`how`:
    what else, for the message)."""
    return validation("token", CHECK + check,
                      f"job pods run as the namespace's default service account{how}")


def queue_rule(tenant: Tenant) -> dict[str, Any]:
    """`queue`: a queued tenant's jobs name its own LocalQueue, so a user can neither skip the
    queue nor name another one."""
    queue, name = label("object.metadata", QUEUE_LABEL), tenant.name
    return validation(
        "queue", f"request.operation == 'DELETE' || {queue} == {lit(LOCAL_QUEUE)}",
        f"tenant {name}'s jobs wait in its own queue: the label {QUEUE_LABEL} must be "
        f"{LOCAL_QUEUE}",
        f"{lit(f'the label {QUEUE_LABEL} must be {LOCAL_QUEUE} (tenant {name} queue); the job has ')}"
        f" + ({queue} == '' ? 'none' : {queue})", FORBIDDEN)


def component_rule(shape: JobShape) -> dict[str, Any]:
    """`component`: the job's pod templates carry the component label as a job worker's, if at
    all: a job pod labelled a notebook would pass the NetworkPolicies meant for notebooks (the
    hub and proxy reach them, they reach the API server)."""
    key, worker = labels.LABEL_COMPONENT, labels.COMPONENT_JOB_WORKER
    return validation(
        "component",
        CHECK + shape.every_template(lambda meta: f"{label(meta, key)} in ['', {lit(worker)}]"),
        f"the label {key} of a job's pods may only be {worker}: they are not notebooks, whose "
        "NetworkPolicies let the hub and proxy in and let them reach the API server")


def job_label_rule(shape: JobShape) -> dict[str, Any]:
    """`job`: the job label of the job's pod templates is the job's own name, if set at all: a
    job's NetworkPolicy (`workbench_contract.job_network`) lets in the pods of that label, so a
    pod labelled with another job's name would join that job's network."""
    key = labels.LABEL_JOB
    return validation(
        "job",
        CHECK + shape.every_template(
            lambda meta: f"({label(meta, key)} == '' || "
                         f"{label(meta, key)} == object.metadata.name)"),
        f"the label {key} of a job's pods must be the job's own name: the pods of a job reach "
        "the pods of that job only",
        f"{lit(f'the label {key} of the pods of ')} + object.metadata.name + "
        f"{lit(' must be its own name: the pods of a job reach the pods of that job only')}")


def unqueued_rule(tenant: Tenant, kind: str, queued: Sequence[str]) -> dict[str, Any]:
    """`queue`: in a tenant with a queue, no job of a kind that Kueue does not admit (`kind`, as
    messages name it) is created, whoever asks: its pods would hold quota (GPUs the tenant may
    only borrow) that Kueue believes free or lent. `queued`: the names (`job_api`) of the kinds
    it does admit."""
    return validation(
        "queue", "request.operation != 'CREATE'",
        f"tenant {tenant.name}'s jobs wait in its queue {LOCAL_QUEUE} (Kueue ClusterQueue "
        f"{cluster_queue_name(tenant)}), which takes no {kind}s: use a queued job kind "
        f"(job_api {' or '.join(queued) or 'none is registered'})", reason=FORBIDDEN)


# -- rules on who may make what ----------------------------------------------------------------

def notebook_rule(hub: str) -> dict[str, Any]:
    """`notebook`: only the hub (`hub`: its account as the API server names it) makes a pod
    labelled as a notebook, or labels one so: the NetworkPolicies let the hub and proxy reach
    notebooks and let notebooks reach the API server, which no other pod may get by a label."""
    key, notebook = labels.LABEL_COMPONENT, labels.COMPONENT_NOTEBOOK
    new, old = label("object.metadata", key), label("oldObject.metadata", key)
    check = (f"{new} != {lit(notebook)} || request.userInfo.username == {lit(hub)} || "
             f"(request.operation == 'UPDATE' && {old} == {lit(notebook)})")
    message = f"only the hub ({hub}) may make pods labelled {key}={notebook}"
    return validation("notebook", check, message,
                      f"{lit(message + ', not ')} + request.userInfo.username", FORBIDDEN)


# -- rules on whose it is (a notebook user's own account) --------------------------------------

def only_users_rule(tenant: Tenant) -> dict[str, Any]:
    """`owner`: no account of the namespace but a user's own may write jobs; any other (the
    shared notebook account of earlier versions, `default`) would be held to no owner."""
    accounts = service_account_username(tenant.namespace, "")
    not_a_user = (f" is not a user's own notebook account ({user_account_prefix(tenant)}<user>);"
                  " only those may submit, change or stop jobs here")
    return validation(
        "owner", f"!request.userInfo.username.startsWith({lit(accounts)}) || variables.isUser",
        "only a user's own notebook account may submit, change or stop jobs here",
        f"request.userInfo.username + {lit(not_a_user)}", FORBIDDEN)


def _owner_rules(tenant: Tenant, shape: JobShape) -> list[dict[str, Any]]:
    """`owner`: the user stops or changes only their own jobs, labelled as theirs."""
    user, tenant_label, kind = labels.LABEL_USER, labels.LABEL_TENANT, shape.kind
    owner_of_old, owner_of_new = label("oldObject.metadata", user), label("object.metadata", user)
    theirs = f' (label {user}); you may stop (delete) or change only your own {kind}s'
    return [
        validation(
            "owner",
            f"!variables.isUser || request.operation == 'CREATE' || {owner_of_old} == "
            "variables.owner",
            f"you may stop (delete) or change only your own {kind}s",
            f"'{kind} ' + oldObject.metadata.name + ' belongs to ' + {owner_of_old} + "
            f"{lit(theirs)}", FORBIDDEN),
        validation(
            "owner",
            WRITES + (f"({owner_of_new} == variables.owner && "
                      f"{label('object.metadata', tenant_label)} {of_tenant(tenant)} && "
                      f"{shape.templates_owned})"),
            f"the label {user} must be your user name{shape.labelled}",
            f"{lit(f'the label {user} must be ')} + variables.owner + "
            f"{lit(f' (you) {shape.labelled_short}; the {kind} has ')} + {owner_of_new}",
            FORBIDDEN),
    ]


def owner_rules(tenant: Tenant, shape: JobShape) -> list[dict[str, Any]]:
    """What a notebook user's own account may do with jobs of `shape`: `owner` (its own only),
    `claim` (only its own claim), `volumes` (that claim, emptyDir, downwardAPI and its own
    Secrets) and `secrets` (only its own Secrets, no ConfigMaps)."""
    def every_volume(check: str) -> str:
        return shape.every_pod(lambda pod: volumes_all(pod, check))

    claim = "'a job may mount only your own claim ' + variables.claim"
    return [
        *_owner_rules(tenant, shape),
        validation(
            "claim",
            WRITES + every_volume(f"{absent_or('v', 'persistentVolumeClaim')}"
                                  "v.persistentVolumeClaim.claimName == variables.claim"),
            f"a job may mount only your own claim ({CLAIM_PREFIX}<you>)",
            claim + (f" + '; not ' + {shape.bad_claims}" if shape.bad_claims else ""),
            FORBIDDEN),
        validation(
            "volumes",
            WRITES + every_volume("has(v.persistentVolumeClaim) || has(v.emptyDir) || "
                                  "has(v.downwardAPI) || has(v.secret)"),
            "a job's volumes may be your claim, emptyDir, downwardAPI and your own Secrets only",
            reason=FORBIDDEN),
        validation(
            "secrets", WRITES + f"({shape.reads_own_secrets})",
            f"a job may read only your own Secrets (named <you>{SECRET_SEPARATOR}...) and no "
            "ConfigMaps",
            "'a job may read only your own Secrets (named ' + variables.secretPrefix + "
            "'<name>) and no ConfigMaps'",
            FORBIDDEN),
    ]


# -- the objects --------------------------------------------------------------------------------

def policy_name(tenant: Tenant, what: str) -> str:
    return f"workbench-{tenant.name}-{what}"


def policy(tenant: Tenant, what: str, api: Api, variables: list[dict[str, str]],
           validations: list[dict[str, Any]], *, deletes: bool,
           match_conditions: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """The policy `workbench-<tenant>-<what>` on objects of `api` in the tenant's namespace,
    created or updated (and deleted, when `deletes`). `admission_policies` labels it."""
    operations = ["CREATE", "UPDATE"] + (["DELETE"] if deletes else [])
    spec: dict[str, Any] = {
        "failurePolicy": "Fail",
        "matchConstraints": {
            "namespaceSelector": in_namespace(tenant.namespace),
            "resourceRules": [{"apiGroups": [api.group], "apiVersions": ["*"],
                               "operations": operations, "resources": [api.plural]}]},
        **({"matchConditions": match_conditions} if match_conditions else {}),
        "variables": variables,
        "validations": validations,
    }
    return {"apiVersion": API_VERSION, "kind": POLICY_KIND,
            "metadata": {"name": policy_name(tenant, what)}, "spec": spec}


def targets(policy: dict[str, Any], api: Api) -> bool:
    """Whether `policy` (as `policy` makes one) is on objects of `api`."""
    return any(api.group in rule["apiGroups"] and api.plural in rule["resources"]
               for rule in policy["spec"]["matchConstraints"]["resourceRules"])


def binding(policy: dict[str, Any], tenant: Tenant) -> dict[str, Any]:
    """The binding that puts `policy` in force in the tenant's namespace: requests it refuses
    are denied (not only audited or warned about)."""
    return {
        "apiVersion": API_VERSION, "kind": BINDING_KIND,
        "metadata": json.loads(json.dumps(policy["metadata"])),
        "spec": {"policyName": policy["metadata"]["name"], "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": in_namespace(tenant.namespace)}},
    }
