"""Engines run a JobSpec somewhere: `local` (process groups here) or `kubernetes` (a PaddleJob).

Engines are found by entry point (group `launcher_magic.engines`), so a deployment can add one
without touching the magic.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from launcher_magic.engines.base import Engine, EngineError, EngineUnavailable

ENTRY_POINT_GROUP = "launcher_magic.engines"


def available_engines() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def load_engine(name: str, **kwargs) -> Engine:
    """An engine instance by name.

    Raises:
        EngineUnavailable: no such engine is installed, or it cannot run here.
    """
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()(**kwargs)
    installed = ", ".join(available_engines()) or "none"
    raise EngineUnavailable(
        f"the {name!r} engine is not installed in this environment (installed: {installed})"
    )


__all__ = ["Engine", "EngineError", "EngineUnavailable", "available_engines", "load_engine"]
