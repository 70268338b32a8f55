"""The namespace bundle as data (no cluster): what each object grants, limits and allows, the
`workbench render` output, and the one-line errors of `render` and `apply`."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import sys
from pathlib import Path

import pytest
import yaml

from hub_config.cli import main as cli_main
from hub_config.cluster_policy.admission import rules
from hub_config.cluster_policy.admission.paddlejob import MAX_FINISHED_TTL
from hub_config.cluster_policy.apply import (
    ApplyError,
    ApplyResult,
    apply_objects,
    prune_selector,
    summary_table,
)
from hub_config.cluster_policy.bundle import (
    gpus_per_pod,
    hub_role_rules,
    limit_range,
    namespace_bundle,
    notebook_role_rules,
    resource_quota,
)
from hub_config.cluster_policy.identities import (
    NOTEBOOK_ROLE,
    user_account_prefix,
    user_identity,
    user_service_account,
)
from hub_config.cluster_policy.metadata import MANAGED_BY, MANAGED_BY_LABEL, ProvisioningError
from hub_config.cluster_policy.network import METADATA_ADDRESS
from hub_config.cluster_policy.runtimes import restart_runtimes
from hub_config.tenants import Quota, Tenants, TenantsFileError, load_tenants
from workbench_contract import cluster, jobkinds, labels
from workbench_contract.cluster import Api
from workbench_contract.jobkinds import JobKind

from .hub_env import OFFLINE_KUBECONFIG

EXAMPLE = Path(__file__).resolve().parents[2] / "hub_config" / "tenants.example.yaml"
RUNTIME_FILE = (Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "trainer" /
                "paddle-runtime.yaml")
TENANTS = load_tenants(EXAMPLE)
VISION = TENANTS.get("vision")
KUBERNETES_VERSION = "1.30.0"


def by_kind(bundle: list[dict], kind: str) -> list[dict]:
    return [o for o in bundle if o["kind"] == kind]


def one(bundle: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in by_kind(bundle, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


@pytest.fixture(params=TENANTS.tenants, ids=lambda t: t.name)
def tenant(request):
    return request.param


CLUSTER_SCOPED = {"Namespace", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}


def test_bundle_order_labels_and_namespaces(tenant):
    bundle = namespace_bundle(tenant)
    kinds = [o["kind"] for o in bundle]
    # The Namespace first (everything else lives in it); the admission policies before any
    # grant that lets a user in; RBAC before the quota that would otherwise be the first thing
    # a user hits; network policies last.
    assert kinds[0] == "Namespace"
    last_policy = max(i for i, k in enumerate(kinds) if k.startswith("ValidatingAdmission"))
    assert last_policy < kinds.index("Role") < kinds.index("RoleBinding")
    assert set(kinds) == {"Namespace", "ValidatingAdmissionPolicy",
                          "ValidatingAdmissionPolicyBinding", "Role", "RoleBinding",
                          "ResourceQuota", "LimitRange", "NetworkPolicy"}
    # No shared notebook account: each user gets their own at spawn (`user_identity`).
    assert "ServiceAccount" not in kinds
    for obj in bundle:
        meta = obj["metadata"]
        # Prune finds every object, cluster-scoped ones too, by these two labels.
        assert meta["labels"][MANAGED_BY_LABEL] == MANAGED_BY
        assert meta["labels"][labels.LABEL_TENANT] == tenant.name
        if obj["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in meta
        else:
            assert meta["namespace"] == tenant.namespace
    keys = [(o["kind"], o["metadata"]["name"]) for o in bundle]
    assert len(keys) == len(set(keys)), "two objects of one kind share a name"


def test_namespace_enforces_pod_security_restricted(tenant):
    ns_labels = one(namespace_bundle(tenant), "Namespace")["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert ns_labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert ns_labels[f"pod-security.kubernetes.io/{mode}-version"] == "latest"


def test_quota_follows_the_tenants_file(tenant):
    hard = one(namespace_bundle(tenant), "ResourceQuota")["spec"]["hard"]
    quota = tenant.quota
    assert hard == {
        "requests.nvidia.com/gpu": str(quota.gpus),
        # Requests and limits alike: limits cannot be overcommitted past the quota either.
        "requests.cpu": quota.cpu,
        "requests.memory": quota.memory,
        "limits.cpu": quota.cpu,
        "limits.memory": quota.memory,
        # Every pod's worth of the default ephemeral storage.
        "requests.ephemeral-storage": f"{quota.pods}Gi",
        "limits.ephemeral-storage": f"{quota.pods * 10}Gi",
        "pods": str(quota.pods),
        "count/paddlejobs.kubeflow.org": str(quota.jobs),
        "count/trainjobs.trainer.kubeflow.org": str(quota.jobs),
    }
    # Extended resources may only be quota'd by requests; a limits.* key would be refused.
    assert not any(k.startswith("limits.nvidia.com") for k in hard)


def test_limit_range_gives_the_tenants_defaults_and_maximums(tenant):
    item, pod = one(namespace_bundle(tenant), "LimitRange")["spec"]["limits"]
    first, gpus = tenant.profiles[0], str(tenant.job_limits.max_gpus_per_node)
    assert item["type"] == "Container"
    # A worker without --cpu/--memory gets the tenant's first profile: never unlimited. GPUs
    # default to none: left out, the API server would default them to the maximum.
    assert item["default"] == {"cpu": first.cpu.limit, "memory": first.memory.limit,
                               "ephemeral-storage": "10Gi", "nvidia.com/gpu": "0"}
    assert item["defaultRequest"] == {"cpu": first.cpu.guarantee,
                                      "memory": first.memory.guarantee,
                                      "ephemeral-storage": "1Gi", "nvidia.com/gpu": "0"}
    assert item["max"] == {"cpu": tenant.quota.cpu, "memory": tenant.quota.memory,
                           "ephemeral-storage": "10Gi", "nvidia.com/gpu": gpus}
    # A pod, init containers counted, has at most a node's GPUs (the example's notebooks fit).
    assert pod == {"type": "Pod", "max": {"nvidia.com/gpu": gpus}}


def test_limit_range_lets_a_notebook_of_the_largest_profile_have_its_gpus():
    """A profile with more GPUs than a job's node may have still spawns: the LimitRange holds
    every pod to the larger of the two."""
    big = dataclasses.replace(VISION.profiles[1], gpus=8)
    tenant = dataclasses.replace(
        VISION, profiles=(VISION.profiles[0], big),
        job_limits=dataclasses.replace(VISION.job_limits, max_gpus_per_node=2))
    assert gpus_per_pod(tenant) == 8 and gpus_per_pod(VISION) == 8
    item, pod = limit_range(tenant)["spec"]["limits"]
    assert item["max"]["nvidia.com/gpu"] == pod["max"]["nvidia.com/gpu"] == "8"


def test_limit_range_defaults_never_exceed_the_quota():
    small = dataclasses.replace(VISION, quota=Quota(gpus=8, cpu="1", memory="2Gi", pods=5,
                                                    jobs=1))
    item, _ = one(namespace_bundle(small), "LimitRange")["spec"]["limits"]
    # cpu-small asks for a 2-CPU, 4Gi limit; the quota is smaller, so the quota it is.
    assert item["default"]["cpu"] == "1" and item["default"]["memory"] == "2Gi"
    assert item["defaultRequest"]["cpu"] == "0.5"


def test_rbac_is_namespaced_and_bound_to_the_right_accounts(tenant):
    bundle = namespace_bundle(tenant, hub_namespace="hubs", hub_service_account="jhub")
    roles = {o["metadata"]["name"]: o for o in by_kind(bundle, "Role")}
    assert not by_kind(bundle, "ClusterRole") and not by_kind(bundle, "ClusterRoleBinding")
    (binding,) = by_kind(bundle, "RoleBinding")  # the hub's; users are bound at spawn
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "workbench-hub"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "jhub",
                                    "namespace": "hubs"}]
    assert roles["workbench-notebook"]["rules"] == notebook_role_rules()
    assert roles["workbench-hub"]["rules"] == hub_role_rules()


def test_each_user_gets_an_account_of_their_own_bound_to_the_notebook_role(tenant):
    account, binding = user_identity(tenant, "ada")
    name = user_service_account(tenant, "ada")
    assert name == f"{tenant.service_account}-ada" == user_account_prefix(tenant) + "ada"
    assert user_service_account(tenant, "bob") != name
    assert account["kind"] == "ServiceAccount"
    assert account["metadata"]["name"] == name
    assert account["metadata"]["namespace"] == tenant.namespace
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": NOTEBOOK_ROLE}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name,
                                    "namespace": tenant.namespace}]
    for obj in (account, binding):
        obj_labels = obj["metadata"]["labels"]
        assert obj_labels == {labels.LABEL_TENANT: tenant.name, labels.LABEL_USER: "ada"}
        # Not labelled as ours: `workbench apply --prune` must never delete a user's account.
        assert MANAGED_BY_LABEL not in obj_labels


def _grants(rules: list[dict]) -> set[tuple[str, str, str]]:
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def test_notebook_role_reaches_jobs_pods_logs_events_quota_and_writes_secrets_only():
    grants = _grants(notebook_role_rules())
    for verb in ("create", "get", "list", "watch", "delete"):
        assert ("kubeflow.org", "paddlejobs", verb) in grants
    assert {("", "pods/log", "get"), ("", "pods", "watch"), ("", "events", "list"),
            ("", "resourcequotas", "get")} <= grants
    resources = {r for _, r, _ in grants}
    assert resources == {"paddlejobs", "trainjobs", "jobsets", "localqueues", "workloads", "pods",
                         "pods/log", "events", "resourcequotas", "secrets",
                         "localqueues/pendingworkloads", "networkpolicies"}
    # The queue's pending workloads (Kueue's visibility API): read, in the namespace only.
    assert {v for _, r, v in grants if r == "localqueues/pendingworkloads"} == {"get"}
    verbs_on_pods = {v for _, r, v in grants if r == "pods"}
    assert verbs_on_pods == {"get", "list", "watch"}  # never creates pods directly
    # A job's --env Secret: made, given to its job, deleted on a failed submit; never read.
    assert {v for _, r, v in grants if r == "secrets"} == {"create", "patch", "delete"}
    # A job's own NetworkPolicy: the same three, never read or listed.
    assert {v for _, r, v in grants if r == "networkpolicies"} == {"create", "patch", "delete"}
    assert not any("*" in part for grant in grants for part in grant)
    assert not any(rule.get("resourceNames") for rule in notebook_role_rules())


def test_the_notebook_roles_job_rules_for_the_built_in_kinds_are_exactly_these():
    """Derived from the registered kinds, the Role grants what the two engines need, no more."""
    jobs = ["create", "get", "list", "watch", "delete"]
    assert notebook_role_rules()[:5] == [
        {"apiGroups": ["kubeflow.org"], "resources": ["paddlejobs"], "verbs": jobs},
        {"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"], "verbs": jobs},
        {"apiGroups": ["jobset.x-k8s.io"], "resources": ["jobsets"], "verbs": ["get", "list"]},
        {"apiGroups": ["kueue.x-k8s.io"], "resources": ["localqueues", "workloads"],
         "verbs": ["get", "list"]},
        {"apiGroups": ["visibility.kueue.x-k8s.io"],
         "resources": ["localqueues/pendingworkloads"], "verbs": ["get"]},
    ]


# A job kind registered by a test (`new_kind`): everything the hub gives a kind follows from it.
MPIJOB_API = Api("kubeflow.org", "v2beta1", "mpijobs", "MPIJob")
MPIJOB = JobKind(name="mpijob", api=MPIJOB_API, adapter="not.loaded.here:Adapter",
                 admission=f"{__name__}:mpijob_policies", reads=(cluster.JOBSET,))


def mpijob_policies(tenant, *, default_cpu, default_memory, priority_classes=()):
    """The test kind's admission builder: one policy with one rule."""
    return [rules.policy(tenant, "mpijobs", MPIJOB_API, [], [rules.only_users_rule(tenant)],
                         deletes=True)]


