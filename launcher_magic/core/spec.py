"""`JobSpec`: what a job is, as pure validated data.

A spec is built from the magic's options plus the defaults and limits the hub put in the
environment, validated before anything touches the disk or starts a process, and stored as
`spec.json` in the job directory. Every engine reads the same spec.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields

from workbench_contract.environment import PREFIX, NotebookContext
from workbench_contract.resources import is_dns_label, is_positive_quantity

# Kubernetes object names: pods are named <job-id>-worker-<n>, so leave room for that suffix.
MAX_NAME_LENGTH = 40
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Variables the engines set themselves; a user's --env must not override the job contract.
RESERVED_ENV = frozenset(
    {"PADDLE_MASTER", "PADDLE_NNODES", "PADDLE_JOB_ID", "PADDLE_RANK", "PADDLE_TRAINER_ID",
     "PADDLE_TRAINERS_NUM", "PADDLE_NPROC_PER_NODE", "PADDLE_LOG_DIR", "PADDLE_DEVICES"}
)


class SpecError(ValueError):
    """The job as asked for cannot run; the message says what to change."""


@dataclass(frozen=True)
class Resources:
    """What each node asks for. `cpu` and `memory` are Kubernetes quantities (None: engine default)."""

    nproc_per_node: int = 1
    gpus_per_node: int = 0
    cpu: str | None = None
    memory: str | None = None


@dataclass(frozen=True)
class JobSpec:
    """One distributed job. Immutable; engines and the job directory only ever read it."""

    job_id: str
    name: str
    engine: str
    nodes: int
    resources: Resources = field(default_factory=Resources)
    user: str = ""
    tenant: str | None = None
    namespace: str | None = None
    image: str | None = None
    max_restarts: int = 0
    timeout_seconds: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    visualdl: bool = False
    created_at: float = 0.0
    # The job outlives the kernel that started it (`--keep`).
    keep: bool = False
    # Notebook variables sent into every rank (`--push`), and rank 0's values brought back (`--pull`).
    push: tuple[str, ...] = ()
    pull: tuple[str, ...] = ()

    @property
    def world_size(self) -> int:
        return self.nodes * self.resources.nproc_per_node

    def to_dict(self) -> dict:
        data = asdict(self)
        data["env"] = dict(self.env)
        for key in ("files", "push", "pull"):
            data[key] = list(getattr(self, key))
        return data

    @classmethod
    def from_dict(cls, data: Mapping) -> JobSpec:
        """Rebuild a spec; unknown keys (from newer versions) are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        res_known = {f.name for f in fields(Resources)}
        values["resources"] = Resources(
            **{k: v for k, v in dict(data.get("resources") or {}).items() if k in res_known}
        )
        values["env"] = dict(values.get("env") or {})
        for key in ("files", "push", "pull"):
            values[key] = tuple(values.get(key) or ())
        return cls(**values)


@dataclass(frozen=True)
class LaunchOptions:
    """The magic's options as the user typed them (already parsed, not yet validated)."""

    nodes: int = 1
    nproc_per_node: int | None = None
    gpus: int = 0
    name: str | None = None
    engine: str | None = None
    image: str | None = None
    cpu: str | None = None
    memory: str | None = None
    max_restarts: int = 0
    timeout: str | None = None
    env: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    visualdl: bool = False
    detach: bool = False
    keep: bool = False
    new: bool = False
    push: str | None = None
    pull: str | None = None

    @classmethod
    def from_namespace(cls, args) -> LaunchOptions:
        """Options from the magic's parsed arguments (an argparse Namespace): the one place where
        argument names become option fields. Lists become tuples; unknown attributes are ignored."""
        values = {}
        for f in fields(cls):
            if hasattr(args, f.name):
                value = getattr(args, f.name)
                values[f.name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)


def normalise_name(raw: str) -> str:
    """Lower-case and turn `_`, `.` and spaces into `-`, as a user would expect of a job name."""
    name = re.sub(r"[_.\s]+", "-", raw.strip().lower())
    return name.strip("-")


def parse_duration(raw: str) -> int:
    """Seconds from `90`, `90s`, `15m`, `2h` or `1d`."""
    match = re.fullmatch(r"\s*([0-9]+)\s*([smhd]?)\s*", raw)
    if not match:
        raise SpecError(
            f"--timeout {raw!r} is not a duration: use seconds (600) or a unit (90s, 15m, 2h, 1d)"
        )
    value = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if value <= 0:
        raise SpecError(f"--timeout {raw!r} must be positive")
    return value


def parse_names(flag: str, raw: str | None) -> tuple[str, ...]:
    """`a,b` (from --push/--pull) as variable names, in order, each once."""
    names: list[str] = []
    for name in (raw or "").split(","):
        name = name.strip()
        if not name:
            continue
        if not name.isidentifier():
            raise SpecError(f"{flag} {name!r} is not a variable name; give names like a,b")
        if name not in names:
            names.append(name)
    if raw is not None and not names:
        raise SpecError(f"{flag} needs variable names, like {flag} a,b")
    return tuple(names)


def parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    """`K=V` strings to a dict; refuses malformed pairs and variables the job contract owns."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not ENV_NAME.match(key):
            raise SpecError(
                f"--env {pair!r} is not KEY=VALUE with KEY a variable name (letters, digits, _)"
            )
        if key in RESERVED_ENV or key.startswith(PREFIX):
            raise SpecError(
                f"--env {key} is set by the workbench for every job; choose another variable name"
            )
        env[key] = value
    return env


def _check_positive(flag: str, value: int, minimum: int = 1) -> None:
    if value < minimum:
        what = "at least 1" if minimum == 1 else "0 or more"
        raise SpecError(f"{flag} {value} must be {what}")


def _check_quantity(flag: str, value: str | None) -> None:
    if value is not None and not is_positive_quantity(value):
        raise SpecError(
            f"{flag} {value!r} is not a positive Kubernetes quantity (examples: 2, 500m, 8Gi)"
        )


def build_spec(
    options: LaunchOptions,
    cell: str,
    context: NotebookContext,
    *,
    now: float | None = None,
    suffix: str | None = None,
) -> JobSpec:
    """Validate the options against the cell and what the hub said (`context`); return the spec.

    Raises:
        SpecError: with a message that says what to change. Nothing has been created yet.
    """
    if not cell.strip():
        raise SpecError(
            "the cell is empty: put the training code below the %%paddle_launch line"
        )
    nproc = _check_layout(options)
    name = _check_name(options.name)
    timeout = _check_limits(options, context)
    image = options.image or context.image
    if options.image and context.allowed_images and options.image not in context.allowed_images:
        raise SpecError(
            f"--image {options.image!r} is not allowed for your tenant; allowed: "
            + ", ".join(context.allowed_images)
        )
    created = time.time() if now is None else now
    return JobSpec(
        job_id=f"{name}-{suffix or secrets.token_hex(3)}",
        name=name,
        engine=options.engine or context.engine,
        nodes=options.nodes,
        resources=Resources(nproc_per_node=nproc, gpus_per_node=options.gpus, cpu=options.cpu,
                            memory=options.memory),
        user=context.user,
        tenant=context.tenant,
        namespace=context.namespace,
        image=image,
        max_restarts=options.max_restarts,
        timeout_seconds=timeout,
        env=parse_env(options.env),
        files=tuple(options.files),
        visualdl=options.visualdl,
        created_at=created,
        keep=options.keep,
        push=parse_names("--push", options.push),
        pull=parse_names("--pull", options.pull),
    )


def _check_layout(options: LaunchOptions) -> int:
    """Check the counts and sizes; returns the processes per node."""
    _check_positive("--nodes", options.nodes)
    _check_positive("--gpus", options.gpus, minimum=0)
    # On GPUs Paddle runs one process per device; --nproc-per-node is the CPU knob.
    nproc = options.nproc_per_node if options.nproc_per_node is not None else (options.gpus or 1)
    _check_positive("--nproc-per-node", nproc)
    if options.gpus and nproc != options.gpus:
        raise SpecError(
            f"--nproc-per-node {nproc} with --gpus {options.gpus}: each GPU gets one process, "
            "so drop --nproc-per-node (it is for CPU training)"
        )
    _check_positive("--max-restarts", options.max_restarts, minimum=0)
    _check_quantity("--cpu", options.cpu)
    _check_quantity("--memory", options.memory)
    return nproc


def _check_name(raw: str | None) -> str:
    raw_name = raw if raw is not None else "job"
    name = normalise_name(raw_name)
    if not is_dns_label(name, MAX_NAME_LENGTH):
        raise SpecError(
            f"--name {raw_name!r} is not a valid job name: use at most {MAX_NAME_LENGTH} "
            "lower-case letters, digits and '-', starting and ending with a letter or digit"
        )
    return name


def _check_limits(options: LaunchOptions, context: NotebookContext) -> int | None:
    """Check the tenant's limits; returns the job's timeout in seconds (None: no limit)."""
    limits = context.limits
    if limits.max_nodes is not None and options.nodes > limits.max_nodes:
        raise SpecError(
            f"--nodes {options.nodes} is over your tenant's limit of {limits.max_nodes} nodes; "
            f"ask for {limits.max_nodes} or fewer"
        )
    if limits.max_gpus_per_node is not None and options.gpus > limits.max_gpus_per_node:
        raise SpecError(
            f"--gpus {options.gpus} is over your tenant's limit of {limits.max_gpus_per_node} "
            "GPUs per node; ask for fewer"
        )
    timeout = parse_duration(options.timeout) if options.timeout is not None else None
    if limits.max_runtime_seconds is not None:
        if timeout is not None and timeout > limits.max_runtime_seconds:
            raise SpecError(
                f"--timeout {options.timeout} is over your tenant's maximum runtime of "
                f"{limits.max_runtime_seconds} s; ask for less"
            )
        timeout = timeout or limits.max_runtime_seconds
    return timeout
