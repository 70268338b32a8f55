"""`workbench images check|gate|build`: the vetted-image policy, the scan gate, the local build.

- `check [PATH]` prints one line per policy violation (`file:line: [rule] what to change`) and
  exits 1 when there is any, 0 when every Dockerfile follows the policy.
- `gate REPORT` judges a Trivy JSON report: exit 1 when a HIGH or CRITICAL finding stops the
  push, 0 when the image may be pushed (images/local/scan.sh runs it after Trivy).
- `build` runs the daemonless build of this checkout (images/local/build.sh all): the base, the
  CPU, hub and proxy images, scanned and pushed by digest to the local internal registry.
The rules are in `hub_config.cluster_policy.images` and `hub_config.cluster_policy.scan_gate`.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import yaml

from hub_config.cli import CommandError, run_checkout_script
from hub_config.cluster_policy.images import check_tree
from hub_config.cluster_policy.scan_gate import (
    GATE_SEVERITIES,
    ReportError,
    blocking_findings,
    ignorefile_problems,
)

BUILD_SCRIPT = Path("images") / "local" / "build.sh"


def register(subparsers) -> None:
    parser = subparsers.add_parser("images", help="vetted images: policy check, scan gate, build")
    actions = parser.add_subparsers(dest="images_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check", help="check Dockerfiles against the image policy (exit 1 on violations)"
    )
    check.add_argument("path", nargs="?", default="images",
                       help="a Dockerfile or a folder searched for Dockerfiles (default: images)")
    check.add_argument("--context", default=".",
                       help="the docker build context, where COPY sources such as lock files "
                            "are found (default: the current directory, the repository root)")
    check.set_defaults(func=run_check)

    gate = actions.add_parser(
        "gate", help="judge a Trivy JSON report (exit 1 when a finding stops the push)")
    gate.add_argument("report", help="trivy image --format json output")
    gate.add_argument("--ignorefile", default=None,
                      help="the reviewed Trivy ignore file the scan used (checked for a "
                           "statement and an expiry on every entry)")
    gate.add_argument("--name", default=None,
                      help="how the verdict names the image (default: the report's artifact)")
    gate.add_argument("--severity", default=",".join(GATE_SEVERITIES),
                      help="severities that stop the push (default: %(default)s)")
    gate.set_defaults(func=run_gate)

    build = actions.add_parser(
        "build", help="build, scan and push the images on this machine (run in the checkout)")
    build.add_argument("--registry", default=None, metavar="HOST:PORT",
                       help="the local registry (default 127.0.0.1:5000, started if needed)")
    build.add_argument("--no-scan", action="store_true",
                       help="push without the Trivy gate (the images are then unvetted)")
    build.set_defaults(func=run_build)


def run_check(args) -> int:
    root = Path(args.path)
    context = Path(args.context)
    if not root.exists():
        raise CommandError(f"{root} does not exist; give a Dockerfile or a folder of them")
    if not context.is_dir():
        raise CommandError(f"--context {context} is not a folder; give the build context")
    files, violations = check_tree(root, context)
    if not files:
        raise CommandError(f"no Dockerfile found under {root}")
    for violation in violations:
        print(violation)
    checked = f"{len(files)} Dockerfile{'s' if len(files) != 1 else ''} checked"
    if violations:
        print(f"{checked}: {len(violations)} violation{'s' if len(violations) != 1 else ''}")
        return 1
    print(f"{checked}: no violations")
    return 0


def run_gate(args) -> int:
    path = Path(args.report)
    try:
        report = json.loads(path.read_text())
    except OSError as exc:
        raise CommandError(f"cannot read the report {path}: {exc.strerror}") from None
    except ValueError:
        raise CommandError(f"{path} is not JSON; scan with `trivy image --format json`") from None
    severities = tuple(s.strip().upper() for s in args.severity.split(",") if s.strip())
    problems: list[str] = []
    if args.ignorefile:
        try:
            accepted = yaml.safe_load(Path(args.ignorefile).read_text())
        except OSError as exc:
            raise CommandError(f"cannot read --ignorefile {args.ignorefile}: "
                               f"{exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise CommandError(f"--ignorefile {args.ignorefile} is not YAML: {exc}") from None
        problems = ignorefile_problems(accepted, date.today())
    try:
        findings = blocking_findings(report, severities)
    except ReportError as exc:
        raise CommandError(str(exc)) from None
    name = args.name or report.get("ArtifactName", str(path))
    for problem in problems:
        print(f"ignore file: {problem}")
    for finding in findings:
        print(finding)
    if findings or problems:
        print(f"gate: {name}: stopped ({len(findings)} {'/'.join(severities)} finding(s), "
              f"{len(problems)} ignore-file problem(s)); nothing is pushed")
        return 1
    print(f"gate: {name}: passed (no {'/'.join(severities)} finding)")
    return 0


def run_build(args) -> int:
    env = {}
    if args.registry:
        env["REGISTRY_ADDR"] = args.registry
    if args.no_scan:
        env["SCAN"] = "off"
    return run_checkout_script(BUILD_SCRIPT, ["all"], "images build", env)