@pytest.fixture
def new_kind(monkeypatch):
    """`MPIJOB` registered beside the built-in kinds, by entry point as a package would."""
    registered = jobkinds.entry_points

    def entry_points(group):
        return [*registered(group=group),
                importlib.metadata.EntryPoint("mpijob", f"{__name__}:MPIJOB", group)]

    monkeypatch.setattr(jobkinds, "entry_points", entry_points)
    return MPIJOB


def test_a_new_job_kind_needs_no_edit_of_the_policy(new_kind):
    assert list(jobkinds.job_kinds()) == ["mpijob", "paddlejob", "trainjob"]
    rules_ = notebook_role_rules()
    assert {"apiGroups": ["kubeflow.org"], "resources": ["mpijobs"],
            "verbs": ["create", "get", "list", "watch", "delete"]} in rules_
    # What two kinds read is granted once.
    assert sum(rule["resources"] == ["jobsets"] for rule in rules_) == 1
    assert resource_quota(VISION)["spec"]["hard"]["count/mpijobs.kubeflow.org"] == str(
        VISION.quota.jobs)
    (policy,) = [o for o in namespace_bundle(VISION) if o["kind"] == "ValidatingAdmissionPolicy"
                 and o["metadata"]["name"] == "workbench-vision-mpijobs"]
    assert policy["metadata"]["labels"][MANAGED_BY_LABEL] == MANAGED_BY
    assert policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"] == ["mpijobs"]
    # The tenants file takes the kind's name; a queue still needs a kind Kueue admits.
    data = yaml.safe_load(EXAMPLE.read_text())
    data["tenants"][0]["job_api"] = "mpijob"
    assert Tenants.from_dict(data).tenants[0].job_api == "mpijob"
    data["tenants"][0]["queue"] = {"cohort": "shared"}
    with pytest.raises(TenantsFileError, match="job_api mpijob is not queued by Kueue; set "
                       r"job_api to a kind that is \(trainjob\) or remove the queue"):
        Tenants.from_dict(data)


