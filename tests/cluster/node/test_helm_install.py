"""`helm install` of the Zero to JupyterHub chart with the workbench's values, on the real node.

The chart (deploy/helm, release 4.4.0 unchanged) goes in with ``workbench-values.yaml``, the
images by digest from the internal registry (the hub and proxy images built from images/hub and
images/proxy, the CPU image as the notebooks' default: ``deploy/helm/image-values.py``), and what
an operator's own values file would set (``helm_release.site_values``): the identity provider,
the node, the hub database's volume, the proxy's node port.

Around it, what an operator provides: the hub's namespace under Pod Security ``restricted``; one
tenant provisioned by ``workbench apply``'s bundle with the hub's namespace and the API server's
address (``--api-server-cidr``) named, its pods routed to the real node by the namespace's node
selector and default tolerations; Trainer's Paddle runtime (the tenant's default job API); the
tenants file in the ConfigMap ``workbench-tenants``; the OIDC client's secret in the Secret
``workbench-oidc``; a static ``local`` volume for the hub's database claim. The identity
provider is oidc-provider-mock (the hub tests' provider) listening on the node's address, so
the hub pod and the test's browser on the host reach the same issuer.

The browser is ``requests``: it goes to the proxy's node port (kube-proxy serves it on the
node's address), which the hub's login page, the provider's and the callback all go through.
The test's checks use an API-only service with admin scopes, its token set through the chart's
``hub.services`` (so only in the chart's Secret).

In the spawned notebook pod's own kernel (started through the server's REST API and its kernel
websocket, through the proxy, with ada's token) a ``%%paddle_launch --nodes 2`` cell runs with
nothing but what the spawner gave the pod: the tenant's default engine (TrainJob), namespace,
claim and image; then again as a PaddleJob (``--engine paddlejob``). Its worker pods train on
the node; their parameters are read from ada's claim (a folder of the node's disk, so the test
reads it too). ``%visualdl`` then opens the job's board through jupyter-server-proxy in that
pod. Then the browser journey of tests/browser, in Chromium through the proxy: the provider's
login page, the sample notebook (the pod's postStart hook put it into the new home), its launch
cell run with Shift+Enter, the panel at Succeeded with the job's VisualDL chart drawn
(screenshots in test-output/browser-cluster/).

A second tenant, whose idle policy stops servers after a minute, has one user: the hub pod's
per-tenant cullers (hub services, looking every few seconds here) stop that user's untouched
server and leave ada's, whose tenant allows an hour. The hub pod is deleted while a job trains:
it comes back with its users and servers, and the job's same pods go on to Succeeded. A third
user's server, on a second node (``second_node``) with a home every node mounts, loses its machine:
the hub calls it stopped once the pod is evicted, and it starts again on the first node with the
same home. The module
ends with the README's embedded default (`workbench up`) doing the same steps, so that each run
prints both sides' figures.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_release
import k8s_plane
import node_config as cfg
import numpy as np
import pytest
import requests
import tenancy
import yaml
from node_figures import FIGURES
from placement import local_volume, route_to_node, shared_volume
from pod_client import core_api, running_pod

from hub_config.auth import member_group
from hub_config.cluster_policy.apply import apply_objects
from hub_config.cluster_policy.bundle import POD_SECURITY_LABELS
from hub_config.cluster_policy.network import network_policies
from hub_config.tenants import Tenant
from tests.helm import chart
from tests.hub_config.conftest import run_cell
from tests.launcher_magic.support import TRAIN_CELL
from workbench_contract import environment
from workbench_contract.jobkinds import job_kinds
from workbench_contract.labels import LABEL_JOB
from workbench_contract.ownership import user_claim

pytestmark = pytest.mark.timeout(3600)

READY_TIMEOUT = 600
USER = "ada"
# A user of a second tenant whose idle policy stops servers after IDLE_TIMEOUT seconds; the
# hub's cullers look every CULL_EVERY seconds (WORKBENCH_CULL_EVERY).
IDLE_USER = "cleo"
# A member of ada's tenant whose home is on storage every node mounts (``shared_volume``): the
# user whose server's machine dies.
MOVER = "ben"
IDLE_TIMEOUT = 60
CULL_EVERY = 10
HUB_DB_CLAIM = "hub-db-dir"  # the chart's claim for hub.db.type sqlite-pvc
REPO = Path(__file__).resolve().parents[3]
SHOTS = REPO / "test-output" / "browser-cluster"  # the browser's screenshots (git-ignored)


@dataclass
class Release:
    """The installed release and what the tests reach it by."""

    helm: Path
    kubeconfig: Path
    namespace: str
    tenant: Tenant
    idle_tenant: Tenant  # IDLE_USER's, with the short idle timeout
    url: str  # the proxy's node port, as the host's browser reaches it
    admin_token: str
    provider: helm_release.OidcProvider
    install_seconds: float  # helm install -> hub and proxy Ready
    home: Path  # the node's folder that ada's claim binds
    uninstalled: bool = False
    jobs: list[str] = field(default_factory=list)  # jobs run from the notebook pod

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, f"{self.url}/hub/api{path}", timeout=60, headers={
            "Authorization": f"token {self.admin_token}"}, **kwargs)

    def hub_log(self, lines: int = 60) -> str:
        """The hub pod's last `lines` of log: why a spawn failed, for an assertion's message."""
        from kubernetes import client, config

        core = client.CoreV1Api(config.new_client_from_config(str(self.kubeconfig)))
        try:
            (pod,) = core.list_namespaced_pod(self.namespace, label_selector="component=hub").items
            return core.read_namespaced_pod_log(pod.metadata.name, self.namespace,
                                                tail_lines=lines)
        except Exception as exc:  # noqa: BLE001 - the log is a hint only
            return f"(no hub log: {exc})"


def _ready(pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def wait_component_ready(core, namespace: str, component: str, timeout: float) -> Any:
    """The chart's pod of ``component`` (hub, proxy) once Ready; AssertionError with every
    such pod's status and the hub's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace, label_selector=f"component={component}").items
        ready = [p for p in pods if _ready(p) and not p.metadata.deletion_timestamp]
        if ready:
            return ready[0]
        time.sleep(1)
    statuses = "\n".join(f"{p.metadata.name}: {p.status}" for p in pods)
    logs = ""
    for pod in pods:
        try:
            logs += core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=40)
        except Exception as exc:  # noqa: BLE001 - the log is a hint only
            logs += f"(no log of {pod.metadata.name}: {exc})"
    raise AssertionError(f"no Ready {component} pod in {namespace} after {timeout:.0f}s\n"
                         f"{statuses}\n{logs}")


