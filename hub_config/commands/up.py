"""`workbench up`: run the workbench on this machine.

Until the local hub lands, this opens JupyterLab on 127.0.0.1 with the magic available and a
sample notebook copied into the workspace. All state lives under one directory (`--state-dir`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

SAMPLE_NOTEBOOK = "paddle-quickstart.ipynb"


def register(subparsers) -> None:
    parser = subparsers.add_parser("up", help="start the workbench on this machine")
    parser.add_argument("--state-dir", default=".workbench", help="where all state lives")
    parser.add_argument("--port", type=int, default=8888, help="port on 127.0.0.1")
    parser.set_defaults(func=run)


def prepare_workspace(state_dir: Path) -> Path:
    """Create the workspace and copy the sample notebook into it (never overwriting edits)."""
    workspace = state_dir / "home"
    workspace.mkdir(parents=True, exist_ok=True)
    target = workspace / SAMPLE_NOTEBOOK
    if not target.exists():
        sample = resources.files("hub_config.samples") / SAMPLE_NOTEBOOK
        with resources.as_file(sample) as path:
            shutil.copyfile(path, target)
    return workspace


def run(args) -> int:
    state_dir = Path(args.state_dir).resolve()
    workspace = prepare_workspace(state_dir)
    env = dict(os.environ)
    env.setdefault("PADDLE_WORKBENCH_JOBS_DIR", str(workspace / "jobs"))
    argv = [
        sys.executable, "-m", "jupyterlab",
        "--ip=127.0.0.1", f"--port={args.port}", "--no-browser",
        f"--ServerApp.root_dir={workspace}",
    ]
    print(f"Starting JupyterLab on http://127.0.0.1:{args.port} (state in {state_dir})")
    try:
        return subprocess.call(argv, env=env)
    except KeyboardInterrupt:
        return 0