def test_the_runtime_copies_are_the_runtimes_a_trainjob_may_name():
    """`restart_runtimes` makes one copy per restart limit, differing only there; the TrainJob
    policy admits the shipped runtime and exactly those copies."""
    base = yaml.safe_load(RUNTIME_FILE.read_text())
    copies = restart_runtimes(base)
    assert (base["metadata"]["name"], *(r["metadata"]["name"] for r in copies)) == (
        cluster.runtime_names())
    shipped = base["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"]
    for count, runtime in enumerate(copies):
        assert runtime["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] == count
        runtime["metadata"]["name"] = base["metadata"]["name"]
        runtime["spec"]["template"]["spec"]["failurePolicy"]["maxRestarts"] = shipped
        assert runtime == base
    policy = one(namespace_bundle(VISION), "ValidatingAdmissionPolicy",
                 "workbench-vision-trainjobs")
    (runtime_rule,) = [v for v in policy["spec"]["validations"]
                       if v["message"].startswith("workbench rule runtime:")]
    names = json.dumps(list(cluster.runtime_names()))  # a CEL list reads as JSON
    assert f"object.spec.runtimeRef.name in {names} &&" in runtime_rule["expression"]


def test_hub_role_is_what_kubespawner_needs_and_reads_no_secret():
    rules = hub_role_rules()
    grants = _grants(rules)
    for verb in ("get", "list", "watch", "create", "delete"):
        assert ("", "pods", verb) in grants and ("", "persistentvolumeclaims", verb) in grants
    assert {r for _, r, _ in grants} == {"pods", "persistentvolumeclaims", "events",
                                         "serviceaccounts", "rolebindings", "roles", "secrets"}
    # The hub token's Secret is written, never read back.
    assert {v for _, r, v in grants if r == "secrets"} == {"create", "patch"}
    # It may bind the notebook Role, and no other, to the users' accounts.
    (bind,) = [r for r in rules if "bind" in r["verbs"]]
    assert bind["resources"] == ["roles"] and bind["resourceNames"] == [NOTEBOOK_ROLE]
    assert {v for _, r, v in grants if r == "rolebindings"} == {"create"}
    assert not any("*" in part for grant in grants for part in grant)


RULES = {
    "paddlejobs": {"images", "nodes", "gpus", "resources", "deadline", "cleanup", "priority",
                   "token", "component", "job", "owner", "claim", "volumes", "secrets"},
    "trainjobs": {"runtime", "images", "nodes", "gpus", "resources", "deadline", "priority",
                  "token", "component", "job", "owner", "claim", "volumes", "secrets"},
    "jobsets": {"images", "gpus", "priority", "token"},
    "pods": {"images", "priority", "notebook"},
    "secrets": {"secrets"},
    "networkpolicies": {"network"},
}


def _rule_names(policy: dict) -> set[str]:
    names = set()
    for validation in policy["spec"]["validations"]:
        prefix, _, rest = validation["message"].partition(" rule ")
        assert prefix == "workbench", validation["message"]  # every refusal names its rule
        rule = rest.split(":", 1)[0]
        names.add(rule)
        if "messageExpression" in validation:
            assert validation["messageExpression"].startswith(f'"workbench rule {rule}: " + (')
    return names


def test_admission_policies_put_every_rule_in_force_in_the_tenants_namespace(tenant):
    bundle = namespace_bundle(tenant)
    policies = {p["metadata"]["name"]: p for p in by_kind(bundle, "ValidatingAdmissionPolicy")}
    bindings = {b["metadata"]["name"]: b
                for b in by_kind(bundle, "ValidatingAdmissionPolicyBinding")}
    names = {f"workbench-{tenant.name}-{what}": what for what in RULES}
    assert set(policies) == set(bindings) == set(names)
    in_namespace = {"matchLabels": {"kubernetes.io/metadata.name": tenant.namespace}}
    for name, what in names.items():
        policy = policies[name]["spec"]
        assert bindings[name]["spec"] == {"policyName": name, "validationActions": ["Deny"],
                                          "matchResources": {"namespaceSelector": in_namespace}}
        assert policy["failurePolicy"] == "Fail"
        assert policy["matchConstraints"]["namespaceSelector"] == in_namespace
        assert _rule_names(policies[name]) == RULES[what], name
    (jobs,) = policies[f"workbench-{tenant.name}-paddlejobs"]["spec"]["matchConstraints"][
        "resourceRules"]
    assert jobs["resources"] == ["paddlejobs"]
    assert jobs["operations"] == ["CREATE", "UPDATE", "DELETE"]  # DELETE: the owner rule


def test_admission_policies_carry_the_tenants_own_limits(tenant):
    bundle = namespace_bundle(tenant)
    policy = one(bundle, "ValidatingAdmissionPolicy", f"workbench-{tenant.name}-paddlejobs")
    rules = {}
    for validation in policy["spec"]["validations"]:
        rule = validation["message"].split(":", 1)[0].removeprefix("workbench rule ")
        rules[rule] = rules.get(rule, "") + validation["expression"]
    for image in tenant.image_refs:
        assert f'"{image}"' in rules["images"]
    assert f"variables.nodes <= {tenant.job_limits.max_nodes})" in rules["nodes"]
    assert f"<= {tenant.job_limits.max_gpus_per_node})" in rules["gpus"]
    assert f"<= {tenant.job_limits.max_runtime})" in rules["deadline"]
    variables = {v["name"]: v["expression"] for v in policy["spec"]["variables"]}
    account = f"system:serviceaccount:{tenant.namespace}:{user_account_prefix(tenant)}"
    assert variables["isUser"] == f'request.userInfo.username.startsWith("{account}")'
    assert variables["owner"].endswith(f".substring({len(account)}) : ''")
    # Only users' own accounts are held to the secrets policy (not the hub, not the GC).
    secrets = one(bundle, "ValidatingAdmissionPolicy", f"workbench-{tenant.name}-secrets")
    (condition,) = secrets["spec"]["matchConditions"]
    assert condition["expression"] == variables["isUser"]


def test_admission_policies_of_two_tenants_never_overlap():
    vision, classroom = (namespace_bundle(t) for t in TENANTS.tenants)
    names = [{o["metadata"]["name"] for o in bundle if o["kind"].startswith("Validating")}
             for bundle in (vision, classroom)]
    assert not names[0] & names[1]


def _policies(tenant, **kwargs) -> dict[str, dict]:
    bundle = namespace_bundle(tenant, **kwargs)
    return {p["metadata"]["name"]: p["spec"] for p in by_kind(bundle, "NetworkPolicy")}


def test_network_policies_deny_by_default_and_allow_only_the_needed_flows():
    policies = _policies(VISION, hub_namespace="hubs")
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}

    nb = policies["notebook-from-hub"]
    assert nb["podSelector"] == {"matchLabels": {labels.LABEL_COMPONENT: "notebook"}}
    (ingress,) = nb["ingress"]
    (peer,) = ingress["from"]
    assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "hubs"}}
    assert peer["podSelector"]["matchExpressions"][0]["values"] == ["hub", "proxy"]
    assert ingress["ports"] == [{"protocol": "TCP", "port": 8888}]

    dns = policies["allow-dns"]["egress"][0]
    assert dns["to"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "kube-system"}
    assert {p["port"] for p in dns["ports"]} == {53}

    # No tenant-wide policy lets job pods in: each job's own policy, made with the job, does,
    # for that job's pods only.
    for name, spec in policies.items():
        assert labels.LABEL_JOB not in str(spec["podSelector"]), name
        for rule in spec.get("ingress", []):
            assert labels.LABEL_JOB not in str(rule), name
    # No policy admits traffic from outside the namespace except the hub's pods.
    for name, spec in policies.items():
        for rule in spec.get("ingress", []):
            for source in rule["from"]:
                assert "ipBlock" not in source, name
                if "namespaceSelector" in source:
                    assert source["namespaceSelector"]["matchLabels"] == {
                        "kubernetes.io/metadata.name": "hubs"}, name