def _helm(helm: Path, kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm), "--kubeconfig", str(kubeconfig), *args],
                          capture_output=True, text=True, timeout=600)


def _tenant(cpu_image: str, prefix: str = "helm", **idle: int) -> tuple[Tenant, dict[str, Any]]:
    data = tenancy.tenant_data(tenancy.unique(prefix), gpus=0)
    data["images"] = [{"name": "CPU (node)", "image": cpu_image}, *data["images"]]
    if idle:
        data["idle"] = idle
    return Tenant.from_dict(data, strict=True), data


def _hub_namespace(core, namespace: str, tenants: dict[str, Any], client_secret: str) -> None:
    """The hub's namespace as the guide's step 3 makes it: Pod Security `restricted`, the
    tenants file in the ConfigMap `workbench-tenants`, the OIDC secret in `workbench-oidc`."""
    core.create_namespace({"metadata": {"name": namespace, "labels": dict(POD_SECURITY_LABELS)}})
    core.create_namespaced_config_map(namespace, {
        "metadata": {"name": "workbench-tenants"},
        "data": {"tenants.yaml": yaml.safe_dump(tenants, sort_keys=False)}})
    core.create_namespaced_secret(namespace, {
        "metadata": {"name": "workbench-oidc"}, "stringData": {"client-secret": client_secret}})


def _volume(core, folder: Path, name: str, node: str, namespace: str, claim: str,
            modes: list[str]) -> None:
    """A folder of the node's disk as the volume the claim binds; open to the pods' uids (a
    local volume keeps the folder's owner)."""
    folder.mkdir()
    folder.chmod(0o777)
    core.create_persistent_volume(local_volume(name, folder, node, namespace, claim, modes))


def _delete_quietly(*deletes) -> None:
    from kubernetes.client.exceptions import ApiException

    for delete in deletes:
        try:
            delete()
        except ApiException as exc:
            if exc.status != 404:
                raise


