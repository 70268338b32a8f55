"""In CI nothing may skip but the GPU checks: a skip for any other reason fails the run.

Tests skip where a part is missing on a developer's machine (a package, Chromium, the
proxy), each saying what to install. CI installs every part, so such a skip there means
the set-up broke; counting it as a pass would hide that. With ``CI`` set (``.ci/run`` sets
it), a skip whose reason does not name a GPU becomes a failure that keeps the reason.
"""

from __future__ import annotations

import os

import pytest

from tests import build_ahead

_ALLOWED = ("GPU",)


def _ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _reason(longrepr: object) -> str:
    """A skip's reason from its report (pytest keeps it as (path, line, reason))."""
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason.removeprefix("Skipped: ")


def forbidden_skip(reason: str) -> bool:
    """True when a skip with this reason must fail in CI."""
    return not any(word in reason for word in _ALLOWED)


def _fail_skip(report) -> None:
    reason = _reason(report.longrepr)
    if forbidden_skip(reason):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, where only the GPU checks may skip: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _ci() and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if _ci() and report.skipped:
        _fail_skip(report)


def pytest_configure(config) -> None:
    build_ahead.register(config)
