"""Figures the real-node session measures (seconds), printed by conftest at the end of the
session and never asserted on: the machine may be busy.

- ``FIGURES``: name -> seconds, filled by the tests.
- ``pull_seconds``: the image pulls the kubelet reported among some events, in seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

FIGURES: dict[str, float] = {}

# The kubelet's event after a pull: "Successfully pulled image "..." in 36.9s (...)".
_PULLED = re.compile(r"Successfully pulled image .* in ([0-9.]+)s")


def pull_seconds(events: Iterable) -> list[float]:
    """The seconds of each pull that `events` (Kubernetes Event objects) report."""
    return [float(m[1]) for event in events if event.reason == "Pulled"
            for m in [_PULLED.search(event.message or "")] if m]
