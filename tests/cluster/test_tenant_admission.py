"""A hostile user of a tenant against the real API server: the tenant's admission policies and
RBAC, not the user's kernel, hold every request to the tenant's limits and to the user's own
things.

The scene (one tenant, provisioned by `namespace_bundle` as an operator would): Bob, a user of
the tenant, has a notebook server that the hub started through `TenantKubeSpawner`'s own code,
with the hub's real token (his own service account, the Secret with his hub token), and a
PaddleJob with an `--env` API key that his kernel's engine submitted with his own account's
token. Ada, another user of the tenant, attacks from her notebook: every row of the attack table
is one real request (or two, following what the first one shows) made with a real TokenRequest
token of her own service account. Each is refused with a message that names the rule that
refused it, and each row's legitimate twin (the same request without the attack, as a dry run)
is admitted, so the refusal is the attack's and not the request's. A few rows are what the
policies refuse whoever asks, tried as the cluster admin (who may create pods and JobSets, and
is not the hub). A second tenant, with a Kueue queue, shows that no job skips its queue. Run
with `pytest -s` to see the table.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

client = pytest.importorskip("kubernetes.client", reason="install the test extra (kubernetes)")
pytest.importorskip("cryptography", reason="install the test extra (cryptography)")

import k8s_plane  # noqa: E402  (tests/cluster is on sys.path)
from tenancy import (  # noqa: E402
    HUB_SERVICE_ACCOUNT,
    IMAGE,
    RESTRICTED,
    USER_LABEL,
    call,
    deprovision,
    make_tenant,
    notebook_user,
    paddlejob,
    provision,
    tenant_data,
    unique,
)
from tenancy import pod as restricted_pod  # noqa: E402

from hub_config.cluster_policy.identities import user_service_account  # noqa: E402
from hub_config.tenants import Tenants  # noqa: E402
from launcher_magic.core.jobdir import JobDir, JobHandle  # noqa: E402
from launcher_magic.core.spec import LaunchOptions, build_spec  # noqa: E402
from launcher_magic.engines import load_engine  # noqa: E402
from launcher_magic.engines.cluster import ClusterEngine  # noqa: E402
from launcher_magic.engines.cluster.paddlejob import build_paddlejob  # noqa: E402
from tests.hub_config.hub_env import fake_user, notebook_env, offline_kubeconfig  # noqa: E402
from workbench_contract.cluster import CLUSTERQUEUE, JOBSET, RUNTIME, TRAINJOB  # noqa: E402
from workbench_contract.environment import NotebookContext  # noqa: E402
from workbench_contract.job_network import job_network_policy  # noqa: E402
from workbench_contract.labels import (  # noqa: E402
    COMPONENT_JOB_WORKER,
    COMPONENT_NOTEBOOK,
    LABEL_COMPONENT,
    LABEL_JOB,
)

JOB_API = "paddlejob"  # the conftest's `tenant`: training-operator v1

JOBS = "/apis/kubeflow.org/v1/namespaces/{ns}/paddlejobs"
JOBSETS = f"/apis/{JOBSET.api_version}/namespaces/{{ns}}/{JOBSET.plural}"
TRAINJOBS = f"/apis/{TRAINJOB.api_version}/namespaces/{{ns}}/{TRAINJOB.plural}"
CORE = "/api/v1/namespaces/{ns}"
NETWORK_POLICIES = "/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"
DRY_RUN = [("dryRun", "All")]
HUB_TOKEN = "bobs-hub-token-7c1e5d"
API_KEY = "bobs-api-key-9a8b7c"
HOME = "/home/jovyan"
# Zero to JupyterHub's `singleuser.storage`: each user's claim at the notebook's home.
VOLUMES = [{"name": "volume-{username}",
            "persistentVolumeClaim": {"claimName": "claim-{username}"}}]
MOUNTS = [{"name": "volume-{username}", "mountPath": HOME}]


def _context(tenant, user: str) -> NotebookContext:
    """What the hub's own spawner tells `user`'s notebook (tests/hub_config/hub_env.py)."""
    return NotebookContext.from_env(notebook_env(tenant, user, volumes=VOLUMES,
                                                 volume_mounts=MOUNTS))


def _spawn_as_hub(plane, tenant, hub_namespace: str, user: str, token: str) -> str:
    """Start `user`'s notebook pod the way the hub does, through `TenantKubeSpawner`'s own
    code and with the hub's own token: its account, its RoleBinding, the Secret with the hub
    token, the pod. Returns the pod's name."""
    pytest.importorskip("kubespawner", reason="jupyterhub-kubespawner is not installed (hub "
                                              "extra)")
    import kubernetes_asyncio.config as async_config
    from kubernetes_asyncio.client import ApiClient, Configuration, CoreV1Api

    from hub_config.kube_spawner import TenantKubeSpawner

    hub_kubeconfig = plane.service_account_kubeconfig(hub_namespace, HUB_SERVICE_ACCOUNT)
    with tempfile.TemporaryDirectory(prefix="tenants-") as folder:
        tenants_file = Path(folder) / "tenants.yaml"
        tenants_file.write_text(yaml.safe_dump(Tenants((tenant,)).to_dict()))

        async def spawn() -> str:
            spawner = TenantKubeSpawner(_mock=True, user=fake_user(user, [tenant.groups[0]]),
                                        tenants_file=str(tenants_file), api_token=token,
                                        volumes=VOLUMES, volume_mounts=MOUNTS)
            spawner.user_options = {}
            await spawner.load_user_options()
            pod = await spawner.get_pod_manifest()
            configuration = Configuration()
            await async_config.load_kube_config(config_file=str(hub_kubeconfig),
                                                client_configuration=configuration)
            async with ApiClient(configuration) as api:
                spawner.api = CoreV1Api(api)
                assert await spawner._make_create_pod_request(pod, 30)
            return spawner.pod_name

        with offline_kubeconfig():
            return asyncio.run(spawn())


