"""A notebook pod as the hub's spawner renders it runs on the real node and serves
``jupyterhub-singleuser``.

The tenant is provisioned by ``workbench apply``'s bundle (``node_tenant``: Pod Security
``restricted``, quota, NetworkPolicies, pods routed to the real node, ada's ``claim-<user>`` a
static local volume there). The pod is ``TenantKubeSpawner.get_pod_manifest()`` for ada with the
images tier's CPU image by digest and the claim at her home, created as the spawner creates it:
her service account and RoleBinding (``user_identity``), then the Secret holding the server's hub
token (``token_secret``: the pod spec only names it), then the pod.

The single-user server checks every request's token with the hub, so a real JupyterHub runs on
the host (``HubOnNode``: API only, its API bound to the node's address, configurable-http-proxy
for its public side). A hub outside the cluster is not a pod the tenant's ``notebook-from-hub``
policy names, so the test adds the egress an operator running the hub elsewhere adds: notebooks
to that address and port.

The server answers ``/user/<name>/api/status`` to ada's token and refuses a request without a
token and one with another user's. The spawner's probes decide readiness and liveness: a server
stopped with SIGSTOP makes the pod not Ready, and Ready again once SIGCONT resumes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import node_config as cfg
import pytest
import yaml
from node_figures import FIGURES, pull_seconds
from pod_client import core_api, exec_in, running_pod
from real_node import ProcessExited, wait_for
from tenancy import as_the_hub

from hub_config.cluster_policy.network import NOTEBOOK_PORT
from hub_config.kube_spawner import token_secret, token_secret_name
from tests.hub_config.conftest import HubProcess, free_port, proxy_command
from workbench_contract import labels
from workbench_contract.ownership import user_claim

USER = "ada"
HOME = "/home/jovyan"  # the spawner's home_mount_path (its default)
# The spawner's readiness probe gives up after 3 failures 10 s apart and its liveness probe
# after 5 failures 30 s apart (60 s after the start): generous waits, never asserted as times.
PROBE_TIMEOUT = 600


HUB_CONFIG = """
c = get_config()  # noqa: F821
c.JupyterHub.bind_url = {public!r}
c.JupyterHub.hub_bind_url = {hub!r}
c.ConfigurableHTTPProxy.api_url = {proxy_api!r}
c.ConfigurableHTTPProxy.command = [{proxy!r}]
c.JupyterHub.db_url = "sqlite:///" + {state!r} + "/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = {state!r} + "/cookie_secret"
c.JupyterHub.authenticator_class = "null"
c.JupyterHub.services = [{{"name": "test-admin", "api_token": open({token_file!r}).read()}}]
c.JupyterHub.load_roles = [{{"name": "test-admin", "services": ["test-admin"],
                             "scopes": ["admin:users", "tokens"]}}]
