"""A real Kubernetes control plane on one machine, for the cluster tests.

``ControlPlane.start()`` runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
KWOK (fake nodes and pod phases), training-operator v1.9.0 (PaddleJob controller and its
validating webhook) and JobSet, Kubeflow Trainer v2 and Kueue with their webhooks
(``k8s_addons``), each in its own session with its log in the work directory, then applies
the CRDs and registers the KWOK nodes. ``stop()`` ends every process group it started,
SIGTERM then SIGKILL, and is safe to call after a failed ``start()``.

The argv of each component is built by a pure function of ``Layout``, so a reader can see the
flags that matter in one place: Node,RBAC authorization, the PodSecurity, ResourceQuota and
ValidatingAdmissionPolicy admission plugins, and the service-account issuer and keys that make
tokens work.
"""

from __future__ import annotations

import base64
import contextlib
import ipaddress
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import k8s_addons as addons
import k8s_pki as pki
import yaml

REPO = Path(__file__).resolve().parents[2]
CONTROLPLANE_DIR = REPO / "deploy" / "controlplane"
BUILD_SCRIPT = CONTROLPLANE_DIR / "build.sh"
KWOK_STAGES = CONTROLPLANE_DIR / "kwok-stages.yaml"
PADDLEJOB_CRD = REPO / "deploy" / "k8s" / "crds" / "kubeflow.org_paddlejobs.yaml"
ETCD = "/usr/bin/etcd"

SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
# Inside 198.18.0.0/15 (RFC 2544 benchmarking space) with the real node's pod network, so that
# nothing a pod sends to a Service address can leave the machine.
SERVICE_CIDR = "198.19.0.0/16"
OPERATOR_NAMESPACE = "kubeflow"
WEBHOOK_CONFIGURATION = "validator.training-operator.kubeflow.org"
# training-operator v1.9.0 waits for this file before it registers its controllers: in a pod it
# is the mounted webhook secret; its path is fixed in the operator's source (pkg/cert/cert.go).
OPERATOR_CERT_MARKER = Path("/tmp/k8s-webhook-server/serving-certs/tls.crt")
# Annotation that puts a node under KWOK's management (and the selector KWOK is started with).
KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
# Annotation read by deploy/controlplane/kwok-stages.yaml: succeeded | failed | absent (Running).
OUTCOME_ANNOTATION = "workbench.test/outcome"
OUTCOME_DELAY_ANNOTATION = "workbench.test/outcome-delay"


class ControlPlaneError(RuntimeError):
    """A component did not start or become ready; the message names its log file."""


