"""Build the monitoring manifests from the rule files, and a Grafana dashboard per tenant.

    python deploy/monitoring/build.py                       # regenerate the committed files
    python deploy/monitoring/build.py --tenants tenants.yaml --out dashboards/

The plain rule files under prometheus/rules/ are the source: `promtool` tests them, and the
PrometheusRule manifests under kubernetes/ are generated from them (a test checks they match).
The dashboard builder is pure (tenant in, dict out); only `main` reads and writes files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
RULES_DIR = HERE / "prometheus" / "rules"
MANIFESTS_DIR = HERE / "kubernetes"
EXAMPLE_DASHBOARD = HERE / "grafana" / "dashboards" / "example.json"
GPU_RESOURCE = "requests.nvidia.com/gpu"  # the ResourceQuota key of the tenant's GPU quota
DEFAULT_IDLE_BELOW = 20  # percent, the alert's threshold


@dataclass(frozen=True)
class DashboardTenant:
    """What a tenant dashboard needs from tenants.yaml."""

    name: str
    namespace: str
    idle_below: float = DEFAULT_IDLE_BELOW

    def to_dict(self) -> dict:
        return {"name": self.name, "namespace": self.namespace, "idle_below": self.idle_below}

    @classmethod
    def from_dict(cls, data: dict) -> DashboardTenant:
        return cls(str(data["name"]), str(data["namespace"]),
                   float(data.get("idle_below", DEFAULT_IDLE_BELOW)))


def prometheus_rule(rule_file: Path) -> dict:
    """The PrometheusRule (prometheus-operator) holding the groups of one plain rule file."""
    groups = yaml.safe_load(rule_file.read_text())["groups"]
    name = rule_file.name.removesuffix(".rules.yaml")
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "paddle-workbench",
                       "app.kubernetes.io/component": "monitoring"},
        },
        "spec": {"groups": groups},
    }


def _target(ref: str, expr: str, legend: str) -> dict:
    return {"refId": ref, "expr": expr, "legendFormat": legend,
            "datasource": {"type": "prometheus", "uid": "${datasource}"}}


def _panel(pid: int, kind: str, title: str, grid: tuple[int, int, int, int], targets: list[dict],
           unit: str = "short", description: str = "", **extra) -> dict:
    x, y, w, h = grid
    return {
        "id": pid, "type": kind, "title": title, "description": description,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        **extra,
    }


def tenant_panels(tenant: DashboardTenant) -> list[dict]:
    """The panels of a tenant's dashboard, every query fixed to the tenant."""
    t, ns, below = tenant.name, tenant.namespace, tenant.idle_below
    sel = f'tenant="{t}"'
    paddle = f'job_namespace="{ns}",framework="paddle"'
    panels = [
        _panel(1, "timeseries", "GPUs in use against quota", (0, 0, 12, 8), [
            _target("A", f"sum(workbench:tenant_gpus_in_use:count{{{sel}}}) or vector(0)",
                    "in use"),
            _target("B", f'sum(kube_resourcequota{{namespace="{ns}",resource="{GPU_RESOURCE}",'
                         f'type="hard"}})', "quota"),
        ], description="GPUs held by the tenant's notebook servers and job workers."),
        _panel(2, "stat", "Idle notebook servers", (12, 0, 6, 8), [
            _target("A", f"count(avg_over_time(workbench:notebook_gpu_utilisation:avg{{{sel}}}"
                         f"[5m]) < {below:g}) or vector(0)", "idle now"),
            _target("B", f'count(ALERTS{{alertname="WorkbenchNotebookGPUIdle",'
                         f'alertstate="firing",{sel}}}) or vector(0)', "idle for 2 h"),
        ], description=f"Servers whose GPUs run under {below:g} % (now, and for 2 hours)."),
        _panel(3, "bargauge", "Jobs by state", (18, 0, 6, 8), [
            _target("A", f'count(count by (workbench_job) (workbench:pod_labels:info'
                         f'{{{sel},component="job-worker"}})) or vector(0)', "running"),
            _target("B", f"sum(increase(training_operator_jobs_successful_total{{{paddle}}}"
                         "[$__range])) or vector(0)", "succeeded"),
            _target("C", f"sum(increase(training_operator_jobs_failed_total{{{paddle}}}"
                         "[$__range])) or vector(0)", "failed"),
            _target("D", f"sum(increase(training_operator_jobs_restarted_total{{{paddle}}}"
                         "[$__range])) or vector(0)", "restarted"),
        ], description="Running now; succeeded, failed and restarted over the dashboard's range."),
        _panel(4, "timeseries", "GPU utilisation per notebook server", (0, 8, 12, 9), [
            _target("A", f"workbench:notebook_gpu_utilisation:avg{{{sel}}}",
                    "{{user}} {{server}}"),
        ], unit="percent"),
        _panel(5, "timeseries", "GPU utilisation per job", (12, 8, 12, 9), [
            _target("A", f"workbench:job_gpu_utilisation:avg{{{sel}}}",
                    "{{workbench_job}} ({{user}})"),
        ], unit="percent"),
        _panel(6, "table", "Idle notebook servers (5-minute mean)", (0, 17, 24, 8), [
            _target("A", f"avg_over_time(workbench:notebook_gpu_utilisation:avg{{{sel}}}[5m]) "
                         f"< {below:g}", ""),
        ], unit="percent", description="Candidates for the GPU-idle culler.",
            options={"showHeader": True}),
    ]
    for panel in panels:
        for target in panel["targets"]:
            target["instant"] = panel["type"] in {"stat", "bargauge", "table"}
    return panels


