"""Which GPUs this machine has, for the local engine's `--gpus`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping

_GPU_LINE = re.compile(r"^GPU (\d+):", re.MULTILINE)


def parse_nvidia_smi(listing: str) -> list[int]:
    """GPU indices from `nvidia-smi -L` output ("GPU 0: NVIDIA H200 (UUID: ...)")."""
    return [int(index) for index in _GPU_LINE.findall(listing)]


def visible_gpus(
    listing: str | None, env: Mapping[str, str] | None = None
) -> list[int]:
    """The GPU indices a job may use: those listed, narrowed by CUDA_VISIBLE_DEVICES if set."""
    env = os.environ if env is None else env
    present = parse_nvidia_smi(listing or "")
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return present
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    return [int(v) for v in wanted if v.isdigit() and int(v) in present]


def detect_gpus() -> list[int]:
    """GPUs on this machine (empty without an NVIDIA driver)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return visible_gpus(out.stdout if out.returncode == 0 else "")
