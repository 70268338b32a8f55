"""What the hub tells a notebook server, as environment variables and as one typed record.

A spawner (the hub's `TenantKubeSpawner`, `TenantLocalSpawner`) builds a `NotebookContext` from
the user's tenant and profile and puts `context.to_env()` into the server's environment; the
notebook side reads it back with `NotebookContext.from_env(os.environ)` and never reads the
variables one by one. Both directions live here, so the two sides cannot drift apart, and a test
round-trips the record through the hub's real output.

The variables an engine sets for each training rank (`JOB_DIR` ... `NODE_RANK`) are the other half
of the job contract: engines write them, the training helpers read them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# -- set by the hub in every notebook server ---------------------------------------------------
# Which engine `%%paddle_launch` uses when `--engine` is not given.
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
# The persistent volume claim holding the user's home, where the notebook mounts it and the
# sub-path of the claim it mounts (if any): job pods mount the same, so the job directory is shared.
STORAGE_CLAIM = "PADDLE_WORKBENCH_STORAGE_CLAIM"
STORAGE_MOUNT = "PADDLE_WORKBENCH_STORAGE_MOUNT"
STORAGE_SUBPATH = "PADDLE_WORKBENCH_STORAGE_SUBPATH"
# The user and group the notebook runs as; job pods run as the same.
UID = "PADDLE_WORKBENCH_UID"
GID = "PADDLE_WORKBENCH_GID"
# Node selector for job pods, as a JSON object (the profile's, so jobs land where the notebook may).
NODE_SELECTOR = "PADDLE_WORKBENCH_NODE_SELECTOR"
# Seconds the tenant's pods stay on a lost node before they are evicted (`workbench_contract
# .placement`): the notebook's own, and so its jobs'.
NODE_LOSS_TOLERATION = "PADDLE_WORKBENCH_NODE_LOSS_TOLERATION_SECONDS"
# "text" forces the plain-text job panel even where widgets could render (a user setting).
PANEL = "PADDLE_WORKBENCH_PANEL"

# -- set by an engine for every training rank --------------------------------------------------
JOB_DIR = "PADDLE_WORKBENCH_JOB_DIR"
CHECKPOINT_DIR = "PADDLE_WORKBENCH_CHECKPOINT_DIR"
VISUALDL_DIR = "PADDLE_WORKBENCH_VISUALDL_DIR"
ATTEMPT = "PADDLE_WORKBENCH_ATTEMPT"
NODE_RANK = "PADDLE_WORKBENCH_NODE_RANK"

# Every variable this module names starts with this; a user's `--env` may not set one.
PREFIX = "PADDLE_WORKBENCH_"
DEFAULT_ENGINE = "local"


class HubSettingError(ValueError):
    """A variable set by the hub is malformed: an operator's error, named by its variable."""


@dataclass(frozen=True)
class Limits:
    """The tenant's job limits; None means "no limit set"."""

    max_nodes: int | None = None
    max_gpus_per_node: int | None = None
    max_runtime_seconds: int | None = None


@dataclass(frozen=True)
class Storage:
    """The user's persistent volume as the notebook mounts it."""

    claim: str
    mount_path: str
    sub_path: str | None = None


@dataclass(frozen=True)
class NotebookContext:
    """Everything the hub decided for one notebook server that the notebook side needs.

    Built by a spawner, carried as environment variables, read back by the magic and its engines.
    Empty fields mean "not set by the hub" (a plain Jupyter server, `pip install` on a laptop).
    """

    engine: str = DEFAULT_ENGINE
    user: str = ""
    tenant: str | None = None
    namespace: str | None = None
    image: str | None = None
    allowed_images: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    storage: Storage | None = None
    uid: int | None = None
    gid: int | None = None
    node_selector: Mapping[str, str] = field(default_factory=dict)
    jobs_dir: str | None = None
    node_loss_toleration: int | None = None

    def to_env(self) -> dict[str, str]:
        """The variables a spawner sets for this context (unset fields are left out)."""
        values: dict[str, object] = {
            ENGINE: self.engine,
            USER: self.user,
            TENANT: self.tenant,
            NAMESPACE: self.namespace,
            IMAGE: self.image,
            ALLOWED_IMAGES: ",".join(self.allowed_images),
            MAX_NODES: self.limits.max_nodes,
            MAX_GPUS_PER_NODE: self.limits.max_gpus_per_node,
            MAX_RUNTIME: self.limits.max_runtime_seconds,
            UID: self.uid,
            GID: self.gid,
            NODE_SELECTOR: json.dumps(dict(self.node_selector), sort_keys=True)
            if self.node_selector else None,
            JOBS_DIR: self.jobs_dir,
            NODE_LOSS_TOLERATION: self.node_loss_toleration,
        }
        if self.storage is not None:
            values.update({STORAGE_CLAIM: self.storage.claim,
                           STORAGE_MOUNT: self.storage.mount_path,
                           STORAGE_SUBPATH: self.storage.sub_path})
        return {k: str(v) for k, v in values.items() if v not in (None, "")}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NotebookContext:
        """The context the hub put in `env` (default: this process's environment).

        Raises:
            HubSettingError: a variable is malformed; the message names it.
        """
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            return env.get(name, "").strip() or None

        claim, mount = text(STORAGE_CLAIM), text(STORAGE_MOUNT)
        if claim and not mount:
            raise HubSettingError(f"{STORAGE_CLAIM} is set but {STORAGE_MOUNT} is not; the hub "
                                  "must say where the notebook mounts the claim")
        if mount and not mount.startswith("/"):
            raise HubSettingError(f"{STORAGE_MOUNT}={mount!r} must be an absolute path")
        return cls(
            engine=text(ENGINE) or DEFAULT_ENGINE,
            user=text(USER) or "",
            tenant=text(TENANT),
            namespace=text(NAMESPACE),
            image=text(IMAGE),
            allowed_images=tuple(i.strip() for i in env.get(ALLOWED_IMAGES, "").split(",")
                                 if i.strip()),
            limits=Limits(
                max_nodes=_positive_int(env, MAX_NODES),
                max_gpus_per_node=_non_negative_int(env, MAX_GPUS_PER_NODE),
                max_runtime_seconds=_positive_int(env, MAX_RUNTIME),
            ),
            storage=Storage(claim, mount, text(STORAGE_SUBPATH)) if claim else None,
            uid=_positive_int(env, UID),
            gid=_non_negative_int(env, GID),
            node_selector=_string_map(env, NODE_SELECTOR),
            jobs_dir=text(JOBS_DIR),
            node_loss_toleration=_non_negative_int(env, NODE_LOSS_TOLERATION),
        )


def jobs_root(env: Mapping[str, str] | None = None) -> Path:
    """Where the user's job directories live: `$PADDLE_WORKBENCH_JOBS_DIR`, else `~/jobs`."""
    env = os.environ if env is None else env
    return Path(env.get(JOBS_DIR) or Path.home() / "jobs").expanduser()


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


def _string_map(env: Mapping[str, str], name: str) -> dict[str, str]:
    raw = env.get(name, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise HubSettingError(f"{name}={raw!r} is not a JSON object of strings; fix the hub's "
                              "setting")
    return value
