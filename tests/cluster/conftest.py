"""Fixtures for the control-plane tier: a real Kubernetes API server and its companions.

``control_plane`` (session scope) yields a started ``k8s_plane.ControlPlane``:

- ``plane.kubeconfig``: path of an admin (``system:masters``) kubeconfig with a client
  certificate, in the session's tmp dir; ``plane.server`` and ``plane.ca_file`` likewise.
- ``plane.api_client(kubeconfig=None)``: a ``kubernetes.client.ApiClient`` (admin by default);
  wrap it in ``client.CoreV1Api(...)``, ``client.CustomObjectsApi(...)`` and so on.
- ``plane.service_account_client(namespace, name)``: an ApiClient that authenticates with a
  real TokenRequest token of that service account (what a notebook pod would hold), so RBAC
  decisions can be tested as the notebook sees them; ``plane.service_account_kubeconfig(...)``
  writes the same as a kubeconfig file (for code under test that takes ``--kubeconfig``).
- ``plane.nodes``: the KWOK nodes (``k8s_plane.DEFAULT_NODES``): ``kwok-cpu-0`` and two GPU
  nodes with ``nvidia.com/gpu: 8``, label ``nvidia.com/gpu.product=NVIDIA-H100`` and a
  ``nvidia.com/gpu:NoSchedule`` taint (pods need the matching toleration).
- ``plane.log_file(component)``: each component's log, for failure messages.
- ``tenant``: tenant "vision" of the example file provisioned into a namespace of its own, with
  the job API the test module names in ``JOB_API`` (default trainjob); deprovisioned afterwards.
- ``notebook_kernel(tmp_path)``: ``start(tenant, user="ada", annotations=None, storage=False)``
  starts a real kernel as that user's notebook would run: the environment the hub's own spawner
  renders, the token of the user's own notebook account, the magic loaded (``annotations`` go on
  every job pod, e.g. KWOK's outcome; ``storage`` mounts the user's claim at their home as Zero
  to JupyterHub does; ``proxy``, a ``CutProxy``, stands between the kernel and the API server;
  other keywords are the spawner's settings, e.g. ``uid``, ``volumes`` and
  ``volume_mounts``, see ``notebook_env``). The session's ``home`` is the notebook's home, its
  jobs in ``home / "jobs"``. Kernels are shut down afterwards.
- ``paddle_runtime`` (session): the workbench's Paddle ClusterTrainingRuntime
  (deploy/k8s/trainer/paddle-runtime.yaml) applied, as an operator installs it; its name.

What runs: etcd; kube-apiserver with Node,RBAC authorization, PodSecurity, ResourceQuota and
ValidatingAdmissionPolicy admission and service-account token signing; kube-controller-manager (all default controllers,
one service account per controller); kube-scheduler; KWOK, which plays the kubelets; and
training-operator v1.9.0 with only its PaddleJob controller and its validating webhook. The
PaddleJob CRD is the repository's copy (deploy/k8s/crds/kubeflow.org_paddlejobs.yaml). JobSet
v0.11.0, Kubeflow Trainer v2.3.0 and Kueue v0.17.0 (TrainJob integration only), each with its
webhooks and with CRDs from its own module version (``k8s_addons``).

Pod phases under KWOK are chosen per pod with the annotation ``workbench.test/outcome``
(``k8s_plane.OUTCOME_ANNOTATION``): absent, the pod stays Running; ``succeeded`` or ``failed``
ends it that way (after ``workbench.test/outcome-delay``, default 1s). Patch the annotation
onto a running pod to fail that one pod. See deploy/controlplane/kwok-stages.yaml.

Tests share one plane: give each test its own namespace (``namespace`` fixture below) and clean
up what you create cluster-wide. The binaries come from deploy/controlplane/build.sh, cached
outside the clone; the first build takes a while (the tests here get a one-hour pytest
timeout for it, see ``pytest_collection_modifyitems``). Where Go or the Go module proxy is missing the
tests skip and say so; where the proxy is reachable a failed build fails the tests.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# The harness modules sit next to this file; pytest's default import mode puts this folder on
# sys.path already, this keeps them importable under --import-mode=importlib too.
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

# The first test to use the plane pays for a cold build (about 15-20 minutes on two cores), which
# the project-wide pytest timeout would cut short.
BUILD_TIMEOUT_S = 3600
_HERE = Path(__file__).resolve().parent
EXAMPLE_TENANTS = _HERE.parents[1] / "hub_config" / "tenants.example.yaml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every test that uses ``control_plane`` room for the build (setup is timed too)."""
    for item in items:
        if "control_plane" in getattr(item, "fixturenames", ()) and _HERE in item.path.parents:
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT_S))


