"""KubeSpawner for tenants: the notebook pod goes to the tenant's namespace, with the tenant's
profiles and images only, the Pod Security `restricted` security context, and the environment the
magic reads (`hub_config.spawn_policy.notebook_context`: tenant, limits, images, uid/gid, node
selector, node-loss toleration, and the claim of the user's storage, which job pods mount too).

Each user's notebook runs as their own service account (`<service_account>-<user>`, made with
its RoleBinding by the hub before the pod, `hub_config.cluster_policy.identities`), so the
API server tells users apart and its admission policies hold each to their own jobs. No secret
sits in the pod spec, which colleagues may read: the hub token reaches the server through a
Secret of its own (`<pod>-token`, owned by the pod, so it goes with it), referenced by
`secretKeyRef`.

A server whose machine was lost (the pod's DisruptionTarget condition: evicted from a node that
stopped answering, after the tenant's node-loss toleration) is reported stopped by `poll`, though
its pod stays Terminating until the machine is fenced: the hub then revokes the server's token and
drops its route, and the user can start it again. That start removes the old pod object at once
(KubeSpawner replaces a pod of the same name with a zero-grace delete), so the new server comes up
on a machine that answers, with the same claim. Unlike a job's rank, which waits for the fencing
so that no rank ever runs twice, a notebook server may outlive its lost machine there unreachable:
no request reaches it (no route, no token the hub accepts), and its kubelet kills it when it
returns and finds the pod gone. A cell still running in it may write to the home until then.

The pure builders (`build_profile_list`, `tenant_overrides`, `probes`, `shared_storage`,
`kube_literal`, `hub_token_from_secret`, `token_secret`, and the security contexts of
`workbench_contract.pod_security`) make plain data and are tested as data; `TenantKubeSpawner`
only wires them into KubeSpawner. The hub needs no cluster-wide rights: with
`enable_user_namespaces` off, KubeSpawner keeps one pod watch per namespace, and each tenant
namespace carries a RoleBinding for the hub (provisioned by an operator beforehand).
"""

from __future__ import annotations

import asyncio
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from kubespawner import KubeSpawner
from tornado import web
from traitlets import Integer, Unicode, default, validate

from hub_config.cluster_policy.identities import user_identity, user_service_account
from hub_config.spawn_policy import Choice, SpawnRefused, choose, notebook_context, profile_slug
from hub_config.tenant_spawner import TenantSpawnerMixin, http_error
from hub_config.tenants import Tenant, parse_quantity
from workbench_contract import labels
from workbench_contract.environment import NotebookContext, Storage
from workbench_contract.placement import lost_machine_condition, node_loss_tolerations
from workbench_contract.pod_security import restricted_security_contexts
from workbench_contract.resources import GPU_RESOURCE

# Where Jupyter's docker-stacks images (and Zero to JupyterHub's storage settings) put the home.
DEFAULT_HOME = "/home/jovyan"
# The form posts `profile-option-<slug>--image` (and `...--image--unlisted-choice`); we accept
# only the image option, and only values from the allowlist.
_FORM_OPTION = "image"
# JupyterHub puts the server's hub token in these (the second for old single-user servers).
HUB_TOKEN_ENV = ("JUPYTERHUB_API_TOKEN", "JPY_API_TOKEN")
TOKEN_KEY = "token"


def build_profile_list(tenants: Iterable[Tenant]) -> list[dict[str, Any]]:
    """KubeSpawner `profile_list` entries for the given tenants (the user's), in order.

    Each entry carries the tenant's image allowlist as its only option; free-text images
    (`unlisted_choice`) are off, so the form cannot ask for anything else.
    """
    entries = []
    for tenant in tenants:
        for profile in tenant.profiles:
            entries.append({
                "display_name": f"{tenant.name}: {profile.name}",
                "slug": profile_slug(tenant, profile),
                "description": profile.description,
                "profile_options": {
                    _FORM_OPTION: {
                        "display_name": "Image",
                        "unlisted_choice": {"enabled": False},
                        "choices": {
                            image.image: {"display_name": image.name}
                            for image in tenant.images
                        },
                    }
                },
            })
    return entries


# How long a started container's server may take to answer at all: the chart's start timeout
# (Zero to JupyterHub's `singleuser.startTimeout`, 300 s by default).
STARTUP_SECONDS = 300