@pytest.fixture(scope="module")
def release(control_plane, real_node, cpu_image, paddle_runtime,
            tmp_path_factory) -> Iterator[Release]:
    """The release installed as the guide says, once hub and proxy are Ready; uninstalled (if a
    test has not) and everything around it removed afterwards."""
    try:
        helm = chart.build_helm()
        images = helm_release.chart_images()
    except (chart.HelmUnavailable, chart.HelmBuildFailed, helm_release.ImageError) as exc:
        pytest.fail(str(exc), pytrace=False)
    work = tmp_path_factory.mktemp("helm-release")
    core = core_api(control_plane)
    namespace = tenancy.unique("hub")
    tenant, data = _tenant(cpu_image)
    idle_tenant, idle_data = _tenant(cpu_image, "idle", server_timeout=IDLE_TIMEOUT)
    provider = helm_release.OidcProvider(
        [{"sub": USER, "preferred_username": USER, "groups": list(tenant.groups)},
         {"sub": IDLE_USER, "preferred_username": IDLE_USER,
          "groups": list(idle_tenant.groups)},
         {"sub": MOVER, "preferred_username": MOVER, "groups": list(tenant.groups)}],
        work / "provider.log")
    db_volume = f"{namespace}-{HUB_DB_CLAIM}"
    home_volume = f"{tenant.namespace}-{user_claim(USER)}"
    idle_home_volume = f"{idle_tenant.namespace}-{user_claim(IDLE_USER)}"
    mover_volume = f"{tenant.namespace}-{user_claim(MOVER)}"
    kubeconfig = control_plane.kubeconfig
    made: Release | None = None
    try:
        provider.start()
        port = helm_release.node_port()
        url = f"http://{cfg.NODE_IP}:{port}"
        oidc_client = provider.register(f"{url}/hub/oauth_callback")
        _hub_namespace(core, namespace, {"tenants": [data, idle_data]},
                       oidc_client["client_secret"])
        for each in (tenant, idle_tenant):
            tenancy.provision(control_plane, each, hub_namespace=namespace)
            # `--api-server-cidr` (the guide's `workbench apply`): here the API server's relay
            # on the node's address, so the notebook's kubernetes engine reaches it.
            apply_objects(control_plane.api_client(), network_policies(
                each, hub_namespace=namespace, api_server_cidrs=[f"{cfg.NODE_IP}/32"]))
            route_to_node(core, each.namespace)
        _volume(core, work / "hub-db", db_volume, real_node.name, namespace, HUB_DB_CLAIM,
                ["ReadWriteOnce"])
        # The user's claim (the chart's singleuser.storage, made by the spawner) binds this.
        _volume(core, work / f"home-{USER}", home_volume, real_node.name, tenant.namespace,
                user_claim(USER), ["ReadWriteMany"])
        _volume(core, work / f"home-{IDLE_USER}", idle_home_volume, real_node.name,
                idle_tenant.namespace, user_claim(IDLE_USER), ["ReadWriteMany"])
        mover_home = work / f"home-{MOVER}"
        mover_home.mkdir()
        mover_home.chmod(0o777)
        core.create_persistent_volume(shared_volume(mover_volume, mover_home, tenant.namespace,
                                                    user_claim(MOVER)))
        admin_token = secrets.token_hex(32)
        images_file = chart.image_values(work, {**images, "cpu": cpu_image})
        site = helm_release.write_values(work / "site.yaml", helm_release.site_values(
            issuer=provider.issuer, client_id=oidc_client["client_id"],
            callback=f"{url}/hub/oauth_callback", port=port, admin_token=admin_token,
            cull_every=CULL_EVERY))

        began = time.monotonic()
        done = _helm(helm, kubeconfig, "install", chart.RELEASE, str(chart.CHART),
                     "--namespace", namespace, "-f", str(chart.VALUES),
                     "-f", str(images_file), "-f", str(site))
        assert done.returncode == 0, f"helm install failed:\n{done.stderr}"
        made = Release(helm, kubeconfig, namespace, tenant, idle_tenant, url, admin_token,
                       provider, 0.0, work / f"home-{USER}")
        wait_component_ready(core, namespace, "hub", READY_TIMEOUT)
        wait_component_ready(core, namespace, "proxy", READY_TIMEOUT)
        made.install_seconds = time.monotonic() - began
        FIGURES["helm install -> hub and proxy Ready (s)"] = made.install_seconds
        yield made
    finally:
        if made and not made.uninstalled:
            _helm(helm, kubeconfig, "uninstall", chart.RELEASE, "--namespace", namespace)
        for each in (tenant, idle_tenant):
            tenancy.deprovision(control_plane, each)
        _delete_quietly(lambda: core.delete_namespace(namespace),
                        lambda: core.delete_persistent_volume(db_volume),
                        lambda: core.delete_persistent_volume(home_volume),
                        lambda: core.delete_persistent_volume(idle_home_volume),
                        lambda: core.delete_persistent_volume(mover_volume))
        provider.stop()


def oauth_login(release: Release, sub: str) -> tuple[requests.Session, requests.Response]:
    """The hub's login button -> the provider's authorize page -> the subject chosen -> the
    hub's callback -> the hub's home page, all through the proxy's node port."""
    session = requests.Session()
    page = session.get(f"{release.url}/hub/oauth_login", params={"next": "/hub/home"},
                       timeout=60)
    assert page.status_code == 200 and "/oauth2/authorize" in page.url, (page.status_code,
                                                                         page.url)
    final = session.post(page.url, data={"sub": sub}, timeout=120)
    return session, final


