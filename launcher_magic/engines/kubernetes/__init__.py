"""The kubernetes engine: a job is a PaddleJob in the tenant's namespace.

`paddlejob` holds the pure manifest and status builders; `engine` the API I/O around them (it runs
in the notebook kernel with the notebook's credentials)."""

from launcher_magic.engines.kubernetes.engine import KubernetesEngine

__all__ = ["KubernetesEngine"]