def probes(base_path: str, port: int) -> dict[str, Any]:
    """Startup, readiness and liveness probes on the single-user server's unauthenticated `api`
    route.

    KubeSpawner reports a server started only once its pod is Ready. The startup probe asks every
    second until the server first answers; the kubelet then runs the readiness probe at once, so
    the pod is Ready about a second after the server is, rather than at the readiness probe's next
    10-second tick. Liveness and readiness start only after that, so a slow start is never
    restarted, and liveness is lenient: a server busy with a large notebook save must not be
    restarted either."""
    check = {"httpGet": {"path": f"{base_path.rstrip('/')}/api", "port": port}}
    return {
        "startupProbe": {**check, "periodSeconds": 1, "timeoutSeconds": 1,
                         "failureThreshold": STARTUP_SECONDS},
        "readinessProbe": {**check, "periodSeconds": 10, "timeoutSeconds": 5,
                           "failureThreshold": 3},
        "livenessProbe": {**check, "periodSeconds": 30, "timeoutSeconds": 10,
                          "failureThreshold": 5},
    }


def tenant_overrides(choice: Choice, user: str) -> dict[str, Any]:
    """KubeSpawner attribute values for a permitted choice of `user` (KubeSpawner's
    `{username}`): where, as whom, how big, which image, and how long the pod stays on a lost
    node (the tenant's `node_loss_toleration`, for the node-loss taints the profile does not
    tolerate itself)."""
    tenant, profile = choice.tenant, choice.profile
    gpus = {GPU_RESOURCE: str(profile.gpus)} if profile.gpus else {}
    return {
        "namespace": tenant.namespace,
        # The user's own account: the magic's cluster engine creates jobs with its
        # token, and the API server's policies know whose jobs they are by it.
        "service_account": user_service_account(tenant, user),
        "automount_service_account_token": True,
        "image": choice.image.image,
        "cpu_guarantee": profile.cpu.guarantee_value,
        "cpu_limit": profile.cpu.limit_value,
        "mem_guarantee": int(parse_quantity(profile.memory.guarantee)),
        "mem_limit": int(parse_quantity(profile.memory.limit)),
        "extra_resource_guarantees": dict(gpus),
        "extra_resource_limits": dict(gpus),
        "node_selector": dict(profile.node_selector),
        "tolerations": [dict(t) for t in profile.tolerations] + node_loss_tolerations(
            tenant.node_loss_toleration, profile.tolerations),
    }


def claim_mounts(volumes: Sequence[Mapping[str, Any]],
                 volume_mounts: Sequence[Mapping[str, Any]]) -> list[Storage]:
    """The notebook container's writable mounts of persistent volume claims, in mount order.

    Takes KubeSpawner's `volumes` and `volume_mounts` as it renders them (lists, templates
    expanded). Left out: other volume kinds, read-only mounts or claims (no job could write its
    directory there) and `subPathExpr` mounts (a job pod could not reproduce the expansion).
    """
    claims = {}
    for volume in volumes:
        claim = volume.get("persistentVolumeClaim") or {}
        if claim.get("claimName") and not claim.get("readOnly"):
            claims[volume.get("name")] = claim["claimName"]
    return [
        Storage(claim=claims[mount["name"]], mount_path=posixpath.normpath(mount["mountPath"]),
                sub_path=mount.get("subPath") or None)
        for mount in volume_mounts
        if mount.get("name") in claims and mount.get("mountPath")
        and not mount.get("readOnly") and not mount.get("subPathExpr")
    ]


def holds(mount_path: str, path: str) -> bool:
    """Whether a volume mounted at `mount_path` holds `path` (the same folder or one above)."""
    mount_path, path = posixpath.normpath(mount_path), posixpath.normpath(path)
    return mount_path == path or path.startswith(mount_path.rstrip("/") + "/")


def shared_storage(volumes: Sequence[Mapping[str, Any]],
                   volume_mounts: Sequence[Mapping[str, Any]],
                   home: str = DEFAULT_HOME) -> Storage | None:
    """The claim that job pods mount too, so that a job's directory is shared with the notebook.

    The only writable claim mount (see `claim_mounts`) if there is one; among several, the one that
    holds `home` (mounted at it or above it; the deepest such); otherwise None (no claim, or
    several and none holds the home: which one the user's files are on cannot be told).
    """
    mounts = claim_mounts(volumes, volume_mounts)
    if len(mounts) <= 1:
        return mounts[0] if mounts else None
    at_home = [m for m in mounts if holds(m.mount_path, home)]
    return max(at_home, key=lambda m: len(m.mount_path)) if at_home else None


