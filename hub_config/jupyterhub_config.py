"""The configuration the workbench hub runs with (`jupyterhub -f hub_config/jupyterhub_config.py`).

Settings come from the environment, so `workbench up`, the tests and a deployment can share this
one file; the classes' own traitlets stay open to an operator's extra config file
(`WORKBENCH_EXTRA_CONFIG`, loaded last). Environment variables:

- `WORKBENCH_STATE_DIR`: all hub state (database, cookie secret, users file);
  default `.workbench` in the current directory.
- `WORKBENCH_HOMES_DIR`: with the local spawner as root, where users' accounts get their homes
  (default `/home`).
- `WORKBENCH_TENANTS_FILE`: the tenants file; default `<state>/tenants.yaml`. There is no
  fallback: a hub without one refuses to start (the shipped example's groups are not yours).
- `WORKBENCH_AUTH`: `local` (users file, default) or `oidc` (an OIDC provider, below).
- `WORKBENCH_SPAWNER`: `local` (processes, default) or `kubernetes` (KubeSpawner).
- `WORKBENCH_BIND_URL` (default `http://127.0.0.1:8000`), `WORKBENCH_HUB_BIND_URL`
  (default `http://127.0.0.1:8081`), `WORKBENCH_PROXY_API_URL` (default `http://127.0.0.1:8001`).
- `WORKBENCH_PROXY_COMMAND`: path of configurable-http-proxy (default: the project's
  `node_modules/.bin`, else the one on PATH).
- `WORKBENCH_USERS_FILE`: local users file (default `<state>/users.yaml`).
- `WORKBENCH_OIDC_ISSUER`, `WORKBENCH_OIDC_CLIENT_ID`, `WORKBENCH_OIDC_CLIENT_SECRET`,
  `WORKBENCH_OIDC_CALLBACK_URL` (default `<bind url>/hub/oauth_callback`),
  `WORKBENCH_OIDC_GROUPS_CLAIM` (default `groups`), `WORKBENCH_OIDC_USERNAME_CLAIM`
  (default `sub`, the one claim OIDC promises never changes; name another immutable one if
  yours must be readable). The issuer's discovery document supplies the endpoints.
  `JUPYTERHUB_CRYPT_KEY` (JupyterHub's own variable) is required with `oidc`: the hub keeps each
  user's tokens, encrypted with it, to refresh their groups from the provider before every spawn.
- `WORKBENCH_ADMIN_GROUPS`: comma-separated operator groups whose members are full hub admins. A
  tenant's own `admin_groups` get a role confined to that tenant's groups
  (`hub_config.auth.tenant_admin_roles`), loaded when the hub starts.
- `WORKBENCH_CULLER` (`1` default, `0` off) and `WORKBENCH_CULL_EVERY` (seconds).
- `WORKBENCH_PROMETHEUS_URL`: the Prometheus with the workbench's recording rules
  (deploy/monitoring); set, the hub runs the GPU-idle culler (`hub_config.services.gpu_culler`)
  as a service with only the scopes it needs. Unset (default): no GPU-idle culler.

In a cluster the Zero to JupyterHub chart's own config file runs the hub (proxy, database, cookie
secret, the crypt key, storage) and calls `configure_in_cluster` from `hub.extraConfig`
(deploy/helm/workbench-values.yaml): the same tenancy, authenticator, roles and cullers, with
KubeSpawner always, and the GPU-idle culler as a hub service when `WORKBENCH_PROMETHEUS_URL`
is set.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hub_config.instance import MARKER

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_TENANTS = Path(__file__).resolve().parent / "tenants.example.yaml"


class HubConfigError(ValueError):
    """A WORKBENCH_* setting is missing or wrong; the message names the variable."""


def _require(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise HubConfigError(f"{name} is not set; set it to use WORKBENCH_AUTH=oidc")
    return value


def _require_crypt_key(env: Mapping[str, str]) -> None:
    """WORKBENCH_AUTH=oidc keeps auth state, which JupyterHub encrypts with JUPYTERHUB_CRYPT_KEY.

    Without auth state the hub could not refresh anyone's groups (OAuthenticator's refresh needs
    the stored tokens), so a user removed from a tenant at the provider would keep it until their
    next login; refusing to start is the safe answer. JupyterHub itself would also exit, with a
    message that does not say why the workbench needs the key.
    """
    if not env.get("JUPYTERHUB_CRYPT_KEY", "").strip():
        raise HubConfigError(
            "JUPYTERHUB_CRYPT_KEY is not set; WORKBENCH_AUTH=oidc keeps each user's tokens, "
            "encrypted with it, to refresh their groups from the identity provider before every "
            "spawn. Set it to 32 random bytes, hex-encoded (`openssl rand -hex 32`), and keep it: "
            "a new key forces every user to log in again"
        )


def proxy_command(env: Mapping[str, str]) -> str:
    """configurable-http-proxy: the setting, the project's npm install, or PATH."""
    if env.get("WORKBENCH_PROXY_COMMAND"):
        return env["WORKBENCH_PROXY_COMMAND"]
    local = REPO_ROOT / "node_modules" / ".bin" / "configurable-http-proxy"
    if local.exists():
        return str(local)
    found = shutil.which("configurable-http-proxy")
    if not found:
        raise HubConfigError(
            "configurable-http-proxy not found; run `make setup` (npm ci) or set "
            "WORKBENCH_PROXY_COMMAND"
        )
    return found


