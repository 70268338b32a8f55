"""The hub's configuration as the chart's pod would build it: the chart's own config file
(files/hub/jupyterhub_config.py and z2jh.py) run on the rendered ConfigMap, Secret and
environment, which runs the workbench's `hub.extraConfig`; then `TenantKubeSpawner` built from
that configuration renders a notebook pod. No cluster and no hub process.

Two things stand in for what only a pod has: the chart's mount point (/usr/local/etc/jupyterhub)
is a temporary folder holding the rendered ConfigMap and Secret keys, and the identity provider's
discovery document (the one network call of the workbench's config) answers fixed endpoints.
The chart's config also selects tornado's curl HTTP client; that call is recorded rather than
made, since it needs pycurl (which the hub image must therefore carry).
"""

from __future__ import annotations

import asyncio
import base64
import sys
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from hub_config import jupyterhub_config
from hub_config.tenants import load_tenants
from tests.helm import chart
from workbench_contract.ownership import user_claim

EXAMPLE_TENANTS = chart.ROOT / "hub_config" / "tenants.example.yaml"
MOUNT = "/usr/local/etc/jupyterhub/"
ENDPOINTS = {"authorize_url": "https://idp.test/auth", "token_url": "https://idp.test/token",
             "userdata_url": "https://idp.test/userinfo"}


def _hub_env(rendered: list[dict[str, Any]], tenants_file: Path) -> dict[str, str]:
    """The hub container's environment: plain values as rendered, Kubernetes' service variables,
    and a stand-in for each value the kubelet would take from a Secret."""
    hub = chart.containers(dict(chart.pod_specs(rendered))["Deployment/hub"])[0]
    env = {"HUB_SERVICE_PORT": "8081", "PROXY_API_SERVICE_PORT": "8001"}
    for entry in hub["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in entry["valueFrom"]:
            env[entry["name"]] = chart.NAMESPACE
        else:
            env[entry["name"]] = f"from-secret-{entry['valueFrom']['secretKeyRef']['key']}"
    # Where the ConfigMap `workbench-tenants` would be mounted.
    assert env["WORKBENCH_TENANTS_FILE"] == "/etc/workbench/tenants.yaml"
    env["WORKBENCH_TENANTS_FILE"] = str(tenants_file)
    return env


def _mount(rendered: list[dict[str, Any]], folder: Path) -> Path:
    """The chart's ConfigMap and Secret keys as the hub pod sees them; the config files with
    their mount point moved to `folder`. Returns the config file."""
    for sub, obj, decode in (("config", chart.find(rendered, "ConfigMap", "hub"), False),
                             ("secret", chart.find(rendered, "Secret", "hub"), True)):
        (folder / sub).mkdir()
        for key, value in obj["data"].items():
            text = base64.b64decode(value).decode() if decode else value
            (folder / sub / key).write_text(text)
    for name in ("jupyterhub_config.py", "z2jh.py"):
        source = (folder / "config" / name).read_text()
        (folder / name).write_text(source.replace(MOUNT, f"{folder}/"))
    return folder / "jupyterhub_config.py"


@pytest.fixture
def hub_config(rendered, tmp_path, monkeypatch) -> Config:
    """The Config the chart's config file builds, with the workbench's extraConfig run."""
    from tornado.httpclient import AsyncHTTPClient

    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(EXAMPLE_TENANTS.read_text())
    mounted = tmp_path / "mount"
    mounted.mkdir()
    config_file = _mount(rendered, mounted)
    for name, value in _hub_env(rendered, tenants_file).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(jupyterhub_config, "oidc_endpoints", lambda issuer: dict(ENDPOINTS))
    http_clients: list[Any] = []
    monkeypatch.setattr(AsyncHTTPClient, "configure", classmethod(
        lambda cls, impl, **kwargs: http_clients.append(impl)))
    monkeypatch.delitem(sys.modules, "z2jh", raising=False)
    monkeypatch.syspath_prepend(str(mounted))
    c = Config()
    code = compile(config_file.read_text(), str(config_file), "exec")
    exec(code, {"get_config": lambda: c, "__file__": str(config_file),  # noqa: S102
                "__name__": "__config__"})
    monkeypatch.delitem(sys.modules, "z2jh", raising=False)
    assert http_clients == ["tornado.curl_httpclient.CurlAsyncHTTPClient"]
    return c


def test_the_chart_config_runs_the_workbench_hub(hub_config: Config) -> None:
    c = hub_config
    assert c.JupyterHub.spawner_class == "hub_config.kube_spawner.TenantKubeSpawner"
    assert c.JupyterHub.authenticator_class == "hub_config.auth.TenantOAuthenticator"
    assert c.TenantOAuthenticator.client_secret == "from-secret-client-secret"
    assert c.TenantOAuthenticator.oauth_callback_url.endswith("/hub/oauth_callback")
    assert c.JupyterHub.authenticate_prometheus is True
    # The chart's settings stay: the proxy in its own pod, servers kept over a hub restart.
    assert c.ConfigurableHTTPProxy.should_start is False
    assert c.JupyterHub.cleanup_servers is False
    # Notebooks in the tenants' namespaces reach the hub's Service by its namespaced name.
    assert c.JupyterHub.hub_connect_url == f"http://hub.{chart.NAMESPACE}.svc:8081"
    assert c.CryptKeeper["keys"] and all(c.CryptKeeper["keys"])  # `.keys` is dict.keys


def test_services_and_roles_are_the_chart_s_and_the_workbench_s(hub_config: Config) -> None:
    tenants = load_tenants(EXAMPLE_TENANTS)
    services = {s["name"]: s for s in hub_config.JupyterHub.services}
    culled = [t.name for t in tenants.tenants if t.idle.server_timeout or t.idle.max_age]
    assert set(services) == {"prometheus", jupyterhub_config.GPU_CULLER_SERVICE,
                             *(f"idle-culler-{name}" for name in culled)}
    # The metrics reader's token comes from the chart's Secret, never from a value.
    assert services["prometheus"]["api_token"]
    assert "api_token" not in services[jupyterhub_config.GPU_CULLER_SERVICE]
    roles = {r["name"]: r for r in hub_config.JupyterHub.load_roles}
    assert roles["prometheus-metrics"]["scopes"] == ["read:metrics"]
    assert roles[jupyterhub_config.GPU_CULLER_SERVICE]["services"] == [
        jupyterhub_config.GPU_CULLER_SERVICE]
    assert "--prometheus-url=http://prometheus-operated.monitoring.svc:9090" in services[
        jupyterhub_config.GPU_CULLER_SERVICE]["command"]


def test_the_spawner_mounts_each_user_s_claim(hub_config: Config) -> None:
    pytest.importorskip("kubespawner", reason="jupyterhub-kubespawner is not installed (hub "
                                              "extra)")
    from kubernetes_asyncio.client import ApiClient

    from hub_config.kube_spawner import TenantKubeSpawner
    from tests.hub_config.hub_env import fake_user, offline_kubeconfig

    tenant = load_tenants(EXAMPLE_TENANTS).tenants[0]
    # The chart's `singleuser.profileList: []` must not hide the tenant's profiles.
    assert "profile_list" not in hub_config.KubeSpawner

    async def spawn() -> tuple[dict[str, Any], TenantKubeSpawner]:
        spawner = TenantKubeSpawner(_mock=True, config=hub_config,
                                    user=fake_user("Ada.Lovelace", [tenant.groups[0]]))
        spawner.user_options = {}
        await spawner.load_user_options()
        async with ApiClient() as api:
            return api.sanitize_for_serialization(await spawner.get_pod_manifest()), spawner

    with offline_kubeconfig():
        pod, spawner = asyncio.run(spawn())
    assert spawner.namespace == tenant.namespace
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
              if "persistentVolumeClaim" in v]
    assert claims == [user_claim(spawner.user_label)]
    assert spawner.storage_access_modes == ["ReadWriteMany"]
    assert spawner.workbench_context.storage.claim == user_claim(spawner.user_label)
    assert spawner.workbench_context.storage.mount_path == "/home/jovyan"
    # No init container: the chart's privileged metadata blocker is off.
    assert not pod["spec"].get("initContainers")


