"""Subcommands of `workbench`: one module each, each with `register(subparsers)`.

`CommandError` lives here, not in `hub_config.cli.main`: under `python -m hub_config.cli.main` that module
runs as `__main__`, so a class defined there would exist twice and the commands' errors (raised
with the `hub_config.cli.main` copy) would escape `main`'s handler as tracebacks.

`workbench` must start with the base install alone (`pip install paddle-workbench`: no hub, no
Kubernetes client): command modules import only the standard library, PyYAML and light
`hub_config` modules at the top, and a command that needs an extra calls `require_extra` first.
"""

from __future__ import annotations

import importlib
import os
import subprocess
from pathlib import Path


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 2, no traceback."""


def require_extra(extra: str, *modules: str) -> None:
    """Import `modules`, or raise CommandError saying which extra of the package installs them.

    Raises:
        CommandError: one of the modules (or one they import) is not installed.
    """
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError:
            raise CommandError(
                f"needs the {extra} extra: pip install 'paddle-workbench[{extra}]'"
            ) from None


def run_checkout_script(script: Path, argv: list[str], command: str,
                        env: dict[str, str] | None = None) -> int:
    """Run one of the checkout's shell scripts (images/local/*.sh) with `env` added to ours.

    Raises:
        CommandError: the script is not there (the command runs outside the checkout).
    """
    if not script.is_file():
        raise CommandError(f"{script} not found; run `workbench {command}` in the repository's "
                           "checkout")
    return subprocess.run(["bash", str(script), *argv], env={**os.environ, **(env or {})}).returncode