def jobs_dir_on(storage: Storage, home: str = DEFAULT_HOME) -> str:
    """Where job directories go on the shared claim: `~/jobs` when the claim holds the home (so
    the user browses them in Jupyter), else `jobs` at the claim's mount."""
    base = home if holds(storage.mount_path, home) else storage.mount_path
    return posixpath.join(posixpath.normpath(base), "jobs")


def kube_literal(env: Mapping[str, str]) -> dict[str, str]:
    """`env` as literal values for KubeSpawner's `environment`.

    KubeSpawner expands `{username}`-style fields in every `environment` value with
    `str.format`; a value with braces of its own (the node selector is JSON) would raise there or
    change, so braces are doubled and come out of the expansion as they went in.
    """
    return {name: value.replace("{", "{{").replace("}", "}}") for name, value in env.items()}


def token_secret_name(pod_name: str) -> str:
    """The Secret holding the hub token of the server in pod `pod_name`."""
    return f"{pod_name}-token"


def hub_token_from_secret(env: Mapping[str, Any], token: str, secret: str) -> dict[str, Any]:
    """`env` (KubeSpawner's `get_env()`) with the hub token taken from Secret `secret` instead
    of written in: the variables of `HUB_TOKEN_ENV`, and any other whose value is the token,
    become `secretKeyRef`s (KubeSpawner turns a dict value into an EnvVar as it is)."""
    ref = {"valueFrom": {"secretKeyRef": {"name": secret, "key": TOKEN_KEY}}}
    return {name: dict(ref) if name in HUB_TOKEN_ENV or (token and value == token) else value
            for name, value in env.items()}


