"""The Prometheus rules: they load (`promtool check rules`), their unit tests pass (`promtool test
rules`: the GPU-idle alert fires after 2 h under 20 %, not at 1 h 59 min, not at 25 %), the unit
tests would catch a changed threshold or duration, and the PrometheusRule manifests carry exactly
the rules that were tested.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from workbench_contract import labels

RULE_FILES = sorted((Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "prometheus"
                     / "rules").glob("*.rules.yaml"))
TEST_FILES = sorted(RULE_FILES[0].parent.parent.joinpath("tests").glob("*.test.yaml"))


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=[p.name for p in RULE_FILES])
def test_rules_load(promtool: str, rule_file: Path) -> None:
    result = _promtool(promtool, "check", "rules", str(rule_file))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("test_file", TEST_FILES, ids=[p.name for p in TEST_FILES])
def test_rule_unit_tests_pass(promtool: str, test_file: Path) -> None:
    result = _promtool(promtool, "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("old", "new"),
    [("< 20\n", "< 30\n"), ("for: 2h", "for: 1h"), ("for: 2h", "for: 3h"),
     ('{component="notebook"}', '{component="job-worker"}')],
    ids=["threshold-30", "for-1h", "for-3h", "wrong-component"],
)
def test_unit_tests_catch_a_changed_alert(promtool: str, monitoring: Path, tmp_path: Path,
                                          old: str, new: str) -> None:
    """Mutate the GPU rules in a copy: the unchanged unit tests must now fail."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "tests").mkdir()
    rules = (monitoring / "prometheus" / "rules" / "workbench-gpu.rules.yaml").read_text()
    assert old in rules
    (tmp_path / "rules" / "workbench-gpu.rules.yaml").write_text(rules.replace(old, new))
    shutil.copy(monitoring / "prometheus" / "tests" / "gpu-idle.test.yaml", tmp_path / "tests")
    result = _promtool(promtool, "test", "rules", str(tmp_path / "tests" / "gpu-idle.test.yaml"))
    assert result.returncode != 0, "the unit tests did not notice: " + result.stdout


def test_manifests_match_the_rule_files(build, monitoring: Path) -> None:
    for path, content in build.generated_files().items():
        if path.suffix != ".yaml":
            continue
        assert path.is_file(), f"{path} missing: run python deploy/monitoring/build.py"
        assert path.read_text() == content, f"{path} is stale: run python deploy/monitoring/build.py"
    for rule_file in RULE_FILES:
        name = rule_file.name.removesuffix(".rules.yaml")
        manifest = yaml.safe_load(
            (monitoring / "kubernetes" / f"{name}.prometheusrule.yaml").read_text())
        assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
        assert manifest["kind"] == "PrometheusRule"
        assert manifest["spec"]["groups"] == yaml.safe_load(rule_file.read_text())["groups"]


def _ksm_label(key: str) -> str:
    # kube-state-metrics turns a pod label key into a Prometheus label name this way.
    return "label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)


def test_rules_join_on_the_labels_the_platform_sets() -> None:
    """The rules and workbench_contract.labels must not drift apart."""
    gpu_rules = (RULE_FILES[0].parent / "workbench-gpu.rules.yaml").read_text()
    for key in (labels.LABEL_TENANT, labels.LABEL_USER, labels.LABEL_JOB, labels.LABEL_SERVER,
                labels.LABEL_COMPONENT):
        assert _ksm_label(key) in gpu_rules, key
    for component in (labels.COMPONENT_NOTEBOOK, labels.COMPONENT_JOB_WORKER):
        assert f'component="{component}"' in gpu_rules


def test_hub_rules_use_metrics_the_hub_exports() -> None:
    from jupyterhub import metrics

    exported = {metric._name for metric in vars(metrics).values()
                if hasattr(metric, "_name") and hasattr(metric, "_type")}
    hub_rules = (RULE_FILES[0].parent / "workbench-hub.rules.yaml").read_text()
    used = set(re.findall(r"\b(jupyterhub_[a-z_]+?)(?:_bucket|_count|_sum)?\{", hub_rules))
    assert used, "no hub metric found in the hub rules"
    assert used <= exported, f"not exported by this JupyterHub: {used - exported}"
