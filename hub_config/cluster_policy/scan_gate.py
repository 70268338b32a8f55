"""The scan gate: Trivy's verdict on a built image, before it may be pushed.

`blocking_findings` judges Trivy's JSON report of a built image: a HIGH or CRITICAL finding
stops the push unless the reviewed ignore file accepts it until a date that has not passed
(`ignorefile_problems` checks that file: a statement and an expiry on every entry). Pure: data
in, findings and problems out. The Dockerfile rules an image is built by are in `images`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

GATE_SEVERITIES = ("HIGH", "CRITICAL")
MAX_ACCEPTANCE_DAYS = 180  # an accepted finding is looked at again at least twice a year


@dataclass(frozen=True)
class Finding:
    """One vulnerability Trivy reported in an image."""

    id: str
    package: str
    installed: str
    fixed: str
    severity: str
    target: str

    def __str__(self) -> str:
        fix = f"fixed in {self.fixed}" if self.fixed else "no fix yet"
        return (f"{self.severity} {self.id} {self.package} {self.installed} ({fix}) "
                f"in {self.target}")


class ReportError(ValueError):
    """A scan report the gate cannot judge (so the push must not go on)."""


def blocking_findings(report: dict,
                      severities: tuple[str, ...] = GATE_SEVERITIES) -> list[Finding]:
    """The findings of a Trivy JSON report (`trivy image --format json`) that stop the push.

    Findings that the ignore file accepted are not in `Results[].Vulnerabilities` (Trivy moves
    them to `ExperimentalModifiedFindings`), so they do not count; an entry past its `expired_at`
    is not applied by Trivy, so its finding counts again.
    Raises:
        ReportError: not a Trivy report (schema 2), or one that saw no packages at all: an
            empty scan proves nothing, so it does not pass.
    """
    if not isinstance(report, dict) or report.get("SchemaVersion") != 2:
        raise ReportError("not a Trivy JSON report (SchemaVersion 2); scan with "
                          "`trivy image --format json`")
    results = report.get("Results") or []
    os_found = bool((report.get("Metadata") or {}).get("OS"))
    if not results and not os_found:
        raise ReportError(f"Trivy found no packages in {report.get('ArtifactName', 'the image')}; "
                          "an image it cannot read is not vetted")
    found = []
    for result in results:
        for vuln in result.get("Vulnerabilities") or []:
            if vuln.get("Severity", "UNKNOWN").upper() in severities:
                found.append(Finding(
                    id=str(vuln.get("VulnerabilityID", "?")),
                    package=str(vuln.get("PkgName", "?")),
                    installed=str(vuln.get("InstalledVersion", "?")),
                    fixed=str(vuln.get("FixedVersion", "")),
                    severity=vuln["Severity"].upper(),
                    target=str(result.get("Target", "?")),
                ))
    return sorted(found, key=lambda f: (f.severity != "CRITICAL", f.id, f.package))


def ignorefile_problems(data: object, today: date) -> list[str]:
    """What is wrong with a Trivy YAML ignore file's content (empty: every entry reviewed).

    Each accepted vulnerability needs an `id`, a `statement` saying why it does not apply and an
    `expired_at` date no more than MAX_ACCEPTANCE_DAYS after `today`. An entry past its date is
    reported too: Trivy no longer applies it, so its finding stops the push again.
    """
    if data is None:
        return []
    if not isinstance(data, dict):
        return ["the ignore file is not a mapping; write 'vulnerabilities: [...]'"]
    problems = []
    entries = data.get("vulnerabilities") or []
    if not isinstance(entries, list):
        return ["'vulnerabilities' is not a list"]
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, dict) or not entry.get("id"):
            problems.append(f"entry {number}: no id")
            continue
        name = f"entry {number} ({entry['id']})"
        if not str(entry.get("statement") or "").strip():
            problems.append(f"{name}: no statement; say why the finding does not apply")
        expiry = entry.get("expired_at")
        if isinstance(expiry, datetime):
            expiry = expiry.date()
        if isinstance(expiry, str):
            try:
                expiry = date.fromisoformat(expiry[:10])
            except ValueError:
                expiry = None
        if not isinstance(expiry, date):
            problems.append(f"{name}: no expired_at (YYYY-MM-DD); every acceptance ends")
        elif expiry < today:
            problems.append(f"{name}: expired on {expiry}; fix the image or review the entry")
        elif expiry > today + timedelta(days=MAX_ACCEPTANCE_DAYS):
            problems.append(f"{name}: expired_at {expiry} is more than {MAX_ACCEPTANCE_DAYS} "
                            "days away; accept it for less and review it then")
    return problems
