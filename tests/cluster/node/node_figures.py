"""Figures the real-node session measures (seconds), printed by conftest at the end of the
session and never asserted on: the machine may be busy."""

FIGURES: dict[str, float] = {}
