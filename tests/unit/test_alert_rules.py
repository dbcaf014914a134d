"""The alert rules: generated files match the code, promtool and vmalert accept them, promtool's unit tests pass."""

import re
import shutil
import subprocess

import pytest
import yaml

from agent.dashboards.alerting import (
    GRAFANA_DATASOURCE_UID,
    GRAFANA_INFLUXDB_DATASOURCE_UID,
    GRAFANA_INFLUXDB_RULES,
    GRAFANA_RULES,
    PROMETHEUS_RULES,
    RULES,
    render_all,
)

ROOT = PROMETHEUS_RULES.parents[1]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: ./scripts/install.sh --test installs it")
    return path


def test_rule_files_are_what_the_code_renders():
    rendered = render_all()
    assert set(rendered) == {PROMETHEUS_RULES, GRAFANA_RULES, GRAFANA_INFLUXDB_RULES}
    for path, content in rendered.items():
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
    by_uid = {source["uid"]: source for source in sources}
    uids, titles = set(), set()
    for path, uid, kind in ((GRAFANA_RULES, GRAFANA_DATASOURCE_UID, "prometheus"),
                            (GRAFANA_INFLUXDB_RULES, GRAFANA_INFLUXDB_DATASOURCE_UID, "influxdb")):
        assert by_uid[uid]["type"] == kind
        rules = yaml.safe_load(path.read_text())
        assert rules["apiVersion"] == 1
        [group] = rules["groups"]
        assert [rule["title"] for rule in group["rules"]] == [rule.name for rule in RULES]
        titles.add((group["folder"], group["name"]))  # one Grafana may load both files: titles differ by folder
        for rule in group["rules"]:
            assert [query["refId"] for query in rule["data"]] == ["A", "B", "C"] and rule["condition"] == "C"
            assert rule["data"][0]["datasourceUid"] == uid
            assert [query["model"]["type"] for query in rule["data"][1:]] == ["reduce", "threshold"]
            [condition] = rule["data"][2]["model"]["conditions"]
            assert condition["evaluator"]["type"] in ("gt", "lt")
            assert len(rule["uid"]) <= 40 and rule["uid"] not in uids  # Grafana's limit; unique across both files
            uids.add(rule["uid"])
            model = rule["data"][0]["model"]
            if kind == "influxdb":
                # Raw InfluxQL with its own time condition: no Grafana macro, no $NAME that provisioning could expand.
                assert model["rawQuery"] is True and "$" not in model["query"] and "time > now() - " in model["query"]
            # Grafana's $value is a text of every expression's value: the rules read the reduced one.
            assert not re.search(r"\$value\b", rule["annotations"]["description"]), rule["title"]
    assert len(titles) == 2
    alerting = yaml.safe_load((provisioning / "alerting" / "contact-points.yml").read_text())
    receivers = {point["name"] for point in alerting["contactPoints"]}
    policy = alerting["policies"][0]
    assert policy["receiver"] in receivers and {route["receiver"] for route in policy["routes"]} <= receivers
    providers = yaml.safe_load((provisioning / "dashboards" / "allium.yml").read_text())["providers"]
    assert sorted(p["options"]["path"].rsplit("/", 1)[1] for p in providers) == ["influxdb", "prometheus"]
    assert "$__env{ALLIUM_INFLUX_TOKEN}" in (provisioning / "datasources" / "allium.yml").read_text()  # not inline


def test_each_grafana_threshold_is_the_prometheus_rules_comparison():
    """Grafana compares the measure in a threshold expression; the Prometheus rule in PromQL. Both must fire on the
    same values (``answered`` is 0 or 1, so == 0 and < 1 agree; AlliumAgentStale's InfluxQL counts records)."""
    import operator

    comparisons = {">": operator.gt, "==": operator.eq, "<": operator.lt}
    for rule in RULES:
        symbol, number = rule.compare.split(" ", 1)
        threshold = eval(number, {"__builtins__": {}})  # "3 * 3600"
        kind, value = rule.evaluator
        samples = [0, 1] if rule.compare == "== 0" else [threshold - 1, threshold, threshold + 1, 0, 10 * threshold]
        for sample in samples:
            grafana = sample > value if kind == "gt" else sample < value
            assert grafana == comparisons[symbol](sample, threshold), (rule.name, sample)
        assert rule.expr == f"{rule.measure} {rule.compare}"
        if not rule.influxql.description:
            assert rule.influxql.evaluator == rule.evaluator, rule.name  # the same quantity, the same comparison


# --- TorAuthorityNotAnswering on a dead authority's real series ---------------------------------------------------

