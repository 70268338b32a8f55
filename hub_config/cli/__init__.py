"""Subcommands of `workbench`: one module each, each with `register(subparsers)`.

`CommandError` lives here, not in `hub_config.cli.main`: under `python -m hub_config.cli.main` that module
runs as `__main__`, so a class defined there would exist twice and the commands' errors (raised
with the `hub_config.cli.main` copy) would escape `main`'s handler as tracebacks.
"""


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 2, no traceback."""