def test_helm_install_reaches_hub_ready(release: Release, control_plane, real_node) -> None:
    core = core_api(control_plane)
    for component in ("hub", "proxy"):
        (pod,) = [p for p in core.list_namespaced_pod(
            release.namespace, label_selector=f"component={component}").items]
        assert pod.spec.node_name == real_node.name
        assert _ready(pod)
    # The hub answers through the proxy's Service, and its health says so.
    health = requests.get(f"{release.url}/hub/health", timeout=30)
    assert health.status_code == 200, health.text
    assert release.api("GET", "/").json()["version"]


def test_login_through_the_proxy_lands_in_the_tenant(release: Release) -> None:
    session, final = oauth_login(release, USER)
    assert final.status_code == 200, (final.status_code, final.url, final.text[:2000])
    assert final.url == f"{release.url}/hub/home", final.url
    assert USER in final.text
    model = release.api("GET", f"/users/{USER}").json()
    assert sorted(model["groups"]) == _groups(release), model
    assert model["admin"] is False
    state = model.get("auth_state") or {}
    assert state.get("oauth_user", {}).get("groups") == list(release.tenant.groups), state


def _groups(release: Release) -> list[str]:
    """A user's groups in the hub: the provider's, and the tenant's member group that the hub
    adds at login."""
    return sorted([*release.tenant.groups, member_group(release.tenant)])


def user_token(release: Release, name: str) -> str:
    response = release.api("POST", f"/users/{name}/tokens", json={"note": "helm install test"})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def wait_server_ready(release: Release, name: str, timeout: float = READY_TIMEOUT) -> dict:
    """The user's model once their default server is ready; AssertionError otherwise."""
    deadline = time.monotonic() + timeout
    model: dict = {}
    while time.monotonic() < deadline:
        model = release.api("GET", f"/users/{name}").json()
        server = (model.get("servers") or {}).get("")
        if server and server.get("ready"):
            return model
        if not server and not model.get("pending"):
            break  # the spawn failed and the hub gave up
        time.sleep(1)
    raise AssertionError(f"{name}'s server did not become ready: {model}\n{release.hub_log()}")


def spawn(release: Release, name: str) -> float:
    """Start the user's server through the hub's API; seconds until the hub calls it ready."""
    began = time.monotonic()
    response = release.api("POST", f"/users/{name}/server")
    assert response.status_code in (201, 202), f"{response.text}\n{release.hub_log()}"
    wait_server_ready(release, name)
    return time.monotonic() - began


def status_through_proxy(release: Release, name: str, token: str) -> dict:
    """The notebook server's /api/status, through the proxy's Service, as the user."""
    response = requests.get(f"{release.url}/user/{name}/api/status", timeout=60,
                            headers={"Authorization": f"token {token}"})
    assert response.status_code == 200, (response.status_code, response.text[:2000])
    return response.json()


def notebook_pod(core, release: Release, name: str, tenant: Tenant | None = None):
    (pod,) = core.list_namespaced_pod(
        (tenant or release.tenant).namespace,
        label_selector=f"hub.jupyter.org/username={name}").items
    return pod


def test_spawn_starts_the_notebook_in_the_tenants_namespace(release: Release, control_plane,
                                                            real_node) -> None:
    core = core_api(control_plane)
    oauth_login(release, USER)
    first = spawn(release, USER)
    pod = running_pod(core, release.tenant.namespace, notebook_pod(core, release, USER).metadata.name)
    assert pod.spec.node_name == real_node.name
    assert pod.metadata.namespace == release.tenant.namespace
    claims = [v.persistent_volume_claim.claim_name for v in pod.spec.volumes
              if v.persistent_volume_claim]
    assert claims == [user_claim(USER)]
    # The server reaches the hub's API across namespaces (its token checks go there).
    env = {e.name: e.value for e in pod.spec.containers[0].env or []}
    assert env["JUPYTERHUB_API_URL"] == f"http://hub.{release.namespace}.svc:8081/hub/api"
    token = user_token(release, USER)
    assert "started" in status_through_proxy(release, USER, token)
    # Again with the image on the node: the spawn as users see it day to day.
    response = release.api("DELETE", f"/users/{USER}/server")
    assert response.status_code in (202, 204), response.text
    wait_for_gone(core, release.tenant.namespace, pod.metadata.name)
    # The pod goes before the hub's stop ends; a spawn before then is refused ("pending stop").
    k8s_plane.wait_for(lambda: not release.api("GET", f"/users/{USER}").json().get("pending"),
                       READY_TIMEOUT, f"the hub to finish stopping {USER}'s server")
    cached = spawn(release, USER)
    assert "started" in status_through_proxy(release, USER, token)
    FIGURES["spawn -> notebook ready, first (image pulled) (s)"] = first
    FIGURES["spawn -> notebook ready, image cached (s)"] = cached


