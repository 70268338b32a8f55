"""The tenants file's data model: frozen dataclasses, each with `from_dict` and `to_dict`.

`from_dict` tolerates unknown keys unless `strict` (data written by a newer version still loads);
the file loader passes `strict=True`, because a misspelled key in a security setting (say,
`node_selecter`) must not be silently ignored. Every error is a `TenantsFileError` naming the
file, the tenant and the field (see `hub_config.tenants.fields`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hub_config.tenants import fields as f
from hub_config.tenants.fields import Where
from workbench_contract import jobkinds, placement, resources

DEFAULT_SERVICE_ACCOUNT = "notebook"
# How a tenant's distributed jobs reach the cluster: the name of a registered job kind
# (`workbench_contract.jobkinds`: a Kubeflow Trainer v2 TrainJob on the workbench's Paddle
# runtime, or a training-operator v1 PaddleJob where only that is installed). The value is also
# the name of the notebook-side engine that submits them.
DEFAULT_JOB_API = jobkinds.DEFAULT
DEFAULT_COHORT = "workbench"


def job_api_names() -> tuple[str, ...]:
    """The values `job_api` accepts: the registered job kinds' names, in name order."""
    return tuple(jobkinds.job_kinds())


@dataclass(frozen=True)
class Quota:
    """The tenant's namespace quota (becomes a ResourceQuota when the namespace is provisioned)."""

    gpus: int = 0
    cpu: str = "0"
    memory: str = "0"
    pods: int = 0
    jobs: int = 0

    @classmethod
    def from_dict(cls, data: Any, where: Where | None = None, strict: bool = False) -> Quota:
        where = where or Where(path="quota")
        data = f.mapping(data, where)
        f.check_keys(data, ("gpus", "cpu", "memory", "pods", "jobs"), where, strict)
        return cls(
            gpus=f.whole_number(f.require(data, "gpus", where), where.child("gpus")),
            cpu=f.quantity(f.require(data, "cpu", where), where.child("cpu"), "CPU", '"64"'),
            memory=f.quantity(
                f.require(data, "memory", where), where.child("memory"), "memory", "256Gi"
            ),
            pods=f.whole_number(f.require(data, "pods", where), where.child("pods"), minimum=1),
            jobs=f.whole_number(f.require(data, "jobs", where), where.child("jobs")),
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
        return f.parse_quantity(self.guarantee)

    @property
    def limit_value(self) -> float:
        return f.parse_quantity(self.limit)

    @classmethod
    def from_dict(
        cls, data: Any, where: Where | None = None, strict: bool = False,
        what: str = "CPU", example: str = "2",
    ) -> Resource:
        where = where or Where()
        data = f.mapping(data, where)
        f.check_keys(data, ("guarantee", "limit"), where, strict)
        guarantee = f.quantity(
            f.require(data, "guarantee", where), where.child("guarantee"), what, example
        )
        limit = f.quantity(f.require(data, "limit", where), where.child("limit"), what, example)
        if resources.parse_quantity(guarantee) > resources.parse_quantity(limit):
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
    def from_dict(cls, data: Any, where: Where | None = None, strict: bool = False) -> Profile:
        where = where or Where()
        data = f.mapping(data, where)
        known = ("name", "description", "cpu", "memory", "gpus", "node_selector", "tolerations")
        f.check_keys(data, known, where, strict)
        at_tolerations = where.child("tolerations")
        tolerations = tuple(
            f.toleration(item, at_tolerations.child(i), strict)
            for i, item in enumerate(f.sequence(data.get("tolerations") or [], at_tolerations))
        )
        return cls(
            name=f.dns_label(f.require(data, "name", where), where.child("name")),
            description=f.text(data.get("description") or data.get("name"),
                               where.child("description")),
            cpu=Resource.from_dict(f.require(data, "cpu", where), where.child("cpu"), strict),
            memory=Resource.from_dict(
                f.require(data, "memory", where), where.child("memory"), strict, "memory", "32Gi"
            ),
            gpus=f.whole_number(data.get("gpus", 0), where.child("gpus")),
            node_selector=f.string_map(data.get("node_selector") or {},
                                       where.child("node_selector")),
            tolerations=tolerations,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "cpu": self.cpu.to_dict(),
            "memory": self.memory.to_dict(), "gpus": self.gpus,
            "node_selector": dict(self.node_selector),
            "tolerations": [dict(t) for t in self.tolerations],
        }


@dataclass(frozen=True)
class AllowedImage:
    """An image a tenant may run, pinned by digest, with the name users see."""

    name: str
    image: str

    @classmethod
    def from_dict(cls, data: Any, where: Where | None = None, strict: bool = False) -> AllowedImage:
        where = where or Where()
        data = f.mapping(data, where)
        f.check_keys(data, ("name", "image"), where, strict)
        image = f.pinned_image(f.require(data, "image", where), where.child("image"))
        return cls(name=f.text(data.get("name") or image, where.child("name")), image=image)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "image": self.image}


