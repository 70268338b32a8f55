"""The tenants file (`tenants.yaml`): its data model and its loader.

A tenant is a team: the identity-provider groups that put a user in it, the Kubernetes namespace
its notebooks and jobs run in, its quota, the notebook profiles and images it may use, the limits
its distributed jobs must respect and its idle policy. Everything the hub decides about a user
follows from the tenant their groups select, so the loader is strict: every error names the file,
the tenant and the field, and says what to write instead.

The dataclasses are frozen and travel as plain dicts (`to_dict`/`from_dict`). `from_dict`
tolerates unknown keys (data written by a newer version still loads); the file loader
(`load_tenants`) does not, because a misspelled key in a security setting (say, `node_selecter`)
must not be silently ignored.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# DNS-1123 label: what Kubernetes accepts for namespace names and what we accept for tenants and
# profiles (they end up in labels, slugs and URLs).
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# An image pinned by digest: registry host (with optional port), a path, `@sha256:` and 64 hex.
_PINNED_IMAGE = re.compile(
    r"^(?P<registry>[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]+)?)/"
    r"(?P<path>[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*)"
    r"@sha256:[0-9a-f]{64}$"
)
# Kubernetes resource quantities we accept: plain numbers, millicores, binary and decimal suffixes.
_QUANTITY = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?)(?P<unit>m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$")
_UNITS = {
    None: 1, "m": 0.001, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50,
}
_TOLERATION_OPERATORS = ("Exists", "Equal")
_TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
DEFAULT_SERVICE_ACCOUNT = "notebook"


class TenantsFileError(ValueError):
    """The tenants file is wrong. The message names the file, the tenant and the field."""


@dataclass(frozen=True)
class _Where:
    """Where a value sits, for error messages: file, tenant and a dotted field path."""

    file: str = "<tenants>"
    tenant: str | None = None
    path: str = ""

    def child(self, key: str | int) -> _Where:
        if isinstance(key, int):
            return _Where(self.file, self.tenant, f"{self.path}[{key}]")
        return _Where(self.file, self.tenant, f"{self.path}.{key}" if self.path else key)

    def error(self, problem: str) -> TenantsFileError:
        tenant = f"tenant {self.tenant!r}, " if self.tenant else ""
        fld = f"field {self.path!r}: " if self.path else ""
        return TenantsFileError(f"{self.file}: {tenant}{fld}{problem}")


def _mapping(value: Any, where: _Where) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"must be a mapping (key: value), got {_kind(value)}")
    return value


def _list(value: Any, where: _Where) -> list[Any]:
    if not isinstance(value, list):
        raise where.error(f"must be a list, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


def _require(data: Mapping[str, Any], key: str, where: _Where) -> Any:
    if key not in data or data[key] is None:
        raise where.child(key).error("is required")
    return data[key]


def _check_keys(data: Mapping[str, Any], known: Iterable[str], where: _Where, strict: bool) -> None:
    if not strict:
        return
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise where.child(unknown[0]).error(
            f"is not a known field; known fields here: {', '.join(sorted(known))}"
        )


def _int(value: Any, where: _Where, *, minimum: int = 0) -> int:
    # bool is an int in Python; `gpus: yes` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(f"must be a whole number, got {_kind(value)}")
    if value < minimum:
        raise where.error(f"must be at least {minimum}, got {value}")
    return value


def _str(value: Any, where: _Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"must be a non-empty string, got {_kind(value)}")
    return value


def _dns_label(value: Any, where: _Where) -> str:
    text = _str(value, where)
    if not _DNS_LABEL.match(text):
        raise where.error(
            f"{text!r} is not a DNS-1123 label; use at most 63 lowercase letters, digits and '-',"
            " starting and ending with a letter or digit"
        )
    return text


def _str_tuple(value: Any, where: _Where) -> tuple[str, ...]:
    return tuple(_str(item, where.child(i)) for i, item in enumerate(_list(value, where)))


def parse_quantity(value: Any) -> float:
    """Return a Kubernetes quantity (`"500m"`, `2`, `"32Gi"`) as a number (cores or bytes).

    Raises ValueError for anything Kubernetes would not accept as a plain quantity.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative")
        return float(value)
    match = _QUANTITY.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"{value!r} is not a quantity")
    return float(match["num"]) * _UNITS[match["unit"]]


