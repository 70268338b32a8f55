"""GPU devices on a machine that has them (runs where `nvidia-smi` lists a GPU, skips elsewhere).

Needs only the standard library and the pure parts of the launcher, so it runs on a bare GPU host.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from launcher_magic.core.commands import assign_devices, node_command
from launcher_magic.core.jobdir import JobDir
from launcher_magic.core.spec import LaunchOptions, build_spec
from launcher_magic.engines.local.devices import detect_gpus
from workbench_contract.environment import NotebookContext


def _listed() -> int:
    if not shutil.which("nvidia-smi"):
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


pytestmark = pytest.mark.skipif(_listed() == 0, reason="needs an NVIDIA GPU and nvidia-smi")


def test_every_listed_gpu_is_detected(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert detect_gpus() == list(range(_listed()))


def test_a_job_gets_the_gpus_it_asks_for_and_is_refused_more(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = detect_gpus()
    spec = build_spec(LaunchOptions(nodes=1, gpus=len(gpus)), "train()", NotebookContext())
    (devices,) = assign_devices(spec, gpus)
    assert devices == gpus
    argv, _ = node_command(spec, JobDir(tmp_path), node=0, attempt=0, master="localhost:1",
                           python=sys.executable, devices=devices)
    assert argv[argv.index("--devices") + 1] == ",".join(map(str, gpus))
    assert argv[argv.index("--nproc_per_node") + 1] == str(len(gpus))
    too_many = build_spec(LaunchOptions(nodes=2, gpus=len(gpus)), "train()", NotebookContext())
    with pytest.raises(ValueError, match=f"this machine has {len(gpus)}"):
        assign_devices(too_many, gpus)


def test_cuda_visible_devices_narrows_the_choice(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", str(_listed() - 1))
    assert detect_gpus() == [_listed() - 1]
