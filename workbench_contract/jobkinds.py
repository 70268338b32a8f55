"""The kinds of cluster job: what each side needs to know of one, registered in one place.

A job kind is a Kubernetes object a notebook creates to run a distributed job (a PaddleJob, a
TrainJob). Both sides act on it: the notebook side submits, watches and stops it through the
cluster engine and the kind's adapter; the hub side lets notebooks do that (their Role, the
quota's count) and holds the objects to the tenant's rules (the kind's admission policy). A
`JobKind` names all of that once:

- `name`: the engine's name in the magic (`--engine trainjob`) and the tenants file's `job_api`;
- `api`: the object a job is; `reads`: what else a notebook reads for it (get and list);
- `adapter`: `module:attribute` of the notebook side's adapter (`launcher_magic.engines.cluster`);
- `admission`: `module:attribute` of the hub side's admission policy builder
  (`hub_config.cluster_policy.admission`);
- `queued`: Kueue admits the kind's jobs, so a tenant with a queue may use it.

Each side imports its own half by name; neither imports the other. Kinds are registered by
entry point (group `workbench.job_kinds`, each pointing at a `JobKind`), the built-in ones in
the project's pyproject.toml: adding a kind is its adapter, its admission rules and one entry
point.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from workbench_contract import cluster
from workbench_contract.cluster import Api

ENTRY_POINT_GROUP = "workbench.job_kinds"
# Engine names of earlier versions, and the name each now goes by.
DEPRECATED_NAMES = {"kubernetes": "paddlejob"}


class UnknownJobKind(LookupError):
    """No job kind of that name is registered; the message lists those that are."""


@dataclass(frozen=True)
class JobKind:
    """One kind of cluster job (see the module docstring)."""

    name: str
    api: Api
    adapter: str
    admission: str
    reads: tuple[Api, ...] = ()
    queued: bool = False
    description: str = ""  # what the engine makes of a job, in words for users


def load_object(reference: str) -> Any:
    """The object `module:attribute` names (`adapter` on the notebook side, `admission` on the
    hub side: each side loads only its own half)."""
    module, _, attribute = reference.partition(":")
    return getattr(importlib.import_module(module), attribute)


PADDLEJOB = JobKind(
    name="paddlejob", api=cluster.PADDLEJOB,
    adapter="launcher_magic.engines.cluster.paddlejob:PaddleJobAdapter",
    admission="hub_config.cluster_policy.admission.paddlejob:paddlejob_policies",
    description="each job a Kubeflow training-operator v1 PaddleJob",
)
TRAINJOB = JobKind(
    name="trainjob", api=cluster.TRAINJOB,
    adapter="launcher_magic.engines.cluster.trainjob:TrainJobAdapter",
    admission="hub_config.cluster_policy.admission.trainjob:trainjob_policies",
    reads=(cluster.JOBSET,), queued=True,
    description="each job a Kubeflow Trainer v2 TrainJob on the workbench's Paddle runtime",
)
DEFAULT = TRAINJOB.name


def job_kinds() -> dict[str, JobKind]:
    """Every registered kind by name, in name order.

    Raises:
        TypeError: an entry point names something that is not a JobKind, or a kind whose name
            is not its entry point's.
    """
    kinds: dict[str, JobKind] = {}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        kind = point.load()
        if not isinstance(kind, JobKind) or kind.name != point.name:
            raise TypeError(f"entry point {point.name} = {point.value} of {ENTRY_POINT_GROUP} "
                            f"must name a JobKind called {point.name!r}")
        kinds.setdefault(kind.name, kind)
    return kinds


def job_kind(name: str) -> JobKind:
    """The kind called `name` (or the name a deprecated one now goes by).

    Raises:
        UnknownJobKind: none is registered by that name.
    """
    kinds = job_kinds()
    kind = kinds.get(DEPRECATED_NAMES.get(name, name))
    if kind is None:
        raise UnknownJobKind(f"no job kind {name!r} is registered (registered: "
                             f"{', '.join(kinds) or 'none'})")
    return kind