def _quantity(value: Any, where: _Where, what: str, example: str) -> str:
    try:
        parse_quantity(value)
    except ValueError:
        raise where.error(
            f"{value!r} is not a Kubernetes {what} quantity; write it like {example}"
        ) from None
    return str(value)


@dataclass(frozen=True)
class Quota:
    """The tenant's namespace quota (becomes a ResourceQuota when the namespace is provisioned)."""

    gpus: int = 0
    cpu: str = "0"
    memory: str = "0"
    pods: int = 0
    jobs: int = 0

    @classmethod
    def from_dict(cls, data: Any, where: _Where | None = None, strict: bool = False) -> Quota:
        where = where or _Where(path="quota")
        data = _mapping(data, where)
        _check_keys(data, ("gpus", "cpu", "memory", "pods", "jobs"), where, strict)
        return cls(
            gpus=_int(_require(data, "gpus", where), where.child("gpus")),
            cpu=_quantity(_require(data, "cpu", where), where.child("cpu"), "CPU", '"64"'),
            memory=_quantity(
                _require(data, "memory", where), where.child("memory"), "memory", "256Gi"
            ),
            pods=_int(_require(data, "pods", where), where.child("pods"), minimum=1),
            jobs=_int(_require(data, "jobs", where), where.child("jobs")),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "cpu": self.cpu, "memory": self.memory, "pods": self.pods,
                "jobs": self.jobs}


@dataclass(frozen=True)
class Resource:
    """A guarantee (request) and a limit for one resource, kept as Kubernetes quantities."""

    guarantee: str
    limit: str

    @property
    def guarantee_value(self) -> float:
        return parse_quantity(self.guarantee)

    @property
    def limit_value(self) -> float:
        return parse_quantity(self.limit)

    @classmethod
    def from_dict(
        cls, data: Any, where: _Where | None = None, strict: bool = False,
        what: str = "CPU", example: str = "2",
    ) -> Resource:
        where = where or _Where()
        data = _mapping(data, where)
        _check_keys(data, ("guarantee", "limit"), where, strict)
        guarantee = _quantity(
            _require(data, "guarantee", where), where.child("guarantee"), what, example
        )
        limit = _quantity(_require(data, "limit", where), where.child("limit"), what, example)
        if parse_quantity(guarantee) > parse_quantity(limit):
            raise where.child("guarantee").error(
                f"{guarantee} is more than the limit {limit}; a guarantee must not exceed its limit"
            )
        return cls(guarantee=guarantee, limit=limit)

    def to_dict(self) -> dict[str, Any]:
        return {"guarantee": self.guarantee, "limit": self.limit}


@dataclass(frozen=True)
class Profile:
    """A notebook server size a tenant offers: CPU, memory, GPUs and where it may be scheduled."""

    name: str
    description: str
    cpu: Resource
    memory: Resource
    gpus: int = 0
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()

    @classmethod
    def from_dict(cls, data: Any, where: _Where | None = None, strict: bool = False) -> Profile:
        where = where or _Where()
        data = _mapping(data, where)
        known = ("name", "description", "cpu", "memory", "gpus", "node_selector", "tolerations")
        _check_keys(data, known, where, strict)
        selector = _mapping(data.get("node_selector") or {}, where.child("node_selector"))
        for key, value in selector.items():
            _str(key, where.child("node_selector"))
            _str(value, where.child("node_selector").child(str(key)))
        tolerations = tuple(
            _toleration(item, where.child("tolerations").child(i), strict)
            for i, item in enumerate(_list(data.get("tolerations") or [], where.child("tolerations")))
        )
        return cls(
            name=_dns_label(_require(data, "name", where), where.child("name")),
            description=_str(data.get("description") or data.get("name"), where.child("description")),
            cpu=Resource.from_dict(_require(data, "cpu", where), where.child("cpu"), strict),
            memory=Resource.from_dict(
                _require(data, "memory", where), where.child("memory"), strict, "memory", "32Gi"
            ),
            gpus=_int(data.get("gpus", 0), where.child("gpus")),
            node_selector=dict(selector),
            tolerations=tolerations,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "cpu": self.cpu.to_dict(),
            "memory": self.memory.to_dict(), "gpus": self.gpus,
            "node_selector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
        }


