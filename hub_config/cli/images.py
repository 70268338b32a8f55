"""`workbench images check [PATH]`: the vetted-image policy over Dockerfiles.

Prints one line per violation (`file:line: [rule] what to change`) and exits 1 when there is
any, 0 when every Dockerfile follows the policy. The rules are in `hub_config.cli.image_policy`.
"""

from __future__ import annotations

from pathlib import Path

from hub_config.cli import CommandError
from hub_config.cli.image_policy import check_tree


def register(subparsers) -> None:
    parser = subparsers.add_parser("images", help="vetted-image tools (policy check)")
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