def wait_for_gone(core, namespace: str, name: str, timeout: float = READY_TIMEOUT) -> None:
    from kubernetes.client.exceptions import ApiException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(1)
    raise AssertionError(f"pod {namespace}/{name} still there after {timeout:.0f}s")


NODE_CELL = "%%paddle_launch --nodes 2 --cpu 500m --memory 2Gi"
JOB_TIMEOUT = 900
# The custom resource each job API makes (the tenant's default is trainjob; the engine of a job
# API has its name: `--engine paddlejob` makes a PaddleJob).
JOB_APIS = {name: (kind.api.group, kind.api.version, kind.api.plural)
            for name, kind in job_kinds().items()}
# The board's link in %visualdl's output: the iframe's source.
BOARD_LINK = re.compile(r'src="(/user/[^"]+)"')


class UserKernel:
    """A kernel of the user's notebook server, started through its REST API and driven over
    its websocket with the user's token, both through the hub's proxy at ``url``."""

    def __init__(self, url: str, name: str, token: str) -> None:
        import websocket

        self.server = f"{url}/user/{name}"
        self.headers = {"Authorization": f"token {token}"}
        response = requests.post(f"{self.server}/api/kernels", headers=self.headers, json={},
                                 timeout=120)
        assert response.status_code == 201, (response.status_code, response.text[:2000])
        self.id = response.json()["id"]
        self.session = uuid.uuid4().hex
        self.ws = websocket.create_connection(
            f"{self.server.replace('http://', 'ws://')}/api/kernels/{self.id}/channels",
            header=[f"Authorization: token {token}"], timeout=120)

    def run(self, code: str, timeout: float = 120) -> str:
        status, output = run_cell(self.ws, code, self.session, timeout)
        assert status == "ok", (status, output[-4000:])
        return output

    def close(self) -> None:
        self.ws.close()
        requests.delete(f"{self.server}/api/kernels/{self.id}", headers=self.headers,
                        timeout=60)


def _job_status(release: Release, job_id: str) -> dict:
    return json.loads((release.home / "jobs" / job_id / "status.json").read_text())


@pytest.mark.parametrize("job_api", ["trainjob", "paddlejob"])
def test_a_two_node_job_from_the_notebook_pods_kernel_and_its_board(release: Release,
                                                                    control_plane, real_node,
                                                                    job_api: str) -> None:
    from kubernetes import client

    core = core_api(control_plane)
    token = user_token(release, USER)
    kernel = UserKernel(release.url, USER, token)
    try:
        # The kernel's engine runs with what the spawner put in the pod's env, nothing else.
        image = notebook_pod(core, release, USER).spec.containers[0].image
        env = json.loads(kernel.run(
            "import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
            f"if k.startswith({environment.PREFIX!r})}}))").strip().splitlines()[-1])
        assert (env[environment.ENGINE], env[environment.NAMESPACE],
                env[environment.STORAGE_CLAIM], env[environment.IMAGE]) == (
            release.tenant.job_api, release.tenant.namespace, user_claim(USER), image), env
        name = f"dp-{job_api}"
        engine = "" if job_api == release.tenant.job_api else f" --engine {job_api}"
        began = time.monotonic()
        kernel.run(f"{NODE_CELL} --name {name}{engine}\n{TRAIN_CELL}", timeout=JOB_TIMEOUT)
        FIGURES[f"helm: notebook pod's kernel, 2-node {job_api}: cell to job Succeeded (s)"] = (
            time.monotonic() - began)
        (job_id,) = [p.name for p in (release.home / "jobs").iterdir()
                     if p.name.startswith(f"{name}-")]
        release.jobs.append(job_id)
        status = _job_status(release, job_id)
        assert status["state"] == "Succeeded", status
        spec = json.loads((release.home / "jobs" / job_id / "spec.json").read_text())
        assert spec["engine"] == job_api, spec
        group, version, plural = JOB_APIS[job_api]
        client.CustomObjectsApi(control_plane.api_client()).get_namespaced_custom_object(
            group, version, release.tenant.namespace, plural, job_id)
        pods = core.list_namespaced_pod(release.tenant.namespace,
                                        label_selector=f"{LABEL_JOB}={job_id}").items
        assert len(pods) == 2 and {p.spec.node_name for p in pods} == {real_node.name}, pods
        assert {p.status.phase for p in pods} == {"Succeeded"}
        assert {c.image for p in pods for c in p.spec.containers} == {image}
        folder = release.home / "jobs" / job_id
        rank0, rank1 = (np.load(folder / f"params-rank{rank}.npy") for rank in (0, 1))
        assert rank0.size and np.array_equal(rank0, rank1)

        # The job's board, through jupyter-server-proxy in the pod and the chart's proxy.
        shown = kernel.run(f"%visualdl {job_id}")
        links = set(BOARD_LINK.findall(shown.replace("&amp;", "&")))
        assert len(links) == 1, shown
        (link,) = links
        assert link.startswith(f"/user/{USER}/proxy/"), link
        page = requests.get(f"{release.url}{link}", headers=kernel.headers, timeout=120)
        assert page.status_code == 200, (page.status_code, page.text[:2000])
        assert "visualdl" in page.text.lower(), page.text[:2000]
        anonymous = requests.get(f"{release.url}{link}", timeout=60, allow_redirects=False)
        assert anonymous.status_code in (302, 403), anonymous.status_code
        assert "visualdl" not in anonymous.text.lower()
        if anonymous.status_code == 302:
            assert "/hub/" in anonymous.headers["Location"], anonymous.headers
    finally:
        kernel.close()


