"""The tenants file (`tenants.yaml`): its data model and its loader.

A tenant is a team: the identity-provider groups that put a user in it, the Kubernetes namespace
its notebooks and jobs run in, its quota, the notebook profiles and images it may use, the limits
its distributed jobs must respect and its idle policy. Everything the hub decides about a user
follows from the tenant their groups select, so the loader is strict: every error names the file,
the tenant and the field, and says what to write instead.

- `fields`: where a value sits (`Where`) and the small validators of one field.
- `model`: the frozen dataclasses (`Tenant`, `Tenants`, ...), which travel as plain dicts
  (`to_dict`/`from_dict`; `from_dict` tolerates unknown keys unless strict).
- `loader`: `load_tenants` (strict: unknown keys are errors), `FileCache`, `TenantsCache` and
  `shared_cache`.
"""

from hub_config.tenants.fields import TenantsFileError, parse_quantity
from hub_config.tenants.loader import FileCache, TenantsCache, load_tenants, shared_cache
from hub_config.tenants.model import (
    DEFAULT_SERVICE_ACCOUNT,
    AllowedImage,
    GpuIdlePolicy,
    IdlePolicy,
    JobLimits,
    Profile,
    Quota,
    Resource,
    Tenant,
    Tenants,
)

__all__ = [
    "DEFAULT_SERVICE_ACCOUNT",
    "AllowedImage",
    "FileCache",
    "GpuIdlePolicy",
    "IdlePolicy",
    "JobLimits",
    "Profile",
    "Quota",
    "Resource",
    "Tenant",
    "Tenants",
    "TenantsCache",
    "TenantsFileError",
    "load_tenants",
    "parse_quantity",
    "shared_cache",
]
