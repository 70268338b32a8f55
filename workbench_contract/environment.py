"""The environment contract between the hub and the magic.

The hub (or `workbench up`) sets these variables in every notebook server it spawns; the magic reads
them to pick its engine, its defaults and the limits it enforces before anything starts. Keeping the
names in one place means the spawner and the magic cannot drift apart.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

# Which engine `%%paddle_launch` uses when `--engine` is not given: "local" or "kubernetes".
ENGINE = "PADDLE_WORKBENCH_ENGINE"
# Where job directories live; defaults to ~/jobs.
JOBS_DIR = "PADDLE_WORKBENCH_JOBS_DIR"
# Who and where: filled in by the hub from the user's tenant.
TENANT = "PADDLE_WORKBENCH_TENANT"
NAMESPACE = "PADDLE_WORKBENCH_NAMESPACE"
USER = "PADDLE_WORKBENCH_USER"
# The notebook's own image; jobs run in it unless `--image` names another allowed one.
IMAGE = "PADDLE_WORKBENCH_IMAGE"
# Comma-separated image references the tenant allows (empty: no image policy on this server).
ALLOWED_IMAGES = "PADDLE_WORKBENCH_ALLOWED_IMAGES"
# The tenant's job limits.
MAX_NODES = "PADDLE_WORKBENCH_MAX_NODES"
MAX_GPUS_PER_NODE = "PADDLE_WORKBENCH_MAX_GPUS_PER_NODE"
MAX_RUNTIME = "PADDLE_WORKBENCH_MAX_RUNTIME_SECONDS"
# The persistent volume claim holding the user's home, and where the notebook mounts it: the
# kubernetes engine mounts it at the same path in every worker so the job directory is shared.
STORAGE_CLAIM = "PADDLE_WORKBENCH_STORAGE_CLAIM"
STORAGE_MOUNT = "PADDLE_WORKBENCH_STORAGE_MOUNT"
# "text" forces the plain-text job panel even where widgets could render.
PANEL = "PADDLE_WORKBENCH_PANEL"

# Set by the engines for the training code (and read by the checkpoint helper).
JOB_DIR = "PADDLE_WORKBENCH_JOB_DIR"
CHECKPOINT_DIR = "PADDLE_WORKBENCH_CHECKPOINT_DIR"
VISUALDL_DIR = "PADDLE_WORKBENCH_VISUALDL_DIR"
ATTEMPT = "PADDLE_WORKBENCH_ATTEMPT"
NODE_RANK = "PADDLE_WORKBENCH_NODE_RANK"


@dataclass(frozen=True)
class Limits:
    """Job limits the hub put in the environment; None means "no limit set"."""

    max_nodes: int | None = None
    max_gpus_per_node: int | None = None
    max_runtime_seconds: int | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        return cls(
            max_nodes=_positive_int(env, MAX_NODES),
            max_gpus_per_node=_non_negative_int(env, MAX_GPUS_PER_NODE),
            max_runtime_seconds=_positive_int(env, MAX_RUNTIME),
        )

    def to_env(self) -> dict[str, str]:
        """The variables a spawner sets for these limits."""
        pairs = {
            MAX_NODES: self.max_nodes,
            MAX_GPUS_PER_NODE: self.max_gpus_per_node,
            MAX_RUNTIME: self.max_runtime_seconds,
        }
        return {key: str(value) for key, value in pairs.items() if value is not None}


class HubSettingError(ValueError):
    """A variable set by the hub is malformed: an operator's error, named by its variable."""


def _non_negative_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise HubSettingError(f"{name}={raw!r} is not a whole number; fix the hub's setting") from None
    if value < 0:
        raise HubSettingError(f"{name}={raw!r} must not be negative; fix the hub's setting")
    return value


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    value = _non_negative_int(env, name)
    if value == 0:
        raise HubSettingError(f"{name}=0 must be positive; fix the hub's setting")
    return value