def _submit(plane, tenant, user: str, folder: Path, name: str, env: tuple[str, ...] = ()
            ) -> tuple[ClusterEngine, JobHandle]:
    """`user`'s kernel submits a PaddleJob with the cluster engine and their own account."""
    context = _context(tenant, user)
    kubeconfig = plane.service_account_kubeconfig(tenant.namespace,
                                                  user_service_account(tenant, user))
    engine = load_engine("paddlejob", context=context, kubeconfig=str(kubeconfig))
    spec = build_spec(LaunchOptions(nodes=2, name=name, env=env), "x = 1\n",
                      replace(context, jobs_dir=str(folder)))
    job = JobHandle(spec, JobDir.create(folder, spec, "x = 1\n"))
    engine.submit(job)
    return engine, job


@dataclass
class Scene:
    """Everything the attack table aims at."""

    tenant: Any
    ada: Any  # an ApiClient with a real token of Ada's own account
    admin: Any  # an ApiClient of the cluster admin (system:masters), who is not the hub
    bob_job: str
    bob_pod: str
    bob_env_secret: str
    ada_manifest: Callable[[], dict[str, Any]]  # a fresh copy of Ada's legitimate PaddleJob
    ada_job: str  # a job of Ada's own (her legitimate twin of "stop a colleague's job")

    def path(self, template: str) -> str:
        return template.format(ns=self.tenant.namespace)


@pytest.fixture(scope="module")
def scene(control_plane, tmp_path_factory) -> Iterator[Scene]:
    core = client.CoreV1Api(control_plane.api_client())
    hub_namespace = unique("hub")
    core.create_namespace({"metadata": {"name": hub_namespace}})
    core.create_namespaced_service_account(hub_namespace,
                                           {"metadata": {"name": HUB_SERVICE_ACCOUNT}})
    tenant = make_tenant("atk")
    try:
        provision(control_plane, tenant, hub_namespace)
        bob_pod = _spawn_as_hub(control_plane, tenant, hub_namespace, "bob", HUB_TOKEN)
        notebook_user(control_plane, tenant, "bob")  # made by the hub; waits for RBAC
        _, bob = _submit(control_plane, tenant, "bob", tmp_path_factory.mktemp("bob"), "bobs",
                         env=(f"API_KEY={API_KEY}",))
        ada = notebook_user(control_plane, tenant, "ada")
        _, own = _submit(control_plane, tenant, "ada", tmp_path_factory.mktemp("ada"), "own")
        context = _context(tenant, "ada")
        spec = build_spec(LaunchOptions(nodes=2, name="ada"), "x = 1\n", context)
        settings = load_engine("paddlejob", context=context).settings(spec)
        manifest = build_paddlejob(spec, JobDir(Path(HOME) / "jobs" / spec.job_id), settings)
        yield Scene(tenant=tenant, ada=ada, admin=control_plane.api_client(),
                    bob_job=bob.job_id, bob_pod=bob_pod,
                    bob_env_secret=f"bob.{bob.job_id}-env",
                    ada_manifest=lambda: copy.deepcopy(manifest), ada_job=own.job_id)
    finally:
        deprovision(control_plane, tenant)
        core.delete_namespace(hub_namespace)


# -- the attack table ------------------------------------------------------------------------