"""


class HubOnNode(HubProcess):
    """A real JupyterHub on the host, API only (no login, no spawner in use), whose API listens
    on the node's address, where pods reach it: ``url`` is that address. Its admin service's
    token is in a file of the state folder, never on a command line. ``stop()`` is
    ``HubProcess``'s (SIGINT, then whatever is left)."""

    def start(self, timeout: float = 120) -> HubOnNode:
        proxy = proxy_command()
        if not proxy:
            pytest.fail("the hub needs configurable-http-proxy: run `npm ci` "
                        "(scripts/setup.sh)", pytrace=False)
        self.port = free_port()
        self.url = f"http://{cfg.NODE_IP}:{self.port}"
        token_file = self.state / "admin-token"
        token_file.write_text(self.admin_token)
        token_file.chmod(0o600)
        config = self.state / "hub_config.py"
        config.write_text(HUB_CONFIG.format(
            public=f"http://127.0.0.1:{free_port()}", hub=self.url,
            proxy_api=f"http://127.0.0.1:{free_port()}", proxy=proxy, state=str(self.state),
            token_file=str(token_file)))
        self.log = open(self.state / "hub.log", "ab")  # noqa: SIM115 - closed in stop()
        env = {**os.environ,
               "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.state, env=env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

        def answers() -> bool:
            if self.process.poll() is not None:
                raise ProcessExited(f"the hub exited:\n{self.log_text()[-3000:]}")
            return self.api("GET", "/").status_code == 200

        wait_for(answers, timeout, "the hub's API")
        return self

    def user_token(self, user: str, note: str) -> str:
        """A new API token of ``user`` (made with the user when missing)."""
        self.api("POST", f"/users/{user}")
        made = self.api("POST", f"/users/{user}/tokens", json={"note": note})
        assert made.status_code in (200, 201), (made.status_code, self.log_text()[-2000:])
        return made.json()["token"]


@pytest.fixture
def hub_on_node(real_node, tmp_path) -> Iterator[HubOnNode]:
    """A started ``HubOnNode``; stopped (with its proxy) at the end of the test."""
    state = tmp_path / "hub"
    state.mkdir()
    hub = HubOnNode(state, env={})
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()


def spawner_pod(tenant, user: str, hub_url: str, server_token: str) -> dict:
    """The notebook pod ``TenantKubeSpawner`` renders for ``user`` of ``tenant`` (its first
    profile and image), as the hub renders it at a spawn: the hub's API at ``hub_url``, the
    server at ``/user/<user>/``, its hub token ``server_token`` (which the spawner moves out of
    the pod spec into the Secret ``<pod>-token``), ``claim-<user>`` at the home."""
    from jupyterhub.objects import Hub, Server
    from kubernetes_asyncio.client import ApiClient

    from hub_config.kube_spawner import TenantKubeSpawner
    from tests.hub_config.hub_env import fake_user, offline_kubeconfig

    with tempfile.TemporaryDirectory() as folder:
        tenants_file = Path(folder) / "tenants.yaml"
        tenants_file.write_text(yaml.safe_dump({"tenants": [tenant.to_dict()]}))

        async def render() -> dict:
            spawner = TenantKubeSpawner(
                _mock=True, user=fake_user(user, list(tenant.groups)),
                tenants_file=str(tenants_file), hub=Hub(base_url="/hub/"),
                hub_connect_url=hub_url, oauth_client_id=f"jupyterhub-user-{user}",
                volumes=[{"name": "home", "persistentVolumeClaim": {
                    "claimName": user_claim(user)}}],
                volume_mounts=[{"name": "home", "mountPath": HOME}])
            spawner.server = Server(base_url=f"/user/{user}/", ip="0.0.0.0", port=NOTEBOOK_PORT)
            spawner.api_token = server_token
            await spawner.load_user_options()
            pod = await spawner.get_pod_manifest()
            async with ApiClient() as api:
                return api.sanitize_for_serialization(pod)

        with offline_kubeconfig():
            pod = asyncio.run(render())
    # KubeSpawner writes CPU and memory as numbers (the hub's asyncio client sends them so);
    # this client takes quantities as strings, which the API server reads the same.
    for container in pod["spec"]["containers"]:
        for amounts in (container.get("resources") or {}).values():
            amounts.update({name: str(value) for name, value in amounts.items()})
    return pod


def hub_egress(namespace: str, port: int) -> dict:
    """What an operator whose hub runs outside the cluster adds: notebooks may call its API."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "notebook-to-hub-outside", "namespace": namespace},
            "spec": {"podSelector": {"matchLabels": {
                labels.LABEL_COMPONENT: labels.COMPONENT_NOTEBOOK}}, "policyTypes": ["Egress"],
                "egress": [{"to": [{"ipBlock": {"cidr": f"{cfg.NODE_IP}/32"}}],
                            "ports": [{"protocol": "TCP", "port": port}]}]}}


def get_status(pod_ip: str, user: str, token: str | None) -> tuple[int, dict]:
    """``GET /user/<user>/api/status`` on the server, with ``token`` if any."""
    headers = {"Authorization": f"token {token}"} if token else {}
    request = urllib.request.Request(
        f"http://{pod_ip}:{NOTEBOOK_PORT}/user/{user}/api/status", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, {}


def _ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


# Signals the single-user server's process (found by its command line) inside the pod.
SIGNAL_SERVER = ("import os, signal, sys\n"
                 "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
                 "    try:\n"
                 "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
                 "    except OSError:\n"
                 "        continue\n"
                 "    if b'jupyterhub-singleuser' in cmd and b'tini' not in cmd:\n"
                 "        os.kill(int(pid), int(sys.argv[1]))\n"
                 "        print('signalled', pid)\n")


def test_a_spawned_notebook_pod_serves_its_user_on_the_real_node(
        control_plane, real_node, node_tenant, hub_on_node):
    import tenancy
    from kubernetes import client

    tenant, _home = node_tenant
    core = core_api(control_plane)
    tenancy.notebook_user(control_plane, tenant, USER)  # her account and RoleBinding
    hub = hub_on_node
    server_token = hub.user_token(USER, "server")
    token = hub.user_token(USER, "client")
    other = hub.user_token("bob", "client")

    pod = spawner_pod(tenant, USER, hub.url, server_token)
    # No token in the pod spec (checked without letting a failure print one).
    leaked = any(secret in json.dumps(pod) for secret in (server_token, token))
    assert not leaked, "a hub token is written in the notebook pod's spec"
    name = pod["metadata"]["name"]
    container = pod["spec"]["containers"][0]
    assert container["image"] == tenant.images[0].image and "@sha256:" in container["image"]
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= container.keys()

    client.NetworkingV1Api(control_plane.api_client()).create_namespaced_network_policy(
        tenant.namespace, hub_egress(tenant.namespace, hub.port))
    secret = token_secret(token_secret_name(name), tenant.namespace, server_token, {
        labels.LABEL_TENANT: tenant.name, labels.LABEL_USER: USER,
        labels.LABEL_COMPONENT: labels.COMPONENT_NOTEBOOK})
    core.create_namespaced_secret(tenant.namespace, secret)
    began = time.monotonic()
    # As the hub: the tenant's policy lets only the hub's own account make a notebook pod.
    hub_api = client.CoreV1Api(as_the_hub(control_plane, "jupyterhub"))
    hub_api.create_namespaced_pod(tenant.namespace, pod)
    running = running_pod(core, tenant.namespace, name)
    # Printed at the end of the session; never asserted. Each node starts with an empty
    # containerd, so this includes pulling the image from the internal registry.
    FIGURES["notebook pod: create to Ready, with the image pull (s)"] = time.monotonic() - began
    pulls = pull_seconds(core.list_namespaced_event(
        tenant.namespace, field_selector=f"involvedObject.name={name}").items)
    if pulls:
        FIGURES["notebook pod: image pull (s)"] = max(pulls)

    # Admitted under `restricted`, on the node, as the notebook user, not root.
    namespace = core.read_namespace(tenant.namespace)
    assert namespace.metadata.labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert running.spec.node_name == real_node.name
    code, out = exec_in(core, tenant.namespace, name, ["id", "-u"])
    assert (code, out.strip()) == (0, "1000"), out

    pod_ip = running.status.pod_ip
    status, body = get_status(pod_ip, USER, token)
    assert status == 200 and "started" in body, (status, body)
    assert get_status(pod_ip, USER, None)[0] == 403
    assert get_status(pod_ip, USER, other)[0] == 403

    # The image's packages are there for the kernel (importing paddle takes a while).
    code, out = exec_in(core, tenant.namespace, name,
                        ["python", "-c", "import launcher_magic, paddle; print('imported')"],
                        timeout=300)
    assert code == 0 and "imported" in out, out

    # Probes: a server that stops answering is not Ready, and Ready again once it answers. (The
    # kubelet's restart on a failed liveness probe is shown in test_real_pod.py; waiting for
    # this probe's lenient 5 x 30 s here would add four minutes to every run.)
    code, out = exec_in(core, tenant.namespace, name,
                        ["python", "-c", SIGNAL_SERVER, str(int(signal.SIGSTOP))])
    assert code == 0 and "signalled" in out, out
    stopped = time.monotonic()
    wait_for(lambda: not _ready(core.read_namespaced_pod(name, tenant.namespace)),
             PROBE_TIMEOUT, "the stopped server's pod to be not Ready")
    FIGURES["notebook server stopped: to not Ready (s)"] = time.monotonic() - stopped
    code, out = exec_in(core, tenant.namespace, name,
                        ["python", "-c", SIGNAL_SERVER, str(int(signal.SIGCONT))])
    assert code == 0 and "signalled" in out, out

    def ready_again():
        got = core.read_namespaced_pod(name, tenant.namespace)
        return got if _ready(got) else None

    again = wait_for(ready_again, PROBE_TIMEOUT, "the resumed server's pod to be Ready again")
    assert again.status.container_statuses[0].restart_count == 0
    assert get_status(again.status.pod_ip, USER, token)[0] == 200
