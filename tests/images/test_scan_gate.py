"""The scan gate with the real scanner: Trivy (built from its Go module) against a database made
by trivy-db's own builder from the fixture advisory, served by the internal registry.

The two fixture images differ only in the version of one made-up package: the gate must stop the
one the advisory names (nothing is pushed) and let the other through (pushed by digest). An
accepted finding passes only while its acceptance has not expired."""

from __future__ import annotations

import json
import subprocess
from datetime import date, timedelta
from pathlib import Path

from tests.images import registry_client
from tests.images.conftest import (
    BUILD,
    BUILD_TIMEOUT_S,
    FIXTURES,
    REPO,
    build_env,
    cache_root,
    parse_refs,
    run_build,
)

# Trivy names the finding by the advisory's CVE alias (GHSA-wbfx-0000-0001 in the fixture).
ADVISORY = "CVE-2099-0001"


def _gate_build(registry, trivy, fixture: str, ignorefile: Path | None = None):
    """images/local/build.sh image <fixture folder>, with another ignore file when given."""
    extra = {"IGNOREFILE": str(ignorefile)} if ignorefile is not None else {}
    return subprocess.run(["bash", str(BUILD), "image", str(FIXTURES / fixture)],
                          capture_output=True, text=True, env=build_env(registry, trivy, **extra),
                          timeout=BUILD_TIMEOUT_S, cwd=REPO)


def test_the_gate_stops_the_image_with_the_advisory_package(registry, trivy, trivy_db,
                                                            built_images) -> None:
    tags_before = _tags(registry, "gate-vulnerable")
    built = _gate_build(registry, trivy, "gate-vulnerable")
    assert built.returncode != 0
    assert ADVISORY in built.stdout + built.stderr and "stopped" in built.stdout + built.stderr
    assert parse_refs(built.stdout) == {}
    # Nothing reached the registry under the fixture's name.
    assert _tags(registry, "gate-vulnerable") == tags_before
    report = json.loads((cache_root() / "out" / "gate-vulnerable.scan.json").read_text())
    found = [(v["VulnerabilityID"], v["PkgName"], v["InstalledVersion"], v["Severity"])
             for r in report["Results"] for v in r.get("Vulnerabilities") or []]
    assert found == [(ADVISORY, "wbfixture", "1.0.0", "CRITICAL")]


def test_the_gate_passes_the_image_without_it(registry, trivy, trivy_db, built_images) -> None:
    built = run_build(registry, trivy, "image", str(FIXTURES / "gate-clean"))
    assert built.returncode == 0, built.stderr[-3000:]
    refs = parse_refs(built.stdout)
    addr, rest = refs["gate-clean"].split("/", 1)
    name, digest = rest.split("@")
    assert registry_client.has_manifest(addr, name, digest)
    report = json.loads((cache_root() / "out" / "gate-clean.scan.json").read_text())
    assert all(not r.get("Vulnerabilities") for r in report["Results"])
    packages = {p["Name"] for r in report["Results"] for p in r.get("Packages") or []}
    assert "wbfixture" in packages or any(r.get("Type") == "python-pkg"
                                          for r in report["Results"])


def _ignorefile(tmp_path: Path, expires: date) -> Path:
    path = tmp_path / "trivyignore.yaml"
    path.write_text(
        "vulnerabilities:\n"
        f"  - id: {ADVISORY}\n"
        "    statement: fixture package, never imported\n"
        f"    expired_at: {expires.isoformat()}\n")
    return path


def test_an_accepted_finding_passes_until_its_expiry(registry, trivy, trivy_db, built_images,
                                                     tmp_path) -> None:
    accepted = _ignorefile(tmp_path, date.today() + timedelta(days=30))
    built = _gate_build(registry, trivy, "gate-vulnerable", accepted)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    report = json.loads((cache_root() / "out" / "gate-vulnerable.scan.json").read_text())
    suppressed = [f for r in report["Results"] for f in r.get("ExperimentalModifiedFindings") or []]
    assert [f["Finding"]["VulnerabilityID"] for f in suppressed] == [ADVISORY]


def test_an_expired_acceptance_stops_the_push_again(registry, trivy, trivy_db, built_images,
                                                    tmp_path) -> None:
    expired = _ignorefile(tmp_path, date.today() - timedelta(days=1))
    built = _gate_build(registry, trivy, "gate-vulnerable", expired)
    assert built.returncode != 0
    assert ADVISORY in built.stdout + built.stderr and "expired" in built.stdout + built.stderr


def _tags(registry: str, short: str) -> list[str]:
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://{registry}/v2/workbench/{short}/tags/list",
                                    timeout=10) as resp:
            return json.loads(resp.read()).get("tags") or []
    except urllib.error.HTTPError:
        return []
