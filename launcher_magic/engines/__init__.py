"""Engines run a JobSpec somewhere: `local` (process groups here) or a cluster job kind
(`paddlejob`, `trainjob`: the cluster engine with the kind's adapter).

Engines are found by name: an entry point of the group `launcher_magic.engines` (the local engine,
or an engine of a deployment's own), or a job kind registered in `workbench_contract.jobkinds`
(group `workbench.job_kinds`). Nothing else names them, so a deployment can add either without
touching the magic. `kubernetes`, the name the PaddleJob engine had before, still loads it.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from launcher_magic.engines.base import Engine, EngineError, EngineUnavailable
from workbench_contract.jobkinds import DEPRECATED_NAMES, job_kinds

ENTRY_POINT_GROUP = "launcher_magic.engines"


def canonical_name(name: str) -> str:
    """The name an engine goes by now (`kubernetes` is `paddlejob`)."""
    return DEPRECATED_NAMES.get(name, name)


def available_engines() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)} | set(job_kinds()))


def load_engine(name: str, **kwargs) -> Engine:
    """An engine instance by name (a deprecated name loads the engine it now goes by).

    Raises:
        EngineUnavailable: no such engine is installed, or it cannot run here.
    """
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == canonical_name(name):
            return ep.load()(**kwargs)
    kind = job_kinds().get(canonical_name(name))
    if kind is not None:
        from launcher_magic.engines.cluster import ClusterEngine

        return ClusterEngine(kind=kind, **kwargs)
    installed = ", ".join(available_engines()) or "none"
    raise EngineUnavailable(
        f"the {name!r} engine is not installed in this environment (installed: {installed})"
    )


__all__ = ["Engine", "EngineError", "EngineUnavailable", "available_engines", "canonical_name",
           "load_engine"]
