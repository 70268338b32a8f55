"""JobSet, Kubeflow Trainer v2 and Kueue on the test control plane, each with its webhooks.

``ControlPlane`` (``k8s_plane``) calls ``apply_crds`` before the controller manager starts (so the
garbage collector knows the kinds) and ``start`` once the training-operator runs. Every CRD and
webhook configuration comes from the component's own module version: build.sh copies them from
Go's module cache into ``<cache>/manifests/<component>/``; only each webhook's ``clientConfig``
is rewritten here, from an in-cluster Service to a URL on 127.0.0.1 (this plane has no pod
network), with the fixture's CA.

Each controller runs with certificate management off and is handed the fixture's serving
certificate (``webhook.crt``, valid for 127.0.0.1) in its own ``$TMPDIR``, where
controller-runtime looks for it. Kueue runs with only its TrainJob integration, so its job
webhooks are registered for TrainJobs and its own kinds alone.
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

TRAINER_NAMESPACE = "kubeflow-system"
KUEUE_NAMESPACE = "kueue-system"
# Kueue's integrations in this plane; its webhooks for other kinds are not registered.
KUEUE_FRAMEWORKS = ("trainer.kubeflow.org/trainjob",)
KUEUE_WEBHOOK_PATHS = ("-kueue-x-k8s-io-", "-trainer-kubeflow-org-")
# Kueue v0.17 without its internal certificate management reads its metrics server's
# certificate from this fixed path (cmd/kueue/main.go), even with metrics off; the fixture writes
# the webhook pair there when nothing is, and removes what it made at stop.
KUEUE_METRICS_CERTS = Path("/etc/kueue/metrics/certs")
# Kueue's visibility API (a queue's pending workloads and their positions) is an aggregated API:
# Kueue serves it on a port of its own and the API server proxies to it through an APIService,
# dialling the Service's endpoints (--enable-aggregator-routing; there is no kube-proxy).
# Endpoints may not hold loopback addresses, so the server listens on one of this machine's other
# IPv4 addresses; where there is none the API is not served and the trainjob engine orders the
# tenant's Workloads itself. Kueue v0.17 without internal certificate management reads the
# server's pair from this fixed path (pkg/visibility/server.go); handled as the metrics one.
KUEUE_VISIBILITY_CERTS = Path("/visibility")
VISIBILITY_SERVICE = "visibility-server"
VISIBILITY_GROUP, VISIBILITY_VERSION = "visibility.kueue.x-k8s.io", "v1beta2"
# Start order: Trainer needs JobSet's CRD and webhooks; Kueue manages TrainJobs.
COMPONENTS = ("jobset", "trainer", "kueue")
BINARIES = {"jobset": "jobset-controller", "trainer": "trainer-controller-manager",
            "kueue": "kueue"}


@dataclass(frozen=True)
class Addon:
    """One controller: its binary, config file and the ports it listens on."""

    name: str
    binary: str
    webhook_port: int
    probe_port: int
    visibility_address: str = ""  # Kueue's visibility server ("": not served)
    visibility_port: int = 0

    def tmpdir(self, work: Path) -> Path:
        return work / f"{self.name}-tmp"

    def serving_dir(self, work: Path) -> Path:
        return self.tmpdir(work) / "k8s-webhook-server" / "serving-certs"

    def config_path(self, work: Path) -> Path:
        return work / f"{self.name}-config.yaml"


def paddle_runtimes() -> list[dict[str, Any]]:
    """The Paddle ClusterTrainingRuntimes that deploy/k8s/trainer/runtimes.py prints (the
    shipped one first), from that script itself."""
    script = Path(__file__).parents[2] / "deploy" / "k8s" / "trainer" / "runtimes.py"
    loaded = importlib.util.spec_from_file_location("paddle_runtimes", script)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module.runtimes()


def manifests_dir(bin_dir: Path) -> Path:
    """Where build.sh put the CRDs and webhook configurations of the built module versions."""
    return bin_dir.parent / "manifests"


def crds(bin_dir: Path) -> list[dict[str, Any]]:
    """Every CRD of JobSet, Trainer and Kueue, in that order."""
    found = []
    for component in COMPONENTS:
        for path in sorted((manifests_dir(bin_dir) / component / "crds").glob("*.yaml")):
            found += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def config(addon: Addon, work: Path) -> dict[str, Any]:
    """The component's configuration file: probes and webhook on loopback ports, no metrics,
    no leader election, no certificate management."""
    health = {"healthProbeBindAddress": f"127.0.0.1:{addon.probe_port}"}
    webhook: dict[str, Any] = {"port": addon.webhook_port, "host": "127.0.0.1"}
    if addon.name == "jobset":
        return {"apiVersion": "config.jobset.x-k8s.io/v1alpha1", "kind": "Configuration",
                "health": health, "webhook": {**webhook, "certDir": str(addon.serving_dir(work))},
                "metrics": {"bindAddress": "0"}, "leaderElection": {"leaderElect": False},
                "internalCertManagement": {"enable": False}}
    if addon.name == "trainer":
        return {"apiVersion": "config.trainer.kubeflow.org/v1alpha1", "kind": "Configuration",
                "health": {**health, "readinessEndpointName": "readyz",
                           "livenessEndpointName": "healthz"},
                "webhook": webhook, "metrics": {"bindAddress": "0"},
                "leaderElection": {"leaderElect": False},
                "certManagement": {"enable": False}}
    return {"apiVersion": "config.kueue.x-k8s.io/v1beta2", "kind": "Configuration",
            "namespace": KUEUE_NAMESPACE, "health": health,
            "webhook": {**webhook, "certDir": str(addon.serving_dir(work))},
            "metrics": {"bindAddress": "0"}, "leaderElection": {"leaderElect": False},
            "internalCertManagement": {"enable": False},
            "manageJobsWithoutQueueName": False,
            "integrations": {"frameworks": list(KUEUE_FRAMEWORKS)},
            "featureGates": {"VisibilityOnDemand": bool(addon.visibility_address)},
            **({"visibilityServer": {"bindAddress": addon.visibility_address,
                                     "bindPort": addon.visibility_port}}
               if addon.visibility_address else {})}


def argv(addon: Addon, bin_dir: Path, work: Path, kubeconfig: Path) -> list[str]:
    args = [str(bin_dir / addon.binary), f"--config={addon.config_path(work)}"]
    if addon.name == "jobset":
        args += ["--metrics-bind-address=0"]
    if addon.visibility_address:  # its server delegates authentication to the flag's cluster
        args += [f"--kubeconfig={kubeconfig}"]
    return args


def host_address() -> str:
    """An IPv4 address of this machine other than loopback, or "" when it has none."""
    try:
        listed = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                                capture_output=True, text=True, check=False, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    return next((line.split()[3].split("/")[0] for line in listed.splitlines()
                 if len(line.split()) > 3), "")


def visibility_objects(addon: Addon) -> list[dict[str, Any]]:
    """The Service, its Endpoints (Kueue's address) and the APIService of the visibility API.
    TLS is not verified, as in Kueue's own release manifests (its server certificate is
    whatever sits in KUEUE_VISIBILITY_CERTS)."""
    meta = {"name": VISIBILITY_SERVICE, "namespace": KUEUE_NAMESPACE}
    port = {"name": "https", "port": 443, "protocol": "TCP", "targetPort": addon.visibility_port}
    return [
        {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": {"ports": [port]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta, "subsets": [{
            "addresses": [{"ip": addon.visibility_address}],
            "ports": [{"name": "https", "port": addon.visibility_port, "protocol": "TCP"}]}]},
        {"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
         "metadata": {"name": f"{VISIBILITY_VERSION}.{VISIBILITY_GROUP}"},
         "spec": {"group": VISIBILITY_GROUP, "version": VISIBILITY_VERSION,
                  "groupPriorityMinimum": 100, "versionPriority": 100,
                  "insecureSkipTLSVerify": True,
                  "service": {"name": VISIBILITY_SERVICE, "namespace": KUEUE_NAMESPACE,
                              "port": 443}}},
    ]


def register_visibility(api, addon: Addon) -> None:
    from kubernetes import client

    service, endpoints, apiservice = visibility_objects(addon)
    core = client.CoreV1Api(api)
    core.create_namespaced_service(KUEUE_NAMESPACE, service)
    core.create_namespaced_endpoints(KUEUE_NAMESPACE, endpoints)
    client.ApiregistrationV1Api(api).create_api_service(apiservice)


def visibility_available(api) -> bool:
    from kubernetes import client

    found = client.ApiregistrationV1Api(api).read_api_service(
        f"{VISIBILITY_VERSION}.{VISIBILITY_GROUP}")
    return any(c.type == "Available" and c.status == "True"
               for c in (found.status.conditions or []))


def webhook_configurations(bin_dir: Path, addon: Addon,
                           ca_bundle: bytes) -> list[dict[str, Any]]:
    """The component's own webhook configurations, reached by URL on its loopback port."""
    path = manifests_dir(bin_dir) / addon.name / "webhooks.yaml"
    out = []
    for doc in yaml.safe_load_all(path.read_text()):
        if not doc:
            continue
        doc = copy.deepcopy(doc)
        doc["metadata"] = {"name": f"{addon.name}-{doc['metadata']['name']}"}
        hooks = []
        for hook in doc.get("webhooks") or []:
            service = hook["clientConfig"].get("service") or {}
            url_path = service.get("path", "")
            if addon.name == "kueue" and not any(p in url_path for p in KUEUE_WEBHOOK_PATHS):
                continue
            hook["clientConfig"] = {
                "url": f"https://127.0.0.1:{addon.webhook_port}{url_path}",
                "caBundle": base64.b64encode(ca_bundle).decode()}
            hooks.append(hook)
        if hooks:
            doc["webhooks"] = hooks
            out.append(doc)
    return out


