"""jupyterhub-idle-culler as hub services, driven by the tenants' idle policy.

The culler takes one `--timeout` and one `--max-age` per running instance, so each tenant gets its
own instance (`idle-culler-<tenant>`), and JupyterHub's RBAC confines it to that tenant: its role
holds the culler's scopes filtered with `!group=<g>` for each of the tenant's groups, so the hub
lists and stops only that tenant's users' servers for it. A user in two tenants is seen by both
instances; the shorter timeout wins. A tenant whose `server_timeout` and `max_age` are both 0 gets
no culler. GPU-idle culling is a separate service (operations), not this one.
"""

from __future__ import annotations

import sys
from typing import Any

from hub_config.tenants import Tenant, Tenants

SERVICE_PREFIX = "idle-culler-"
# The culler treats every server idle for at least `--timeout` as idle; with no idle limit but a
# maximum age we still need a finite number, so "never idle" is ten years.
NEVER = 10 * 365 * 24 * 3600
# The scopes jupyterhub-idle-culler needs to find idle servers and stop them (not users).
CULLER_SCOPES = ("list:users", "read:users:activity", "read:servers", "delete:servers")


def culler_args(tenant: Tenant, cull_every: int | None = None) -> list[str]:
    """Command-line options of the culler instance for one tenant."""
    idle = tenant.idle
    args = [f"--timeout={idle.server_timeout or NEVER}", f"--max-age={idle.max_age}"]
    if cull_every:
        args.append(f"--cull-every={cull_every}")
    return args


def culler_role(tenant: Tenant) -> dict[str, Any]:
    """The JupyterHub role that confines a tenant's culler to the tenant's groups."""
    return {
        "name": f"{SERVICE_PREFIX}{tenant.name}",
        "description": f"Idle culling for tenant {tenant.name}",
        "scopes": [f"{scope}!group={group}" for scope in CULLER_SCOPES for group in tenant.groups],
        "services": [f"{SERVICE_PREFIX}{tenant.name}"],
    }


def culler_services(
    tenants: Tenants, python: str = sys.executable, cull_every: int | None = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(services, roles) for `c.JupyterHub.services` and `c.JupyterHub.load_roles`.

    `cull_every` (seconds) defaults to the culler's own (half the timeout); tests shorten it.
    """
    services, roles = [], []
    for tenant in tenants.tenants:
        if not (tenant.idle.server_timeout or tenant.idle.max_age):
            continue
        services.append({
            "name": f"{SERVICE_PREFIX}{tenant.name}",
            "command": [python, "-m", "jupyterhub_idle_culler", *culler_args(tenant, cull_every)],
        })
        roles.append(culler_role(tenant))
    return services, roles