def _toleration(data: Any, where: _Where, strict: bool) -> dict[str, Any]:
    data = _mapping(data, where)
    _check_keys(data, ("key", "operator", "value", "effect", "tolerationSeconds"), where, strict)
    operator = data.get("operator", "Equal")
    if operator not in _TOLERATION_OPERATORS:
        raise where.child("operator").error(
            f"{operator!r} is not a toleration operator; use one of {', '.join(_TOLERATION_OPERATORS)}"
        )
    effect = data.get("effect")
    if effect is not None and effect not in _TOLERATION_EFFECTS:
        raise where.child("effect").error(
            f"{effect!r} is not a taint effect; use one of {', '.join(_TOLERATION_EFFECTS)}"
        )
    if operator == "Exists" and data.get("value") not in (None, ""):
        raise where.child("value").error("must be empty when operator is Exists")
    return dict(data)


@dataclass(frozen=True)
class AllowedImage:
    """An image a tenant may run, pinned by digest, with the name users see."""

    name: str
    image: str

    @classmethod
    def from_dict(cls, data: Any, where: _Where | None = None, strict: bool = False) -> AllowedImage:
        where = where or _Where()
        data = _mapping(data, where)
        _check_keys(data, ("name", "image"), where, strict)
        image = _str(_require(data, "image", where), where.child("image"))
        if not _PINNED_IMAGE.match(image):
            raise where.child("image").error(
                f"{image!r} is not pinned by digest; write registry/name@sha256:<64 hex digits>"
                " (a tag can be moved to other content, a digest cannot)"
            )
        return cls(name=_str(data.get("name") or image, where.child("name")), image=image)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "image": self.image}


