"""The per-tenant Grafana dashboard: it passes the dashboard schema, its layout is sound, every
panel's PromQL parses (promtool), it only ever shows its own tenant, and the committed example is
what the builder makes.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

SCHEMA = json.loads((Path(__file__).parent / "grafana-dashboard.schema.json").read_text())
# Grafana's built-in variables, replaced by a value of their kind before promtool parses a query.
GRAFANA_VARIABLES = {"$__range": "6h", "$__rate_interval": "1m", "$__interval": "1m"}


@pytest.fixture
def dashboards(build) -> list[dict]:
    tenants = [build.DashboardTenant("vision", "wb-vision"),
               build.DashboardTenant("classroom", "wb-classroom", idle_below=10)]
    return [build.tenant_dashboard(t) for t in tenants]


def _exprs(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def _promql_parse_problems(promtool: str, exprs: list[str], tmp_path: Path) -> str:
    """promtool's complaints about the expressions (empty when all parse)."""
    rules = []
    for number, expr in enumerate(exprs):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:panel_{number}", "expr": expr})
    path = tmp_path / "panels.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=60)
    return "" if result.returncode == 0 else result.stdout + result.stderr


def test_dashboards_pass_the_schema(dashboards: list[dict], monitoring: Path) -> None:
    example = json.loads((monitoring / "grafana" / "dashboards" / "example.json").read_text())
    for dashboard in [*dashboards, example]:
        jsonschema.validate(dashboard, SCHEMA)


def test_schema_rejects_a_broken_dashboard(dashboards: list[dict]) -> None:
    broken = json.loads(json.dumps(dashboards[0]))
    broken["panels"][0]["gridPos"]["w"] = 30
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMA)


def test_layout_is_sound(dashboards: list[dict]) -> None:
    for dashboard in dashboards:
        ids = [panel["id"] for panel in dashboard["panels"]]
        assert len(ids) == len(set(ids)), "panel ids must be unique"
        cells = set()
        for panel in dashboard["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                    cells.add((x, y))
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs))


def test_dashboard_shows_what_operators_need(dashboards: list[dict]) -> None:
    titles = " | ".join(panel["title"] for panel in dashboards[0]["panels"]).lower()
    for needed in ("gpus in use against quota", "utilisation", "jobs by state", "idle"):
        assert needed in titles


def test_every_panel_query_parses(promtool: str, dashboards: list[dict], tmp_path: Path) -> None:
    for dashboard in dashboards:
        assert _promql_parse_problems(promtool, _exprs(dashboard), tmp_path) == ""


def test_parse_check_catches_a_bad_query(promtool: str, tmp_path: Path) -> None:
    problems = _promql_parse_problems(promtool, ["sum(rate(x[5m])"], tmp_path)
    assert "panel_0" in problems or "parse error" in problems


def test_queries_stay_inside_the_tenant(dashboards: list[dict]) -> None:
    """No query of one tenant's dashboard may read another tenant's series."""
    for dashboard, (tenant, namespace) in zip(dashboards, [("vision", "wb-vision"),
                                                           ("classroom", "wb-classroom")], strict=True):
        for expr in _exprs(dashboard):
            selectors = re.findall(r"[a-zA-Z_:]+\{([^}]*)\}", expr)
            assert selectors, expr
            for selector in selectors:
                assert (f'tenant="{tenant}"' in selector
                        or f'namespace="{namespace}"' in selector), expr
        assert "$tenant" not in json.dumps(dashboard)


def test_idle_threshold_follows_the_tenant_policy(dashboards: list[dict]) -> None:
    assert any("< 10" in expr for expr in _exprs(dashboards[1]))
    assert not any("< 20" in expr for expr in _exprs(dashboards[1]))


def test_committed_example_is_what_the_builder_makes(build) -> None:
    for path, content in build.generated_files().items():
        if path.suffix == ".json":
            assert path.read_text() == content, f"{path} stale: run python deploy/monitoring/build.py"


def test_read_tenants_takes_name_namespace_and_threshold(build, tmp_path: Path) -> None:
    tenants_file = tmp_path / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump({"tenants": [
        {"name": "vision", "namespace": "wb-vision", "groups": ["v"],
         "idle": {"gpu": {"utilisation_below": 15, "for": 7200}}},
        {"name": "edu", "namespace": "wb-edu"},
    ]}))
    tenants = build.read_tenants(tenants_file)
    assert [t.to_dict() for t in tenants] == [
        {"name": "vision", "namespace": "wb-vision", "idle_below": 15.0},
        {"name": "edu", "namespace": "wb-edu", "idle_below": 20.0},
    ]
    assert build.DashboardTenant.from_dict({**tenants[0].to_dict(), "x": 1}) == tenants[0]
    out = tmp_path / "out"
    assert build.main(["--tenants", str(tenants_file), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["edu.json", "vision.json"]