def oidc_endpoints(issuer: str) -> dict[str, str]:
    """Read the provider's discovery document (the one I/O step of configuration)."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            doc = json.load(response)
    except (OSError, ValueError) as err:
        raise HubConfigError(
            f"cannot read {url} ({err}); check WORKBENCH_OIDC_ISSUER and that the provider is up"
        ) from None
    try:
        return {
            "authorize_url": doc["authorization_endpoint"],
            "token_url": doc["token_endpoint"],
            "userdata_url": doc["userinfo_endpoint"],
        }
    except KeyError as err:
        raise HubConfigError(f"{url} lacks {err.args[0]}; is this an OIDC issuer?") from None


def _tenants_file(env: Mapping[str, str], default: str) -> str:
    tenants_file = env.get("WORKBENCH_TENANTS_FILE") or default
    if not Path(tenants_file).is_file():
        # Never the shipped example: its admin groups would be real in this hub.
        raise HubConfigError(
            f"no tenants file at {tenants_file}: set WORKBENCH_TENANTS_FILE or write the file "
            f"(start from {EXAMPLE_TENANTS})"
        )
    return tenants_file


def _configure_auth(c: Any, env: Mapping[str, str], bind_url: str | None,
                    crypt_key_set: bool) -> None:
    """The authenticator (`WORKBENCH_AUTH`) and the operators' admin groups.

    `bind_url`: the hub's public URL, which the OIDC callback defaults to (None: no default,
    WORKBENCH_OIDC_CALLBACK_URL is required). `crypt_key_set`: whether auth state can be
    encrypted (JUPYTERHUB_CRYPT_KEY, or CryptKeeper.keys that the chart sets from its Secret).
    """
    auth = env.get("WORKBENCH_AUTH") or "local"
    if auth == "local":
        c.JupyterHub.authenticator_class = "hub_config.auth.LocalGroupsAuthenticator"
        state = Path(env.get("WORKBENCH_STATE_DIR") or ".workbench").resolve()
        c.LocalGroupsAuthenticator.users_file = env.get("WORKBENCH_USERS_FILE") or str(
            state / "users.yaml"
        )
    elif auth == "oidc":
        if not crypt_key_set:
            _require_crypt_key(env)
        if bind_url is None:
            callback = _require(env, "WORKBENCH_OIDC_CALLBACK_URL")
        else:
            callback = env.get("WORKBENCH_OIDC_CALLBACK_URL") or (
                bind_url.rstrip("/") + "/hub/oauth_callback"
            )
        c.JupyterHub.authenticator_class = "hub_config.auth.TenantOAuthenticator"
        oidc = c.TenantOAuthenticator
        for key, value in oidc_endpoints(_require(env, "WORKBENCH_OIDC_ISSUER")).items():
            setattr(oidc, key, value)
        oidc.client_id = _require(env, "WORKBENCH_OIDC_CLIENT_ID")
        oidc.client_secret = _require(env, "WORKBENCH_OIDC_CLIENT_SECRET")
        oidc.oauth_callback_url = callback
        oidc.groups_claim = env.get("WORKBENCH_OIDC_GROUPS_CLAIM") or "groups"
        oidc.username_claim = env.get("WORKBENCH_OIDC_USERNAME_CLAIM") or "sub"
        oidc.login_service = "your identity provider"
    else:
        raise HubConfigError(f"WORKBENCH_AUTH={auth!r}: use 'local' or 'oidc'")
    admin_groups = [g for g in (env.get("WORKBENCH_ADMIN_GROUPS") or "").split(",") if g]
    for cls in ("LocalGroupsAuthenticator", "TenantOAuthenticator"):
        c[cls].extra_admin_groups = admin_groups


def _roles_and_services(env: Mapping[str, str], tenants: Any, tenants_file: str
                        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(services, roles): tenant admins' roles, the per-tenant idle cullers (unless
    WORKBENCH_CULLER=0) and the GPU-idle culler (when WORKBENCH_PROMETHEUS_URL is set)."""
    from hub_config.auth import tenant_admin_roles
    from hub_config.services.idle_culler import culler_services

    # Tenant admins administer their tenant only. JupyterHub loads roles when it starts, so an
    # edit of the tenants file changes these roles at the next start (the authenticator warns).
    roles = tenant_admin_roles(tenants)
    services: list[dict[str, Any]] = []
    if (env.get("WORKBENCH_CULLER") or "1") != "0":
        every = env.get("WORKBENCH_CULL_EVERY")
        services, culler_roles = culler_services(tenants, cull_every=int(every) if every else None)
        roles += culler_roles
    prometheus = (env.get("WORKBENCH_PROMETHEUS_URL") or "").strip()
    if prometheus:
        services.append(gpu_culler_service(tenants_file, prometheus))
        roles.append(gpu_culler_role())
    if env.get(MARKER):  # `workbench up`'s mark: what a killed hub leaves is found by it
        for service in services:
            service["environment"] = {**service.get("environment", {}), MARKER: env[MARKER]}
    return services, roles


