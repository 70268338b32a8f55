"""Kubernetes names and quantities, one rule each for the hub and the notebook side.

- `GPU_RESOURCE`: the extended resource GPUs are asked for by (NVIDIA's device plugin).
- `is_dns_label`: what Kubernetes accepts as a namespace, a label-like object name, a tenant or a
  profile name (RFC 1123 label, at most 63 characters; callers may ask for fewer).
- `parse_quantity`: a Kubernetes resource quantity (`500m`, `2`, `1.5`, `8Gi`, `1e3`) as an exact
  Decimal, with every suffix the API server accepts.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

GPU_RESOURCE = "nvidia.com/gpu"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_LABEL_MAX = 63

# The API server's quantity grammar: a signed decimal number, then a binary suffix (Ki..Ei), a
# decimal suffix (n, u, m, "", k, M, G, T, P, E) or a decimal exponent (e3, E-2).
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
            "k": Decimal("1e3"), "M": Decimal("1e6"), "G": Decimal("1e9"), "T": Decimal("1e12"),
            "P": Decimal("1e15"), "E": Decimal("1e18")}


def is_dns_label(value: object, max_length: int = DNS_LABEL_MAX) -> bool:
    """True for a lower-case RFC 1123 label of at most `max_length` characters."""
    return (isinstance(value, str) and 0 < len(value) <= max_length
            and _DNS_LABEL.match(value) is not None)


def parse_quantity(value: object) -> Decimal:
    """A Kubernetes quantity as a Decimal (cores for CPU, bytes for memory).

    Accepts ints and floats (not bools) as plain numbers.

    Raises:
        ValueError: `value` is not a quantity the API server would accept, or is negative.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity")
    if isinstance(value, int | float):
        number = Decimal(str(value))
    elif isinstance(value, str) and (match := _QUANTITY.match(value.strip())):
        suffix = match["suffix"] or ""
        try:
            number = Decimal(match["number"])
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a quantity") from None
        if suffix in _BINARY:
            number *= _BINARY[suffix]
        elif suffix[:1] in ("e", "E") and len(suffix) > 1:
            number = number.scaleb(int(suffix[1:]))
        else:
            number *= _DECIMAL[suffix]
    else:
        raise ValueError(f"{value!r} is not a quantity")
    if number < 0:
        raise ValueError(f"{value!r} is negative")
    return number


def is_positive_quantity(value: object) -> bool:
    """True for a quantity above zero (what a CPU or memory request must be)."""
    try:
        return parse_quantity(value) > 0
    except ValueError:
        return False