@dataclass(frozen=True)
class NodeSpec:
    """A KWOK node: its name, capacity and, for GPU nodes, labels and a NoSchedule taint."""

    name: str
    cpu: str = "32"
    memory: str = "128Gi"
    gpus: int = 0
    gpu_product: str = "NVIDIA-H100"
    # Every kubelet reports its disk; tenant namespaces give each container ephemeral storage
    # (their LimitRange), which the scheduler fits against this.
    ephemeral_storage: str = "1Ti"

    def to_manifest(self) -> dict[str, Any]:
        """The Node object KWOK adopts (capacity in status, as a kubelet would report it)."""
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110",
                    "ephemeral-storage": self.ephemeral_storage}
        labels = {"type": "kwok", "kubernetes.io/hostname": self.name,
                  "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
        spec: dict[str, Any] = {}
        if self.gpus:
            capacity["nvidia.com/gpu"] = str(self.gpus)
            labels["nvidia.com/gpu.product"] = self.gpu_product
            spec["taints"] = [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels,
                         "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1]}},
            "spec": spec,
            "status": {"capacity": capacity, "allocatable": dict(capacity)},
        }


DEFAULT_NODES = (
    NodeSpec("kwok-cpu-0"),
    NodeSpec("kwok-gpu-0", gpus=8),
    NodeSpec("kwok-gpu-1", gpus=8),
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that the OS just handed out (free unless someone races us)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class Layout:
    """Where everything of one control plane lives: binaries, work dir, ports."""

    bin_dir: Path
    work: Path
    etcd_port: int = field(default_factory=free_port)
    etcd_peer_port: int = field(default_factory=free_port)
    apiserver_port: int = field(default_factory=free_port)
    kwok_port: int = field(default_factory=free_port)
    operator_probe_port: int = field(default_factory=free_port)
    operator_webhook_port: int = field(default_factory=free_port)

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def pki(self) -> Path:
        return self.work / "pki"

    def kubeconfig(self, user: str) -> Path:
        return self.work / f"{user}.kubeconfig"

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)


def etcd_argv(lay: Layout) -> list[str]:
    client = f"http://127.0.0.1:{lay.etcd_port}"
    peer = f"http://127.0.0.1:{lay.etcd_peer_port}"
    return [ETCD, "--name=default", f"--data-dir={lay.work / 'etcd'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}", "--log-level=warn"]


# The user (and file name) of the API server's client certificate for kubelets.
KUBELET_CLIENT = "kube-apiserver-kubelet-client"

def apiserver_argv(lay: Layout) -> list[str]:
    p = lay.pki
    return [
        lay.binary("kube-apiserver"),
        f"--etcd-servers=http://127.0.0.1:{lay.etcd_port}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
        f"--secure-port={lay.apiserver_port}",
        f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={p / 'ca.crt'}",
        "--authorization-mode=Node,RBAC",
        # Listed so that no default change can drop them; PodSecurity is what enforces the
        # namespace labels, so privileged pods must be allowed past the older global switch.
        # ValidatingAdmissionPolicy (GA in v1.30, on by default in v1.33) enforces the tenants'
        # admission policies.
        "--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,"
        "NodeRestriction,PodSecurity,ResourceQuota,DefaultTolerationSeconds,"
        "MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy,"
        # A namespace's node selector and default tolerations (annotations, set by the cluster
        # operator): how the real node's tests send a tenant's pods there unchanged.
        "PodNodeSelector,PodTolerationRestriction",
        "--allow-privileged=true",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        # Nothing routes to 127.0.0.1 from a pod, and Endpoints may not hold loopback addresses.
        "--endpoint-reconciler-type=none",
        # API aggregation (Kueue's visibility API): the API server proxies to an APIService's
        # endpoints (no kube-proxy for its ClusterIP) with a front-proxy client certificate, and
        # the aggregated server trusts the user headers it sends.
        f"--requestheader-client-ca-file={p / 'front-proxy-ca.crt'}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        f"--proxy-client-cert-file={p / 'front-proxy-client.crt'}",
        f"--proxy-client-key-file={p / 'front-proxy-client.key'}",
        "--enable-aggregator-routing=true",
        # The API server's identity at the kubelets (logs, exec, port-forward): the real node's
        # kubelet authenticates it by certificate and asks the API server whether it may.
        f"--kubelet-client-certificate={p / (KUBELET_CLIENT + '.crt')}",
        f"--kubelet-client-key={p / (KUBELET_CLIENT + '.key')}",
        "--profiling=false",
    ]


def controller_manager_argv(lay: Layout) -> list[str]:
    return [
        lay.binary("kube-controller-manager"),
        f"--kubeconfig={lay.kubeconfig('kube-controller-manager')}",
        # Per-controller service accounts: each controller runs with its own RBAC role.
        "--use-service-account-credentials=true",
        f"--service-account-private-key-file={lay.pki / 'sa.key'}",
        f"--root-ca-file={lay.pki / 'ca.crt'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}",
        "--leader-elect=false", "--secure-port=0", "--controllers=*",
    ]


def scheduler_argv(lay: Layout) -> list[str]:
    return [lay.binary("kube-scheduler"), f"--kubeconfig={lay.kubeconfig('kube-scheduler')}",
            "--leader-elect=false", "--secure-port=0"]


def kwok_argv(lay: Layout) -> list[str]:
    key, value = KWOK_NODE_ANNOTATION
    return [lay.binary("kwok"), f"--kubeconfig={lay.kubeconfig('kwok')}",
            f"--config={KWOK_STAGES}",
            f"--manage-nodes-with-annotation-selector={key}={value}",
            f"--server-address=127.0.0.1:{lay.kwok_port}",
            "--cidr=10.244.0.1/16", "--node-ip=10.0.0.1"]


def operator_argv(lay: Layout) -> list[str]:
    return [lay.binary("training-operator"), "--enable-scheme=paddlejob",
            "--metrics-bind-address=0",
            f"--health-probe-bind-address=127.0.0.1:{lay.operator_probe_port}",
            f"--webhook-server-port={lay.operator_webhook_port}", "--leader-elect=false"]


def operator_env(lay: Layout) -> dict[str, str]:
    # controller-runtime reads its serving certificate from $TMPDIR/k8s-webhook-server/...;
    # pointing TMPDIR into the work dir keeps two planes on one machine from sharing it.
    return {"KUBECONFIG": str(lay.kubeconfig("training-operator")),
            "MY_POD_NAMESPACE": OPERATOR_NAMESPACE, "TMPDIR": str(lay.work / "operator-tmp")}


def webhook_configuration(lay: Layout, ca_bundle: bytes) -> dict[str, Any]:
    """The operator's PaddleJob validating webhook, reached by URL (no pod network here)."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION},
        "webhooks": [{
            "name": "validator.paddlejob.training-operator.kubeflow.org",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "clientConfig": {
                "url": f"https://127.0.0.1:{lay.operator_webhook_port}"
                       "/validate-kubeflow-org-v1-paddlejob",
                "caBundle": base64.b64encode(ca_bundle).decode(),
            },
            "rules": [{"apiGroups": ["kubeflow.org"], "apiVersions": ["v1"],
                       "operations": ["CREATE", "UPDATE"], "resources": ["paddlejobs"]}],
        }],
    }


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.5) -> Any:
    """Call ``check`` until it returns something truthy; raise ``ControlPlaneError`` naming
    ``what`` after ``timeout`` seconds. Exceptions from ``check`` count as "not yet"."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - anything means "not ready yet" here
            last = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last})" if last else ""
            raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(interval)


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen
    log: Path