def test_notebooks_reach_the_api_server_only_where_the_operator_says():
    assert "notebook-to-api-server" not in _policies(VISION)  # the default: nowhere
    policy = _policies(VISION, api_server_cidrs=("10.1.2.3/32",))["notebook-to-api-server"]
    (rule,) = policy["egress"]
    assert rule["to"] == [{"ipBlock": {"cidr": "10.1.2.3/32"}}]
    assert {p["port"] for p in rule["ports"]} == {443, 6443}
    # Nothing else lets a notebook out but DNS and the hub.
    for name, spec in _policies(VISION).items():
        for egress in spec.get("egress", []):
            assert all("ipBlock" not in peer for peer in egress["to"]), name


@pytest.mark.parametrize("cidrs, blocks", [
    (("169.254.0.0/16",), [{"cidr": "169.254.0.0/16", "except": [METADATA_ADDRESS]}]),
    # An except outside its cidr is invalid, so a block without the address has none.
    (("169.254.0.0/16", "10.0.0.1/32"),
     [{"cidr": "169.254.0.0/16", "except": [METADATA_ADDRESS]}, {"cidr": "10.0.0.1/32"}]),
], ids=["link-local", "link-local-and-host"])
def test_no_egress_rule_reaches_the_cloud_metadata_address(cidrs, blocks):
    found = [peer["ipBlock"] for spec in _policies(VISION, api_server_cidrs=cidrs).values()
             for rule in spec.get("egress", []) for peer in rule.get("to", [])
             if "ipBlock" in peer]
    assert found == blocks