@dataclass(frozen=True)
class JobLimits:
    """What one distributed job of this tenant may ask for."""

    max_nodes: int = 1
    max_gpus_per_node: int = 0
    max_runtime: int = 86400

    @classmethod
    def from_dict(cls, data: Any, where: Where | None = None, strict: bool = False) -> JobLimits:
        where = where or Where(path="job_limits")
        data = f.mapping(data, where)
        f.check_keys(data, ("max_nodes", "max_gpus_per_node", "max_runtime"), where, strict)
        return cls(
            max_nodes=f.whole_number(f.require(data, "max_nodes", where),
                                     where.child("max_nodes"), minimum=1),
            max_gpus_per_node=f.whole_number(
                f.require(data, "max_gpus_per_node", where), where.child("max_gpus_per_node")
            ),
            max_runtime=f.whole_number(
                f.require(data, "max_runtime", where), where.child("max_runtime"), minimum=1
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
    def from_dict(cls, data: Any, where: Where | None = None, strict: bool = False) -> GpuIdlePolicy:
        where = where or Where(path="idle.gpu")
        data = f.mapping(data, where)
        f.check_keys(data, ("utilisation_below", "for", "warn_after", "stop_jobs"), where, strict)
        below = f.whole_number(f.require(data, "utilisation_below", where),
                               where.child("utilisation_below"))
        if below > 100:
            raise where.child("utilisation_below").error(f"is a percentage, got {below}")
        for_seconds = f.whole_number(f.require(data, "for", where), where.child("for"), minimum=1)
        # Without a say, warn three quarters of the way (90 min before a 2 h stop).
        warn_after = f.whole_number(data.get("warn_after", for_seconds * 3 // 4),
                                    where.child("warn_after"))
        if warn_after > for_seconds:
            raise where.child("warn_after").error(
                f"{warn_after}s is later than the stop at for={for_seconds}s; warn before stopping"
            )
        stop_jobs = data.get("stop_jobs", False)
        if not isinstance(stop_jobs, bool):
            raise where.child("stop_jobs").error(f"must be true or false, got {f.kind(stop_jobs)}")
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
    def from_dict(cls, data: Any, where: Where | None = None, strict: bool = False) -> IdlePolicy:
        where = where or Where(path="idle")
        data = f.mapping(data, where)
        f.check_keys(data, ("server_timeout", "max_age", "gpu"), where, strict)
        gpu = data.get("gpu")
        return cls(
            server_timeout=f.whole_number(data.get("server_timeout", 3600),
                                          where.child("server_timeout")),
            max_age=f.whole_number(data.get("max_age", 0), where.child("max_age")),
            gpu=None if gpu is None else GpuIdlePolicy.from_dict(gpu, where.child("gpu"), strict),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"server_timeout": self.server_timeout, "max_age": self.max_age}
        if self.gpu is not None:
            out["gpu"] = self.gpu.to_dict()
        return out


@dataclass(frozen=True)
class QueuePolicy:
    """Kueue for the tenant's jobs: a ClusterQueue whose nominal quota is the tenant's quota, in
    a cohort whose tenants lend each other idle quota and take it back when they need it.
    `borrowing_limit_gpus`: how many GPUs beyond its own the tenant may borrow (None: all the
    cohort lends). `cohort_gpus`: what the cohort's other tenants could lend, filled in by
    `Tenants.from_dict` (not written to the file), so that even "all" is a number."""

    cohort: str = DEFAULT_COHORT
    borrowing_limit_gpus: int | None = None
    cohort_gpus: int = field(default=0, compare=False)

    @property
    def borrowable_gpus(self) -> int:
        """The most GPUs beyond its own quota that the tenant can ever hold."""
        lendable = self.cohort_gpus
        limit = self.borrowing_limit_gpus
        return lendable if limit is None else min(limit, lendable)

    @classmethod
    def from_dict(cls, data: Any, where: Where | None = None, strict: bool = False
                  ) -> QueuePolicy:
        where = where or Where(path="queue")
        data = f.mapping(data or {}, where)
        f.check_keys(data, ("cohort", "borrowing_limit"), where, strict)
        limit = data.get("borrowing_limit")
        gpus = None
        if limit is not None:
            at = where.child("borrowing_limit")
            limit = f.mapping(limit, at)
            f.check_keys(limit, ("gpus",), at, strict)
            gpus = f.whole_number(f.require(limit, "gpus", at), at.child("gpus"))
        return cls(cohort=f.dns_label(data.get("cohort", DEFAULT_COHORT), where.child("cohort")),
                   borrowing_limit_gpus=gpus)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cohort": self.cohort}
        if self.borrowing_limit_gpus is not None:
            out["borrowing_limit"] = {"gpus": self.borrowing_limit_gpus}
        return out


_TENANT_FIELDS = ("name", "groups", "admin_groups", "namespace", "service_account", "quota",
                  "profiles", "images", "job_limits", "idle", "job_api", "queue",
                  "node_loss_toleration")


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
    # A registered job kind (`trainjob` by default, or `paddlejob`): the job API, and the
    # engine that submits to it.
    job_api: str = DEFAULT_JOB_API
    # Kueue queueing of the tenant's jobs, for a kind Kueue admits (None: not queued; jobs
    # that do not fit the quota are refused).
    queue: QueuePolicy | None = None
    # Seconds its notebook and job pods stay on a lost node before they are evicted
    # (`workbench_contract.placement`), instead of Kubernetes' 300.
    node_loss_toleration: int = placement.DEFAULT_NODE_LOSS_TOLERATION

    @classmethod
    def from_dict(cls, data: Any, where: Where | None = None, strict: bool = False) -> Tenant:
        where = where or Where()
        data = f.mapping(data, where)
        name = f.dns_label(f.require(data, "name", where), where.child("name"))
        where = Where(where.file, name, "")
        f.check_keys(data, _TENANT_FIELDS, where, strict)
        groups = f.texts(f.require(data, "groups", where), where.child("groups"))
        if not groups:
            raise where.child("groups").error("must name at least one group, or no one can use it")
        profiles = _items(Profile, data, "profiles", where, strict)
        if not profiles:
            raise where.child("profiles").error("must offer at least one profile")
        f.unique((p.name for p in profiles), where.child("profiles"), "profile name")
        images = _items(AllowedImage, data, "images", where, strict)
        if not images:
            raise where.child("images").error("must allow at least one image")
        f.unique((i.image for i in images), where.child("images"), "image")
        quota = Quota.from_dict(f.require(data, "quota", where), where.child("quota"), strict)
        job_limits = JobLimits.from_dict(
            f.require(data, "job_limits", where), where.child("job_limits"), strict
        )
        _check_gpus_within_quota(profiles, job_limits, quota, where)
        return cls(
            name=name,
            groups=groups,
            admin_groups=f.texts(data.get("admin_groups") or [], where.child("admin_groups")),
            namespace=f.dns_label(f.require(data, "namespace", where), where.child("namespace")),
            service_account=f.dns_label(
                data.get("service_account") or DEFAULT_SERVICE_ACCOUNT,
                where.child("service_account"),
            ),
            quota=quota,
            profiles=profiles,
            images=images,
            job_limits=job_limits,
            idle=IdlePolicy.from_dict(data.get("idle") or {}, where.child("idle"), strict),
            job_api=f.choice(data.get("job_api", DEFAULT_JOB_API), where.child("job_api"),
                             job_api_names()),
            queue=_queue(data, where, strict),
            node_loss_toleration=f.whole_number(
                data.get("node_loss_toleration", placement.DEFAULT_NODE_LOSS_TOLERATION),
                where.child("node_loss_toleration"), maximum=placement.MAX_NODE_LOSS_TOLERATION,
                why=" (seconds; Kubernetes' own default is 300)"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "groups": list(self.groups), "admin_groups": list(self.admin_groups),
            "namespace": self.namespace, "service_account": self.service_account,
            "quota": self.quota.to_dict(), "profiles": [p.to_dict() for p in self.profiles],
            "images": [i.to_dict() for i in self.images], "job_limits": self.job_limits.to_dict(),
            "idle": self.idle.to_dict(), "job_api": self.job_api,
            "node_loss_toleration": self.node_loss_toleration,
            **({"queue": self.queue.to_dict()} if self.queue is not None else {}),
        }

    def profile(self, name: str) -> Profile | None:
        return next((p for p in self.profiles if p.name == name), None)

    @property
    def image_refs(self) -> tuple[str, ...]:
        return tuple(i.image for i in self.images)


def _queue(data: Mapping[str, Any], where: Where, strict: bool) -> QueuePolicy | None:
    if "queue" not in data or data["queue"] is False:
        return None
    policy = QueuePolicy.from_dict(data["queue"], where.child("queue"), strict)
    kinds = jobkinds.job_kinds()
    job_api = data.get("job_api", DEFAULT_JOB_API)
    # `job_api` itself is checked by the caller; an unknown one is its error, not this one's.
    if job_api in kinds and not kinds[job_api].queued:
        queued = [name for name, kind in kinds.items() if kind.queued]
        fix = (f"set job_api to a kind that is ({', '.join(queued)}) or remove the queue"
               if queued else "no registered kind is; remove the queue")
        raise where.child("queue").error(f"job_api {job_api} is not queued by Kueue; {fix}")
    return policy


def _items(cls: Any, data: Mapping[str, Any], key: str, where: Where, strict: bool) -> tuple:
    """A required list field, each item read by `cls.from_dict` at its own index."""
    at = where.child(key)
    return tuple(cls.from_dict(item, at.child(i), strict)
                 for i, item in enumerate(f.sequence(f.require(data, key, where), at)))


def _check_gpus_within_quota(profiles: Sequence[Profile], job_limits: JobLimits, quota: Quota,
                             where: Where) -> None:
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


@dataclass(frozen=True)
class Tenants:
    """All tenants of one file, in file order (the order decides ties; see
    `hub_config.spawn_policy`)."""

    tenants: tuple[Tenant, ...]
    source: str = field(default="<tenants>", compare=False)

    @classmethod
    def from_dict(cls, data: Any, source: str = "<tenants>", strict: bool = False) -> Tenants:
        where = Where(file=source)
        data = f.mapping(data, where)
        f.check_keys(data, ("tenants",), where, strict)
        tenants = _items(Tenant, data, "tenants", where, strict)
        if not tenants:
            raise where.child("tenants").error("must list at least one tenant")
        _unique_across(tenants, source)
        return cls(tenants=_with_cohort_gpus(tenants), source=source)

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


def _with_cohort_gpus(tenants: Sequence[Tenant]) -> tuple[Tenant, ...]:
    """Each queued tenant's `queue.cohort_gpus`: the GPU quota of the other queued tenants of
    its cohort, the most it could ever borrow."""
    totals: dict[str, int] = {}
    for t in tenants:
        if t.queue is not None:
            totals[t.queue.cohort] = totals.get(t.queue.cohort, 0) + t.quota.gpus
    return tuple(
        t if t.queue is None else replace(t, queue=replace(
            t.queue, cohort_gpus=totals[t.queue.cohort] - t.quota.gpus))
        for t in tenants)


def _unique_across(tenants: Sequence[Tenant], source: str) -> None:
    for attr in ("name", "namespace"):
        owner: dict[str, str] = {}
        for tenant in tenants:
            value = getattr(tenant, attr)
            if value in owner:
                raise Where(source, tenant.name, attr).error(
                    f"{value!r} is already used by tenant {owner[value]!r}; each tenant needs its own"
                )
            owner[value] = tenant.name