class ControlPlane:
    """One running control plane. Construct, ``start()``, use, ``stop()``."""

    def __init__(self, bin_dir: Path, work: Path, nodes: tuple[NodeSpec, ...] = DEFAULT_NODES):
        self.layout = Layout(bin_dir=bin_dir, work=work)
        self.nodes = nodes
        self._procs: list[_Process] = []
        self.addons: list[addons.Addon] = []  # JobSet, Trainer, Kueue once started
        self._made_paths: list[Path] = []  # outside the work dir, removed by stop()

    # --- public surface -------------------------------------------------------------------
    @property
    def kubeconfig(self) -> Path:
        """Admin (system:masters) kubeconfig with a client certificate."""
        return self.layout.kubeconfig("admin")

    @property
    def server(self) -> str:
        return self.layout.server

    @property
    def ca_file(self) -> Path:
        return self.layout.pki / "ca.crt"

    def log_file(self, component: str) -> Path:
        return self.layout.work / "logs" / f"{component}.log"

    # --- lifecycle ------------------------------------------------------------------------
    def start(self, timeout: float = 180) -> None:
        """Start every component and wait until the plane can run PaddleJobs.

        Raises ``ControlPlaneError`` naming the component and its log when one does not come up
        (the caller still has to call ``stop()``)."""
        lay = self.layout
        for sub in ("pki", "logs", "etcd", "operator-tmp"):
            (lay.work / sub).mkdir(parents=True, exist_ok=True)
        self._write_pki()
        self._start_store_and_server(timeout)
        from kubernetes import client

        api = self.api_client()
        # The CRD goes in first: the garbage collector maps owner kinds from discovery at start
        # and would otherwise not collect a deleted PaddleJob's pods until its next refresh.
        self._apply_crd(api, timeout)
        self._spawn("kube-controller-manager", controller_manager_argv(lay))
        self._spawn("kube-scheduler", scheduler_argv(lay))
        self._spawn("kwok", kwok_argv(lay))
        core = client.CoreV1Api(api)
        for node in self.nodes:
            core.create_node(node.to_manifest())
        self._start_operator(api, timeout)
        self.addons = addons.start_all(
            self._spawn, lambda addon: self._wait_addon(addon, timeout), api, lay.bin_dir,
            lay.work, lay.pki, lay.kubeconfig, free_port, self._made_paths)
        # The service-account controller is the proof that the controller manager runs.
        wait_for(lambda: core.read_namespaced_service_account("default", "default"), timeout,
                 self._what("kube-controller-manager", "the default service account"))
        wait_for(lambda: self._nodes_ready(core), timeout, self._what("kwok", "ready nodes"))

    def stop(self) -> None:
        """Stop every started process group (reverse order): SIGTERM, then SIGKILL after 10s."""
        for proc in reversed(self._procs):
            _terminate(proc.popen)
        self._procs.clear()
        for path in reversed(self._made_paths):
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        self._made_paths.clear()

    @contextlib.contextmanager
    def outage(self, timeout: float = 180) -> Iterator[None]:
        """The API server and etcd stopped (SIGTERM) for the body of the ``with``, then started
        again with the same data, ports and certificates; returns once the API server is ready.
        Every other component stays up and has to find its way back, as in a cluster whose
        control plane restarts."""
        down = [p for p in self._procs if p.name in ("kube-apiserver", "etcd")]
        for proc in sorted(down, key=lambda p: p.name != "kube-apiserver"):  # the server first
            _terminate(proc.popen)
            self._procs.remove(proc)
        try:
            yield
        finally:
            self._start_store_and_server(timeout)

    def _start_store_and_server(self, timeout: float) -> None:
        """etcd, then the API server on it; returns once the API server is ready."""
        lay = self.layout
        self._spawn("etcd", etcd_argv(lay))
        wait_for(lambda: self._http_ok(f"http://127.0.0.1:{lay.etcd_port}/health"),
                 timeout, self._what("etcd"))
        self._spawn("kube-apiserver", apiserver_argv(lay))
        wait_for(lambda: self._http_ok(f"{lay.server}/readyz"), timeout,
                 self._what("kube-apiserver"))

    def pids(self) -> list[int]:
        """Process ids of the components started (for tests that check teardown)."""
        return [p.popen.pid for p in self._procs]

    # --- clients --------------------------------------------------------------------------
    def api_client(self, kubeconfig: Path | None = None):
        """A ``kubernetes.client.ApiClient`` for ``kubeconfig`` (default: the admin one)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(kubeconfig or self.kubeconfig))

    def service_account_kubeconfig(self, namespace: str, name: str, seconds: int = 3600) -> Path:
        """Write a kubeconfig that authenticates as an existing service account with a fresh
        TokenRequest token (signed with the service-account key the API server checks)."""
        from kubernetes import client

        core = client.CoreV1Api(self.api_client())
        request = {"spec": {"expirationSeconds": seconds}}
        token = core.create_namespaced_service_account_token(name, namespace, request)
        path = self.layout.work / f"sa-{namespace}-{name}.kubeconfig"
        user = f"system:serviceaccount:{namespace}:{name}"
        return pki.write_kubeconfig(path, pki.kubeconfig(self.server, self.ca_file, user,
                                                         token=token.status.token))

    def service_account_client(self, namespace: str, name: str, seconds: int = 3600):
        """An ApiClient acting as that service account (see ``service_account_kubeconfig``)."""
        return self.api_client(self.service_account_kubeconfig(namespace, name, seconds))

    # --- internals ------------------------------------------------------------------------
    def _what(self, component: str, thing: str = "") -> str:
        return f"{thing or component} (see {self.log_file(component)})"

    def _write_pki(self) -> None:
        lay, d = self.layout, self.layout.pki
        ca = pki.make_ca(d, "ca", "workbench-test-ca")
        pki.make_cert(d, "apiserver", ca, "kube-apiserver", server=True,
                      dns_names=("localhost", "kubernetes", "kubernetes.default",
                                 "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"),
                      ips=("127.0.0.1", str(ipaddress.ip_network(SERVICE_CIDR)[1])))
        pki.make_service_account_key(d)
        # No group: the real node binds this user to system:kubelet-api-admin, nothing more.
        pki.make_cert(d, KUBELET_CLIENT, ca, KUBELET_CLIENT)
        users = {
            "admin": ("workbench-admin", ("system:masters",)),
            "kube-controller-manager": ("system:kube-controller-manager", ()),
            "kube-scheduler": ("system:kube-scheduler", ()),
            # KWOK plays every kubelet through one client, which the Node authorizer (one
            # identity per node) cannot express; the operator gets cluster-wide rights as its
            # release manifests grant it.
            "kwok": ("kwok", ("system:masters",)),
            "training-operator": ("training-operator", ("system:masters",)),
            # JobSet, Trainer and Kueue get cluster-wide rights too, as their releases do.
            **{name: (name, ("system:masters",)) for name in addons.COMPONENTS},
        }
        for user, (cn, groups) in users.items():
            pair = pki.make_cert(d, user, ca, cn, organizations=groups)
            pki.write_kubeconfig(lay.kubeconfig(user),
                                 pki.kubeconfig(lay.server, ca.cert, user, client=pair))
        front_proxy = pki.make_ca(d, "front-proxy-ca", "workbench-test-front-proxy-ca")
        pki.make_cert(d, "front-proxy-client", front_proxy, "front-proxy-client")
        webhook_ca = pki.make_ca(d, "webhook-ca", pki.WEBHOOK_CA_NAME,
                                 dns_names=(pki.WEBHOOK_CA_NAME,))
        pki.make_cert(d, "webhook", webhook_ca, pki.WEBHOOK_DNS_NAME, server=True,
                      dns_names=(pki.WEBHOOK_DNS_NAME,), ips=("127.0.0.1",))

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        log = self.log_file(name)
        with log.open("ab") as out:
            popen = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.layout.work, env={**os.environ, **(env or {})},
                start_new_session=True,  # its own process group, so stop() reaches children
            )
        self._procs.append(_Process(name, popen, log))

    def _check_alive(self) -> None:
        for proc in self._procs:
            code = proc.popen.poll()
            if code is not None:
                tail = proc.log.read_text(errors="replace")[-2000:]
                raise ControlPlaneError(f"{proc.name} exited with {code}; log {proc.log}:\n{tail}")

    def _http_ok(self, url: str) -> bool:
        self._check_alive()
        context = None
        if url.startswith("https"):
            context = ssl.create_default_context(cafile=str(self.ca_file))
            context.load_cert_chain(str(self.layout.pki / "admin.crt"),
                                    str(self.layout.pki / "admin.key"))
        with urllib.request.urlopen(url, timeout=5, context=context) as resp:
            return resp.status == 200

    def _apply_crd(self, api, timeout: float) -> None:
        from kubernetes import client

        ext = client.ApiextensionsV1Api(api)
        crds = [yaml.safe_load(PADDLEJOB_CRD.read_text()), *addons.crds(self.layout.bin_dir)]
        for crd in crds:
            ext.create_custom_resource_definition(crd)

        def established(name: str) -> bool:
            got = ext.read_custom_resource_definition(name)
            return any(c.type == "Established" and c.status == "True"
                       for c in (got.status.conditions or []))

        for crd in crds:
            name = crd["metadata"]["name"]
            wait_for(lambda name=name: established(name), timeout,
                     f"the CRD {name} to be established")

    def _wait_addon(self, addon, timeout: float) -> None:
        wait_for(lambda: self._http_ok(f"http://127.0.0.1:{addon.probe_port}/readyz"),
                 timeout, self._what(addon.name, f"{addon.name} /readyz"))

    def _start_operator(self, api, timeout: float) -> None:
        """The operator's certificate rotator wants its secret to exist and the certificate
        files mounted; we hand it a valid pair so it neither rotates nor waits."""
        from kubernetes import client

        lay, d = self.layout, self.layout.pki
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": OPERATOR_NAMESPACE}})
        data = {"ca.crt": d / "webhook-ca.crt", "ca.key": d / "webhook-ca.key",
                "tls.crt": d / "webhook.crt", "tls.key": d / "webhook.key"}
        core.create_namespaced_secret(OPERATOR_NAMESPACE, {
            "metadata": {"name": "training-operator-webhook-cert"},
            "data": {k: base64.b64encode(v.read_bytes()).decode() for k, v in data.items()},
        })
        serving = lay.work / "operator-tmp" / "k8s-webhook-server" / "serving-certs"
        serving.mkdir(parents=True, exist_ok=True)
        for name in ("tls.crt", "tls.key"):
            (serving / name).write_bytes(data[name].read_bytes())
        if not OPERATOR_CERT_MARKER.exists():
            for parent in reversed(OPERATOR_CERT_MARKER.parents[:2]):
                if not parent.exists():
                    parent.mkdir()
                    self._made_paths.append(parent)
            OPERATOR_CERT_MARKER.write_bytes(data["tls.crt"].read_bytes())
            self._made_paths.append(OPERATOR_CERT_MARKER)
        client.AdmissionregistrationV1Api(api).create_validating_webhook_configuration(
            webhook_configuration(lay, data["ca.crt"].read_bytes()))
        self._spawn("training-operator", operator_argv(lay), env=operator_env(lay))
        wait_for(lambda: self._http_ok(f"http://127.0.0.1:{lay.operator_probe_port}/readyz"),
                 timeout, self._what("training-operator", "training-operator /readyz"))

    def _nodes_ready(self, core) -> bool:
        self._check_alive()
        nodes = {n.metadata.name: n for n in core.list_node().items}
        for spec in self.nodes:
            node = nodes.get(spec.name)
            conditions = (node.status.conditions or []) if node else []
            if not any(c.type == "Ready" and c.status == "True" for c in conditions):
                return False
        return True


def _terminate(popen: subprocess.Popen, grace: float = 10) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds, and reap the leader."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(popen.pid, sig)
        except ProcessLookupError:
            break
        try:
            popen.wait(timeout=grace)
            # The leader is gone; SIGKILL the group anyway in case it left children behind.
            try:
                os.killpg(popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            break
        except subprocess.TimeoutExpired:
            continue
    if popen.poll() is None:
        popen.wait(timeout=grace)


def build_control_plane() -> tuple[Path | None, str]:
    """Run deploy/controlplane/build.sh. Returns (bin dir, "") or (None, why it cannot build)."""
    try:
        done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                              timeout=3600)
    except subprocess.TimeoutExpired:
        return None, "deploy/controlplane/build.sh ran for over an hour"
    if done.returncode == 0:
        return Path(done.stdout.strip().splitlines()[-1]), ""
    tail = "\n".join(done.stderr.strip().splitlines()[-15:])
    return None, f"deploy/controlplane/build.sh failed (exit {done.returncode}):\n{tail}"


def admin_apis(plane: ControlPlane) -> tuple[Any, Any]:
    """The core and custom-objects clients of the plane's admin, to set up and to look."""
    from kubernetes import client

    api = plane.api_client()
    return client.CoreV1Api(api), client.CustomObjectsApi(api)


def dump(obj: Any) -> str:
    """YAML text of a kubernetes client object or dict, for failure messages."""
    from kubernetes import client

    data = client.ApiClient().sanitize_for_serialization(obj)
    return yaml.safe_dump(data, sort_keys=False)