@pytest.mark.parametrize("kwargs, fix", [
    ({"hub_namespace": "Hub_NS"}, "hub namespace 'Hub_NS' is not a DNS-1123 label"),
    ({"hub_service_account": ""}, "hub service account '' is not a DNS-1123 label"),
    ({"api_server_cidrs": ("10.0.0.1/33",)}, "write it like 10.0.0.1/32"),
    ({"api_server_cidrs": ("169.254.169.254/32",)}, "the cloud metadata address"),
    ({"api_server_cidrs": ("0.0.0.0/0",)}, "a large part of the internet"),
    ({"api_server_cidrs": ("10.0.0.0/8", "128.0.0.0/1")}, "'128.0.0.0/1' would open"),
    ({"priority_classes": ("Not A Name",)}, "priority class 'Not A Name'"),
], ids=["namespace", "account", "cidr", "metadata", "internet", "half-the-internet",
        "priority-class"])
def test_bad_parameters_are_refused_with_what_to_fix(kwargs, fix):
    with pytest.raises(ProvisioningError, match=fix.replace("(", r"\(")):
        namespace_bundle(VISION, **kwargs)


def test_every_object_validates_against_the_kubernetes_schema(tenant):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (test extra)")
    for obj in namespace_bundle(tenant):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


# --- the command line -------------------------------------------------------------------------