GPU_CULLER_SERVICE = "workbench-gpu-culler"


def gpu_culler_service(tenants_file: str, prometheus_url: str) -> dict[str, Any]:
    """The GPU-idle culler as a hub-managed service (the hub gives it its token)."""
    return {"name": GPU_CULLER_SERVICE, "command": [
        sys.executable, "-m", "hub_config.services.gpu_culler",
        f"--tenants-file={tenants_file}", f"--prometheus-url={prometheus_url}"]}


def gpu_culler_role() -> dict[str, Any]:
    from hub_config.services.gpu_culler import HUB_SCOPES

    return {"name": GPU_CULLER_SERVICE, "services": [GPU_CULLER_SERVICE],
            "scopes": list(HUB_SCOPES)}


def _spawner_timeouts(c: Any) -> None:
    c.Spawner.default_url = "/lab"
    # A two-core machine starting JupyterLab and a kernel is slow; don't give up early.
    c.Spawner.start_timeout = 120
    c.Spawner.http_timeout = 90


def _load_extra(env: Mapping[str, str]) -> None:
    extra = env.get("WORKBENCH_EXTRA_CONFIG")
    if extra:
        load_subconfig = globals().get("load_subconfig")
        if load_subconfig is None:
            raise HubConfigError("WORKBENCH_EXTRA_CONFIG works only when JupyterHub loads this file")
        load_subconfig(extra)


def configure(c: Any, env: Mapping[str, str]) -> None:
    """Fill a traitlets config object `c` from the WORKBENCH_* settings in `env`."""
    from hub_config.tenants import load_tenants

    state = Path(env.get("WORKBENCH_STATE_DIR") or ".workbench").resolve()
    state.mkdir(parents=True, exist_ok=True)
    tenants_file = _tenants_file(env, str(state / "tenants.yaml"))
    tenants = load_tenants(tenants_file)  # fail at start, naming file/tenant/field
    bind_url = env.get("WORKBENCH_BIND_URL") or "http://127.0.0.1:8000"

    c.JupyterHub.bind_url = bind_url
    c.JupyterHub.hub_bind_url = env.get("WORKBENCH_HUB_BIND_URL") or "http://127.0.0.1:8081"
    c.JupyterHub.db_url = f"sqlite:///{state / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(state / "jupyterhub.pid")
    c.ConfigurableHTTPProxy.api_url = env.get("WORKBENCH_PROXY_API_URL") or "http://127.0.0.1:8001"
    c.ConfigurableHTTPProxy.command = [proxy_command(env)]
    c.ConfigurableHTTPProxy.pid_file = str(state / "jupyterhub-proxy.pid")
    c.JupyterHub.cleanup_servers = True
    c.JupyterHub.cleanup_proxy = True
    # /hub/metrics for the operations dashboards; it requires the read:metrics scope.
    c.JupyterHub.authenticate_prometheus = True
    # One setting for the authenticator and the spawner (both are `hub_config.tenancy.Tenancy`).
    c.Tenancy.tenants_file = tenants_file

    _configure_auth(c, env, bind_url,
                    crypt_key_set=bool(env.get("JUPYTERHUB_CRYPT_KEY", "").strip()))

    spawner = env.get("WORKBENCH_SPAWNER") or "local"
    if spawner == "local":
        c.JupyterHub.spawner_class = "hub_config.local_spawner.TenantLocalSpawner"
        # One machine (`workbench up`): as root, every user is a system account of their own
        # with a home under WORKBENCH_HOMES_DIR (hub_config.local_spawner); homes that earlier
        # versions kept in the state folder move into the accounts' homes.
        c.TenantLocalSpawner.homes_dir = env.get("WORKBENCH_HOMES_DIR") or "/home"
        c.TenantLocalSpawner.legacy_homes_dir = str(state / "home")
        # The hub's state (database, cookie secret, users file) is the hub's alone; `workbench
        # up` also starts the hub with umask 077, so its files are 0600 too.
        state.chmod(0o700)
        # The hub's own interpreter: the single-user server sees the same packages (the magic).
        c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
    elif spawner == "kubernetes":
        c.JupyterHub.spawner_class = "hub_config.kube_spawner.TenantKubeSpawner"
    else:
        raise HubConfigError(f"WORKBENCH_SPAWNER={spawner!r}: use 'local' or 'kubernetes'")
    _spawner_timeouts(c)

    services, roles = _roles_and_services(env, tenants, tenants_file)
    # Ours are the only services and roles; an operator's extra config may add more.
    if (env.get("WORKBENCH_CULLER") or "1") != "0" or services:
        c.JupyterHub.services = services
    c.JupyterHub.load_roles = roles
    _load_extra(env)


