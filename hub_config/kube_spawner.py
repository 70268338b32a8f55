"""KubeSpawner for tenants: the notebook pod goes to the tenant's namespace, with the tenant's
profiles and images only, the Pod Security `restricted` security context, and the environment the
magic reads.

The pure builders (`build_profile_list`, `tenant_overrides`, `probes`, and the security contexts
of `workbench_contract.pod_security`) make plain data and are tested as data; `TenantKubeSpawner` only
wires them into KubeSpawner. The hub needs no cluster-wide rights: with `enable_user_namespaces`
off, KubeSpawner keeps one pod watch per namespace, and each tenant namespace carries a
RoleBinding for the hub (provisioned by an operator beforehand).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kubespawner import KubeSpawner
from tornado import web
from traitlets import Integer, default, validate

from hub_config.policy import Choice, SpawnRefused, choose, profile_slug, server_env
from hub_config.tenant_spawner import TenantSpawnerMixin, http_error
from hub_config.tenants import Tenant, parse_quantity
from workbench_contract import labels
from workbench_contract.pod_security import restricted_security_contexts

GPU_RESOURCE = "nvidia.com/gpu"
# The form posts `profile-option-<slug>--image` (and `...--image--unlisted-choice`); we accept
# only the image option, and only values from the allowlist.
_FORM_OPTION = "image"


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


def probes(base_path: str, port: int) -> dict[str, Any]:
    """Readiness and liveness probes on the single-user server's unauthenticated `api` route."""
    check = {"httpGet": {"path": f"{base_path.rstrip('/')}/api", "port": port}}
    return {
        "readinessProbe": {**check, "periodSeconds": 10, "timeoutSeconds": 5,
                           "failureThreshold": 3},
        # Liveness is lenient: a server busy with a large notebook save must not be restarted.
        "livenessProbe": {**check, "initialDelaySeconds": 60, "periodSeconds": 30,
                          "timeoutSeconds": 10, "failureThreshold": 5},
    }


def tenant_overrides(choice: Choice) -> dict[str, Any]:
    """KubeSpawner attribute values for a permitted choice: where, how big, which image."""
    tenant, profile = choice.tenant, choice.profile
    gpus = {GPU_RESOURCE: str(profile.gpus)} if profile.gpus else {}
    return {
        "namespace": tenant.namespace,
        "service_account": tenant.service_account,
        # The magic's Kubernetes engine creates PaddleJobs with this account's token.
        "automount_service_account_token": True,
        "image": choice.image.image,
        "cpu_guarantee": profile.cpu.guarantee_value,
        "cpu_limit": profile.cpu.limit_value,
        "mem_guarantee": int(parse_quantity(profile.memory.guarantee)),
        "mem_limit": int(parse_quantity(profile.memory.limit)),
        "extra_resource_guarantees": dict(gpus),
        "extra_resource_limits": dict(gpus),
        "node_selector": dict(profile.node_selector),
        "tolerations": [dict(t) for t in profile.tolerations],
    }


def form_options_to_policy(options: dict[str, Any]) -> dict[str, Any]:
    """Turn KubeSpawner form keys into the spawn options `policy.choose` understands.

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

    @validate("notebook_uid")
    def _uid_not_root(self, proposal):
        if proposal["value"] <= 0:
            raise ValueError("TenantKubeSpawner.notebook_uid must be a non-root UID (> 0)")
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
        self._apply_overrides(tenant_overrides(choice))
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
        self.environment = {
            **self.environment,
            **server_env(choice, self.user.name, engine="kubernetes"),
        }
        self.workbench_choice = choice
