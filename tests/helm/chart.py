"""The Zero to JupyterHub chart with the workbench's values, rendered by the real Helm.

- `build_helm()`: deploy/helm/build.sh (Helm from its Go module, cached outside the clone);
  returns the helm binary, or raises HelmUnavailable (why it cannot be built here) or
  HelmBuildFailed; `helm_or_skip()` turns those into a skip or a failure for a fixture.
- `image_values(tmp)`: runs deploy/helm/image-values.py on `REFS` and returns the values file it
  wrote (the digests stand in for images a registry would serve: nothing is pulled).
- `render(helm, *values, set_values=...)`: `helm template` of the vendored chart with
  workbench-values.yaml and `values`, as a list of objects.
- `pod_specs(objects)`: (where, pod spec) of every workload template in the objects.
- `restricted_problems(spec)`: what in a pod spec Pod Security `restricted` refuses.

Importing this module needs only PyYAML.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = ROOT / "deploy" / "helm"
BUILD_SCRIPT = HELM_DIR / "build.sh"
CHART = HELM_DIR / "zero-to-jupyterhub-4.4.0" / "jupyterhub"
VALUES = HELM_DIR / "workbench-values.yaml"
IMAGE_VALUES = HELM_DIR / "image-values.py"
SERVICE_MONITOR = HELM_DIR / "hub-servicemonitor.yaml"
RELEASE = "workbench"
NAMESPACE = "jupyterhub"

# What the image build prints last (images/local/build.sh): made-up digests of a local registry.
REFS = {
    "hub": "registry.test:5000/workbench/hub@sha256:" + "1" * 64,
    "proxy": "registry.test:5000/workbench/proxy@sha256:" + "2" * 64,
    "cpu": "registry.test:5000/workbench/cpu@sha256:" + "3" * 64,
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}


class HelmUnavailable(RuntimeError):
    """Helm cannot be built here (no Go, no module proxy); the message says what is missing."""


class HelmBuildFailed(RuntimeError):
    """deploy/helm/build.sh ran and failed; the message carries the end of its log."""


def _proxy_unreachable() -> str:
    proxy = subprocess.run(["go", "env", "GOPROXY"], capture_output=True, text=True,
                           timeout=30).stdout.strip()
    first = proxy.split(",")[0].split("|")[0]
    if first in ("", "off", "direct"):
        return f"GOPROXY={proxy!r} names no module proxy"
    try:
        with urllib.request.urlopen(f"{first.rstrip('/')}/helm.sh/helm/v4/@v/list",
                                    timeout=15) as resp:
            resp.read(64)
    except OSError as exc:
        return f"the Go module proxy {first} cannot be reached ({exc})"
    return ""


def build_helm() -> Path:
    """The helm binary, built by deploy/helm/build.sh when it is not cached yet."""
    if shutil.which("go") is None:
        raise HelmUnavailable("the Helm tests need the Go toolchain (go >= 1.26 on PATH) to "
                              "build Helm from its module")
    check = subprocess.run(["bash", str(BUILD_SCRIPT), "--check"], capture_output=True)
    if check.returncode != 0:
        why = _proxy_unreachable()
        if why:
            raise HelmUnavailable(f"cannot build Helm: {why}")
    try:
        done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True,
                              timeout=3600)
    except subprocess.TimeoutExpired:
        raise HelmBuildFailed("deploy/helm/build.sh ran for over an hour") from None
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise HelmBuildFailed(f"deploy/helm/build.sh failed (exit {done.returncode}):\n{tail}")
    return Path(done.stdout.strip().splitlines()[-1]) / "helm"


def helm_or_skip() -> Path:
    """`build_helm()` for a fixture: skips the tests where Helm cannot be built here (saying
    why), fails them where the build itself failed."""
    import pytest

    try:
        return build_helm()
    except HelmUnavailable as why:
        pytest.skip(str(why))
    except HelmBuildFailed as failure:
        pytest.fail(str(failure), pytrace=False)


def run_image_values(refs_text: str, *args: str) -> subprocess.CompletedProcess[str]:
    """deploy/helm/image-values.py with `refs_text` on its standard input."""
    import sys

    return subprocess.run([sys.executable, str(IMAGE_VALUES), *args], input=refs_text,
                          capture_output=True, text=True, timeout=60)


def image_values(folder: Path, refs: dict[str, str] | None = None) -> Path:
    """The images values file image-values.py writes for `refs` (default `REFS`)."""
    text = "".join(f"{name}={ref}\n" for name, ref in (refs or REFS).items())
    done = run_image_values(text)
    if done.returncode != 0:
        raise AssertionError(f"image-values.py failed: {done.stderr}")
    path = folder / "images.yaml"
    path.write_text(done.stdout)
    return path


def helm(helm_bin: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm_bin), *args], capture_output=True, text=True, timeout=300)


def render(helm_bin: Path, *values: Path, set_values: Sequence[str] = ()) -> list[dict[str, Any]]:
    """`helm template` with the workbench's values, then `values`, then `--set` pairs."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, "-f", str(VALUES)]
    for path in values:
        args += ["-f", str(path)]
    for pair in set_values:
        args += ["--set", pair]
    done = helm(helm_bin, *args)
    if done.returncode != 0:
        raise AssertionError(f"helm template failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def find(objects: Iterable[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objects:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind} {name} in the rendered chart")


def chart_values(objects: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The values the hub reads (the chart puts them, merged, in its Secret `hub`)."""
    secret = find(objects, "Secret", "hub")
    return yaml.safe_load(base64.b64decode(secret["data"]["values.yaml"]))


def secret_strings(objects: Iterable[dict[str, Any]]) -> set[str]:
    """Every value of every rendered Secret, decoded (`values.yaml` itself excepted)."""
    found = set()
    for obj in objects:
        if obj["kind"] != "Secret":
            continue
        for key, value in (obj.get("data") or {}).items():
            if key != "values.yaml":
                found.add(base64.b64decode(value).decode())
        found.update(v for v in (obj.get("stringData") or {}).values())
    return {s for s in found if s}


def pod_specs(objects: Iterable[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(`Kind/name`, pod template spec) of every workload in `objects`."""
    return [(f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"])
            for obj in objects if obj["kind"] in WORKLOADS]


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def restricted_problems(spec: dict[str, Any]) -> list[str]:
    """What Pod Security `restricted` would refuse in this pod spec (the rules the workbench's
    pods must meet; the API server's own check runs in tests/cluster/test_helm_chart.py)."""
    problems = []
    pod = spec.get("securityContext") or {}
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(flag):
            problems.append(f"pod sets {flag}")
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            problems.append(f"volume {volume['name']} is a hostPath")
    for c in containers(spec):
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{name}: capabilities do not drop ALL")
        if set((sc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds capabilities")
        if not sc.get("runAsNonRoot", pod.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        seccomp = (sc.get("seccompProfile") or pod.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile is {seccomp!r}, not RuntimeDefault")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                problems.append(f"{name}: hostPort {port['hostPort']}")
    return problems
