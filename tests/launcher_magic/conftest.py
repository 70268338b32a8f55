"""Fixtures for the launcher tests.

- `jobs_root`: an empty jobs root in a temporary folder.
- `shell`: this process's IPython shell with `launcher_magic` loaded, the jobs root set to
  `jobs_root`, no other workbench variable set and a fresh launcher (no engine loaded yet).
- `kernel`: a real IPython kernel (jupyter_client) with `launcher_magic` loaded and its jobs root
  set to `jobs_root`; see `support.KernelSession`. Shut down (now) at teardown.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .support import KernelSession


@pytest.fixture
def jobs_root(tmp_path) -> Path:
    root = tmp_path / "jobs"
    root.mkdir()
    return root


@pytest.fixture
def kernel(jobs_root):
    from jupyter_client.manager import start_new_kernel

    env = {**os.environ, "PADDLE_WORKBENCH_JOBS_DIR": str(jobs_root)}
    env.pop("PADDLE_WORKBENCH_ENGINE", None)
    manager, client = start_new_kernel(kernel_name="python3", env=env, cwd=str(jobs_root.parent))
    session = KernelSession(manager, client)
    result = session.run("%load_ext launcher_magic")
    assert result.error is None, result.error
    try:
        yield session
    finally:
        client.stop_channels()
        if manager.is_alive():
            manager.shutdown_kernel(now=True)


@pytest.fixture
def shell(jobs_root, monkeypatch):
    from IPython import get_ipython
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.testing.globalipapp import start_ipython

    import launcher_magic.kernel.magics as magics

    for name in list(os.environ):
        if name.startswith("PADDLE_WORKBENCH_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PADDLE_WORKBENCH_JOBS_DIR", str(jobs_root))
    monkeypatch.setattr(magics, "_LAUNCHER", None)
    if InteractiveShell.initialized():  # another test made the process's shell already
        ip = InteractiveShell.instance()
    else:
        start_ipython()
        ip = get_ipython()
    ip.run_line_magic("load_ext", "launcher_magic")
    return ip