def token_secret(name: str, namespace: str, token: str, owner_labels: Mapping[str, str]
                 ) -> dict[str, Any]:
    """The Secret holding a server's hub token. Only the hub writes it and nobody's Role may
    read Secrets; the kubelet hands it to the server's container."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(owner_labels)},
            "stringData": {TOKEN_KEY: token}}


def form_options_to_policy(options: dict[str, Any]) -> dict[str, Any]:
    """Turn KubeSpawner form keys into the spawn options `spawn_policy.choose` understands.

    KubeSpawner's form handler stores the image choice as `image` already; a free-text
    `image--unlisted-choice` is passed on as `image` so the allowlist refuses it by name.
    """
    out = dict(options)
    unlisted = out.pop(f"{_FORM_OPTION}--unlisted-choice", None)
    if unlisted:
        out[_FORM_OPTION] = unlisted
    return out


class TenantKubeSpawner(TenantSpawnerMixin, KubeSpawner):
    """KubeSpawner that applies the tenants file to every spawn.

    Contract: `load_user_options` (called by KubeSpawner's start before anything is created)
    either applies the tenant's namespace, profile, image, security context, probes and
    environment, or raises a tornado HTTPError (403: no tenant; 400: unlisted image or profile)
    whose message the hub shows to the user. Operator config cannot weaken the security context:
    it is applied after config.
    """

    notebook_uid = Integer(
        1000, help="""UID the notebook container runs as; must not be 0 (Pod Security restricted)."""
    ).tag(config=True)

    notebook_gid = Integer(100, help="""GID (and fsGroup) of the notebook container.""").tag(
        config=True
    )

    home_mount_path = Unicode(
        DEFAULT_HOME,
        help="""The notebook's home folder in the container. When several persistent volume
        claims are mounted, the one mounted at this folder (or above it) is the user's storage,
        which job pods mount too; job directories then go to its `jobs` folder.""",
    ).tag(config=True)

    # (home, claim mounts) combinations already warned about: the warning is about the operator's
    # configuration, which is the same for every spawn.
    _warned_storage: ClassVar[set[tuple[str, ...]]] = set()

    @validate("notebook_uid")
    def _uid_not_root(self, proposal):
        if proposal["value"] <= 0:
            raise ValueError("TenantKubeSpawner.notebook_uid must be a non-root UID (> 0)")
        return proposal["value"]

    @validate("home_mount_path")
    def _home_is_absolute(self, proposal):
        if not proposal["value"].startswith("/"):
            raise ValueError("TenantKubeSpawner.home_mount_path must be an absolute path, like "
                             f"{DEFAULT_HOME}")
        return proposal["value"]

    @default("profile_list")
    def _profile_list_default(self):
        # A callable: KubeSpawner evaluates it per spawn, so each user sees their tenants only.
        return self._profiles_for_user

    @default("cmd")
    def _cmd_default(self):
        return ["jupyterhub-singleuser"]

    def _profiles_for_user(self, spawner: KubeSpawner) -> list[dict[str, Any]]:
        return build_profile_list(self.tenants().for_groups(self.group_names()))

    async def load_user_options(self) -> None:
        options = form_options_to_policy(dict(self.user_options or {}))
        try:
            choice = choose(self.tenants(), self.user.name, self.group_names(), options)
        except SpawnRefused as refused:
            self.log.warning("Refusing spawn for %s: %s", self.user.name, refused.message)
            raise http_error(refused) from None
        self.apply_choice(choice)

    def apply_choice(self, choice: Choice) -> None:
        """Set everything a permitted choice decides on this spawner (no I/O)."""
        self.log.info(
            "Spawning %s in tenant %s (namespace %s, profile %s)",
            self.user.name, choice.tenant.name, choice.tenant.namespace, choice.profile.name,
        )
        self._apply_overrides(tenant_overrides(choice, self.user_label))
        self.dns_name = self.dns_name_template.format(namespace=self.namespace, name=self.pod_name)
        pod_sc, container_sc = restricted_security_contexts(self.notebook_uid, self.notebook_gid)
        self.uid, self.gid, self.fs_gid = self.notebook_uid, self.notebook_gid, self.notebook_gid
        self.privileged = False
        self.allow_privilege_escalation = False
        self.pod_security_context = pod_sc
        self.container_security_context = container_sc
        for container in self._sorted_dict_values(self.init_containers) or []:
            context = container.get("securityContext") or {}
            if context.get("privileged") or context.get("runAsUser") == 0:
                raise web.HTTPError(
                    500, "Refusing a privileged or root init container; remove it from "
                    "KubeSpawner.init_containers (Pod Security restricted forbids it)."
                )
        base_path = self.server.base_url if self.server is not None else self.user.url
        self.extra_container_config = {**self.extra_container_config, **probes(base_path, self.port)}
        self.extra_labels = {
            **self.extra_labels,
            labels.LABEL_TENANT: choice.tenant.name,
            # `{username}` is KubeSpawner's label-safe escaping of the hub user name.
            labels.LABEL_USER: "{username}",
            labels.LABEL_COMPONENT: labels.COMPONENT_NOTEBOOK,
        }
        context = self.context_for(choice)
        self.environment = {**self.environment, **kube_literal(context.to_env())}
        self.workbench_choice = choice
        self.workbench_context = context

    def context_for(self, choice: Choice) -> NotebookContext:
        """What this notebook is told: the choice, its uid/gid, and the claim of its storage (from
        this spawner's own `volumes` and `volume_mounts`, expanded as KubeSpawner renders them)."""
        volumes = self._expand_all(self._sorted_dict_values(self.volumes)) or []
        mounts = self._expand_all(self._sorted_dict_values(self.volume_mounts)) or []
        storage = shared_storage(volumes, mounts, home=self.home_mount_path)
        if storage is None:
            self._warn_storage_unknown(claim_mounts(volumes, mounts))
        # The user by their label-safe name: the one their account, their claim and the labels
        # of their pods and jobs carry, which the API server's policies compare.
        return notebook_context(
            choice, self.user_label, engine=choice.cluster_engine, storage=storage,
            jobs_dir=jobs_dir_on(storage, self.home_mount_path) if storage else None,
            uid=self.notebook_uid, gid=self.notebook_gid,
        )

    def _warn_storage_unknown(self, mounts: list[Storage]) -> None:
        paths = tuple(m.mount_path for m in mounts)
        key = (self.home_mount_path, *paths)
        if not mounts or key in self._warned_storage:
            return
        self._warned_storage.add(key)
        self.log.warning(
            "Giving notebooks no shared storage for jobs: claims are mounted at %s, none at or "
            "above the home %s; set TenantKubeSpawner.home_mount_path to the home folder",
            ", ".join(paths), self.home_mount_path,
        )

    async def poll(self):
        """KubeSpawner's answer, except that a server whose machine was lost counts as stopped
        (1) though its pod stays Terminating, where KubeSpawner would call it running."""
        status = await super().poll()
        if status is not None:
            return status
        pod = self.pod_reflector.pods.get(f"{self.namespace}/{self.pod_name}")
        lost = lost_machine_condition(pod) if pod else None
        if lost is None:
            return None
        self.log.warning(
            "Server %s of %s stopped: its machine %s was lost at %s (%s)", self.pod_name,
            self.user.name, (pod.get("spec") or {}).get("nodeName") or "(unknown)",
            lost.get("lastTransitionTime") or "(unknown)", lost.get("message") or lost["reason"])
        return 1

    # -- per-user identity and the hub token's Secret (API I/O) ---------------------------------

    @property
    def user_label(self) -> str:
        """KubeSpawner's label-safe `{username}`: the user label of the user's pods and jobs,
        the suffix of their service account, the name their claim and Secrets start with."""
        return self._expand_user_properties("{username}")

    def get_env(self) -> dict[str, Any]:
        """KubeSpawner's environment, with the hub token read from the server's Secret: pod
        specs are readable by the tenant's users, Secrets are not."""
        return hub_token_from_secret(super().get_env(), self.api_token,
                                     token_secret_name(self.pod_name))

    async def _make_create_pod_request(self, pod, request_timeout):
        """Create the pod (KubeSpawner 7's step, retried while it returns False), after what it
        needs: the user's own service account with its RoleBinding, and the Secret with this
        start's hub token; then make the pod the Secret's owner, so that it goes with the pod.

        Raises what the API server answers other than 409 (say, 403 when the tenant was
        provisioned without the hub's rights to do this: run `workbench apply`).
        """
        try:
            await asyncio.wait_for(self._ensure_identity(), request_timeout)
            await asyncio.wait_for(self._put_token_secret(), request_timeout)
        except asyncio.TimeoutError:
            return False  # KubeSpawner's contract: try again
        created = await super()._make_create_pod_request(pod, request_timeout)
        if created:
            await self._give_token_secret_to(pod.metadata.name, request_timeout)
        return created

    async def _create(self, what: str, create, body: dict[str, Any]) -> bool:
        """Create `body` with `create(namespace, body)`: True if made now, False if it existed."""
        from kubernetes_asyncio.client.exceptions import ApiException

        try:
            await create(self.namespace, body)
        except ApiException as err:
            if err.status == 409:
                return False
            self.log.error("Could not create %s %s in %s: %s %s", what,
                           body["metadata"]["name"], self.namespace, err.status, err.reason)
            raise
        self.log.info("Created %s %s/%s", what, self.namespace, body["metadata"]["name"])
        return True

    async def _ensure_identity(self) -> None:
        from kubernetes_asyncio.client import RbacAuthorizationV1Api

        rbac = RbacAuthorizationV1Api(self.api.api_client)
        account, binding = user_identity(self.workbench_choice.tenant, self.user_label)
        await self._create("service account", self.api.create_namespaced_service_account,
                           account)
        await self._create("role binding", rbac.create_namespaced_role_binding, binding)

    async def _put_token_secret(self) -> None:
        from kubernetes_asyncio.client.exceptions import ApiException

        name = token_secret_name(self.pod_name)
        owner_labels = {labels.LABEL_TENANT: self.workbench_choice.tenant.name,
                        labels.LABEL_USER: self.user_label,
                        labels.LABEL_COMPONENT: labels.COMPONENT_NOTEBOOK}
        secret = token_secret(name, self.namespace, self.api_token, owner_labels)
        if await self._create("secret", self.api.create_namespaced_secret, secret):
            return
        # Left by an earlier start: this start's token, and no owner (that pod is gone).
        try:
            await self.api.patch_namespaced_secret(name, self.namespace, {
                "metadata": {"ownerReferences": None}, "stringData": secret["stringData"]})
        except ApiException as err:
            if err.status != 404:  # the garbage collector took it just now
                raise
            await self._create("secret", self.api.create_namespaced_secret, secret)

    async def _give_token_secret_to(self, pod_name: str, request_timeout: float) -> None:
        """Make the pod the owner of its token Secret. A failure is logged, not raised: the
        server runs; its Secret then stays until the next start replaces it."""
        from kubernetes_asyncio.client.exceptions import ApiException

        name = token_secret_name(pod_name)
        try:
            pod = await asyncio.wait_for(
                self.api.read_namespaced_pod(pod_name, self.namespace), request_timeout)
            owner = {"apiVersion": "v1", "kind": "Pod", "name": pod_name,
                     "uid": pod.metadata.uid}
            await asyncio.wait_for(self.api.patch_namespaced_secret(
                name, self.namespace, {"metadata": {"ownerReferences": [owner]}}),
                request_timeout)
        except (ApiException, asyncio.TimeoutError) as err:
            self.log.warning("Could not make pod %s the owner of secret %s: %s", pod_name,
                             name, getattr(err, "status", type(err).__name__))
