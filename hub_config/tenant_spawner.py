"""What both tenant spawners share: the tenants-file setting and the two inputs of a spawn decision
that come from the hub rather than from the request (the tenants, the user's groups).

`TenantKubeSpawner` (a cluster) and `TenantLocalSpawner` (one machine) both decide every spawn with
`hub_config.policy.choose(self.tenants(), user, self.group_names(), options)`.
"""

from __future__ import annotations

from tornado import web
from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from hub_config.policy import SpawnRefused
from hub_config.tenants import Tenants, shared_cache


class TenantSpawnerMixin(LoggingConfigurable):
    """Mixed in before the spawner class. A LoggingConfigurable so that `tenants_file` is a real,
    configurable trait on each spawner (`c.TenantKubeSpawner.tenants_file = ...`)."""

    tenants_file = Unicode(
        "tenants.yaml", help="""Path of the tenants file (see hub_config/tenants.example.yaml)."""
    ).tag(config=True)

    def tenants(self) -> Tenants:
        """The tenants file as it is now: re-read only when it changed, so an edit takes effect at
        the next spawn. Raises TenantsFileError (file, tenant, field) for a broken file."""
        return shared_cache(self.tenants_file).get()

    def group_names(self) -> list[str]:
        """The names of the hub user's groups (`self.user`, set by the hub), sorted."""
        return sorted(g.name for g in getattr(self.user, "groups", []) or [])


def http_error(refused: SpawnRefused) -> web.HTTPError:
    """A tornado error the hub shows as-is, on the spawn page and in the REST API."""
    error = web.HTTPError(refused.status, "%s", refused.message)
    error.jupyterhub_message = refused.message  # type: ignore[attr-defined]
    return error