def create_webhooks(api, configurations: list[dict[str, Any]]) -> None:
    from kubernetes import client

    admission = client.AdmissionregistrationV1Api(api)
    for doc in configurations:
        if doc["kind"] == "MutatingWebhookConfiguration":
            admission.create_mutating_webhook_configuration(doc)
        else:
            admission.create_validating_webhook_configuration(doc)


def prepare(addon: Addon, work: Path, cert: bytes, key: bytes) -> None:
    """Write the component's config file and hand it the serving certificate."""
    serving = addon.serving_dir(work)
    serving.mkdir(parents=True, exist_ok=True)
    (serving / "tls.crt").write_bytes(cert)
    (serving / "tls.key").write_bytes(key)
    addon.config_path(work).write_text(yaml.safe_dump(config(addon, work)))


def place_kueue_cert(directory: Path, cert: bytes, key: bytes, made: list[Path]) -> None:
    """Put a certificate where Kueue insists on finding one; record what was created."""
    if (directory / "tls.crt").exists():
        return
    for parent in reversed([directory, *directory.parents]):
        if not parent.exists():
            parent.mkdir()
            made.append(parent)
    for name, data in (("tls.crt", cert), ("tls.key", key)):
        (directory / name).write_bytes(data)
        made.append(directory / name)


