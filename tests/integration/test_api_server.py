"""The REST API under its real waitress server on 127.0.0.1, over a real VictoriaMetrics and state.

The store and state hold two periods the agent fetched with ``once`` from
the private Tor network (authorities, votes, fetches, relays), as the daemon
would have stored them; the answers are compared with what the store and the
state hold. Then schemathesis runs against /api/v1/openapi.json, bounded
(25 examples per operation, a fixed seed), with every check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests
import yaml

from agent.config.loader import load_config
from agent.pipeline.state import State
from agent.testnet import network as testnet
from agent.testnet.network import _free_ports
from agent.web.apikeys import KeyStore
from agent.web.server import WebServer
from agent.web.settings import ApiConfig
from tests.integration.commands import agent
from tests.integration.victoria import VictoriaMetrics

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TIMEOUT = 30


class Served:
    def __init__(self, base: str, key: str, url: str, state_dir: Path, config: Path):
        self.base, self.key, self.store_url, self.state_dir, self.config = base, key, url, state_dir, config

    def get(self, path: str, key: bool = True, **params) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.key}"} if key else {}
        return requests.get(self.base + path, params=params, headers=headers, timeout=TIMEOUT)

    def store(self, promql: str) -> dict[str, float]:
        """fingerprint/authority/'' -> value of each series of an instant query at now."""
        answer = requests.get(f"{self.store_url}/api/v1/query", params={"query": promql, "max_lookback": "4200s"},
                              timeout=TIMEOUT).json()["data"]["result"]
        return {item["metric"].get("fingerprint", item["metric"].get("authority", "")): float(item["value"][1])
                for item in answer}


@pytest.fixture(scope="module")
def served(tor_network, tmp_path_factory):
    directory = tmp_path_factory.mktemp("api")
    server = VictoriaMetrics(directory / "vmdata").start()
    web = None
    try:
        [port] = _free_ports(1)
        config = yaml.safe_load((tor_network.directory / testnet.AGENT_CONFIG).read_text())
        config.update({"state_dir": str(directory / "state"), "store": {"url": server.url},
                       "query": {"url": server.url}, "alerts": {"public_url": f"http://127.0.0.1:{port}"},
                       "subscriptions": {"listen": f"127.0.0.1:{port}"}})
        path = directory / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        for index in range(2):
            done = agent("once", "--config", path, timeout=90)
            assert done.returncode == 0, done.stderr
            if index == 0:
                time.sleep(tor_network.interval_seconds)
        server.settled_export("tor_network_relays", 2)
        server.settled_query("tor_relay_weight", time.time())
        state = State(directory / "state")
        newest = state.db.execute("SELECT MAX(valid_after) FROM period_relays").fetchone()[0]
        # As the daemon records a period, with the live network's hour (the private network's 10 s would make
        # /healthz stale 20 s later, while schemathesis runs; staleness is tests/unit/test_api.py's).
        state.record_processed(newest, 3600, int(time.time()))
        _, key = KeyStore(state.db).create("tests", ("read",), int(time.time()))
        state.close()
        settings = replace(ApiConfig.defaults(), rate_limit="100000 per minute", key_rate_limit="100000 per minute")
        web = WebServer(load_config(path, environ={}), environ={}, api=settings).start()
        yield Served(f"http://127.0.0.1:{port}", key, server.url, directory / "state", path)
    finally:
        if web is not None:
            web.stop()
        server.stop()


def newest_relays(state_dir: Path) -> dict[str, frozenset[str]]:
    state = State(state_dir, read_only=True)
    try:
        return state.relays_before(2**62) or {}
    finally:
        state.close()


def test_network_gives_the_stores_figures_without_a_key(served):
    answer = served.get("/api/v1/network", key=False)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["figures"]["relays"] == served.store("tor_network_relays")[""]
    assert body["flags"]["Running"] == served.store('tor_network_flag_relays{flag="Running"}')[""]
    assert body["time"] is not None and abs(time.time() - body["time"]) < 600


def test_relays_pages_through_the_newest_period_with_the_stores_weights(served):
    relays = newest_relays(served.state_dir)
    weights = served.store("tor_relay_weight")
    seen, cursor = [], None
    for _ in range(len(relays) + 1):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = served.get("/api/v1/relays", **params).json()
        assert page["total"] == len(relays)
        seen += page["relays"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [item["fingerprint"] for item in seen] == sorted(relays)
    assert all(set(item["flags"]) == relays[item["fingerprint"]] for item in seen)
    assert {item["fingerprint"]: item["weight"] for item in seen} == weights
    assert served.get("/api/v1/relays", key=False).status_code == 401  # costly: a key is needed by default


def test_a_relay_its_series_and_an_unknown_one(served):
    fingerprint = sorted(newest_relays(served.state_dir))[0]
    body = served.get(f"/api/v1/relays/{fingerprint.lower()}").json()
    assert body["fingerprint"] == fingerprint and body["in_consensus"] is True
    assert body["series"]["samples"] >= 2 and body["series"]["in_consensus_share"] == 1
    assert body["series"]["weight_last"] == body["weight"] == served.store("tor_relay_weight")[fingerprint]
    missing = served.get("/api/v1/relays/" + "0" * 40)
    assert missing.status_code == 404 and set(missing.json()) == {"error", "detail"}
    bad = served.get("/api/v1/relays/XYZ")
    assert bad.status_code == 400 and bad.json()["detail"].startswith("fingerprint:")


def test_authorities_are_those_of_the_network_with_their_votes(served, tor_network):
    body = served.get("/api/v1/authorities").json()
    names = {node.name for node in tor_network.authorities}
    assert {item["authority"] for item in body["authorities"]} == names
    voted = served.store("tor_authority_voted")
    for item in body["authorities"]:
        assert item["vote"]["voted"] == voted[item["authority"]]
        assert item["consensus"] and item["fetches"]


def test_health_metrics_and_the_subscription_endpoints_share_the_server(served):
    health = served.get("/healthz", key=False)
    assert health.status_code == 200 and health.json()["healthy"] is True
    metrics = served.get("/metrics", key=False)
    assert "allium_agent_up 1" in metrics.text.splitlines()
    assert requests.get(served.base + "/confirm", params={"token": "x"}, timeout=TIMEOUT).status_code == 200


def test_schemathesis_finds_nothing(served, tmp_path):
    """Every operation, every check, 25 examples each, seed 1; its summary line is printed."""
    command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{served.base}/api/v1/openapi.json",
               "-H", f"Authorization: Bearer {served.key}", "--max-examples", "25", "--seed", "1",
               "--checks", "all", "--workers", "1", "--request-timeout", "20"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=400, cwd=tmp_path,
                          env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"})
    (tmp_path / "schemathesis.log").write_text(done.stdout + done.stderr)
    summary = [line for line in done.stdout.splitlines() if line.startswith("=") and " in " in line]
    print(summary[-1] if summary else done.stdout[-2000:])
    assert done.returncode == 0, done.stdout[-6000:]
