"""`workbench registry start|stop|status`: the internal image registry on this machine.

Debian's docker-registry (the CNCF distribution registry) on a loopback address, its data in the
image cache (~/.cache/paddle-workbench/images/registry). The images are pushed to it by digest
(`workbench images build`), and nothing pulls from anywhere else. The work is done by
images/local/registry.sh, so the build script and this command start the same registry.
"""

from __future__ import annotations

from pathlib import Path

from hub_config.cli import run_checkout_script

SCRIPT = Path("images") / "local" / "registry.sh"


def register(subparsers) -> None:
    parser = subparsers.add_parser("registry", help="the local internal image registry")
    parser.add_argument("action", choices=("start", "stop", "status"),
                        help="start (prints host:port), stop, or status (exit 1 when down)")
    parser.add_argument("--addr", default=None, metavar="HOST:PORT",
                        help="a loopback address (default 127.0.0.1:5000)")
    parser.set_defaults(func=run)


def run(args) -> int:
    return run_checkout_script(SCRIPT, [args.action], "registry",
                               {"REGISTRY_ADDR": args.addr} if args.addr else None)