def start_all(spawn: Callable[..., None], wait_ready: Callable[[Addon], None], api,
              bin_dir: Path, work: Path, pki_dir: Path, kubeconfig: Callable[[str], Path],
              ports: Callable[[], int], made: list[Path]) -> list[Addon]:
    """Start JobSet, then Trainer (it needs JobSet's CRD), then Kueue; register each one's
    webhooks once it is ready. Returns the started addons; paths created outside the work dir
    are appended to `made` (the caller removes them, last first)."""
    from kubernetes import client

    core = client.CoreV1Api(api)
    for namespace in (TRAINER_NAMESPACE, KUEUE_NAMESPACE):
        core.create_namespace({"metadata": {"name": namespace}})
    cert, key = (pki_dir / "webhook.crt").read_bytes(), (pki_dir / "webhook.key").read_bytes()
    ca = (pki_dir / "webhook-ca.crt").read_bytes()
    started = []
    for name in COMPONENTS:
        addon = Addon(name, BINARIES[name], webhook_port=ports(), probe_port=ports())
        if name == "kueue":
            addon = replace(addon, visibility_address=host_address(), visibility_port=ports())
            place_kueue_cert(KUEUE_METRICS_CERTS, cert, key, made)
            if addon.visibility_address:
                place_kueue_cert(KUEUE_VISIBILITY_CERTS, cert, key, made)
        prepare(addon, work, cert, key)
        env = {"KUBECONFIG": str(kubeconfig(name)), "TMPDIR": str(addon.tmpdir(work)),
               "POD_NAMESPACE": TRAINER_NAMESPACE if name == "trainer" else KUEUE_NAMESPACE}
        spawn(name, argv(addon, bin_dir, work, kubeconfig(name)), env)
        wait_ready(addon)
        create_webhooks(api, webhook_configurations(bin_dir, addon, ca))
        if addon.visibility_address:
            register_visibility(api, addon)
        started.append(addon)
    return started