def test_the_journey_in_chromium_through_the_proxy(release: Release, control_plane) -> None:
    """The browser journey of tests/browser, pointed at the chart's proxy: OIDC login, the
    sample notebook that the pod's postStart hook put into ada's home, its `%%paddle_launch --nodes 2 --visualdl`
    cell run with Shift+Enter, the panel at Succeeded with the job's board drawn."""
    from playwright.sync_api import sync_playwright

    from tests.browser import sample_steps as steps

    assert steps.CHROMIUM.exists(), "Debian's chromium is missing (scripts/system-packages.txt)"
    # The pod's postStart hook put the sample into ada's new home (her claim's folder here).
    sample = REPO / "hub_config" / "samples" / steps.NOTEBOOK
    assert (release.home / steps.NOTEBOOK).read_bytes() == sample.read_bytes()
    if SHOTS.exists():
        shutil.rmtree(SHOTS)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(steps.CHROMIUM),
                                     args=steps.CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1050})
        page.set_default_timeout(120_000)
        try:
            page.goto(f"{release.url}/hub/oauth_login?next=/user/{USER}/lab/tree/"
                      f"{steps.NOTEBOOK}")
            page.fill("input[name=sub]", USER)
            steps.shot(page, SHOTS, "01-provider-login")
            page.click("button:has-text('Authorize')")
            page.wait_for_url(f"{release.url}/user/{USER}/lab**", timeout=240_000)
            notebook = steps.notebook_ready(page)
            steps.shot(page, SHOTS, "03-notebook")
            job_id = steps.run_the_sample_and_see_the_board(page, notebook, SHOTS)
            notebook.screenshot(path=str(SHOTS / "06-notebook.png"))
        except BaseException:
            steps.shot(page, SHOTS, "99-failure")
            raise
        finally:
            browser.close()
    # It ran as the cluster job of ada's tenant, on the node, from her notebook pod.
    release.jobs.append(job_id)
    assert _job_status(release, job_id)["state"] == "Succeeded"
    core = core_api(control_plane)
    pods = core.list_namespaced_pod(release.tenant.namespace,
                                    label_selector=f"{LABEL_JOB}={job_id}").items
    assert len(pods) == 2 and {p.status.phase for p in pods} == {"Succeeded"}, pods


def test_the_tenants_idle_culler_stops_an_idle_server_and_only_in_its_tenant(
        release: Release, control_plane) -> None:
    """The per-tenant cullers run as the hub pod's services: the idle tenant's stops its user's
    untouched server after its timeout (the pod deleted); ada's tenant (one hour) keeps hers."""
    core = core_api(control_plane)
    _, final = oauth_login(release, IDLE_USER)
    assert final.status_code == 200, (final.status_code, final.url)
    spawn(release, IDLE_USER)
    pod = notebook_pod(core, release, IDLE_USER, release.idle_tenant)
    ready = time.monotonic()
    deadline = ready + IDLE_TIMEOUT + READY_TIMEOUT
    model: dict = {}
    while time.monotonic() < deadline:
        model = release.api("GET", f"/users/{IDLE_USER}").json()
        if not model.get("servers") and not model.get("pending"):
            break
        time.sleep(2)
    else:
        raise AssertionError(f"{IDLE_USER}'s idle server was not culled: {model}")
    FIGURES[f"helm: idle culler, spawn ready -> server stopped (timeout {IDLE_TIMEOUT} s, "
            f"every {CULL_EVERY} s) (s)"] = time.monotonic() - ready
    wait_for_gone(core, release.idle_tenant.namespace, pod.metadata.name)
    # The stop was the culler's: ada (the other tenant, one-hour timeout) still has hers.
    assert (release.api("GET", f"/users/{USER}").json()["servers"] or {}).get("", {}).get(
        "ready"), "ada's server was stopped too"


