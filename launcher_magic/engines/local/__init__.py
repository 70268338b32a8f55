"""The local engine: one supervisor process per job on this machine, one process group per node.

`engine` runs in the kernel; `supervisor`, `rendezvous` and `devices` in the supervisor process."""

from launcher_magic.engines.local.engine import LocalEngine

__all__ = ["LocalEngine"]
