"""The hub's real notebook pod and environment, rendered with no cluster, for tests of any tier.

`TenantKubeSpawner` renders the pod through KubeSpawner's own code (`load_user_options`, then
`get_pod_manifest`), exactly as the hub does at a spawn; nothing here writes an environment by
hand, so a test on the notebook side that starts a kernel with `notebook_env(...)` runs with what
the hub really sets.

- `offline_kubeconfig()`: a context in which KubeSpawner can be constructed without a cluster
  (it reads a kube config when constructed; rendering makes no API call).
- `fake_user(name, groups)`: the few attributes of a hub user that KubeSpawner reads.
- `render_pod(tenants_file, user, groups, options, **traits)`: the notebook pod as a plain dict
  and the spawner that rendered it; raises what the spawner raises (tornado HTTPError).
- `container_env(pod)`: the notebook container's environment as a dict.
- `notebook_env(tenant, ...)`: the environment the hub gives `user`'s notebook in `tenant`.

Rendering needs the hub extra (jupyterhub-kubespawner), imported when first used; callers skip
with `pytest.importorskip("kubespawner")` first. Importing this module needs only PyYAML.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import yaml

from hub_config.spawn_policy import profile_slug
from hub_config.tenants import Profile, Tenant, Tenants

if TYPE_CHECKING:
    from hub_config.kube_spawner import TenantKubeSpawner

# Points nowhere and is never used: rendering a manifest makes no API call.
OFFLINE_KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: unused}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
"""


@contextlib.contextmanager
def offline_kubeconfig() -> Iterator[Path]:
    """Point kubernetes_asyncio at an offline kube config (and away from any in-cluster one)
    until the context ends; the environment and the module default are restored afterwards.

    KubeSpawner loads the config once per process (its `load_config` is cached), so the first
    spawner built here leaves kubernetes_asyncio's default client configuration offline.
    """
    import kubernetes_asyncio.config.kube_config as kube_config

    saved_env = {name: os.environ.get(name) for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    saved_default = kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    with tempfile.TemporaryDirectory(prefix="offline-kube-") as folder:
        path = Path(folder) / "kubeconfig"
        path.write_text(OFFLINE_KUBECONFIG)
        os.environ["KUBECONFIG"] = str(path)
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)
        # kubernetes_asyncio reads $KUBECONFIG at import time, so its resolved default too.
        kube_config.KUBE_CONFIG_DEFAULT_LOCATION = str(path)
        try:
            yield path
        finally:
            kube_config.KUBE_CONFIG_DEFAULT_LOCATION = saved_default
            for name, value in saved_env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def fake_user(name: str, groups: list[str]) -> SimpleNamespace:
    """The few attributes of a hub user that KubeSpawner reads (no hub database here)."""
    return SimpleNamespace(name=name, id=7, url=f"/user/{name}/", escaped_name=name,
                           groups=[SimpleNamespace(name=g) for g in groups])


def render_pod(tenants_file: str | os.PathLike[str], user: str, groups: list[str],
               options: Mapping[str, Any] | None = None, **traits: Any
               ) -> tuple[dict[str, Any], TenantKubeSpawner]:
    """The notebook pod `TenantKubeSpawner` renders for this spawn request, and the spawner.

    `traits` configure the spawner (`notebook_uid`, `volumes`, `privileged`, ...) as an
    operator's config would. Raises tornado's HTTPError when the spawner refuses the request.
    """
    from kubernetes_asyncio.client import ApiClient

    from hub_config.kube_spawner import TenantKubeSpawner

    async def go() -> tuple[dict[str, Any], TenantKubeSpawner]:
        spawner = TenantKubeSpawner(_mock=True, user=fake_user(user, groups),
                                    tenants_file=str(tenants_file), **traits)
        spawner.user_options = dict(options or {})
        await spawner.load_user_options()
        pod = await spawner.get_pod_manifest()
        async with ApiClient() as api:
            return api.sanitize_for_serialization(pod), spawner

    with offline_kubeconfig():
        return asyncio.run(go())


def container_env(pod: Mapping[str, Any]) -> dict[str, str]:
    """The notebook container's environment (plain values; none of ours comes from elsewhere)."""
    container = pod["spec"]["containers"][0]
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


def notebook_env(tenant: Tenant, user: str = "ada", *, uid: int = 1000, gid: int = 100,
                 volumes: list[dict[str, Any]] | None = None,
                 volume_mounts: list[dict[str, Any]] | None = None,
                 profile: str | Profile | None = None, **traits: Any) -> dict[str, str]:
    """The environment the hub gives `user`'s notebook server in `tenant` (a spawn by a member of
    the tenant's first group, asking for `profile`, default the tenant's first).

    `uid`, `gid`, `volumes` and `volume_mounts` are the spawner's settings (as Zero to
    JupyterHub's `singleuser.uid`/`fsGid`/`storage` set them); `traits` sets any other, e.g.
    `pvc_name_template`.
    """
    chosen = profile if isinstance(profile, Profile) else (
        tenant.profile(profile) if profile else tenant.profiles[0])
    if chosen is None:
        raise ValueError(f"tenant {tenant.name!r} offers no profile {profile!r}")
    with tempfile.TemporaryDirectory(prefix="hub-env-") as folder:
        tenants_file = Path(folder) / "tenants.yaml"
        tenants_file.write_text(yaml.safe_dump(Tenants((tenant,)).to_dict()))
        pod, _ = render_pod(
            tenants_file, user, [tenant.groups[0]], {"profile": profile_slug(tenant, chosen)},
            notebook_uid=uid, notebook_gid=gid, volumes=list(volumes or []),
            volume_mounts=list(volume_mounts or []), **traits,
        )
    return container_env(pod)
