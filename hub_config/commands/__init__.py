"""Subcommands of `workbench`: one module each, each with `register(subparsers)`."""
