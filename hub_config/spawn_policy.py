"""The spawn policy, as pure functions: which tenant a user is in, which profile and image a spawn
request may use, and what a notebook server is told (`notebook_context`, whose `to_env()` is the
server's environment; `workbench_contract.environment` reads it back on the notebook side).

Both spawners (KubeSpawner in a cluster, the local process spawner of `workbench up`) call these,
so the same request is refused or allowed the same way everywhere. Nothing here does I/O.

Rules:
- A user's tenants are the tenants whose `groups` meet the user's groups (file order).
- No tenant, no server (`SpawnRefused`, 403).
- A spawn request (`user_options`) may name `tenant`, `profile` (a profile name, or a slug
  `<tenant>--<profile>` as offered by the spawn form) and `image` (a full reference from the
  tenant's allowlist, or its display name). Anything else in the request is refused, so that a
  hand-written request cannot smuggle a setting in.
- When a user is in two tenants and the request names neither tenant nor slug, the first of their
  tenants in file order is used; the form lists the tenants' profiles so the user can choose.
- A missing profile or image means the tenant's first one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from hub_config.tenants import AllowedImage, Profile, Tenant, Tenants
from workbench_contract.environment import Limits, NotebookContext, Storage

SLUG_SEPARATOR = "--"
# The keys a spawn request may carry. The KubeSpawner form adds `profile-option-...` keys, which
# the KubeSpawner subclass turns into `image` before calling `choose`.
ALLOWED_OPTION_KEYS = frozenset({"tenant", "profile", "image"})


class SpawnRefused(Exception):
    """A spawn request that policy refuses: `status` (HTTP) and a message for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Choice:
    """What a permitted spawn runs with."""

    tenant: Tenant
    profile: Profile
    image: AllowedImage

    @property
    def slug(self) -> str:
        return profile_slug(self.tenant, self.profile)

    @property
    def cluster_engine(self) -> str:
        """The job engine a notebook of this tenant uses in a cluster: the engine of the
        tenant's job kind, which goes by the kind's name (`workbench_contract.jobkinds`)."""
        return self.tenant.job_api


def profile_slug(tenant: Tenant, profile: Profile) -> str:
    """The identifier of a tenant's profile in spawn forms and requests."""
    return f"{tenant.name}{SLUG_SEPARATOR}{profile.name}"


def user_tenants(tenants: Tenants, groups: Iterable[str]) -> tuple[Tenant, ...]:
    """The tenants a user with these groups belongs to, in file order."""
    return tenants.for_groups(groups)


def no_tenant_message(user: str, groups: Iterable[str]) -> str:
    names = ", ".join(sorted(groups)) or "none"
    return (
        f"{user} is not a member of any tenant of this workbench (your groups: {names}), so no "
        "notebook server can be started. Ask an administrator to add one of your groups to a "
        "tenant in tenants.yaml."
    )


def choose(
    tenants: Tenants, user: str, groups: Iterable[str], options: Mapping[str, Any] | None
) -> Choice:
    """Decide the tenant, profile and image for a spawn request, or refuse it.

    Raises SpawnRefused: 403 when the user is in no tenant or names a tenant they are not in;
    400 when the request names an unknown profile, an image outside the tenant's allowlist or a
    key that is not a spawn option.
    """
    groups = list(groups)
    options = dict(options or {})
    mine = user_tenants(tenants, groups)
    if not mine:
        raise SpawnRefused(403, no_tenant_message(user, groups))
    unknown = sorted(set(options) - ALLOWED_OPTION_KEYS)
    if unknown:
        raise SpawnRefused(
            400,
            f"Spawn option {unknown[0]!r} is not accepted; a request may name only "
            f"{', '.join(sorted(ALLOWED_OPTION_KEYS))}.",
        )
    tenant, profile = _tenant_and_profile(mine, options)
    image = _image(tenant, options.get("image"))
    return Choice(tenant=tenant, profile=profile, image=image)


def _tenant_and_profile(mine: tuple[Tenant, ...], options: Mapping[str, Any]) -> tuple[Tenant, Profile]:
    wanted_tenant = options.get("tenant") or None
    wanted_profile = options.get("profile") or None
    if wanted_tenant is not None and not isinstance(wanted_tenant, str):
        raise SpawnRefused(400, "Spawn option 'tenant' must be a tenant name.")
    if wanted_profile is not None and not isinstance(wanted_profile, str):
        raise SpawnRefused(400, "Spawn option 'profile' must be a profile name.")
    if wanted_profile and SLUG_SEPARATOR in wanted_profile:
        for tenant in mine:
            for profile in tenant.profiles:
                if profile_slug(tenant, profile) == wanted_profile and wanted_tenant in (
                    None, tenant.name
                ):
                    return tenant, profile
    if wanted_tenant is not None:
        tenant = next((t for t in mine if t.name == wanted_tenant), None)
        if tenant is None:
            names = ", ".join(t.name for t in mine)
            raise SpawnRefused(
                403, f"You are not a member of tenant {wanted_tenant!r}; your tenants: {names}."
            )
    else:
        tenant = mine[0]
    if wanted_profile is None:
        return tenant, tenant.profiles[0]
    profile = tenant.profile(wanted_profile)
    if profile is None:
        offered = ", ".join(p.name for p in tenant.profiles)
        raise SpawnRefused(
            400,
            f"Profile {wanted_profile!r} is not offered by tenant {tenant.name!r}; choose one of: "
            f"{offered}.",
        )
    return tenant, profile


def _image(tenant: Tenant, wanted: Any) -> AllowedImage:
    if wanted in (None, ""):
        return tenant.images[0]
    if not isinstance(wanted, str):
        raise SpawnRefused(400, "Spawn option 'image' must be an image reference.")
    for allowed in tenant.images:
        if wanted in (allowed.image, allowed.name):
            return allowed
    offered = "; ".join(f"{i.name} ({i.image})" for i in tenant.images)
    raise SpawnRefused(
        400,
        f"Image {wanted!r} is not on the allowlist of tenant {tenant.name!r}, so it cannot be "
        f"started. Choose one of: {offered}.",
    )


def notebook_context(
    choice: Choice, user: str, engine: str, *, jobs_dir: str | None = None,
    storage: Storage | None = None, uid: int | None = None, gid: int | None = None,
) -> NotebookContext:
    """What a notebook server of this permitted choice is told (its environment is `to_env()`).

    `engine` is the magic's default engine; `jobs_dir`, `storage`, `uid` and `gid` are what the
    spawner knows of where and as whom the server runs (None: not set, the notebook side's
    defaults apply). Job pods get the profile's node selector, so jobs land where the notebook
    may run, and the tenant's node-loss toleration, as the notebook pod does.
    """
    tenant = choice.tenant
    return NotebookContext(
        engine=engine,
        user=user,
        tenant=tenant.name,
        namespace=tenant.namespace,
        image=choice.image.image,
        allowed_images=tenant.image_refs,
        limits=Limits(
            max_nodes=tenant.job_limits.max_nodes,
            max_gpus_per_node=tenant.job_limits.max_gpus_per_node,
            max_runtime_seconds=tenant.job_limits.max_runtime,
        ),
        storage=storage,
        uid=uid,
        gid=gid,
        node_selector=dict(choice.profile.node_selector),
        jobs_dir=jobs_dir,
        node_loss_toleration=tenant.node_loss_toleration,
    )
