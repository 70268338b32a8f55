"""A tenant for the real-node tier: provisioned by ``workbench apply``'s bundle, routed to the
real nodes (``placement.route_to_node``), with ada's home on a volume of theirs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from placement import STORAGE_CLASS, local_volume, route_to_node, shared_volume
from pod_client import core_api

from workbench_contract.ownership import user_claim


@contextlib.contextmanager
def node_tenant_with(control_plane, cpu_image: str, folder: Path, job_api: str | None, *,
                     node: str = "") -> Iterator[tuple[object, Path]]:
    """Provision a tenant routed to the real nodes with ada's home under `folder`: on `node`'s
    disk (``local_volume``, ReadWriteOnce), or without `node` on storage every node mounts
    (``shared_volume``, ReadWriteMany). Yields (tenant, ada's home); deprovisions after."""
    import tenancy
    from kubernetes import client

    from hub_config.tenants import Tenant

    data = tenancy.tenant_data(tenancy.unique("node"), gpus=0)
    # The node's image first (the notebook's, so the jobs'); provisioning's own check of the
    # admission policies submits a job with the example image, so that one stays allowed.
    data["images"] = [{"name": "CPU (node)", "image": cpu_image}, *data["images"]]
    if job_api:
        data["job_api"] = job_api
    tenant = Tenant.from_dict(data, strict=True)
    assert tenant.job_api == (job_api or "trainjob")  # trainjob: the tenants' default
    tenancy.provision(control_plane, tenant, hub_namespace="jupyterhub")
    core = core_api(control_plane)
    route_to_node(core, tenant.namespace)
    home = folder / f"{tenant.name}-ada"
    (home / "jobs").mkdir(parents=True)
    # Workers run as the notebook's uid; the kernel here runs as root (see start_kernel).
    for sub in (home, home / "jobs"):
        sub.chmod(0o777)
    claim = user_claim("ada")
    volume = f"{tenant.namespace}-{claim}"
    modes = ["ReadWriteOnce"] if node else ["ReadWriteMany"]
    core.create_persistent_volume(
        local_volume(volume, home, node, tenant.namespace, claim, modes, capacity="1Gi")
        if node else shared_volume(volume, home, tenant.namespace, claim, capacity="1Gi"))
    core.create_namespaced_persistent_volume_claim(tenant.namespace, {
        "metadata": {"name": claim},
        "spec": {"accessModes": modes, "storageClassName": STORAGE_CLASS,
                 "volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}}})
    try:
        yield tenant, home
    finally:
        tenancy.deprovision(control_plane, tenant)
        try:
            core.delete_persistent_volume(volume)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
