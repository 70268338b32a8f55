"""`workbench`: the operator's and newcomer's command line.

Each subcommand lives in its own module under `hub_config.cli` and exposes
`register(subparsers)`, which adds its parser and sets `func` (a callable taking the parsed
arguments and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hub_config.cli import CommandError

# One line per subcommand module; the order is the order of `workbench --help`.
COMMAND_MODULES = [
    "hub_config.cli.up",
    "hub_config.cli.images",
    "hub_config.cli.registry",
    "hub_config.cli.tenants",
    "hub_config.cli.service",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workbench",
        description="Paddle Workbench: multi-tenant notebooks for distributed PaddlePaddle training.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CommandError as err:
        print(f"workbench {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
