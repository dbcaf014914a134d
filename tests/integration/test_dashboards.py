"""Every panel target of the Prometheus-flavour dashboards, run against a real VictoriaMetrics.

Grafana's macros and variables are substituted the way Grafana does before
it sends a query: $__interval and $__rate_interval become durations,
$fingerprint a relay the network has.
"""

import json
import re
from pathlib import Path

import pytest
import requests

from agent.dashboards.render import OUTPUT

pytestmark = [pytest.mark.integration, pytest.mark.slow]
#: Written only by the daemon (`run`), not by `once`; or filtered to problems ("> 0") a healthy network lacks.
MAY_BE_EMPTY = re.compile(r"allium_agent_|> 0$")


def targets(flavour: str):
    for path in sorted((OUTPUT / flavour).glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield path.stem, panel["title"], target


def grafana_substitute(query: str, fingerprint: str) -> str:
    return (query.replace("$__rate_interval", "40s").replace("$__interval", "10s")
            .replace("${fingerprint}", fingerprint).replace("$fingerprint", fingerprint))


def test_every_prometheus_panel_target_answers(filled_victoria, victoria):
    fingerprint = victoria.query("tor_relay_weight")[0]["metric"]["fingerprint"]
    checked, empty = 0, []
    for board, title, target in targets("prometheus"):
        expr = grafana_substitute(target["expr"], fingerprint)
        answer = requests.get(f"{victoria.url}/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", f"{board} / {title}: {answer.get('error')}"
        if not answer["data"]["result"]:
            assert MAY_BE_EMPTY.search(expr), f"{board} / {title}: no data for {expr}"
            empty.append(f"{board} / {title}")
        checked += 1
    print(f"\n{checked} Prometheus panel targets answered; empty as allowed: {empty}")
    assert checked >= 40


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
    import time

    import yaml

    from agent.config import load_config
    from agent.store import Store
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
    store = Store.from_config(load_config(path, environ={}))
    influx = InfluxDB(tmp_path / "influxdb").start()
    try:
        for record in store.outbox.pending():
            influx.write(record.lines)
        fingerprint = influx.query('SHOW TAG VALUES FROM "tor_relay" WITH KEY = "fingerprint"')[
            "results"][0]["series"][0]["values"][0][1]
        checked, empty = 0, []
        for board, title, target in targets("influxdb"):
            query = influx_substitute(target["query"], fingerprint)
            result = influx.query(query)["results"][0]
            assert "error" not in result, f"{board} / {title}: {result['error']} in {query}"
            if not result.get("series"):
                assert "allium_agent" in query or "silenced" in query, f"{board} / {title}: no data for {query}"
                empty.append(f"{board} / {title}")
            checked += 1
        version = requests.get(f"{influx.url}/ping", timeout=5).headers.get("X-Influxdb-Version")
        print(f"\n{checked} InfluxQL panel targets answered by InfluxDB {version}; empty as allowed: {empty}")
        assert checked >= 40
    finally:
        influx.stop()
        store.close()
