"""The quota preflight: does a job fit the namespace's ResourceQuotas, before anything is made.

The API server enforces the quota anyway (its ResourceQuota admission refuses the pods that do
not fit); asking first lets the magic say why in one line, and lets a job that does not fit now
wait in the tenant's queue where Kueue manages the kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from launcher_magic.core.spec import JobSpec, SpecError
from workbench_contract.cluster import Api
from workbench_contract.resources import GPU_RESOURCE, parse_quantity


def needs(spec: JobSpec, api: Api) -> dict[str, tuple[Decimal, str]]:
    """quota key -> (what the job needs of it, the same in words)."""
    gpus = spec.nodes * spec.resources.gpus_per_node
    found: dict[str, tuple[Decimal, str]] = {
        f"requests.{GPU_RESOURCE}": (Decimal(gpus), f"{gpus} GPUs ({spec.nodes} nodes x "
                                                    f"{spec.resources.gpus_per_node})"),
        f"count/{api.resource}": (Decimal(1), f"1 more {api.kind}"),
        "pods": (Decimal(spec.nodes), f"{spec.nodes} pods"),
        "count/pods": (Decimal(spec.nodes), f"{spec.nodes} pods"),
    }
    for resource, raw in (("cpu", spec.resources.cpu), ("memory", spec.resources.memory)):
        if raw:
            total = parse_quantity(str(raw)) * spec.nodes
            found[f"requests.{resource}"] = (total, f"{spec.nodes} x {raw} {resource}")
            found[f"limits.{resource}"] = (total, f"{spec.nodes} x {raw} {resource}")
    return found


def check_quota(spec: JobSpec, api: Api, quotas: Iterable[Mapping[str, Any]],
                queued: bool = False) -> str:
    """Check `spec`, a job made as an `api` object, against the namespace's ResourceQuotas.

    Returns "" when it fits now, or (only when `queued`) why it will wait for others to end.
    Raises:
        SpecError: the job can never fit (it needs more than the quota holds at all), or it does
            not fit now and there is no queue to wait in; the message has the numbers.
    """
    waits = []
    for quota in quotas:
        name = quota.get("metadata", {}).get("name", "?")
        status = quota.get("status") or {}
        hard, used = status.get("hard") or {}, status.get("used") or {}
        for key, (need, what) in needs(spec, api).items():
            if key not in hard or need == 0:
                continue
            if need > parse_quantity(str(hard[key])):
                raise SpecError(
                    f"the job needs {what}, but your tenant's quota {name!r} has "
                    f"{key}={hard[key]} in all: it can never run; ask for less")
            left = parse_quantity(str(hard[key])) - parse_quantity(str(used.get(key, "0")))
            if need > left:
                said = (f"the job needs {what}, but your tenant's quota {name!r} has "
                        f"{key}={hard[key]} with {used.get(key, '0')} in use")
                if not queued:
                    raise SpecError(f"{said}; ask for less or wait for other jobs to finish")
                waits.append(said)
    return "; ".join(waits)