def tenant_dashboard(tenant: DashboardTenant) -> dict:
    """The Grafana dashboard of one tenant: its GPUs against quota, utilisation, jobs, idle servers.

    Every query is fixed to the tenant (no variable to switch tenants), so the dashboard can live
    in a folder only that tenant's team may see.
    """
    t = tenant.name
    return {
        "uid": _uid(t),
        "title": f"Paddle Workbench: {t}",
        "tags": ["paddle-workbench", f"tenant:{t}"],
        "timezone": "browser",
        "editable": False,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "1m",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource",
            "query": "prometheus", "hide": 0,
        }]},
        "annotations": {"list": []},
        "panels": tenant_panels(tenant),
    }


def _uid(tenant: str) -> str:
    # Grafana uids are at most 40 characters; tenant names are DNS labels (at most 63).
    return ("wb-" + re.sub(r"[^a-z0-9-]", "-", tenant.lower()))[:40]


def read_tenants(path: Path) -> list[DashboardTenant]:
    """The dashboard view of tenants.yaml: each tenant's name, namespace and GPU-idle threshold."""
    data = yaml.safe_load(path.read_text()) or {}
    tenants = []
    for entry in data.get("tenants") or []:
        gpu = ((entry.get("idle") or {}).get("gpu") or {})
        tenants.append(DashboardTenant(
            name=str(entry["name"]),
            namespace=str(entry.get("namespace") or f"wb-{entry['name']}"),
            idle_below=float(gpu.get("utilisation_below", DEFAULT_IDLE_BELOW)),
        ))
    return tenants


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL) as literal blocks, so the manifests read like the rules."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def _dump_json(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def generated_files() -> dict[Path, str]:
    """Every committed generated file and the content it must have."""
    files = {}
    for rule_file in sorted(RULES_DIR.glob("*.rules.yaml")):
        manifest = prometheus_rule(rule_file)
        path = MANIFESTS_DIR / f"{manifest['metadata']['name']}.prometheusrule.yaml"
        files[path] = ("# Generated by deploy/monitoring/build.py from "
                       f"prometheus/rules/{rule_file.name}; edit that file, not this one.\n"
                       + yaml.dump(manifest, Dumper=_BlockDumper, sort_keys=False, width=1000))
    files[EXAMPLE_DASHBOARD] = _dump_json(tenant_dashboard(DashboardTenant("example", "wb-example")))
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=Path, help="tenants.yaml: write one dashboard per tenant")
    parser.add_argument("--out", type=Path, default=Path("dashboards"),
                        help="where --tenants writes the dashboards (default: ./dashboards)")
    args = parser.parse_args(argv)
    if args.tenants:
        if not args.tenants.is_file():
            print(f"build.py: --tenants {args.tenants} not found", file=sys.stderr)
            return 2
        args.out.mkdir(parents=True, exist_ok=True)
        for tenant in read_tenants(args.tenants):
            (args.out / f"{tenant.name}.json").write_text(_dump_json(tenant_dashboard(tenant)))
            print(f"wrote {args.out / (tenant.name + '.json')}")
        return 0
    for path, content in generated_files().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        print(f"wrote {path.relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