def _worker(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["paddleReplicaSpecs"]["Worker"]["template"]


def _job_attack(mutate: Callable[[dict[str, Any], Scene], None]):
    """An attack that submits Ada's legitimate PaddleJob changed by `mutate`; its twin submits
    the same job unchanged (as a dry run)."""

    def attack(s: Scene) -> tuple[int, str]:
        manifest = s.ada_manifest()
        mutate(manifest, s)
        return call(s.ada, "POST", s.path(JOBS), manifest)

    def twin(s: Scene) -> tuple[int, str]:
        return call(s.ada, "POST", s.path(JOBS), s.ada_manifest(), DRY_RUN)

    return attack, twin


def _set(path: str, value: Any) -> Callable[[dict[str, Any], Scene], None]:
    """A mutation that sets `path` (dots; `pod.` is the worker's pod spec) to `value`."""

    def mutate(manifest: dict[str, Any], s: Scene) -> None:
        keys = path.split(".")
        target = _worker(manifest)["spec"] if keys[0] == "pod" else manifest
        keys = keys[1:] if keys[0] == "pod" else keys
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = value(s) if callable(value) else value

    return mutate


def _container(field: str, value: Any) -> Callable[[dict[str, Any], Scene], None]:
    def mutate(manifest: dict[str, Any], s: Scene) -> None:
        (container,) = _worker(manifest)["spec"]["containers"]
        container[field] = value(s, container) if callable(value) else value

    return mutate


def _no_deadline(manifest: dict[str, Any], s: Scene) -> None:
    del manifest["spec"]["runPolicy"]["activeDeadlineSeconds"]


def _no_ttl(manifest: dict[str, Any], s: Scene) -> None:
    del manifest["spec"]["runPolicy"]["ttlSecondsAfterFinished"]


def _init_container(resources: dict[str, Any]) -> Callable[[dict[str, Any], Scene], None]:
    """A mutation that gives the worker an init container (the tenant's image) asking for
    `resources`: it runs on the node before the worker does."""

    def mutate(manifest: dict[str, Any], s: Scene) -> None:
        spec = _worker(manifest)["spec"]
        (main,) = spec["containers"]
        spec["initContainers"] = [{"name": "init", "image": main["image"], "command": ["true"],
                                   "securityContext": main["securityContext"],
                                   "resources": resources}]

    return mutate


def _claims_notebook(manifest: dict[str, Any], s: Scene) -> None:
    _worker(manifest)["metadata"]["labels"][LABEL_COMPONENT] = COMPONENT_NOTEBOOK


def _someone_elses_label(manifest: dict[str, Any], s: Scene) -> None:
    for meta in (manifest["metadata"], _worker(manifest)["metadata"]):
        meta["labels"][USER_LABEL] = "bob"


def _read_colleagues_hub_token(s: Scene, container: dict[str, Any]) -> list[dict[str, Any]]:
    return [*container["env"], {"name": "STOLEN", "valueFrom": {"secretKeyRef": {
        "name": f"{s.bob_pod}-token", "key": "token"}}}]


def _mount_colleagues_env(manifest: dict[str, Any], s: Scene) -> None:
    spec = _worker(manifest)["spec"]
    spec["volumes"].append({"name": "loot", "secret": {"secretName": s.bob_env_secret}})


def _joins_colleagues_job(manifest: dict[str, Any], s: Scene) -> None:
    _worker(manifest)["metadata"]["labels"][LABEL_JOB] = s.bob_job


def _job_policy(s: Scene, job: str, user: str = "ada") -> dict[str, Any]:
    """The NetworkPolicy the engine makes for `user`'s job `job` (the engine's own builder)."""
    return job_network_policy(job, s.tenant.namespace, {LABEL_JOB: job, USER_LABEL: user})


def _policy_letting_me_in(s: Scene) -> dict[str, Any]:
    """A policy of Ada's that lets her job's pods into Bob's job (and his out to hers)."""
    policy = _job_policy(s, "ada-x")
    bobs = {LABEL_JOB: s.bob_job, USER_LABEL: "bob"}
    policy["spec"]["podSelector"] = {"matchLabels": bobs}
    policy["spec"]["egress"] = [{"to": [{"podSelector": {"matchLabels": bobs}}]}]
    return policy


def _policy_letting_all_in(s: Scene) -> dict[str, Any]:
    policy = _job_policy(s, "ada-x")
    policy["spec"]["ingress"] = [{}]  # from anywhere, on every port
    return policy


def _policy_path(name: Callable[[Scene], str]) -> Callable[[Scene], str]:
    return lambda s: s.path(NETWORK_POLICIES + "/") + name(s)


def _secret_path(name: Callable[[Scene], str]) -> Callable[[Scene], str]:
    return lambda s: s.path(CORE + "/secrets/") + name(s)


def _request(method: str, path: Callable[[Scene], str], body: Any = None,
             twin: tuple[str, Callable[[Scene], str], Any] | None = None):
    """An attack that is one request; its twin (if any) another, as a dry run."""

    def attack(s: Scene) -> tuple[int, str]:
        return call(s.ada, method, path(s), body(s) if callable(body) else body)

    def legitimate(s: Scene) -> tuple[int, str]:
        method2, path2, body2 = twin  # type: ignore[misc]
        return call(s.ada, method2, path2(s), body2(s) if callable(body2) else body2, DRY_RUN)

    return attack, (legitimate if twin else None)


def _as_admin(path: str, body: Callable[[bool], dict[str, Any]]):
    """An attack the cluster admin makes, creating `body(True)` at `path`; its twin creates
    `body(False)` (as a dry run)."""

    def attack(s: Scene) -> tuple[int, str]:
        return call(s.admin, "POST", s.path(path), body(True))

    def twin(s: Scene) -> tuple[int, str]:
        return call(s.admin, "POST", s.path(path), body(False), DRY_RUN)

    return attack, twin


def _pod_posing_as_notebook(posing: bool) -> dict[str, Any]:
    """A pod labelled as a notebook (as a job worker, for the twin); kept Pending."""
    body = restricted_pod("posing", unschedulable=True)
    body["metadata"]["labels"] = {
        LABEL_COMPONENT: COMPONENT_NOTEBOOK if posing else COMPONENT_JOB_WORKER}
    return body


def _jobset_with_init_gpus(gpus: bool) -> dict[str, Any]:
    """A JobSet as the Trainer writes one from a TrainJob, whose init container asks for 16
    GPUs (none, for the twin)."""
    main = {"name": "node", "image": IMAGE, "securityContext": RESTRICTED}
    init = {**main, "name": "init",
            **({"resources": {"limits": {"nvidia.com/gpu": "16"}}} if gpus else {})}
    pod_spec = {"restartPolicy": "Never", "automountServiceAccountToken": False,
                "initContainers": [init], "containers": [main]}
    return {"apiVersion": JOBSET.api_version, "kind": JOBSET.kind,
            "metadata": {"name": "init-gpus"},
            "spec": {"replicatedJobs": [{"name": "node", "replicas": 1, "template": {
                "spec": {"template": {"spec": pod_spec}}}}]}}


def _own_secret(name: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {USER_LABEL: "ada"}},
            "stringData": {"K": "v"}, **extra}


