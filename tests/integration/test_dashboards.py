"""Every panel target of the dashboards, run against a real VictoriaMetrics (PromQL) and a real InfluxDB 1.x
(InfluxQL); every alert rule, both Grafana flavours, evaluated on both stores holding the same periods.

Grafana's macros and variables are substituted the way Grafana does before
it sends a query: $__interval and $__rate_interval become durations,
$fingerprint a relay the network has, $role a role.
"""

import json
import math
import re
import time
from dataclasses import dataclass

import pytest
import requests

from agent.dashboards.render import OUTPUT
from agent.dashboards.spec import DASHBOARDS
from tests.integration.conftest import BACKFILL_TIME, backfill_real_documents

pytestmark = [pytest.mark.integration, pytest.mark.slow]
#: What a panel target may answer empty in these fills (three periods of the private network and two backfilled
#: hours), and why: pattern -> reason. Every empty target is printed with its reason; any other fails.
MAY_BE_EMPTY_REASONS = {
    r"allium_agent_": "written by the daemon (`run`), not by `once`",
    r"> 0$": "a problem filter: a healthy network has none",
    r"tor_forecast_": "forecasts start once a UTC day of live periods has closed (docs/forecast.md); the fills span "
                      "minutes, and backfilled periods are not fed to the forecaster",
    r"tor_relay_guard_(wfu|tk)_margin": "from the votes' stats lines against flag-thresholds: the private network's "
                                        "votes say guard-tk=0 (no time-known threshold) and the backfill has no votes",
    r"tor_relay_dropout_risk": "the at-risk learner writes after a week of live periods (docs/relays.md)",
    r"tor_operator_family_(not_mutual|cert_invalid)": "the private network's relays declare no family and have no "
                                                     "contact line",
    r"tor_aroi_(operator|champion)_": "verified operators need a proof listing their relays: the private network's "
                                      "relays have no contact line and backfill checks no proofs "
                                      "(tests/integration/test_aroi_dashboard.py fills them)",
    r"tor_aroi_(os|hoster)_": "CIISS os: and hoster: claims: the private network's relays have no such contact line "
                              "(tests/integration/test_aroi_dashboard.py fills them)",
}
MAY_BE_EMPTY_INFLUXQL_REASONS = {
    r'"allium_agent(_alert_quality)?"': MAY_BE_EMPTY_REASONS[r"allium_agent_"],
    r'"anomalous" > 0': MAY_BE_EMPTY_REASONS[r"> 0$"],
    r'FROM "tor_forecast"': MAY_BE_EMPTY_REASONS[r"tor_forecast_"],
    r'"guard_(wfu|tk)_margin"': MAY_BE_EMPTY_REASONS[r"tor_relay_guard_(wfu|tk)_margin"],
    r'"dropout_risk"': MAY_BE_EMPTY_REASONS[r"tor_relay_dropout_risk"],
    r'"family_(not_mutual|cert_invalid)"': MAY_BE_EMPTY_REASONS[r"tor_operator_family_(not_mutual|cert_invalid)"],
    r'FROM "tor_aroi_(operator|champion)"': MAY_BE_EMPTY_REASONS[r"tor_aroi_(operator|champion)_"],
    r'FROM "tor_aroi_(os|hoster)"': MAY_BE_EMPTY_REASONS[r"tor_aroi_(os|hoster)_"],
}
MAY_BE_EMPTY = re.compile("|".join(MAY_BE_EMPTY_REASONS))
MAY_BE_EMPTY_INFLUXQL = re.compile("|".join(MAY_BE_EMPTY_INFLUXQL_REASONS))
#: What Grafana sends for the role variable (its first value, what the dashboard opens with).
ROLE = "guard"


def empty_reason(query: str, reasons: dict[str, str]) -> str | None:
    return next((reason for pattern, reason in reasons.items() if re.search(pattern, query)), None)


