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
from collections.abc import Callable
from dataclasses import dataclass
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

    def tmpdir(self, work: Path) -> Path:
        return work / f"{self.name}-tmp"

    def serving_dir(self, work: Path) -> Path:
        return self.tmpdir(work) / "k8s-webhook-server" / "serving-certs"

    def config_path(self, work: Path) -> Path:
        return work / f"{self.name}-config.yaml"


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
            "featureGates": {"VisibilityOnDemand": False}}


def argv(addon: Addon, bin_dir: Path, work: Path) -> list[str]:
    args = [str(bin_dir / addon.binary), f"--config={addon.config_path(work)}"]
    if addon.name == "jobset":
        args += ["--metrics-bind-address=0"]
    return args


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


def place_kueue_metrics_cert(cert: bytes, key: bytes, made: list[Path]) -> None:
    """Put a certificate where Kueue insists on finding one; record what was created."""
    if (KUEUE_METRICS_CERTS / "tls.crt").exists():
        return
    for parent in reversed([KUEUE_METRICS_CERTS, *KUEUE_METRICS_CERTS.parents[:2]]):
        if not parent.exists():
            parent.mkdir()
            made.append(parent)
    for name, data in (("tls.crt", cert), ("tls.key", key)):
        (KUEUE_METRICS_CERTS / name).write_bytes(data)
        made.append(KUEUE_METRICS_CERTS / name)


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
        prepare(addon, work, cert, key)
        if name == "kueue":
            place_kueue_metrics_cert(cert, key, made)
        env = {"KUBECONFIG": str(kubeconfig(name)), "TMPDIR": str(addon.tmpdir(work)),
               "POD_NAMESPACE": TRAINER_NAMESPACE if name == "trainer" else KUEUE_NAMESPACE}
        spawn(name, argv(addon, bin_dir, work), env)
        wait_ready(addon)
        create_webhooks(api, webhook_configurations(bin_dir, addon, ca))
        started.append(addon)
    return started