# A job that is still training while the hub restarts (it sleeps; --detach returns at once).
STEADY_CELL = ("%%paddle_launch --nodes 2 --cpu 500m --memory 2Gi --name steady --detach\n"
               "import time\ntime.sleep(45)\n")


def _job_pods(core, release: Release, job_id: str) -> list:
    return core.list_namespaced_pod(release.tenant.namespace,
                                    label_selector=f"{LABEL_JOB}={job_id}").items


def _wait_pods(core, release: Release, job_id: str, phase: str) -> list:
    deadline = time.monotonic() + JOB_TIMEOUT
    pods: list = []
    while time.monotonic() < deadline:
        pods = _job_pods(core, release, job_id)
        if len(pods) == 2 and {p.status.phase for p in pods} == {phase}:
            return pods
        time.sleep(1)
    raise AssertionError(f"{job_id}'s pods did not all reach {phase}: "
                         f"{[(p.metadata.name, p.status.phase) for p in pods]}")


def test_a_deleted_hub_pod_comes_back_with_its_users_servers_and_jobs(release: Release,
                                                                      control_plane) -> None:
    core = core_api(control_plane)
    notebook = notebook_pod(core, release, USER)
    token = user_token(release, USER)
    kernel = UserKernel(release.url, USER, token)
    try:
        kernel.run(STEADY_CELL)
        (steady,) = [p.name for p in (release.home / "jobs").iterdir()
                     if p.name.startswith("steady-")]
        training = {p.metadata.uid for p in _wait_pods(core, release, steady, "Running")}

        (hub,) = core.list_namespaced_pod(release.namespace,
                                          label_selector="component=hub").items
        core.delete_namespaced_pod(hub.metadata.name, release.namespace)
        wait_for_gone(core, release.namespace, hub.metadata.name)
        again = wait_component_ready(core, release.namespace, "hub", READY_TIMEOUT)
        assert again.metadata.uid != hub.metadata.uid
        model = wait_server_ready(release, USER)
        assert sorted(model["groups"]) == _groups(release), model
        # The same notebook pod, still answering through the proxy with the same token.
        assert notebook_pod(core, release, USER).metadata.uid == notebook.metadata.uid
        assert "started" in status_through_proxy(release, USER, token)
        # The job that was training went on through the restart: the same pods end Succeeded.
        ended = _wait_pods(core, release, steady, "Succeeded")
        assert {p.metadata.uid for p in ended} == training
    finally:
        kernel.close()
    # A job the notebook ran before is still there, ended as it was.
    for job_id in release.jobs:
        assert _job_status(release, job_id)["state"] == "Succeeded"
        assert {p.status.phase for p in _job_pods(core, release, job_id)} == {"Succeeded"}


def _server(release: Release, name: str) -> dict | None:
    """The user's default server as the hub reports it (None: the hub calls it stopped)."""
    return (release.api("GET", f"/users/{name}").json().get("servers") or {}).get("")


def _contents(release: Release, name: str, token: str, path: str,
              text: str | None = None) -> str:
    """Write (`text`) or read a file of the user's home through their server's contents API,
    through the proxy, as the user."""
    url = f"{release.url}/user/{name}/api/contents/{path}"
    headers = {"Authorization": f"token {token}"}
    if text is None:
        response = requests.get(url, headers=headers, params={"content": 1}, timeout=60)
    else:
        response = requests.put(url, headers=headers, timeout=60, json={
            "type": "file", "format": "text", "content": text})
    assert response.status_code in (200, 201), (response.status_code, response.text[:2000])
    return response.json()["content"] if text is None else text


