"""What both tenant spawners share: the tenants file (from `Tenancy`) and the two inputs of a spawn
decision that come from the hub rather than from the request (the tenants, the user's groups).

`TenantKubeSpawner` (a cluster) and `TenantLocalSpawner` (one machine) both decide every spawn with
`hub_config.spawn_policy.choose(self.tenants(), user, self.group_names(), options)`, and both
give the server `hub_config.spawn_policy.notebook_context(...).to_env()`.
"""

from __future__ import annotations

from tornado import web

from hub_config.spawn_policy import SpawnRefused
from hub_config.tenancy import Tenancy


class TenantSpawnerMixin(Tenancy):
    """Mixed in before the spawner class. A LoggingConfigurable (through `Tenancy`) so that
    `tenants_file` is a real, configurable trait on each spawner (`c.Tenancy.tenants_file`, or
    per class `c.TenantKubeSpawner.tenants_file`)."""

    def group_names(self) -> list[str]:
        """The names of the hub user's groups (`self.user`, set by the hub), sorted."""
        return sorted(g.name for g in getattr(self.user, "groups", []) or [])


def http_error(refused: SpawnRefused) -> web.HTTPError:
    """A tornado error the hub shows as-is, on the spawn page and in the REST API."""
    error = web.HTTPError(refused.status, "%s", refused.message)
    error.jupyterhub_message = refused.message  # type: ignore[attr-defined]
    return error
