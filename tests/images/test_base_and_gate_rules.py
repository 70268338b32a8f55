"""The rules the real build leans on, as pure checks (no build needed):

- the Dockerfiles name their base through `ARG BASE=<digest-pinned default>` + `FROM ${BASE}`, so
  the same file builds here (the internal base) and in an enterprise pipeline (its mirror);
- what a build may pass as BASE;
- npm installs only the lock (`npm ci`);
- the scan gate's decision on Trivy's real JSON reports (saved from scans of the fixture images,
  tests/images/fixtures/trivy/) and the ignore file's review rules.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from hub_config.cli.main import main
from hub_config.cluster_policy.images import base_reference_problem, check_dockerfile
from hub_config.cluster_policy.scan_gate import (
    ReportError,
    blocking_findings,
    ignorefile_problems,
)

REPO = Path(__file__).resolve().parents[2]
REPORTS = Path(__file__).resolve().parent / "fixtures" / "trivy"
DIGEST = "@sha256:" + "ab" * 32
TAIL = "RUN useradd --uid 1000 --gid 100 jovyan\nUSER 1000:100\n"


@pytest.mark.parametrize(("head", "rule"), [
    (f"ARG BASE=python:3.11-slim{DIGEST}\nFROM ${{BASE}}\n", None),
    (f"ARG BASE=python:3.11-slim{DIGEST}\nFROM $BASE\n", None),
    (f"ARG BASE=python:3.11-slim{DIGEST}\nFROM ${{BASE}} AS build\nRUN true\nFROM build\n", None),
    ("ARG BASE\nFROM ${BASE}\n", "from-arg"),
    ("ARG BASE=python:3.11-slim\nFROM ${BASE}\n", "from-arg"),
    (f"ARG BASE=python:latest{DIGEST}\nFROM ${{BASE}}\n", "from-arg"),
    (f"ARG TAG=3.11\nFROM python:${{TAG}}{DIGEST}\n", "from-arg"),
    (f"FROM python:3.11{DIGEST}\nARG BASE=python:3.11{DIGEST}\nFROM ${{BASE}}\n", "from-arg"),
    (f"ARG OTHER=x\nARG BASE=${{OTHER}}{DIGEST}\nFROM ${{BASE}}\n", "from-arg"),
], ids=["braces", "bare", "named-stage", "no-default", "unpinned-default", "latest-default",
        "arg-in-tag", "arg-after-first-from", "default-from-arg"])
def test_a_base_argument_needs_a_digest_pinned_default(head: str, rule: str | None) -> None:
    found = {v.rule for v in check_dockerfile(head + TAIL)}
    assert found == ({rule} if rule else set())


@pytest.mark.parametrize(("reference", "ok"), [
    (f"127.0.0.1:5000/workbench/base{DIGEST}", True),
    (f"registry.example.com/mirror/python:3.11-slim{DIGEST}", True),
    ("127.0.0.1:5000/workbench/base:latest", False),
    ("127.0.0.1:5000/workbench/base:abc", False),
    ("${BASE}", False),
], ids=["internal-digest", "mirror-digest", "latest", "tag", "unexpanded"])
def test_what_a_build_may_pass_as_base(reference: str, ok: bool) -> None:
    assert (base_reference_problem(reference) is None) == ok


@pytest.mark.parametrize(("run", "bad"), [
    ("cd /opt/chp && npm ci --omit=dev", False),
    ("npm install configurable-http-proxy", True),
    ("npm i -g configurable-http-proxy", True),
    ("yarn add configurable-http-proxy", True),
])
def test_npm_installs_only_the_lock(run: str, bad: bool) -> None:
    found = {v.rule for v in check_dockerfile(f"FROM node{DIGEST}\nRUN {run}\n{TAIL}")}
    assert ("npm-unlocked" in found) == bad


def test_every_image_dockerfile_builds_from_a_base_argument() -> None:
    for name in ("cpu", "hub", "proxy"):
        text = (REPO / "images" / name / "Dockerfile").read_text()
        assert "\nFROM ${BASE}" in text and "\nARG BASE=" in text, name
    assert main(["images", "check", str(REPO / "images"), "--context", str(REPO)]) == 0


def _report(name: str) -> dict:
    return json.loads((REPORTS / f"{name}.json").read_text())


def test_the_gate_stops_the_real_report_of_the_vulnerable_image() -> None:
    (finding,) = blocking_findings(_report("vulnerable"))
    assert (finding.id, finding.package, finding.installed, finding.fixed, finding.severity) == \
        ("CVE-2099-0001", "wbfixture", "1.0.0", "1.0.1", "CRITICAL")
    # A gate that stops only CRITICAL still stops it; one for LOW only does not.
    assert blocking_findings(_report("vulnerable"), ("CRITICAL",))
    assert blocking_findings(_report("vulnerable"), ("LOW",)) == []


@pytest.mark.parametrize("name", ["clean", "accepted"])
def test_the_gate_passes_the_real_reports_without_a_finding(name: str) -> None:
    assert blocking_findings(_report(name)) == []


@pytest.mark.parametrize("report", [{}, {"SchemaVersion": 1, "Results": []},
                                    {"SchemaVersion": 2, "ArtifactName": "x", "Results": []}],
                         ids=["empty", "old-schema", "saw-nothing"])
def test_a_report_the_gate_cannot_judge_does_not_pass(report: dict) -> None:
    with pytest.raises(ReportError):
        blocking_findings(report)


TODAY = date(2026, 6, 1)


@pytest.mark.parametrize(("entry", "problem"), [
    ({"id": "CVE-1", "statement": "not reachable", "expired_at": "2026-07-01"}, None),
    ({"id": "CVE-1", "statement": "not reachable", "expired_at": date(2026, 7, 1)}, None),
    ({"id": "CVE-1", "expired_at": "2026-07-01"}, "no statement"),
    ({"id": "CVE-1", "statement": "x"}, "no expired_at"),
    ({"id": "CVE-1", "statement": "x", "expired_at": "soon"}, "no expired_at"),
    ({"id": "CVE-1", "statement": "x", "expired_at": "2026-05-31"}, "expired on"),
    ({"id": "CVE-1", "statement": "x", "expired_at": str(TODAY + timedelta(days=181))},
     "more than 180 days"),
    ({"statement": "x", "expired_at": "2026-07-01"}, "no id"),
], ids=["ok", "ok-yaml-date", "no-statement", "no-expiry", "bad-expiry", "expired", "too-long",
        "no-id"])
def test_every_accepted_finding_is_reviewed_and_expires(entry: dict, problem: str | None) -> None:
    problems = ignorefile_problems({"vulnerabilities": [entry]}, TODAY)
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0], problems


def test_the_repository_ignore_file_passes_its_own_review() -> None:
    data = yaml.safe_load((REPO / "images" / "trivyignore.yaml").read_text())
    assert ignorefile_problems(data, date.today()) == []


def test_the_gate_command_exits_1_on_a_finding_and_0_without(capsys) -> None:
    assert main(["images", "gate", str(REPORTS / "vulnerable.json")]) == 1
    assert "CVE-2099-0001" in capsys.readouterr().out
    assert main(["images", "gate", str(REPORTS / "clean.json")]) == 0


def test_the_gate_command_says_what_is_wrong_without_a_traceback(tmp_path, capsys) -> None:
    bad = tmp_path / "report.json"
    bad.write_text("not json")
    assert main(["images", "gate", str(bad)]) == 2
    assert main(["images", "gate", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "is not JSON" in err and "cannot read the report" in err and "Traceback" not in err
