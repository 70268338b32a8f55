"""The one tenants-file setting of the hub process, shared by every class that needs it.

`Tenancy` declares `tenants_file` and `tenants()`; the authenticators' `TenantAuthMixin` and the
spawners' `TenantSpawnerMixin` inherit it. traitlets applies a parent class's config section to
its subclasses, so

    c.Tenancy.tenants_file = "/etc/workbench/tenants.yaml"

configures the authenticator and the spawner at once, and a class's own section
(`c.TenantKubeSpawner.tenants_file`) still overrides it for that class alone.
"""

from __future__ import annotations

from traitlets import Unicode
from traitlets.config import LoggingConfigurable

from hub_config.tenants import Tenants, shared_cache


class Tenancy(LoggingConfigurable):
    """Base of the hub classes that read the tenants file."""

    tenants_file = Unicode(
        "tenants.yaml", help="""Path of the tenants file (see hub_config/tenants.example.yaml).
        Set it once as `c.Tenancy.tenants_file`: the authenticator and the spawner share it."""
    ).tag(config=True)

    def tenants(self) -> Tenants:
        """The tenants file as it is now: re-read only when it changed, so an edit takes effect
        at the next login or spawn. Raises TenantsFileError (file, tenant, field) for a broken
        file."""
        return shared_cache(self.tenants_file).get()
