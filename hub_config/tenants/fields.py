"""Reading one field of the tenants file: where it sits (`Where`) and the small validators.

Each validator takes the raw value and its `Where`, and returns the value in the type the model
keeps or raises `TenantsFileError` through `Where.error`, so every message names the file, the
tenant and the dotted field, and says what to write instead. The Kubernetes rules (DNS labels,
quantities) are the contract's (`workbench_contract.resources`), shared with the notebook side.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from workbench_contract import resources

# An image pinned by digest: registry host (with optional port), a path, `@sha256:` and 64 hex.
_PINNED_IMAGE = re.compile(
    r"^(?P<registry>[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]+)?)/"
    r"(?P<path>[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*)"
    r"@sha256:[0-9a-f]{64}$"
)
_TOLERATION_OPERATORS = ("Exists", "Equal")
_TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


class TenantsFileError(ValueError):
    """The tenants file is wrong. The message names the file, the tenant and the field."""


@dataclass(frozen=True)
class Where:
    """Where a value sits, for error messages: file, tenant and a dotted field path."""

    file: str = "<tenants>"
    tenant: str | None = None
    path: str = ""

    def child(self, key: str | int) -> Where:
        if isinstance(key, int):
            return Where(self.file, self.tenant, f"{self.path}[{key}]")
        return Where(self.file, self.tenant, f"{self.path}.{key}" if self.path else key)

    def error(self, problem: str) -> TenantsFileError:
        tenant = f"tenant {self.tenant!r}, " if self.tenant else ""
        fld = f"field {self.path!r}: " if self.path else ""
        return TenantsFileError(f"{self.file}: {tenant}{fld}{problem}")


def parse_quantity(value: Any) -> float:
    """A Kubernetes quantity (`"500m"`, `2`, `"32Gi"`) as a float (cores or bytes), for the
    spawners' traits; `workbench_contract.resources.parse_quantity` is the exact rule.

    Raises ValueError for anything the API server would not accept as a quantity.
    """
    return float(resources.parse_quantity(value))


def kind(value: Any) -> str:
    """How a wrong value is shown in a message."""
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


def mapping(value: Any, where: Where) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise where.error(f"must be a mapping (key: value), got {kind(value)}")
    return value


def sequence(value: Any, where: Where) -> list[Any]:
    if not isinstance(value, list):
        raise where.error(f"must be a list, got {kind(value)}")
    return value


def require(data: Mapping[str, Any], key: str, where: Where) -> Any:
    if key not in data or data[key] is None:
        raise where.child(key).error("is required")
    return data[key]


def check_keys(data: Mapping[str, Any], known: Iterable[str], where: Where, strict: bool) -> None:
    """With `strict` (the file loader), refuse keys outside `known`: a misspelled security setting
    must not be silently ignored."""
    if not strict:
        return
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise where.child(unknown[0]).error(
            f"is not a known field; known fields here: {', '.join(sorted(known))}"
        )


def whole_number(value: Any, where: Where, *, minimum: int = 0, maximum: int | None = None,
                 why: str = "") -> int:
    """A whole number in [minimum, maximum]; `why` follows a too-large value's message."""
    # bool is an int in Python; `gpus: yes` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error(f"must be a whole number, got {kind(value)}")
    if value < minimum:
        raise where.error(f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise where.error(f"must be at most {maximum}, got {value}{why}")
    return value


def text(value: Any, where: Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"must be a non-empty string, got {kind(value)}")
    return value


def texts(value: Any, where: Where) -> tuple[str, ...]:
    return tuple(text(item, where.child(i)) for i, item in enumerate(sequence(value, where)))


def checked_text(value: Any, where: Where, ok: Callable[[str], object], problem: str) -> str:
    """A non-empty string that passes `ok`; else an error `'<value>' <problem>`."""
    checked = text(value, where)
    if not ok(checked):
        raise where.error(f"{checked!r} {problem}")
    return checked


def dns_label(value: Any, where: Where) -> str:
    """Tenant, profile, namespace and service-account names end up in labels, slugs and URLs."""
    return checked_text(value, where, resources.is_dns_label,
                        "is not a DNS-1123 label; use at most 63 lowercase letters, digits and "
                        "'-', starting and ending with a letter or digit")


def quantity(value: Any, where: Where, what: str, example: str) -> str:
    """A Kubernetes quantity, kept as written (the manifests carry it as is)."""
    try:
        resources.parse_quantity(value)
    except ValueError:
        raise where.error(
            f"{value!r} is not a Kubernetes {what} quantity; write it like {example}"
        ) from None
    return str(value)


def pinned_image(value: Any, where: Where) -> str:
    return checked_text(value, where, _PINNED_IMAGE.match,
                        "is not pinned by digest; write registry/name@sha256:<64 hex digits> "
                        "(a tag can be moved to other content, a digest cannot)")


def toleration(value: Any, where: Where, strict: bool) -> dict[str, Any]:
    data = mapping(value, where)
    check_keys(data, ("key", "operator", "value", "effect", "tolerationSeconds"), where, strict)
    operator = data.get("operator", "Equal")
    if operator not in _TOLERATION_OPERATORS:
        raise where.child("operator").error(
            f"{operator!r} is not a toleration operator; use one of "
            f"{', '.join(_TOLERATION_OPERATORS)}"
        )
    effect = data.get("effect")
    if effect is not None and effect not in _TOLERATION_EFFECTS:
        raise where.child("effect").error(
            f"{effect!r} is not a taint effect; use one of {', '.join(_TOLERATION_EFFECTS)}"
        )
    if operator == "Exists" and data.get("value") not in (None, ""):
        raise where.child("value").error("must be empty when operator is Exists")
    return dict(data)


def string_map(value: Any, where: Where) -> dict[str, str]:
    """A mapping of non-empty strings to non-empty strings (a node selector)."""
    data = mapping(value, where)
    for key, item in data.items():
        text(key, where)
        text(item, where.child(str(key)))
    return dict(data)


def unique(values: Iterable[str], where: Where, what: str) -> None:
    seen: set[str] = set()
    for i, value in enumerate(values):
        if value in seen:
            raise where.child(i).error(f"{what} {value!r} appears twice; each must be unique")
        seen.add(value)


def choice(value: Any, where: Where, options: Iterable[str]) -> str:
    """One of `options` (a tenant setting with a fixed set of values)."""
    options = tuple(options)
    if not isinstance(value, str) or value not in options:
        raise where.error(f"must be one of {', '.join(options)}, got {value!r}")
    return value