def _follow_the_pod_spec(s: Scene) -> tuple[int, str]:
    """Read Bob's notebook pod (allowed: the engine follows pods), look for his hub token in it,
    then ask for what its environment points to."""
    status, _ = call(s.ada, "GET", s.path(CORE + "/pods/") + s.bob_pod)
    assert status == 200
    pod = client.CoreV1Api(s.ada).read_namespaced_pod(s.bob_pod, s.tenant.namespace)
    text = json.dumps(s.ada.sanitize_for_serialization(pod))
    if HUB_TOKEN in text:
        return 200, "the hub token is in the pod spec"
    (env,) = [e for e in pod.spec.containers[0].env if e.name == "JUPYTERHUB_API_TOKEN"]
    ref = env.value_from.secret_key_ref
    return call(s.ada, "GET", s.path(CORE + "/secrets/") + ref.name)


def _follow_the_paddlejob(s: Scene) -> tuple[int, str]:
    """Read Bob's PaddleJob (allowed: no owner filter on reads), look for his API key in it,
    then ask for the Secret its environment points to."""
    status, _ = call(s.ada, "GET", s.path(JOBS) + "/" + s.bob_job)
    assert status == 200
    job = client.CustomObjectsApi(s.ada).get_namespaced_custom_object(
        "kubeflow.org", "v1", s.tenant.namespace, "paddlejobs", s.bob_job)
    if API_KEY in json.dumps(job):
        return 200, "the API key is in the PaddleJob"
    (env,) = [e for e in _worker(job)["spec"]["containers"][0]["env"] if e["name"] == "API_KEY"]
    secret = env["valueFrom"]["secretKeyRef"]["name"]
    return call(s.ada, "GET", s.path(CORE + "/secrets/") + secret)


@dataclass(frozen=True)
class Row:
    id: str
    what: str
    attack: tuple[Callable[[Scene], tuple[int, str]], Callable[[Scene], tuple[int, str]] | None]
    status: int
    rule: str  # what the API server's message must say