def test_a_server_whose_machine_dies_is_reported_stopped_and_starts_on_another(
        release: Release, control_plane, real_node, second_node, cpu_image) -> None:
    """MOVER's server runs on the second node (the first one cordoned while it is placed), with
    a file in the home. The second node loses power (``RealNode.power_off``). The pod is evicted
    once the tenant's node-loss toleration has passed, and stays Terminating (no kubelet
    confirms it); the hub's next poll calls the server stopped (KubeSpawner alone would call
    it running until the machine is fenced). MOVER starts it again: it comes up on the machine
    left, with the same home."""
    core = core_api(control_plane)
    second_node.pull(cpu_image)  # the figures below count no pull
    _, final = oauth_login(release, MOVER)
    assert final.status_code == 200, (final.status_code, final.url)
    core.patch_node(real_node.name, {"spec": {"unschedulable": True}})
    try:
        spawn(release, MOVER)
    finally:
        core.patch_node(real_node.name, {"spec": {"unschedulable": False}})
    first = notebook_pod(core, release, MOVER)
    assert first.spec.node_name == second_node.name
    token = user_token(release, MOVER)
    note = f"written on {second_node.name} before it died\n"
    _contents(release, MOVER, token, "notes.txt", note)

    second_node.power_off()
    died = time.monotonic()
    k8s_plane.wait_for(lambda: _server(release, MOVER) is None, READY_TIMEOUT,
                       f"the hub to call {MOVER}'s server stopped")
    stopped = time.monotonic() - died
    # Stopped though its pod is still there, marked for deletion by the eviction: a pod that
    # no kubelet will confirm gone.
    (lost,) = core.list_namespaced_pod(release.tenant.namespace,
                                       label_selector=f"hub.jupyter.org/username={MOVER}").items
    assert lost.metadata.uid == first.metadata.uid and lost.metadata.deletion_timestamp
    assert any(c.type == "DisruptionTarget" and c.reason == "DeletionByTaintManager"
               for c in lost.status.conditions or [])

    again = spawn(release, MOVER)
    moved = notebook_pod(core, release, MOVER)
    assert moved.metadata.uid != first.metadata.uid
    assert moved.spec.node_name == real_node.name
    assert _contents(release, MOVER, token, "notes.txt") == note
    response = release.api("DELETE", f"/users/{MOVER}/server")
    assert response.status_code in (202, 204), response.text
    wait_for_gone(core, release.tenant.namespace, moved.metadata.name)
    FIGURES["helm: notebook's machine powered off -> hub calls the server stopped (s)"] = stopped
    FIGURES["helm: start again -> notebook ready on the machine left (s)"] = again


def test_helm_uninstall_keeps_the_tenant_and_the_users_claim(release: Release,
                                                             control_plane) -> None:
    core = core_api(control_plane)
    done = _helm(release.helm, release.kubeconfig, "uninstall", chart.RELEASE,
                 "--namespace", release.namespace)
    assert done.returncode == 0, done.stderr
    release.uninstalled = True
    assert _wait_no_chart_pods(core, release.namespace)
    namespace = core.read_namespace(release.tenant.namespace)
    assert namespace.status.phase == "Active"
    claim = core.read_namespaced_persistent_volume_claim(user_claim(USER),
                                                         release.tenant.namespace)
    assert claim.status.phase == "Bound" and not claim.metadata.deletion_timestamp


def _wait_no_chart_pods(core, namespace: str, timeout: float = READY_TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not core.list_namespaced_pod(namespace,
                                        label_selector="component in (hub,proxy)").items:
            return True
        time.sleep(1)
    return False


EMBEDDED_CELL = "%%paddle_launch --nodes 2 --name dp\n"


def test_the_same_steps_on_the_embedded_default(tmp_path) -> None:
    """The README's `workbench up` on this machine, in the same run, for the figures beside the
    chart's: start to the hub answering, spawn to ready, and the same training cell to
    Succeeded (the local engine, two process groups)."""
    import os

    from tests.hub_config.conftest import login_and_spawn, proxy_command, workbench_up

    proxy = proxy_command()
    assert proxy, "configurable-http-proxy is missing: `npm ci` (scripts/setup.sh) adds it"
    env = dict(os.environ, WORKBENCH_PROXY_COMMAND=proxy, WORKBENCH_CULLER="0",
               PYTHONPATH=str(REPO))
    began = time.monotonic()
    with workbench_up(REPO, tmp_path / "state", env) as up:
        FIGURES["embedded default: workbench up -> hub answers (s)"] = time.monotonic() - began
        token, spawned = login_and_spawn(up.url, up.user, up.password)
        FIGURES["embedded default: spawn -> notebook ready (s)"] = spawned
        kernel = UserKernel(up.url, up.user, token)
        try:
            kernel.run("%load_ext launcher_magic")
            began = time.monotonic()
            output = kernel.run(EMBEDDED_CELL + TRAIN_CELL, timeout=JOB_TIMEOUT)
            assert "Succeeded" in output, output[-3000:]
            FIGURES["embedded default: 2-node job, cell to job Succeeded (s)"] = (
                time.monotonic() - began)
        finally:
            kernel.close()
    assert not up.leftovers, f"left running after Ctrl-C: {up.leftovers}"