@dataclass(frozen=True)
class JobLimits:
    """What one distributed job of this tenant may ask for."""

    max_nodes: int = 1
    max_gpus_per_node: int = 0
    max_runtime: int = 86400

    @classmethod
    def from_dict(cls, data: Any, where: _Where | None = None, strict: bool = False) -> JobLimits:
        where = where or _Where(path="job_limits")
        data = _mapping(data, where)
        _check_keys(data, ("max_nodes", "max_gpus_per_node", "max_runtime"), where, strict)
        return cls(
            max_nodes=_int(_require(data, "max_nodes", where), where.child("max_nodes"), minimum=1),
            max_gpus_per_node=_int(
                _require(data, "max_gpus_per_node", where), where.child("max_gpus_per_node")
            ),
            max_runtime=_int(
                _require(data, "max_runtime", where), where.child("max_runtime"), minimum=1
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"max_nodes": self.max_nodes, "max_gpus_per_node": self.max_gpus_per_node,
                "max_runtime": self.max_runtime}


@dataclass(frozen=True)
class GpuIdlePolicy:
    """GPU-idle culling (seconds; `hub_config.services.gpu_idle` decides): stop what stays idle too long."""

    utilisation_below: int = 20
    for_seconds: int = 7200
    warn_after: int = 5400
    stop_jobs: bool = False

    @classmethod
    def from_dict(cls, data: Any, where: _Where | None = None, strict: bool = False) -> GpuIdlePolicy:
        where = where or _Where(path="idle.gpu")
        data = _mapping(data, where)
        _check_keys(data, ("utilisation_below", "for", "warn_after", "stop_jobs"), where, strict)
        below = _int(_require(data, "utilisation_below", where), where.child("utilisation_below"))
        if below > 100:
            raise where.child("utilisation_below").error(f"is a percentage, got {below}")
        for_seconds = _int(_require(data, "for", where), where.child("for"), minimum=1)
        # Without a say, warn three quarters of the way (90 min before a 2 h stop).
        warn_after = _int(data.get("warn_after", for_seconds * 3 // 4), where.child("warn_after"))
        if warn_after > for_seconds:
            raise where.child("warn_after").error(
                f"{warn_after}s is later than the stop at for={for_seconds}s; warn before stopping"
            )
        stop_jobs = data.get("stop_jobs", False)
        if not isinstance(stop_jobs, bool):
            raise where.child("stop_jobs").error(f"must be true or false, got {_kind(stop_jobs)}")
        return cls(below, for_seconds, warn_after, stop_jobs)

    @property
    def warns(self) -> bool:
        """Whether the culler warns before stopping (0 < warn_after < for)."""
        return 0 < self.warn_after < self.for_seconds

    @property
    def grace(self) -> int:
        """Seconds between the warning and the stop (0: no warning phase)."""
        return self.for_seconds - self.warn_after if self.warns else 0

    def to_dict(self) -> dict[str, Any]:
        return {"utilisation_below": self.utilisation_below, "for": self.for_seconds,
                "warn_after": self.warn_after, "stop_jobs": self.stop_jobs}


@dataclass(frozen=True)
class IdlePolicy:
    """When idle servers are stopped. 0 turns a limit off."""

    server_timeout: int = 3600
    max_age: int = 0
    gpu: GpuIdlePolicy | None = None

    @classmethod
    def from_dict(cls, data: Any, where: _Where | None = None, strict: bool = False) -> IdlePolicy:
        where = where or _Where(path="idle")
        data = _mapping(data, where)
        _check_keys(data, ("server_timeout", "max_age", "gpu"), where, strict)
        gpu = data.get("gpu")
        return cls(
            server_timeout=_int(data.get("server_timeout", 3600), where.child("server_timeout")),
            max_age=_int(data.get("max_age", 0), where.child("max_age")),
            gpu=None if gpu is None else GpuIdlePolicy.from_dict(gpu, where.child("gpu"), strict),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"server_timeout": self.server_timeout, "max_age": self.max_age}
        if self.gpu is not None:
            out["gpu"] = self.gpu.to_dict()
        return out


_TENANT_FIELDS = ("name", "groups", "admin_groups", "namespace", "service_account", "quota",
                  "profiles", "images", "job_limits", "idle")


@dataclass(frozen=True)
class Tenant:
    """One team: who is in it (groups), where it runs (namespace) and what it may use."""

    name: str
    groups: tuple[str, ...]
    namespace: str
    quota: Quota
    profiles: tuple[Profile, ...]
    images: tuple[AllowedImage, ...]
    job_limits: JobLimits
    idle: IdlePolicy = field(default_factory=IdlePolicy)
    admin_groups: tuple[str, ...] = ()
    service_account: str = DEFAULT_SERVICE_ACCOUNT

    @classmethod
    def from_dict(cls, data: Any, where: _Where | None = None, strict: bool = False) -> Tenant:
        where = where or _Where()
        data = _mapping(data, where)
        name = _dns_label(_require(data, "name", where), where.child("name"))
        where = _Where(where.file, name, "")
        _check_keys(data, _TENANT_FIELDS, where, strict)
        groups = _str_tuple(_require(data, "groups", where), where.child("groups"))
        if not groups:
            raise where.child("groups").error("must name at least one group, or no one can use it")
        profiles = tuple(
            Profile.from_dict(item, where.child("profiles").child(i), strict)
            for i, item in enumerate(_list(_require(data, "profiles", where), where.child("profiles")))
        )
        if not profiles:
            raise where.child("profiles").error("must offer at least one profile")
        _unique((p.name for p in profiles), where.child("profiles"), "profile name")
        images = tuple(
            AllowedImage.from_dict(item, where.child("images").child(i), strict)
            for i, item in enumerate(_list(_require(data, "images", where), where.child("images")))
        )
        if not images:
            raise where.child("images").error("must allow at least one image")
        _unique((i.image for i in images), where.child("images"), "image")
        quota = Quota.from_dict(_require(data, "quota", where), where.child("quota"), strict)
        job_limits = JobLimits.from_dict(
            _require(data, "job_limits", where), where.child("job_limits"), strict
        )
        for i, profile in enumerate(profiles):
            if profile.gpus > quota.gpus:
                raise where.child("profiles").child(i).child("gpus").error(
                    f"{profile.gpus} GPUs exceed the tenant's quota of {quota.gpus}; lower the"
                    " profile's gpus or raise quota.gpus"
                )
        if job_limits.max_gpus_per_node > quota.gpus:
            raise where.child("job_limits").child("max_gpus_per_node").error(
                f"{job_limits.max_gpus_per_node} exceeds the tenant's GPU quota of {quota.gpus}"
            )
        return cls(
            name=name,
            groups=groups,
            admin_groups=_str_tuple(data.get("admin_groups") or [], where.child("admin_groups")),
            namespace=_dns_label(_require(data, "namespace", where), where.child("namespace")),
            service_account=_dns_label(
                data.get("service_account") or DEFAULT_SERVICE_ACCOUNT,
                where.child("service_account"),
            ),
            quota=quota,
            profiles=profiles,
            images=images,
            job_limits=job_limits,
            idle=IdlePolicy.from_dict(data.get("idle") or {}, where.child("idle"), strict),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "groups": list(self.groups), "admin_groups": list(self.admin_groups),
            "namespace": self.namespace, "service_account": self.service_account,
            "quota": self.quota.to_dict(), "profiles": [p.to_dict() for p in self.profiles],
            "images": [i.to_dict() for i in self.images], "job_limits": self.job_limits.to_dict(),
            "idle": self.idle.to_dict(),
        }

    def profile(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)

    @property
    def image_refs(self) -> tuple[str, ...]:
        return tuple(i.image for i in self.images)


def _unique(values: Iterable[str], where: _Where, what: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise where.child(i).error(f"{what} {value!r} appears twice; each must be unique")
        seen.add(value)


@dataclass(frozen=True)
class Tenants:
    """All tenants of one file, in file order (the order decides ties; see `policy`)."""

    tenants: tuple[Tenant, ...]
    source: str = field(default="<tenants>", compare=False)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<tenants>", strict: bool = False) -> Tenants:
        where = _Where(file=source)
        data = _mapping(data, where)
        _check_keys(data, ("tenants",), where, strict)
        items = _list(_require(data, "tenants", where), where.child("tenants"))
        if not items:
            raise where.child("tenants").error("must list at least one tenant")
        tenants = tuple(
            Tenant.from_dict(item, where.child("tenants").child(i), strict)
            for i, item in enumerate(items)
        )
        _unique_across(tenants, source)
        return cls(tenants=tenants, source=source)

    def to_dict(self) -> dict[str, Any]:
        return {"tenants": [t.to_dict() for t in self.tenants]}

    def get(self, name: str) -> Tenant | None:
        return next((t for t in self.tenants if t.name == name), None)

    def for_groups(self, groups: Iterable[str]) -> tuple[Tenant, ...]:
        """The tenants whose `groups` meet the given groups, in file order."""
        mine = set(groups)
        return tuple(t for t in self.tenants if mine.intersection(t.groups))

    @property
    def admin_groups(self) -> frozenset[str]:
        return frozenset(g for t in self.tenants for g in t.admin_groups)


def _unique_across(tenants: Sequence[Tenant], source: str) -> None:
    for attr in ("name", "namespace"):
        owner: dict[str, str] = {}
        for tenant in tenants:
            value = getattr(tenant, attr)
            if value in owner:
                raise _Where(source, tenant.name, attr).error(
                    f"{value!r} is already used by tenant {owner[value]!r}; each tenant needs its own"
                )
            owner[value] = tenant.name


def load_tenants(path: str | os.PathLike[str]) -> Tenants:
    """Read and validate a tenants file.

    Raises TenantsFileError (naming the file, tenant and field) when the file is missing,
    is not YAML, or breaks a rule; unknown keys are errors here.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TenantsFileError(
            f"{path}: no such tenants file; create it (see hub_config/tenants.example.yaml)"
        ) from None
    except OSError as err:
        raise TenantsFileError(f"{path}: cannot read the tenants file: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TenantsFileError(f"{path}: not valid YAML{at}; fix the syntax") from None
    return Tenants.from_dict(data, source=str(path), strict=True)


class TenantsCache:
    """Loads a tenants file once and again only when it changes (by mtime and size).

    The hub consults tenants on every login and spawn; re-reading YAML each time costs more than
    a stat. An edited file takes effect at the next call; a broken edit raises TenantsFileError
    rather than silently keeping stale rules.
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self._key: tuple[int, int] | None = None
        self._tenants: Tenants | None = None

    def get(self) -> Tenants:
        try:
            stat = self.path.stat()
            key = (stat.st_mtime_ns, stat.st_size)
        except OSError:
            key = None
        if self._tenants is None or key is None or key != self._key:
            self._tenants = load_tenants(self.path)
            self._key = key
        return self._tenants


_SHARED: dict[str, TenantsCache] = {}


def shared_cache(path: str | os.PathLike[str]) -> TenantsCache:
    """One cache per tenants file for the whole process: the hub makes a spawner per user, and
    each would otherwise parse the file again."""
    key = os.fspath(path)
    if key not in _SHARED:
        _SHARED[key] = TenantsCache(key)
    return _SHARED[key]
