"""The security contexts every workbench pod runs with: Pod Security `restricted`.

Tenant namespaces enforce the `restricted` profile, so notebook pods (KubeSpawner) and job worker
pods (PaddleJob) must both satisfy it; both take their contexts from here so they cannot drift
apart. Standard library only: the notebook side imports this inside notebook images too.
"""

from __future__ import annotations

from typing import Any

# The notebook images' user (`jovyan`, uid 1000, group `users`, gid 100): what pods run as when the
# hub says nothing else.
DEFAULT_UID = 1000
DEFAULT_GID = 100


def restricted_security_contexts(uid: int, gid: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod, container) security contexts that pass Pod Security `restricted`.

    The pod level covers every container of the pod (init containers and sidecars too); the
    container level repeats the user and group so the main container keeps them whatever pod
    context it ends up in. Fresh dicts on each call: callers may add to them.

    Args:
        uid: the user the containers run as; never 0 (`restricted` forbids root).
        gid: the primary group and the volumes' `fsGroup`.
    Raises:
        ValueError: for a root or negative uid, or a negative gid.
    """
    if isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0:
        raise ValueError(f"uid {uid!r} is not a non-root user id; give a whole number above 0")
    if isinstance(gid, bool) or not isinstance(gid, int) or gid < 0:
        raise ValueError(f"gid {gid!r} is not a group id; give a whole number from 0")
    pod = {
        "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    container = {
        "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid,
        "allowPrivilegeEscalation": False, "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return pod, container