def _proxy_unreachable() -> str:
    """Why the Go module proxy cannot be used, or "" when it can."""
    try:
        proxy = subprocess.run(["go", "env", "GOPROXY"], capture_output=True, text=True,
                               timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"`go env GOPROXY` failed: {exc}"
    first = proxy.split(",")[0].split("|")[0]
    if first in ("", "off", "direct"):
        return f"GOPROXY={proxy!r} names no module proxy"
    url = f"{first.rstrip('/')}/k8s.io/kubernetes/@v/list"
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            resp.read(64)
    except OSError as exc:
        return f"the Go module proxy {first} cannot be reached ({exc})"
    return ""


def _bin_dir() -> Path:
    """The built binaries; skips (or fails) the session's cluster tests when there are none."""
    import k8s_plane

    script = str(k8s_plane.BUILD_SCRIPT)
    if shutil.which("go") is None:
        pytest.skip("control-plane tests need the Go toolchain (go >= 1.24 on PATH) to build "
                    "kube-apiserver, KWOK and training-operator")
    if not Path(k8s_plane.ETCD).exists():
        pytest.skip("control-plane tests need etcd: install the Debian package etcd-server "
                    "(listed in scripts/system-packages.txt)")
    check = subprocess.run(["bash", script, "--check"], capture_output=True)
    if check.returncode != 0:
        why = _proxy_unreachable()
        if why:
            pytest.skip(f"cannot build the control plane: {why}")
    bin_dir, error = k8s_plane.build_control_plane()
    if bin_dir is None:
        pytest.fail(error, pytrace=False)
    return bin_dir


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A started control plane shared by the session; stopped (every process) at the end."""
    pytest.importorskip("kubernetes", reason="install the test extra: pip install -e .[test]")
    pytest.importorskip("cryptography", reason="install the test extra: pip install -e .[test]")
    import k8s_plane

    bin_dir = _bin_dir()
    plane = k8s_plane.ControlPlane(bin_dir, tmp_path_factory.mktemp("controlplane"))
    try:
        plane.start()
    except k8s_plane.ControlPlaneError as exc:
        plane.stop()
        pytest.fail(f"the control plane did not start: {exc}", pytrace=False)
    except BaseException:
        plane.stop()
        raise
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture
def namespace(control_plane) -> Iterator[str]:
    """A fresh namespace for one test (no Pod Security labels), deleted afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(control_plane.api_client())
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def paddle_runtime(control_plane) -> str:
    """The workbench's Paddle ClusterTrainingRuntimes (the shipped one and its copy per
    --max-restarts value, as deploy/k8s/trainer/runtimes.py prints them), applied through
    Trainer's webhook; the shipped one's name."""
    from k8s_addons import paddle_runtimes
    from kubernetes import client

    custom = client.CustomObjectsApi(control_plane.api_client())
    runtimes = paddle_runtimes()
    for runtime in runtimes:
        custom.create_cluster_custom_object("trainer.kubeflow.org", "v1alpha1",
                                            "clustertrainingruntimes", runtime)
    return runtimes[0]["metadata"]["name"]


@pytest.fixture
def tenant(request, control_plane) -> Iterator[object]:
    """Tenant "vision" of the example file, provisioned into a namespace of its own (Pod Security,
    admission policies, quota, network policies as ``workbench apply`` makes them), with the job
    API its test module names in ``JOB_API`` ("paddlejob" or "trainjob"; default the example's,
    trainjob, for which the Paddle runtimes are applied first). Deprovisioned afterwards."""
    from dataclasses import replace

    from tenancy import deprovision, provision

    from hub_config.tenants import load_tenants

    vision = load_tenants(EXAMPLE_TENANTS).get("vision")
    job_api = getattr(request.module, "JOB_API", vision.job_api)
    if job_api == "trainjob":
        request.getfixturevalue("paddle_runtime")
    made = replace(vision, namespace=f"wb-{job_api[:5]}-{uuid.uuid4().hex[:6]}", job_api=job_api)
    provision(control_plane, made, hub_namespace="jupyterhub")  # waits for the quota too
    yield made
    deprovision(control_plane, made)


@pytest.fixture
def notebook_kernel(control_plane, tmp_path) -> Iterator[object]:
    """Start kernels as tenants' users (see the module docstring); shut them down after."""
    import os

    from jupyter_client.manager import start_new_kernel

    pytest.importorskip("kubespawner", reason="jupyterhub-kubespawner is not installed (hub extra)")
    from tenancy import notebook_user

    from hub_config.cluster_policy.identities import user_service_account
    from tests.hub_config.hub_env import notebook_env
    from tests.launcher_magic.support import KernelSession

    started = []

    def start(tenant, user: str = "ada", annotations: dict | None = None, *,
              storage: bool = False, proxy=None, **spawner):
        notebook_user(control_plane, tenant, user)
        kubeconfig = control_plane.service_account_kubeconfig(
            tenant.namespace, user_service_account(tenant, user))
        home = tmp_path / f"{tenant.name}-{user}"
        (home / "jobs").mkdir(parents=True, exist_ok=True)
        if proxy is not None:  # the API server's address is the CutProxy's
            kubeconfig = proxy.kubeconfig(kubeconfig, home / "proxied.kubeconfig")
        if storage:  # Zero to JupyterHub's `singleuser.storage`: the user's claim at the home
            spawner.setdefault("volumes", [{"name": "volume-{username}", "persistentVolumeClaim":
                                            {"claimName": "claim-{username}"}}])
            spawner.setdefault("volume_mounts", [{"name": "volume-{username}",
                                                  "mountPath": str(home)}])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLE_WORKBENCH_")}
        env.update(notebook_env(tenant, user, home_mount_path=str(home), **spawner))
        env.setdefault("PADDLE_WORKBENCH_JOBS_DIR", str(home / "jobs"))
        env.update({"KUBECONFIG": str(kubeconfig), "PADDLE_WORKBENCH_PANEL": "text"})
        manager, kc = start_new_kernel(kernel_name="python3", env=env, cwd=str(home))
        session = KernelSession(manager, kc)
        session.home = home
        started.append(session)
        setup = "%load_ext launcher_magic\n"
        if annotations:
            setup += f"get_ipython().config.ClusterEngine.pod_annotations = {annotations!r}\n"
        assert session.run(setup).error is None
        return session

    yield start
    for session in started:
        session.client.stop_channels()
        session.manager.shutdown_kernel(now=True)


@pytest.fixture
def proxy(control_plane):
    """A CutProxy (tests/cluster/cut_proxy.py) in front of the plane's API server, which cuts
    its connections for real."""
    from cut_proxy import CutProxy

    host, port = control_plane.server.removeprefix("https://").rsplit(":", 1)
    made = CutProxy(host, int(port))
    yield made
    made.close()