def hub_url_across_namespaces(url: str, namespace: str) -> str:
    """The chart's `hub_connect_url` (`http://hub:8081`) names the hub's Service by its short
    name, which resolves only in the hub's own namespace; notebooks run in the tenants'
    namespaces, so the name gets the hub's namespace (`http://hub.<namespace>.svc:8081`). A URL
    whose host already has a dot (an operator's own) is kept."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if not namespace or not parts.hostname or "." in parts.hostname:
        return url
    host = f"{parts.hostname}.{namespace}.svc"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()


def configure_in_cluster(c: Any, env: Mapping[str, str]) -> None:
    """The workbench's part of a hub that the Zero to JupyterHub chart runs (`hub.extraConfig`).

    The chart's config file has already set the proxy, database, cookie secret, crypt key and
    the users' storage (`c.KubeSpawner.volumes`, `pvc_name_template`); this adds the tenancy:
    the tenants file (WORKBENCH_TENANTS_FILE, required: the chart mounts it from a ConfigMap),
    the authenticator, TenantKubeSpawner, the tenant admins' roles and the cullers, after the
    chart's own services and roles (the metrics reader's, say). Raises HubConfigError naming
    the setting to fix.
    """
    from hub_config.tenants import load_tenants

    if not env.get("WORKBENCH_TENANTS_FILE"):
        raise HubConfigError(
            "WORKBENCH_TENANTS_FILE is not set; point it at the tenants file mounted from the "
            "ConfigMap (hub.extraEnv in the Helm values)"
        )
    tenants_file = _tenants_file(env, "")
    tenants = load_tenants(tenants_file)
    c.Tenancy.tenants_file = tenants_file
    c.JupyterHub.authenticate_prometheus = True
    keys = c.CryptKeeper.get("keys") if "CryptKeeper" in c else None
    _configure_auth(c, env, None, crypt_key_set=bool(keys) or bool(
        env.get("JUPYTERHUB_CRYPT_KEY", "").strip()))
    c.JupyterHub.spawner_class = "hub_config.kube_spawner.TenantKubeSpawner"
    if "hub_connect_url" in c.JupyterHub:
        c.JupyterHub.hub_connect_url = hub_url_across_namespaces(
            c.JupyterHub.hub_connect_url, env.get("POD_NAMESPACE", ""))
    # The chart sets `profile_list` from singleuser.profileList ([] by default), which would
    # hide each user's tenant profiles (TenantKubeSpawner's default).
    if "KubeSpawner" in c and not c.KubeSpawner.get("profile_list", True):
        del c.KubeSpawner["profile_list"]
    _spawner_timeouts(c)
    services, roles = _roles_and_services(env, tenants, tenants_file)
    c.JupyterHub.services = [*(c.JupyterHub.get("services") or []), *services]
    c.JupyterHub.load_roles = [*(c.JupyterHub.get("load_roles") or []), *roles]
    _load_extra(env)


if "get_config" in globals():  # executed by JupyterHub as its config file
    configure(get_config(), os.environ)  # type: ignore[name-defined]  # noqa: F821
