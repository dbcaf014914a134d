"""The alert rules: generated files match the code, promtool and vmalert accept them, promtool's unit tests pass."""

import shutil
import subprocess

import pytest
import yaml

from agent.dashboards.alerting import GRAFANA_DATASOURCE_UID, PROMETHEUS_RULES, RULES, render_all

ROOT = PROMETHEUS_RULES.parents[1]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: ./scripts/install.sh --test installs it")
    return path


def test_rule_files_are_what_the_code_renders():
    for path, content in render_all().items():
        assert path.read_text() == content, f"{path} is stale: python -m agent.dashboards.alerting"


def test_promtool_checks_and_unit_tests_the_rules():
    checked = subprocess.run([tool("promtool"), "check", "rules", str(PROMETHEUS_RULES)],
                             capture_output=True, text=True)
    assert checked.returncode == 0 and f"SUCCESS: {len(RULES)} rules found" in checked.stdout, checked.stdout
    tested = subprocess.run([tool("promtool"), "test", "rules", "allium-rules.test.yml"],
                            cwd=PROMETHEUS_RULES.parent, capture_output=True, text=True)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    unit_tests = yaml.safe_load((PROMETHEUS_RULES.parent / "allium-rules.test.yml").read_text())["tests"]
    tested = {case["alertname"] for group in unit_tests for case in group["alert_rule_test"] if case["exp_alerts"]}
    assert tested == {rule.name for rule in RULES}  # every rule is shown to fire


def test_vmalert_accepts_the_rules():
    result = subprocess.run([tool("vmalert"), "-dryRun", f"-rule={PROMETHEUS_RULES}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_grafana_provisioning_fits_together():
    provisioning = ROOT / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "allium.yml").read_text())["datasources"]
    assert GRAFANA_DATASOURCE_UID in {source["uid"] for source in sources}
    rules = yaml.safe_load((provisioning / "alerting" / "allium-rules.yml").read_text())
    assert rules["apiVersion"] == 1
    for rule in rules["groups"][0]["rules"]:
        assert [query["refId"] for query in rule["data"]] == ["A", "B", "C"] and rule["condition"] == "C"
        assert rule["data"][0]["datasourceUid"] == GRAFANA_DATASOURCE_UID
    alerting = yaml.safe_load((provisioning / "alerting" / "contact-points.yml").read_text())
    receivers = {point["name"] for point in alerting["contactPoints"]}
    policy = alerting["policies"][0]
    assert policy["receiver"] in receivers and {route["receiver"] for route in policy["routes"]} <= receivers
    providers = yaml.safe_load((provisioning / "dashboards" / "allium.yml").read_text())["providers"]
    assert sorted(p["options"]["path"].rsplit("/", 1)[1] for p in providers) == ["influxdb", "prometheus"]
    assert "$__env{ALLIUM_INFLUX_TOKEN}" in (provisioning / "datasources" / "allium.yml").read_text()  # not inline