DOCUMENTS = ("key-certificates", "consensus", "vote", "consensus-microdesc", "bandwidth-file")


def period_records(nickname: str, alive: bool) -> list:
    """One period's fetch records for an authority as agent.loop.collect makes them: all served, or the first
    request (key certificates) refused and the rest not attempted."""
    from datetime import datetime, timezone

    from agent.model.snapshot import DocKind, FetchRecord, Outcome

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    if alive:
        return [FetchRecord(nickname, DocKind(kind), "http://x", now, Outcome.OK, 200, 0.1, 10, 10, 0.0)
                for kind in DOCUMENTS]
    refused = FetchRecord(nickname, DocKind.KEY_CERTIFICATES, "http://x", now, error="connection refused")
    return [refused] + [FetchRecord(nickname, DocKind(kind), "http://x", now, outcome=Outcome.SKIPPED,
                                    error=f"not attempted: {nickname} did not answer the key-certificates request")
                        for kind in DOCUMENTS[1:]]


def fetch_series(alive_by_period: list[bool], nickname: str = "dizum") -> dict[str, str]:
    """promtool input series (name{labels} -> values, '_' where no point) of the answered and ok fields that
    fetch_points writes for one authority alive or dead in each hourly period."""
    from datetime import datetime, timezone

    from agent.metrics.authority import fetch_points
    from agent.model.authorities import default_authorities
    from agent.model.snapshot import Snapshot

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    values: dict[str, list[str]] = {}
    for index, alive in enumerate(alive_by_period):
        snapshot = Snapshot("vp", now, now, list(default_authorities()), {}, period_records(nickname, alive))
        for item in fetch_points(snapshot, index * 3600):
            labels = ", ".join(f'{key}="{value}"' for key, value in item.tags.items())
            for field in ("answered", "ok"):
                series = values.setdefault(f"{item.measurement}_{field}{{{labels}}}", ["_"] * len(alive_by_period))
                series[index] = f"{item.fields[field]:g}"
    return {name: " ".join(period) for name, period in values.items()}


def test_a_dead_authority_writes_zeros_for_what_was_not_attempted():
    """Before: only its refused key-certificate request was written; its consensus series stopped ('1 1 _ _'),
    so TorAuthorityNotAnswering could never fire for it."""
    series = fetch_series([True, True, False, False])
    assert series == {f'tor_authority_fetch_{field}{{authority="dizum", document="{kind}", vantage="vp"}}':
                      "1 1 0 0" for kind in DOCUMENTS for field in ("answered", "ok")}


def test_not_attempted_after_an_answer_is_not_written_as_not_answered():
    """A fetch skipped at the deadline, after its authority answered something, says nothing about the authority."""
    from datetime import datetime, timezone

    from agent.metrics.authority import fetch_points
    from agent.model.authorities import default_authorities
    from agent.model.snapshot import DocKind, FetchRecord, Outcome, Snapshot

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    records = period_records("tor26", True)[:2] + [
        FetchRecord("tor26", DocKind.VOTE, "http://x", now, outcome=Outcome.SKIPPED, error="deadline")]
    points = fetch_points(Snapshot("vp", now, now, list(default_authorities()), {}, records), 0)
    assert [item.tags["document"] for item in points] == ["key-certificates", "consensus"]


def test_the_rule_test_uses_the_dead_authoritys_real_series_and_readme_query_13():
    """The promtool group for the dead authority (run above) holds exactly what fetch_points writes, and its
    PromQL test is README query 13 (a dead authority shows 0)."""
    unit_tests = yaml.safe_load((PROMETHEUS_RULES.parent / "allium-rules.test.yml").read_text())["tests"]
    written = fetch_series([True, True, False, False])
    group = next(group for group in unit_tests if any('authority="dizum"' in s["series"]
                                                      for s in group["input_series"]))
    dizum = {s["series"]: s["values"] for s in group["input_series"] if 'authority="dizum"' in s["series"]}
    assert group["interval"] == "1h" and dizum == written
    fired = [case for case in group["alert_rule_test"] if case["exp_alerts"]]
    assert fired and all(case["exp_alerts"][0]["exp_labels"]["authority"] == "dizum" for case in fired)
    readme = (ROOT / "README.md").read_text()
    query_13 = re.search(r"^13\. \*\*.+\*\*\n\s+`(.+)`$", readme, re.MULTILINE).group(1)
    [expression] = group["promql_expr_test"]
    assert expression["expr"] == query_13
    assert {"labels": '{authority="dizum"}', "value": 0} in expression["exp_samples"]