def targets(flavour: str):
    for path in sorted((OUTPUT / flavour).glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield path.stem, panel["title"], target


def annotations(flavour: str):
    """The datasource annotation queries (not Grafana's built-in one) of every dashboard of the flavour."""
    for path in sorted((OUTPUT / flavour).glob("*.json")):
        for annotation in json.loads(path.read_text())["annotations"]["list"]:
            if not annotation.get("builtIn"):
                yield path.stem, annotation


def grafana_substitute(query: str, fingerprint: str) -> str:
    return (query.replace("$__rate_interval", "40s").replace("$__interval", "10s")
            .replace("${fingerprint}", fingerprint).replace("$fingerprint", fingerprint)
            .replace("${role}", ROLE).replace("$role", ROLE))


def test_every_prometheus_panel_target_answers(filled_victoria, victoria):
    """Each target at two moments: now (the private network) and inside the backfilled real period."""
    live = victoria.query("tor_relay_weight")[0]["metric"]["fingerprint"]
    real = victoria.query("tor_relay_weight", at=BACKFILL_TIME)[0]["metric"]["fingerprint"]
    executed, with_data, empty = 0, {"private network": 0, "backfill": 0}, []
    for board, title, target in targets("prometheus"):
        answered = False
        for moment, at, fingerprint in (("private network", None, live), ("backfill", BACKFILL_TIME, real)):
            expr = grafana_substitute(target["expr"], fingerprint)
            params = {"query": expr, **({"time": at} if at else {})}
            answer = requests.get(f"{victoria.url}/api/v1/query", params=params, timeout=10).json()
            assert answer["status"] == "success", f"{board} / {title}: {answer.get('error')}"
            executed += 1
            if answer["data"]["result"]:
                with_data[moment] += 1
                answered = True
        if not answered:
            reason = empty_reason(target["expr"], MAY_BE_EMPTY_REASONS)
            assert reason, f"{board} / {title}: no data for {target['expr']}"
            empty.append(f"{board} / {title} / {target['refId']} ({reason})")
    print(f"\n{executed} PromQL panel queries executed on VictoriaMetrics; with data: {with_data}; "
          f"empty as allowed: {empty}")
    assert with_data["backfill"] >= 25


def test_every_prometheus_annotation_query_answers(filled_victoria, victoria):
    """Annotations are range queries at the annotation's interval; at least one has a finding to mark."""
    executed, marked = 0, {}
    for board, annotation in annotations("prometheus"):
        title_label = annotation["titleFormat"].strip("{}")
        now = int(time.time())
        for start, end in ((BACKFILL_TIME - 86400, BACKFILL_TIME), (now - 3600, now)):
            answer = requests.get(f"{victoria.url}/api/v1/query_range", timeout=10, params={
                "query": annotation["target"]["expr"], "start": start, "end": end, "step": "60s"}).json()
            assert answer["status"] == "success", f"{board} / {annotation['name']}: {answer.get('error')}"
            executed += 1
            for series in answer["data"]["result"]:
                marked.setdefault(annotation["name"], set()).add(series["metric"][title_label])  # region title
    print(f"\n{executed} PromQL annotation queries executed; regions: {marked}")
    assert executed == 2 * sum(len(board.annotations) for board in DASHBOARDS) and marked


def test_every_alert_rule_expression_runs(filled_victoria, victoria):
    from agent.dashboards.alerting import RULES

    for rule in RULES:
        for expr in (rule.expr, rule.measure):
            answer = requests.get(f"{victoria.url}/api/v1/query", params={"query": expr}, timeout=10).json()
            assert answer["status"] == "success", f"{rule.name}: {answer.get('error')}"


def influx_substitute(query: str, fingerprint: str) -> str:
    """What Grafana's InfluxDB datasource sends for a 24-hour dashboard at a 10 s interval."""
    return (query.replace("$timeFilter", "time > now() - 24h").replace("$__interval", "10s")
            .replace("${fingerprint}", fingerprint).replace("$fingerprint", fingerprint)
            .replace("${role}", ROLE).replace("$role", ROLE))


@dataclass
class Stores:
    """The same periods in a real InfluxDB 1.x and a real VictoriaMetrics."""

    influx: object  # tests.integration.influx.InfluxDB
    victoria: object  # tests.integration.victoria.VictoriaMetrics
    windows: dict[str, str]  # moment -> InfluxQL time condition of the dashboard window
    fingerprints: dict[str, str]  # moment -> a relay of that data set


def write_influx(influx, lines: list[str], batch: int = 5000) -> None:
    """Line protocol into InfluxDB in batches, again on its write timeout (a loaded machine; rewriting points with the
    same series and time is idempotent)."""
    for start in range(0, len(lines), batch):
        for attempt in range(4):
            answer = requests.post(f"{influx.url}/write", params={"db": "tor", "precision": "s"},
                                   data="\n".join(lines[start:start + batch]).encode(), timeout=60)
            if answer.status_code == 204:
                break
            assert "timeout" in answer.text and attempt < 3, answer.text
            time.sleep(2)


def write_victoria(victoria, lines: list[str]) -> None:
    answer = requests.post(f"{victoria.url}/write", params={"precision": "s"}, data="\n".join(lines).encode(),
                           timeout=120)
    assert answer.status_code == 204, answer.text


@pytest.fixture(scope="module")
def stores(tor_network, tmp_path_factory):
    """The agent's periods (three of the private network, the two backfilled hours), written by the agent to its
    outbox and loaded into a real InfluxDB 1.x through /write and into a real VictoriaMetrics; both stopped by PID."""
    import yaml

    from agent.config.loader import load_config
    from agent.store.store import Store
    from agent.testnet import network as testnet
    from tests.integration.commands import agent
    from tests.integration.influx import InfluxDB
    from tests.integration.victoria import VictoriaMetrics

    directory = tmp_path_factory.mktemp("influx")
    config = yaml.safe_load((tor_network.directory / testnet.AGENT_CONFIG).read_text())
    # No store (neither a url nor the embedded one): the points wait in the outbox.
    config.update({"state_dir": str(directory / "state"), "store": {"embedded": False}})
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    for _ in range(3):
        assert agent("once", "--config", path, timeout=60).returncode == 0
        time.sleep(10)
    backfill_real_documents(path)
    store = Store.from_config(load_config(path, environ={}))
    lines = [line for record in store.outbox.pending() for line in record.lines if line.strip()]
    store.close()
    influx = InfluxDB(directory / "influxdb").start()
    victoria = VictoriaMetrics(directory / "vmdata").start()
    try:
        write_influx(influx, lines)
        write_victoria(victoria, lines)
        victoria.settled_export("tor_network_relays", 3 + 2)
        windows = {"private network": "time > now() - 24h",
                   "backfill": f"time >= {BACKFILL_TIME - 7200}s AND time <= {BACKFILL_TIME}s"}
        queries = {moment: f'SELECT last("weight") FROM "tor_relay" WHERE {window} GROUP BY "fingerprint"'
                   for moment, window in windows.items()}
        fingerprints = {moment: influx.query(query)["results"][0]["series"][0]["tags"]["fingerprint"]
                        for moment, query in queries.items()}
        yield Stores(influx, victoria, windows, fingerprints)
    finally:
        victoria.stop()
        influx.stop()


def test_every_influxdb_panel_target_answers(stores):
    """The same periods, written by the agent to its outbox and loaded into InfluxDB through /write."""
    influx, windows, fingerprints = stores.influx, stores.windows, stores.fingerprints
    executed, with_data, empty = 0, {moment: 0 for moment in windows}, []
    for board, title, target in targets("influxdb"):
        answered = False
        for moment, window in windows.items():
            query = influx_substitute(target["query"], fingerprints[moment]).replace("time > now() - 24h", window)
            result = influx.query(query)["results"][0]
            assert "error" not in result, f"{board} / {title}: {result['error']} in {query}"
            executed += 1
            if result.get("series"):
                with_data[moment] += 1
                answered = True
        if not answered:
            reason = empty_reason(target["query"], MAY_BE_EMPTY_INFLUXQL_REASONS)
            assert reason, f"{board} / {title}: no data for {target['query']}"
            empty.append(f"{board} / {title} / {target['refId']} ({reason})")
    marked: dict[str, set] = {}
    for board, annotation in annotations("influxdb"):
        for window in windows.values():
            query = influx_substitute(annotation["query"], "").replace("time > now() - 24h", window)
            result = influx.query(query)["results"][0]
            assert "error" not in result, f"{board} / {annotation['name']}: {result['error']}"
            executed += 1
            for series in result.get("series", []):
                title = series["columns"].index(annotation["titleColumn"])
                marked.setdefault(annotation["name"], set()).update(row[title] for row in series["values"])
    assert marked, "no annotation query marked a finding"
    version = requests.get(f"{influx.url}/ping", timeout=5).headers.get("X-Influxdb-Version")
    print(f"\n{executed} InfluxQL panel and annotation queries executed on InfluxDB {version}; "
          f"with data: {with_data}; empty as allowed: {empty}; annotation marks: {marked}")
    assert with_data["backfill"] >= 25


# --- the alert rules: both Grafana flavours, evaluated as Grafana does --------------------------------------------

#: A rule's InfluxQL window, `time > now() - 70m`: evaluated at a moment, it is that moment's window.
_RECENT = re.compile(r"time > now\(\) - (\w+)")


def influx_at(query: str, at: int) -> str:
    """The InfluxQL rule query as InfluxDB answers it at ``at`` (unix seconds) instead of now."""
    substituted = _RECENT.sub(lambda match: f"time > {at}s - {match.group(1)} AND time <= {at}s", query)
    assert "now()" not in substituted, query
    return substituted


def evaluate_promql(victoria, expr: str, at: int) -> dict[frozenset, float]:
    """An instant PromQL query as Grafana's reduce (last) sees it: {labels: value} (metric names dropped)."""
    answer = requests.get(f"{victoria.url}/api/v1/query", params={"query": expr, "time": at}, timeout=30).json()
    assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
    return {frozenset((k, v) for k, v in item["metric"].items() if k != "__name__"): float(item["value"][1])
            for item in answer["data"]["result"]}


def evaluate_influxql(influx, query: str, at: int) -> dict[frozenset, float]:
    """An InfluxQL rule query reduced as Grafana's reduce (last) does: each series' last value that is not null."""
    result = influx.query(influx_at(query, at))["results"][0]
    assert "error" not in result, f"{result['error']} in {influx_at(query, at)}"
    reduced = {}
    for series in result.get("series", []):
        values = [row[1] for row in series["values"] if row[1] is not None]
        if values:
            reduced[frozenset(series.get("tags", {}).items())] = float(values[-1])
    return reduced


def firing(values: dict[frozenset, float], evaluator: tuple[str, float]) -> set[frozenset]:
    """Grafana's threshold expression over the reduced values."""
    kind, threshold = evaluator
    return {labels for labels, value in values.items()
            if (value > threshold if kind == "gt" else value < threshold)}


def projected(labels: set[frozenset], keys: set[str]) -> set[frozenset]:
    """PromQL label sets cut to the keys InfluxQL groups by (PromQL keeps every label of max_over_time and the like)."""
    return {frozenset((k, v) for k, v in item if k in keys) for item in labels}


@dataclass
class Evaluated:
    """One rule at one moment: the series each flavour measured and those it fires for."""

    promql: dict[frozenset, float]
    influxql: dict[frozenset, float]
    promql_fires: set[frozenset]
    influxql_fires: set[frozenset]


def compare_flavours(stores, moments: dict[str, int]) -> dict[str, dict[str, Evaluated]]:
    """rule -> moment -> both flavours' evaluation, asserting what must agree on the way: the Prometheus rule fires
    exactly where Grafana's PromQL condition does; the InfluxQL condition fires for the same series; where both
    measure the same quantity, both measure the same series with the same values."""
    from agent.dashboards.alerting import RULES

    seen: dict[str, dict[str, Evaluated]] = {}
    for rule in RULES:
        for moment, at in moments.items():
            what = f"{rule.name} at {moment}"
            measured = evaluate_promql(stores.victoria, rule.promql.query, at)
            fires = firing(measured, rule.promql.evaluator)
            assert fires == set(evaluate_promql(stores.victoria, rule.expr, at)), what
            influx_measured = evaluate_influxql(stores.influx, rule.influxql.query, at)
            influx_fires = firing(influx_measured, rule.influxql.evaluator)
            keys = {key for labels in influx_measured for key, _ in labels}
            assert projected(fires, keys) == influx_fires, f"{what}: PromQL {fires}, InfluxQL {influx_fires}"
            if not rule.influxql.description:  # the same quantity (AlliumAgentStale counts records instead)
                promql_values = {frozenset((k, v) for k, v in labels if k in keys): value
                                 for labels, value in measured.items()}
                assert set(promql_values) == set(influx_measured), f"{what}: {promql_values} != {influx_measured}"
                assert all(math.isclose(promql_values[labels], value, rel_tol=1e-9, abs_tol=1e-9)
                           for labels, value in influx_measured.items()), f"{what}: {promql_values} {influx_measured}"
            seen.setdefault(rule.name, {})[moment] = Evaluated(measured, influx_measured, fires, influx_fires)
    return seen


def test_every_alert_rule_answers_alike_in_influxql_and_promql_on_the_agents_periods(stores):
    """Both Grafana flavours of each rule on the same real periods: InfluxDB answers every InfluxQL query, and each
    fires for the same series as PromQL with the same values, at the private network's moment and the backfill's."""
    seen = compare_flavours(stores, {"private network": int(time.time()), "backfill": BACKFILL_TIME})
    print("\nseries measured and firing, PromQL / InfluxQL:", {
        name: {moment: f"{len(e.promql)}/{len(e.influxql)} measured, {len(e.promql_fires)}/{len(e.influxql_fires)} "
                       "firing" for moment, e in by.items()} for name, by in seen.items()})
    # Not vacuous: what a healthy private network has (findings per check, every authority's answers, the consensus
    # ages) is measured alike; the agent's own series come only from `run`, anomalies only once a baseline judged.
    for name in ("TorCriticalFinding", "TorWarningFinding", "TorAuthorityNotAnswering", "TorConsensusOld"):
        assert seen[name]["private network"].influxql, name


#: A moment with no agent data within a week of it (2023-01-01 00:00 UTC), for the rules' synthetic periods.
SYNTHETIC = 1672531200
SYNTHETIC_LINES = [f"{line} {SYNTHETIC - 600}" for line in (
    "tor_health,check=TorSigned,severity=critical active=2",
    "tor_health,check=TorQuiet,severity=critical active=0",
    "tor_health,check=TorSlow,severity=warning active=1",
    "tor_authority_fetch,authority=dead,document=consensus,vantage=v answered=0",
    "tor_authority_fetch,authority=alive,document=consensus,vantage=v answered=1",
    "tor_authority_consensus,authority=dead,flavour=ns,vantage=v age_seconds=20000",
    "tor_authority_consensus,authority=alive,flavour=ns,vantage=v age_seconds=15000",
    "tor_anomaly,detector=baseline,series=relays anomalous=1",
    "tor_anomaly,detector=baseline,series=exits anomalous=0",
)] + [f"allium_agent,vantage=v last_success_seconds={SYNTHETIC - 3 * 3600 + 60},deliveries_waiting=4 "
      f"{SYNTHETIC - 3 * 3600}"]


def test_every_alert_rule_fires_alike_in_influxql_and_promql(stores):
    """Periods written to both stores in which each rule has something to fire on: the agent's last record 3 h before
    the moment (AlliumAgentStale fires), and 30 minutes after that record (AlliumAgentDeliveriesStuck fires, Stale
    not yet)."""
    write_influx(stores.influx, SYNTHETIC_LINES)
    write_victoria(stores.victoria, SYNTHETIC_LINES)
    stores.victoria.settled_query("tor_health_active", SYNTHETIC)
    late, early = SYNTHETIC, SYNTHETIC - 3 * 3600 + 1800
    seen = compare_flavours(stores, {"late": late, "early": early})
    expected = {"TorCriticalFinding": [{"check": "TorSigned"}], "TorWarningFinding": [{"check": "TorSlow"}],
                "TorAuthorityNotAnswering": [{"authority": "dead", "vantage": "v"}], "TorConsensusOld": [{}],
                "TorNetworkAnomaly": [{"series": "relays"}], "AlliumAgentStale": [{}], "AlliumAgentDeliveriesStuck": []}
    for name, by in seen.items():
        late = by["late"]
        assert late.influxql_fires == {frozenset(labels.items()) for labels in expected[name]}, (name, late)
        assert len(late.promql_fires) == len(expected[name]), (name, late)
    assert seen["AlliumAgentDeliveriesStuck"]["early"].influxql_fires == {frozenset()}
    assert not seen["AlliumAgentStale"]["early"].influxql_fires and seen["AlliumAgentStale"]["early"].influxql
