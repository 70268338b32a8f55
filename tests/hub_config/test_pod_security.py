"""The Pod Security `restricted` contexts shared by notebook pods and job worker pods: every field
the profile checks, at both levels, and no way to ask for root. (Admission by a real API server
is proven in tests/cluster: test_provisioning for notebooks, test_kubernetes_engine for jobs.)"""

from __future__ import annotations

import pytest

from workbench_contract.pod_security import restricted_security_contexts

SECCOMP = {"type": "RuntimeDefault"}

# (level, field, value): the union of what the two builders set before they were merged.
FIELDS = [
    ("pod", "runAsNonRoot", True),
    ("pod", "runAsUser", 1000),
    ("pod", "runAsGroup", 100),
    ("pod", "fsGroup", 100),
    ("pod", "seccompProfile", SECCOMP),
    ("container", "runAsNonRoot", True),
    ("container", "runAsUser", 1000),
    ("container", "runAsGroup", 100),
    ("container", "allowPrivilegeEscalation", False),
    ("container", "privileged", False),
    ("container", "capabilities", {"drop": ["ALL"]}),
    ("container", "seccompProfile", SECCOMP),
]


@pytest.mark.parametrize(("level", "key", "value"), FIELDS, ids=[f"{a}-{b}" for a, b, _ in FIELDS])
def test_each_restricted_field_is_set(level: str, key: str, value) -> None:
    pod, container = restricted_security_contexts(1000, 100)
    assert (pod if level == "pod" else container)[key] == value


def test_nothing_else_is_set() -> None:
    """No field beyond the table: a new one (say, a host namespace) must be added on purpose."""
    pod, container = restricted_security_contexts(1000, 100)
    assert set(pod) == {key for level, key, _ in FIELDS if level == "pod"}
    assert set(container) == {key for level, key, _ in FIELDS if level == "container"}


@pytest.mark.parametrize(("uid", "gid", "message"), [
    (0, 100, "uid 0 is not a non-root user id"),
    (-1, 100, "uid -1 is not a non-root user id"),
    (True, 100, "uid True is not a non-root user id"),
    ("1000", 100, "uid '1000' is not a non-root user id"),
    (1000, -1, "gid -1 is not a group id"),
], ids=["root", "negative-uid", "bool-uid", "text-uid", "negative-gid"])
def test_root_and_bad_ids_are_refused(uid, gid, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        restricted_security_contexts(uid, gid)


def test_each_call_returns_fresh_dicts() -> None:
    pod, container = restricted_security_contexts(1000, 100)
    pod["seccompProfile"]["type"] = "Unconfined"
    container["capabilities"]["drop"].clear()
    again_pod, again_container = restricted_security_contexts(1000, 100)
    assert again_pod["seccompProfile"] == SECCOMP
    assert again_container["capabilities"] == {"drop": ["ALL"]}
