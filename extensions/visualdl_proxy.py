"""VisualDL behind jupyter-server-proxy: the `visualdl` entry of `jupyter_serverproxy_servers`.

jupyter-server-proxy calls `setup_visualdl()` once, when the user's Jupyter server starts, and
serves the board at `<server base URL>visualdl/`. The board starts on the first request (a
JupyterLab launcher tile makes one) and stops with the server. It covers the user's whole jobs root
(`PADDLE_WORKBENCH_JOBS_DIR`, default `~/jobs`): each job's `visualdl/` folder is one run, named by
its job id when written with `launcher_magic.metrics.ScalarLogger`.

Who may see it: the proxy's handlers sit behind the Jupyter server's login, which under JupyterHub
admits only the server's owner (and whoever the hub granted `access:servers` on it); the board
itself listens on 127.0.0.1 only and forbids framing from any origin but the user's server (see
`extensions.visualdl_server`).
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

from workbench_contract import environment
from workbench_contract.visualdl import SERVER_MODULE, TOKEN_ENV, TOKEN_HEADER

ICON = Path(__file__).with_name("visualdl.svg")
NAME = "visualdl"
# On a busy two-core machine VisualDL's first start (imports, reading the logs) takes seconds.
START_TIMEOUT = 60.0


def server_process_config(jobs_root: Path | str, python: str, token: str) -> dict[str, Any]:
    """The jupyter-server-proxy settings of the board over `jobs_root`, run by `python`.

    `{port}` and `{base_url}` are filled in by jupyter-server-proxy. `absolute_url` keeps the full
    path in requests, because VisualDL serves everything under its public path. The board gets
    `token` in its environment and this route adds it to every request it forwards, so the board
    answers this route and nothing else on the machine (see `extensions.visualdl_server`).
    """
    return {
        "environment": {TOKEN_ENV: token},
        "request_headers_override": {TOKEN_HEADER: token},
        "command": [
            python, "-m", SERVER_MODULE,
            "--logdir", str(jobs_root),
            "--port", "{port}",
            "--public-path", "{base_url}" + NAME,
        ],
        "absolute_url": True,
        "timeout": START_TIMEOUT,
        "new_browser_tab": False,
        "launcher_entry": {
            "enabled": True,
            "title": "VisualDL",
            "icon_path": str(ICON),
            "category": "Notebook",
        },
    }


def setup_visualdl() -> dict[str, Any]:
    """Entry point: the board over this server's jobs root, run by this server's interpreter."""
    return server_process_config(environment.jobs_root(), sys.executable, secrets.token_hex(24))
