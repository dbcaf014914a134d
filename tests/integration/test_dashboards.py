"""Every panel target of the Prometheus-flavour dashboards, run against a real VictoriaMetrics.

Grafana's macros and variables are substituted the way Grafana does before
it sends a query: $__interval and $__rate_interval become durations,
$fingerprint a relay the network has.
"""

import json
import re
import time

import pytest
import requests

from agent.dashboards.render import OUTPUT
from agent.dashboards.spec import DASHBOARDS
from tests.integration.conftest import BACKFILL_TIME, backfill_real_documents

pytestmark = [pytest.mark.integration, pytest.mark.slow]
#: Written only by the daemon (`run`), not by `once`; or filtered to problems ("> 0") a healthy network lacks.
MAY_BE_EMPTY = re.compile(r"allium_agent_|> 0$")
MAY_BE_EMPTY_INFLUXQL = re.compile(r'"allium_agent(_alert_quality)?"|"anomalous" > 0')


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
            .replace("${fingerprint}", fingerprint).replace("$fingerprint", fingerprint))


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
            assert MAY_BE_EMPTY.search(target["expr"]), f"{board} / {title}: no data for {target['expr']}"
            empty.append(f"{board} / {title}")
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
        answer = requests.get(f"{victoria.url}/api/v1/query", params={"query": rule.expr}, timeout=10).json()
        assert answer["status"] == "success", f"{rule.name}: {answer.get('error')}"


def influx_substitute(query: str, fingerprint: str) -> str:
    """What Grafana's InfluxDB datasource sends for a 24-hour dashboard at a 10 s interval."""
    return (query.replace("$timeFilter", "time > now() - 24h").replace("$__interval", "10s")
            .replace("${fingerprint}", fingerprint).replace("$fingerprint", fingerprint))


def test_every_influxdb_panel_target_answers(tor_network, tmp_path):
    """The same periods, written by the agent to its outbox and loaded into InfluxDB through /write."""

    import yaml

    from agent.config.loader import load_config
    from agent.store.store import Store
    from agent.testnet import network as testnet
    from tests.integration.commands import agent
    from tests.integration.influx import InfluxDB

    config = yaml.safe_load((tor_network.directory / testnet.AGENT_CONFIG).read_text())
    config.update({"state_dir": str(tmp_path / "state")})  # no store.url: the points wait in the outbox
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    for _ in range(3):
        assert agent("once", "--config", path, timeout=60).returncode == 0
        time.sleep(10)
    backfill_real_documents(path)
    store = Store.from_config(load_config(path, environ={}))
    influx = InfluxDB(tmp_path / "influxdb").start()
    try:
        for record in store.outbox.pending():
            influx.write(record.lines)
        windows = {"private network": "time > now() - 24h",
                   "backfill": f"time >= {BACKFILL_TIME - 7200}s AND time <= {BACKFILL_TIME}s"}
        queries = {moment: f'SELECT last("weight") FROM "tor_relay" WHERE {window} GROUP BY "fingerprint"'
                   for moment, window in windows.items()}
        fingerprints = {moment: influx.query(query)["results"][0]["series"][0]["tags"]["fingerprint"]
                        for moment, query in queries.items()}
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
                assert MAY_BE_EMPTY_INFLUXQL.search(target["query"]), \
                    f"{board} / {title}: no data for {target['query']}"
                empty.append(f"{board} / {title}")
        marked = {}
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
    finally:
        influx.stop()
        store.close()
