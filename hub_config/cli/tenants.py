"""`workbench render` and `workbench apply`: tenant provisioning from the tenants file.

`render` prints each tenant's namespace bundle (`hub_config.cluster_policy.bundle`) as YAML or
JSON, with no cluster needed. `apply` sends the same objects to the cluster by server-side apply
and prints what changed (`hub_config.cluster_policy.apply`); it deletes nothing unless `--prune`
is given. Errors (a bad tenants file, an unknown tenant, no cluster, a refusal) are one line and
exit code 2.
"""

from __future__ import annotations

import json
import os
from typing import Any

import yaml

from hub_config.cli import CommandError, require_extra
from hub_config.cluster_policy.bundle import namespace_bundle
from hub_config.cluster_policy.metadata import ProvisioningError
from hub_config.cluster_policy.network import DEFAULT_API_SERVER_CIDRS
from hub_config.tenants import Tenant, TenantsFileError, load_tenants

TENANTS_ENV = "WORKBENCH_TENANTS_FILE"


def register(subparsers) -> None:
    render = subparsers.add_parser(
        "render", help="print the tenants' namespace bundles (Kubernetes manifests)")
    _common(render)
    render.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml",
                        help="output format (default: yaml)")
    render.set_defaults(func=run_render)

    apply = subparsers.add_parser(
        "apply", help="provision the tenants' namespaces in a cluster (server-side apply)")
    _common(apply)
    apply.add_argument("--kubeconfig", help="kubeconfig of a cluster operator (default: "
                       "$KUBECONFIG or ~/.kube/config)")
    apply.add_argument("--prune", action="store_true",
                       help="also delete objects labelled as ours that are no longer rendered "
                            "(with --tenant: only that tenant's; without: every tenant's, "
                            "including the namespaces of tenants removed from the file)")
    apply.add_argument("--dry-run", action="store_true",
                       help="ask the API server what would change; change nothing")
    apply.set_defaults(func=run_apply)


def _common(parser) -> None:
    parser.add_argument("--tenants", metavar="FILE",
                        help=f"tenants file (default: ${TENANTS_ENV} or ./tenants.yaml)")
    parser.add_argument("--tenant", metavar="NAME", help="only this tenant")
    parser.add_argument("--hub-namespace", default="jupyterhub",
                        help="namespace of the hub and proxy pods (default: jupyterhub)")
    parser.add_argument("--hub-service-account", default="hub",
                        help="the hub's service account in that namespace (default: hub)")
    parser.add_argument("--api-server-cidr", action="append", metavar="CIDR",
                        help="the API server's address, where notebooks may reach it on ports "
                             "443/6443 (repeatable; default: nowhere, and the cluster engines "
                             "cannot submit jobs until it is named)")


def selected_tenants(args) -> list[Tenant]:
    path = args.tenants or os.environ.get(TENANTS_ENV) or "tenants.yaml"
    try:
        tenants = load_tenants(path)
    except TenantsFileError as err:
        raise CommandError(str(err)) from None
    if args.tenant is None:
        return list(tenants.tenants)
    tenant = tenants.get(args.tenant)
    if tenant is None:
        names = ", ".join(t.name for t in tenants.tenants)
        raise CommandError(f"no tenant {args.tenant!r} in {path}; tenants there: {names}")
    return [tenant]


def render_objects(args) -> list[dict[str, Any]]:
    """Every bundle object of the selected tenants, tenant by tenant, in apply order."""
    cidrs = tuple(args.api_server_cidr or DEFAULT_API_SERVER_CIDRS)
    objects: list[dict[str, Any]] = []
    try:
        for tenant in selected_tenants(args):
            objects += namespace_bundle(tenant, hub_namespace=args.hub_namespace,
                                        hub_service_account=args.hub_service_account,
                                        api_server_cidrs=cidrs)
    except ProvisioningError as err:
        raise CommandError(str(err)) from None
    return objects


def run_render(args) -> int:
    objects = render_objects(args)
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
    else:
        print(yaml.safe_dump_all(objects, sort_keys=False), end="")
    return 0


def _client(kubeconfig: str | None):
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    except Exception as err:  # noqa: BLE001 - the client raises several kinds; all mean "no cluster"
        where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise CommandError(f"no usable kubeconfig at {where} ({' '.join(str(err).split())}); "
                           "pass --kubeconfig PATH") from None
    # One attempt: an unreachable cluster should fail now, not after three logged retries.
    configuration.retries = False
    return client.ApiClient(configuration)


def run_apply(args) -> int:
    require_extra("hub", "kubernetes")
    from hub_config.cluster_policy.apply import ApplyError, apply_objects, summary_table

    objects = render_objects(args)
    api_client = _client(args.kubeconfig)
    prune_tenants = None
    if args.prune and args.tenant:
        prune_tenants = [args.tenant]
    try:
        results = apply_objects(api_client, objects, prune_tenants=prune_tenants,
                                prune_all=args.prune and not args.tenant, dry_run=args.dry_run)
    except ApplyError as err:
        raise CommandError(str(err)) from None
    finally:
        api_client.close()
    print(summary_table(results))
    return 0