@pytest.mark.parametrize("env, message", [
    ({"WORKBENCH_TENANTS_FILE": ""}, "WORKBENCH_TENANTS_FILE is not set"),
    ({"WORKBENCH_OIDC_CALLBACK_URL": ""}, "WORKBENCH_OIDC_CALLBACK_URL is not set"),
], ids=["no-tenants-file", "no-callback-url"])
def test_in_cluster_settings_name_what_is_missing(tmp_path, env: dict[str, str],
                                                  message: str) -> None:
    base = {"WORKBENCH_TENANTS_FILE": str(EXAMPLE_TENANTS), "WORKBENCH_AUTH": "oidc",
            "WORKBENCH_OIDC_ISSUER": "http://127.0.0.1:9", "WORKBENCH_OIDC_CLIENT_ID": "hub",
            "WORKBENCH_OIDC_CLIENT_SECRET": "s", "JUPYTERHUB_CRYPT_KEY": "ab" * 32}
    with pytest.raises(jupyterhub_config.HubConfigError, match=message):
        jupyterhub_config.configure_in_cluster(Config(), {**base, **env})


@pytest.mark.parametrize("url, expected", [
    ("http://hub:8081", "http://hub.jupyterhub.svc:8081"),
    ("http://hub", "http://hub.jupyterhub.svc"),
    ("http://hub.other.svc.cluster.local:8081", "http://hub.other.svc.cluster.local:8081"),
])
def test_the_hub_url_names_the_hub_s_namespace(url: str, expected: str) -> None:
    assert jupyterhub_config.hub_url_across_namespaces(url, "jupyterhub") == expected
    assert jupyterhub_config.hub_url_across_namespaces(url, "") == url