FOREIGN = "docker.io/library/python:3.11"
ROWS = [
    Row("token-from-pod-spec", "read a colleague's hub token from his notebook pod",
        (_follow_the_pod_spec, None), 403, 'cannot get resource "secrets"'),
    Row("env-from-paddlejob", "read a colleague's --env API key from his PaddleJob",
        (_follow_the_paddlejob, None), 403, 'cannot get resource "secrets"'),
    Row("fifty-nodes", "a PaddleJob with 50 nodes",
        _job_attack(_set("spec.paddleReplicaSpecs.Worker.replicas", 50)), 422,
        "workbench rule nodes: the job asks for 50 nodes"),
    Row("elastic", "elastic scaling up to 50 nodes",
        _job_attack(_set("spec.elasticPolicy", {"minReplicas": 1, "maxReplicas": 50})), 422,
        "workbench rule nodes: the job asks for elastic scaling"),
    Row("foreign-image", "an image from another registry",
        _job_attack(_container("image", FOREIGN)), 422,
        f"workbench rule images: {FOREIGN} is not one of tenant"),
    Row("image-by-tag", "an allowed repository, by tag instead of digest",
        _job_attack(_container("image", lambda s, c: c["image"].split("@")[0] + ":latest")),
        422, "workbench rule images:"),
    Row("no-deadline", "no deadline", _job_attack(_no_deadline), 422,
        "workbench rule deadline: spec.runPolicy.activeDeadlineSeconds must be set"),
    Row("deadline-too-long", "a deadline past the tenant's maximum runtime",
        _job_attack(_set("spec.runPolicy.activeDeadlineSeconds", 10 * 3600)), 422,
        "workbench rule deadline:"),
    Row("gpus-per-node", "16 GPUs on one node",
        _job_attack(_container("resources", {"limits": {"nvidia.com/gpu": "16"}})), 422,
        "workbench rule gpus: a node of the job asks for 16 GPUs"),
    Row("cpu-over-quota", "2 nodes x 20 CPUs in a 32-CPU tenant",
        _job_attack(_container("resources", {"limits": {"cpu": "20"}})), 422,
        "workbench rule resources: the whole job needs cpu=40000m"),
    Row("gpus-in-init-container", "16 GPUs in a worker's init container",
        _job_attack(_init_container({"limits": {"nvidia.com/gpu": "16"}})), 422,
        "workbench rule gpus: a node of the job asks for 16 GPUs"),
    Row("cpu-in-init-container", "CPUs over the quota through an init container",
        _job_attack(_init_container({"limits": {"cpu": "20"}})), 422,
        "workbench rule resources: the whole job needs cpu=44000m"),
    Row("gpus-in-jobset-init-container", "a JobSet (what a TrainJob becomes) whose init "
        "container asks for 16 GPUs, made by the admin",
        _as_admin(JOBSETS, _jobset_with_init_gpus), 422,
        "workbench rule gpus: a node of the job asks for 16 GPUs"),
    Row("clean-pod-policy-none", "workers that outlive a finished job (the master exits at "
        "once: the job succeeds, no deadline applies, no pod is deleted)",
        _job_attack(_set("spec.runPolicy.cleanPodPolicy", "None")), 422,
        "workbench rule cleanup: spec.runPolicy.cleanPodPolicy must be Running or All"),
    Row("no-ttl", "a finished job kept forever",
        _job_attack(_no_ttl), 422,
        "workbench rule cleanup: spec.runPolicy.ttlSecondsAfterFinished must be set"),
    Row("job-pod-claims-notebook", "job pods labelled as a notebook, to pass the notebooks' "
        "NetworkPolicies", _job_attack(_claims_notebook), 422,
        f"workbench rule component: the label {LABEL_COMPONENT} of a job's pods"),
    Row("notebook-pod-not-by-the-hub", "a pod labelled as a notebook, made by the cluster "
        "admin, who is not the hub", _as_admin(CORE + "/pods", _pod_posing_as_notebook), 403,
        "workbench rule notebook: only the hub (system:serviceaccount:"),
    Row("priority-class", "a priority class to preempt others",
        _job_attack(_set("pod.priorityClassName", "system-cluster-critical")), 422,
        "workbench rule priority:"),
    Row("api-token-in-job-pods", "job pods that mount an API token",
        _job_attack(_set("pod.automountServiceAccountToken", True)), 422,
        "workbench rule token:"),
    Row("colleagues-account", "job pods that run as a colleague's account",
        _job_attack(_set("pod.serviceAccountName", "notebook-bob")), 422,
        "workbench rule token:"),
    Row("someone-elses-claim", "mount a colleague's claim",
        _job_attack(_set("pod.volumes", [{"name": "home", "persistentVolumeClaim": {
            "claimName": "claim-bob"}}])), 403,
        "workbench rule claim: a job may mount only your own claim claim-ada; not claim-bob"),
    Row("someone-elses-owner-label", "a job labelled as a colleague's",
        _job_attack(_someone_elses_label), 403, "workbench rule owner: the label"),
    Row("colleagues-hub-token-in-job", "a job whose env reads a colleague's hub token Secret",
        _job_attack(_container("env", _read_colleagues_hub_token)), 403,
        "workbench rule secrets: a job may read only your own Secrets (named ada.<name>)"),
    Row("colleagues-env-in-job", "a job that mounts a colleague's --env Secret",
        _job_attack(_mount_colleagues_env), 403, "workbench rule secrets:"),
    Row("configmap-volume", "a job that mounts a ConfigMap",
        _job_attack(_set("pod.volumes", [{"name": "cm", "configMap": {"name": "x"}}])), 403,
        "workbench rule volumes:"),
    Row("delete-colleagues-job", "stop a colleague's job",
        _request("DELETE", lambda s: s.path(JOBS) + "/" + s.bob_job,
                 twin=("DELETE", lambda s: s.path(JOBS) + "/" + s.ada_job, None)), 403,
        "workbench rule owner: PaddleJob"),
    Row("delete-colleagues-token-secret", "delete a colleague's hub token Secret",
        _request("DELETE", _secret_path(lambda s: f"{s.bob_pod}-token")), 403,
        "workbench rule secrets: Secret jupyter-bob-token is not yours"),
    Row("patch-colleagues-env-secret", "patch a colleague's --env Secret (a patch answers "
        "with its contents)",
        _request("PATCH", _secret_path(lambda s: s.bob_env_secret), {"metadata": {}}), 403,
        "workbench rule secrets: Secret bob."),
    Row("secret-in-colleagues-name", "a Secret named as a colleague's",
        _request("POST", lambda s: s.path(CORE + "/secrets"), _own_secret("bob.x-env"),
                 twin=("POST", lambda s: s.path(CORE + "/secrets"), _own_secret("ada.x-env"))),
        403, "workbench rule secrets: your Secrets must be named ada.<name>, not bob.x-env"),
    Row("account-token-secret", "a Secret the API server fills with a colleague's token",
        _request("POST", lambda s: s.path(CORE + "/secrets"), _own_secret(
            "ada.token", type="kubernetes.io/service-account-token",
            metadata={"name": "ada.token", "labels": {USER_LABEL: "ada"}, "annotations": {
                "kubernetes.io/service-account.name": "notebook-bob"}})),
        403, "workbench rule secrets: your Secrets must be of type Opaque"),
    Row("pod-joins-colleagues-job", "job pods labelled as a colleague's job, to pass its "
        "NetworkPolicy", _job_attack(_joins_colleagues_job), 422,
        f"workbench rule job: the label {LABEL_JOB} of the pods of"),
    Row("network-policy-into-colleagues-job", "a NetworkPolicy that lets her pods into a "
        "colleague's job (its unauthenticated rendezvous)",
        _request("POST", lambda s: s.path(NETWORK_POLICIES), _policy_letting_me_in,
                 twin=("POST", lambda s: s.path(NETWORK_POLICIES),
                       lambda s: _job_policy(s, "ada-x"))),
        403, "workbench rule network: your NetworkPolicies may only be a job's own"),
    Row("network-policy-for-colleagues-job", "a job's own NetworkPolicy, made for a "
        "colleague's job", _request("POST", lambda s: s.path(NETWORK_POLICIES),
                                    lambda s: _job_policy(s, s.bob_job, user="bob")),
        403, "workbench rule network: your NetworkPolicies may only be a job's own"),
    Row("network-policy-open-to-all", "a job's NetworkPolicy that lets anyone in",
        _request("POST", lambda s: s.path(NETWORK_POLICIES), _policy_letting_all_in), 403,
        "workbench rule network: your NetworkPolicies may only be a job's own"),
    Row("widen-own-network-policy", "her own job's NetworkPolicy, patched to let anyone in",
        _request("PATCH", _policy_path(lambda s: s.ada_job), {"spec": {"ingress": [{}]}},
                 twin=("PATCH", _policy_path(lambda s: s.ada_job), {"metadata": {}})),
        403, "workbench rule network: you may hand your job's NetworkPolicy to its job"),
    Row("delete-colleagues-network-policy", "delete a colleague's job's NetworkPolicy (his "
        "nodes no longer reach each other)",
        _request("DELETE", _policy_path(lambda s: s.bob_job),
                 twin=("DELETE", _policy_path(lambda s: s.ada_job), None)), 403,
        "workbench rule network: you may delete only your own jobs' NetworkPolicies"),
    Row("pod-directly", "a pod of her own making, past the operator",
        _request("POST", lambda s: s.path(CORE + "/pods"), {
            "metadata": {"name": "direct"}, "spec": {"containers": [
                {"name": "x", "image": FOREIGN}]}}), 403, 'cannot create resource "pods"'),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_attack_table(scene, row):
    attack, twin = row.attack
    status, message = attack(scene)
    print(f"\n{row.id:32} {status}  {message}")
    assert status == row.status, f"{row.what}: {status} {message}"
    assert row.rule in message, f"{row.what}: {message}"
    if twin is not None:  # the same request, without the attack, is admitted
        status, message = twin(scene)
        assert 200 <= status <= 299, f"the legitimate twin of {row.id!r}: {status} {message}"


# -- what the legitimate paths leave behind --------------------------------------------------

def test_env_values_live_in_a_secret_that_goes_with_the_job(control_plane, scene, tmp_path):
    """Ada's kernel submits a job with an API key through the engine, as a user would: the
    PaddleJob holds no value of it, her workers read it from her Secret, the Secret and the
    job's own NetworkPolicy belong to the job, the workers have the tenant's default limits,
    and stopping the job takes the Secret and the policy with it."""
    api = control_plane.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    engine, job = _submit(control_plane, scene.tenant, "ada", tmp_path, "keyed",
                          env=("API_KEY=adas-key-5e4d",))
    ns, name = scene.tenant.namespace, job.job_id
    paddlejob = custom.get_namespaced_custom_object("kubeflow.org", "v1", ns, "paddlejobs", name)
    assert "adas-key-5e4d" not in json.dumps(paddlejob)
    secret = core.read_namespaced_secret(f"ada.{name}-env", ns)
    assert secret.metadata.labels[USER_LABEL] == "ada"
    (owner,) = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("PaddleJob", name,
                                                   paddlejob["metadata"]["uid"])
    net = client.NetworkingV1Api(api)
    policy = net.read_namespaced_network_policy(name, ns)
    assert policy.spec.pod_selector.match_labels == {LABEL_JOB: name, USER_LABEL: "ada"}
    (owner,) = policy.metadata.owner_references
    assert (owner.kind, owner.uid) == ("PaddleJob", paddlejob["metadata"]["uid"])

    def workers():
        pods = core.list_namespaced_pod(
            ns, label_selector=f"training.kubeflow.org/job-name={name}")
        return pods.items if len(pods.items) == 2 else None

    first = scene.tenant.profiles[0]
    for pod in k8s_plane.wait_for(workers, 90, "the operator's worker pods"):
        (container,) = pod.spec.containers
        (key,) = [e for e in container.env if e.name == "API_KEY"]
        assert key.value is None and key.value_from.secret_key_ref.name == f"ada.{name}-env"
        # No --cpu/--memory: the tenant's defaults (its LimitRange), never unlimited.
        assert container.resources.limits["cpu"] == first.cpu.limit
        assert container.resources.limits["memory"] == first.memory.limit
        assert container.resources.limits["ephemeral-storage"] == "10Gi"

    engine.stop(job)
    k8s_plane.wait_for(lambda: f"ada.{name}-env" not in {
        s.metadata.name for s in core.list_namespaced_secret(ns).items}, 60,
        "the garbage collector to delete the job's Secret")
    assert name not in {p.metadata.name for p in net.list_namespaced_network_policy(ns).items}


def test_the_hub_token_reaches_the_notebook_only_through_its_secret(control_plane, scene):
    """Bob's notebook pod, as the hub's spawner made it: his own account, the token in a
    Secret that the pod owns (so it goes with the pod), the token in no pod field."""
    core = client.CoreV1Api(control_plane.api_client())
    ns = scene.tenant.namespace
    pod = core.read_namespaced_pod(scene.bob_pod, ns)
    assert pod.spec.service_account_name == user_service_account(scene.tenant, "bob")
    assert HUB_TOKEN not in json.dumps(core.api_client.sanitize_for_serialization(pod))
    refs = {e.name: e.value_from.secret_key_ref.name for e in pod.spec.containers[0].env
            if e.value_from and e.value_from.secret_key_ref}
    assert refs == {"JUPYTERHUB_API_TOKEN": f"{scene.bob_pod}-token",
                    "JPY_API_TOKEN": f"{scene.bob_pod}-token"}
    secret = core.read_namespaced_secret(f"{scene.bob_pod}-token", ns)
    assert secret.data == {"token": base64.b64encode(HUB_TOKEN.encode()).decode()}
    (owner,) = secret.metadata.owner_references
    assert (owner.kind, owner.name, owner.uid) == ("Pod", scene.bob_pod, pod.metadata.uid)


def test_a_kernel_that_lifts_its_own_limits_is_still_refused(control_plane, tenant,
                                                            notebook_kernel):
    """The tenant's limits reach the kernel through its environment, which the user controls:
    raising them there gets past the magic's own checks, not past the API server. The magic
    says which rule refused, and leaves nothing behind."""
    kernel = notebook_kernel(tenant)
    lifted = kernel.run("import os\n"
                        "os.environ['PADDLE_WORKBENCH_MAX_NODES'] = '50'\n"
                        "os.environ['PADDLE_WORKBENCH_ALLOWED_IMAGES'] = ''\n"
                        "os.environ['PADDLE_WORKBENCH_MAX_RUNTIME_SECONDS'] = '9999999'\n")
    assert lifted.error is None, lifted.text
    attempts = {
        "--nodes 6": "workbench rule nodes: the job asks for 6 nodes; tenant vision allows at "
                     "most 4 per job",
        "--image docker.io/library/python:3.11": "workbench rule images: "
                                                 "docker.io/library/python:3.11 is not one",
        "--timeout 30d": "workbench rule deadline:",
    }
    for options, rule in attempts.items():
        result = kernel.run(f"%%paddle_launch {options} --name greedy --env API_KEY=k\nx = 1\n")
        assert result.error and "UsageError" in result.error, result.text
        assert rule in result.error, result.error
    # Refused before anything ran; what was made on the way (the --env Secret) is taken back.
    api = control_plane.api_client()
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    assert custom.list_namespaced_custom_object("kubeflow.org", "v1", tenant.namespace,
                                                "paddlejobs")["items"] == []
    assert [s.metadata.name for s in core.list_namespaced_secret(tenant.namespace).items
            if s.metadata.name.startswith("ada.")] == []
    assert list((kernel.home / "jobs").iterdir()) == []


def test_the_shared_notebook_account_of_earlier_versions_is_refused(control_plane, scene):
    """A tenant provisioned by an earlier version had one notebook account for all its users,
    bound to the notebook Role; until `workbench apply --prune` removes that binding, its token
    still passes RBAC, so the policy refuses it: it would be held to no owner."""
    api = control_plane.api_client()
    ns = scene.tenant.namespace
    client.CoreV1Api(api).create_namespaced_service_account(ns, {"metadata": {
        "name": scene.tenant.service_account}})
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding(ns, {
        "metadata": {"name": "workbench-notebook"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "workbench-notebook"},
        "subjects": [{"kind": "ServiceAccount", "name": scene.tenant.service_account,
                      "namespace": ns}]})
    shared = control_plane.service_account_client(ns, scene.tenant.service_account)
    jobs = scene.path(JOBS)
    k8s_plane.wait_for(lambda: call(shared, "GET", jobs)[0] == 200, 30, "the RoleBinding")
    for method, path, body in (("POST", jobs, scene.ada_manifest()),
                               ("DELETE", f"{jobs}/{scene.bob_job}", None)):
        status, message = call(shared, method, path, body, DRY_RUN)
        assert status == 403, message
        assert (f"workbench rule owner: system:serviceaccount:{ns}:"
                f"{scene.tenant.service_account} is not a user's own notebook account") in message


# -- a tenant with a queue -------------------------------------------------------------------

@pytest.fixture(scope="module")
def queued(control_plane) -> Iterator[Any]:
    """A tenant with a Kueue queue (so its job API is a queued kind, trainjob), provisioned;
    its namespace, policies and ClusterQueue are deleted afterwards."""
    data = tenant_data(unique("que"))
    data["queue"] = {"cohort": unique("c")}
    (tenant,) = Tenants.from_dict({"tenants": [data]}, strict=True).tenants
    try:
        provision(control_plane, tenant, "jupyterhub")
        yield tenant
    finally:
        deprovision(control_plane, tenant)
        client.CustomObjectsApi(control_plane.api_client()).delete_cluster_custom_object(
            CLUSTERQUEUE.group, CLUSTERQUEUE.version, CLUSTERQUEUE.plural,
            f"workbench-{tenant.name}")


def test_a_queued_tenant_runs_no_job_past_its_queue(control_plane, scene, queued):
    """Kueue admits only queued kinds (TrainJobs), and a queued tenant's GPU quota is what it
    may borrow too: a PaddleJob there would hold GPUs the queue believes are lent. Ada's own
    account may not create one (RBAC: her Role writes only queued kinds, and still reads the
    others), and whoever may (the cluster admin) is refused by the `queue` rule; the same
    PaddleJob is admitted in a tenant without a queue, so the refusal is the queue's."""
    ada = notebook_user(control_plane, queued, "ada")  # waits until she may read PaddleJobs
    jobs = JOBS.format(ns=queued.namespace)
    job = paddlejob("skip-the-queue", gpus=8, owner="ada")
    status, message = call(ada, "POST", jobs, job)
    print(f"\nada's PaddleJob in a queued tenant: {status}  {message}")
    assert status == 403 and 'cannot create resource "paddlejobs"' in message, message
    assert call(ada, "DELETE", f"{jobs}/skip-the-queue")[0] == 403
    assert call(ada, "GET", jobs)[0] == 200
    status, message = call(scene.admin, "POST", jobs, job)
    print(f"the admin's PaddleJob in a queued tenant: {status}  {message}")
    assert status == 403, message
    assert (f"workbench rule queue: tenant {queued.name}'s jobs wait in its queue workbench"
            in message and "job_api trainjob" in message), message
    status, message = call(scene.admin, "POST", scene.path(JOBS), job, DRY_RUN)
    assert 200 <= status <= 299, f"the same PaddleJob in a tenant without a queue: {message}"


def test_a_trainjobs_runtime_patches_carry_no_resources(scene):
    """A TrainJob's runtime patches cannot ask for GPUs in an init container (or any other):
    Trainer v2.3.0's schema gives their containers a name, env, securityContext and
    volumeMounts only, so the API server refuses `resources` there (strict field validation)
    or drops them. What the Trainer makes of runtime and patches, the JobSet, is held to the
    `gpus` rule, init containers counted (row gpus-in-jobset-init-container)."""
    init = {"name": "init", "resources": {"limits": {"nvidia.com/gpu": "16"}}}
    patch = {"manager": "ada", "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [
        {"name": "node", "template": {"spec": {"template": {"spec": {
            "initContainers": [init]}}}}}]}}}}
    trainjob = {"apiVersion": TRAINJOB.api_version, "kind": TRAINJOB.kind,
                "metadata": {"name": "patched", "labels": {USER_LABEL: "ada"}},
                "spec": {"runtimeRef": {"name": RUNTIME}, "runtimePatches": [patch]}}
    status, message = call(scene.ada, "POST", scene.path(TRAINJOBS), trainjob,
                           DRY_RUN + [("fieldValidation", "Strict")])
    assert status in (400, 422), message
    assert "unknown field" in message and "resources" in message, message