def test_render_prints_the_bundles_as_yaml_and_json(capsys):
    assert cli_main.main(["render", "--tenants", str(EXAMPLE)]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    expected = [o for t in TENANTS.tenants for o in namespace_bundle(t)]
    assert documents == expected

    assert cli_main.main(["render", "--tenants", str(EXAMPLE), "--tenant", "classroom", "-o", "json",
                     "--hub-namespace", "hubs", "--api-server-cidr", "10.1.2.3/32"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["kind"] == "List"
    assert listed["items"] == namespace_bundle(TENANTS.get("classroom"), hub_namespace="hubs",
                                               api_server_cidrs=("10.1.2.3/32",))


def test_render_reads_the_tenants_file_from_the_environment(capsys, monkeypatch):
    monkeypatch.setenv("WORKBENCH_TENANTS_FILE", str(EXAMPLE))
    assert cli_main.main(["render", "--tenant", "vision"]) == 0
    names = {d["metadata"]["namespace"] for d in yaml.safe_load_all(capsys.readouterr().out)
             if d["kind"] not in CLUSTER_SCOPED}
    assert names == {"wb-vision"}


@pytest.mark.parametrize("argv, expected", [
    (["render", "--tenants", "{missing}"], "no such tenants file"),
    (["render", "--tenants", "{bad}"], "field 'quota.gpus': must be a whole number"),
    (["render", "--tenants", "{example}", "--tenant", "nope"],
     "no tenant 'nope' in {example}; tenants there: vision, classroom"),
    (["render", "--tenants", "{example}", "--api-server-cidr", "nowhere"],
     "'nowhere' is not a network address"),
    (["apply", "--tenants", "{example}", "--kubeconfig", "{missing}"], "no usable kubeconfig"),
    (["apply", "--tenants", "{example}", "--kubeconfig", "{offline}"],
     "cannot reach the API server at https://127.0.0.1:9"),
], ids=["missing-file", "bad-file", "unknown-tenant", "bad-cidr", "no-kubeconfig", "no-cluster"])
def test_errors_are_one_line_and_exit_2(argv, expected, tmp_path, capsys):
    pytest.importorskip("kubernetes", reason="install the test extra (kubernetes)")
    bad = tmp_path / "bad.yaml"
    data = yaml.safe_load(EXAMPLE.read_text())
    data["tenants"][0]["quota"]["gpus"] = "lots"
    bad.write_text(yaml.safe_dump(data))
    offline = tmp_path / "offline.kubeconfig"
    offline.write_text(OFFLINE_KUBECONFIG)
    paths = {"missing": str(tmp_path / "missing.yaml"), "bad": str(bad),
             "example": str(EXAMPLE), "offline": str(offline)}
    argv = [a.format(**paths) for a in argv]

    assert cli_main.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"workbench {argv[0]}: ")
    assert expected.format(**paths) in line


def test_summary_table_counts_each_action():
    results = [ApplyResult("Namespace", "", "wb-a", "created"),
               ApplyResult("Role", "wb-a", "workbench-hub", "unchanged"),
               ApplyResult("NetworkPolicy", "wb-a", "old", "pruned", dry_run=True)]
    table = summary_table(results)
    lines = table.splitlines()
    assert lines[0].split() == ["KIND", "NAMESPACE", "NAME", "RESULT"]
    assert lines[1].split() == ["Namespace", "-", "wb-a", "created"]
    assert lines[3].endswith("pruned (dry run)")
    assert lines[-1] == "1 created, 0 configured, 1 unchanged, 1 pruned"
    assert [ApplyResult.from_dict(r.to_dict()) for r in results] == results


def test_prune_selects_only_our_objects_of_the_tenants_in_scope():
    assert prune_selector(None) == f"{MANAGED_BY_LABEL}={MANAGED_BY}"
    assert prune_selector(["b", "a", "b"]) == (
        f"{MANAGED_BY_LABEL}={MANAGED_BY},{labels.LABEL_TENANT} in (a,b)")
    with pytest.raises(ApplyError, match="at least one tenant"):
        prune_selector([])


def test_apply_refuses_an_unknown_kind_before_writing_anything():
    class NoCalls:  # any API call would be an AttributeError, not the ApplyError we expect
        pass

    objects = namespace_bundle(VISION) + [{"apiVersion": "v1", "kind": "Secret",
                                           "metadata": {"name": "x", "namespace": "wb-vision"}}]
    with pytest.raises(ApplyError, match="cannot apply Secret"):
        apply_objects(NoCalls(), objects)


def test_a_queued_tenants_gpu_quota_is_its_own_plus_what_its_cohort_can_lend(tmp_path):
    """Even with no borrowing limit, the namespace's GPU quota is a number: the tenant's own
    GPUs plus the other queued tenants' of its cohort (never unlimited)."""
    data = yaml.safe_load(EXAMPLE.read_text())
    for tenant in data["tenants"]:
        tenant["job_api"] = "trainjob"
        tenant["queue"] = {"cohort": "shared"}
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump(data))
    tenants = load_tenants(path).tenants
    total = sum(t.quota.gpus for t in tenants)
    for tenant in tenants:
        assert resource_quota(tenant)["spec"]["hard"]["requests.nvidia.com/gpu"] == str(total)
    # A borrowing limit lowers it; one above what the cohort has does not raise it.
    data["tenants"][0]["queue"]["borrowing_limit"] = {"gpus": 100}
    data["tenants"][1]["queue"]["borrowing_limit"] = {"gpus": 1}
    path.write_text(yaml.safe_dump(data))
    first, second = load_tenants(path).tenants
    assert resource_quota(first)["spec"]["hard"]["requests.nvidia.com/gpu"] == str(total)
    assert resource_quota(second)["spec"]["hard"]["requests.nvidia.com/gpu"] == str(
        second.quota.gpus + 1)


# --- the second audit's holes, as data (tried for real in tests/cluster/test_tenant_admission.py)

def _queued_vision():
    data = yaml.safe_load(EXAMPLE.read_text())
    data["tenants"][0]["job_api"] = "trainjob"
    data["tenants"][0]["queue"] = {"cohort": "shared"}
    return Tenants.from_dict(data).tenants[0]


def _validations(policy: dict, rule: str) -> list[dict]:
    return [v for v in policy["spec"]["validations"]
            if v["message"].startswith(f"workbench rule {rule}:")]


def test_a_queued_tenants_notebooks_write_only_the_kinds_kueue_admits():
    queued = _queued_vision()
    role = one(namespace_bundle(queued), "Role", NOTEBOOK_ROLE)
    assert role["rules"] == notebook_role_rules(queued=True) != notebook_role_rules()
    grants = _grants(role["rules"])
    # PaddleJobs are read (jobs from before the queue still show), never made or stopped.
    assert {v for _, r, v in grants if r == "paddlejobs"} == {"get", "list", "watch"}
    assert {v for _, r, v in grants if r == "trainjobs"} == {"create", "get", "list", "watch",
                                                             "delete"}
    # Everything else is as in a tenant without a queue.
    assert role["rules"][1:] == notebook_role_rules()[1:]


def test_a_queued_tenant_refuses_every_new_job_of_a_kind_kueue_does_not_admit(new_kind):
    """Whoever asks: the `queue` rule goes last into each non-queued kind's own policy (the
    built-in PaddleJob and a kind registered by a package alike), names the tenant's queue and
    the kinds to use, and refuses creation only (a job from before the queue may be stopped)."""
    queued = _queued_vision()
    bundle = namespace_bundle(queued)
    for what, kind in (("paddlejobs", "PaddleJob"), ("mpijobs", "MPIJob")):
        policy = one(bundle, "ValidatingAdmissionPolicy", f"workbench-vision-{what}")
        last = policy["spec"]["validations"][-1]
        assert last == rules.unqueued_rule(queued, kind, ["trainjob"])
        assert last["expression"] == "request.operation != 'CREATE'"
        assert last["reason"] == "Forbidden"
        assert last["message"] == (
            f"workbench rule queue: tenant vision's jobs wait in its queue workbench (Kueue "
            f"ClusterQueue workbench-vision), which takes no {kind}s: use a queued job kind "
            "(job_api trainjob)")
    trainjobs = one(bundle, "ValidatingAdmissionPolicy", "workbench-vision-trainjobs")
    assert all("takes no" not in v["message"] for v in trainjobs["spec"]["validations"])
    # Without a queue, no kind is refused so.
    assert not [v for o in by_kind(namespace_bundle(VISION), "ValidatingAdmissionPolicy")
                for v in o["spec"]["validations"] if "takes no" in v["message"]]


def test_a_kind_whose_builder_has_no_policy_on_its_api_still_gets_the_queue_rule(new_kind,
                                                                                 monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "mpijob_policies",
                        lambda tenant, **_: [])
    policy = one(namespace_bundle(_queued_vision()), "ValidatingAdmissionPolicy",
                 "workbench-vision-mpijobs-queue")
    assert _rule_names(policy) == {"queue"}


def test_only_the_hubs_own_account_makes_notebook_pods():
    policy = one(namespace_bundle(VISION, hub_namespace="hubs", hub_service_account="jhub"),
                 "ValidatingAdmissionPolicy", "workbench-vision-pods")
    (rule,) = _validations(policy, "notebook")
    assert rule == rules.notebook_rule("system:serviceaccount:hubs:jhub")
    assert 'request.userInfo.username == "system:serviceaccount:hubs:jhub"' in rule["expression"]
    # A pod that already was a notebook may be changed (the garbage collector, finalizers).
    assert "request.operation == 'UPDATE'" in rule["expression"]
    assert rule["reason"] == "Forbidden"


@pytest.mark.parametrize("what", ["paddlejobs", "trainjobs"])
def test_no_job_pod_may_claim_to_be_a_notebook(what):
    policy = one(namespace_bundle(VISION), "ValidatingAdmissionPolicy", f"workbench-vision-{what}")
    (rule,) = _validations(policy, "component")
    assert f'in [\'\', "{labels.COMPONENT_JOB_WORKER}"]' in rule["expression"]
    assert labels.LABEL_COMPONENT in rule["expression"]


def test_a_paddlejob_must_clean_up_its_pods_and_itself():
    """`cleanup`: cleanPodPolicy Running or All, a TTL at most a day; the engine's own PaddleJob
    (its defaults) is within both."""
    from launcher_magic.engines.cluster.paddlejob import PaddleJobAdapter

    policy = one(namespace_bundle(VISION), "ValidatingAdmissionPolicy",
                 "workbench-vision-paddlejobs")
    clean, ttl = _validations(policy, "cleanup")
    assert 'object.spec.runPolicy.cleanPodPolicy in ["Running", "All"]' in clean["expression"]
    assert f"object.spec.runPolicy.ttlSecondsAfterFinished <= {MAX_FINISHED_TTL}" in (
        ttl["expression"])
    adapter = PaddleJobAdapter()
    assert adapter.clean_pod_policy in ("Running", "All")
    assert 0 <= adapter.ttl_seconds_after_finished <= MAX_FINISHED_TTL


def test_init_containers_count_in_a_jobs_gpus_and_size():
    bundle = namespace_bundle(VISION)
    paddlejobs = one(bundle, "ValidatingAdmissionPolicy", "workbench-vision-paddlejobs")
    variables = {v["name"]: v["expression"] for v in paddlejobs["spec"]["variables"]}
    for name in ("jobCpu", "jobMemory", "jobGpus"):
        assert "r.template.spec.initContainers.map(c, " in variables[name], name
    (gpus,) = _validations(paddlejobs, "gpus")
    assert "r.template.spec.initContainers.map(c, " in gpus["expression"]
    jobsets = one(bundle, "ValidatingAdmissionPolicy", "workbench-vision-jobsets")
    (gpus,) = _validations(jobsets, "gpus")
    assert "r.template.spec.template.spec.initContainers.map(c, " in gpus["expression"]
