"""Every ready-made query in the README, run with `allium-agent query` against a real VictoriaMetrics.

The VictoriaMetrics is filled by the agent itself: `once` against the private
Tor network, a few periods in a row. Each query must parse and, unless the
README marks it "may be empty", return data.
"""

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from agent.testnet import network as testnet
from tests.integration.commands import agent

pytestmark = [pytest.mark.integration, pytest.mark.slow]
README = Path(__file__).parents[2] / "README.md"


def readme_queries() -> list[tuple[str, str, bool]]:
    """(question, PromQL, may be empty) from the README's queries section."""
    text = README.read_text()
    section = text[text.index("<!-- queries:begin -->"):text.index("<!-- queries:end -->")]
    found = re.findall(r"^\d+\. \*\*(.+?)\*\*( \*\(may be empty\)\*)?\n\s+`(.+)`$", section, re.MULTILINE)
    return [(question, promql, bool(empty)) for question, empty, promql in found]


def test_the_readme_has_at_least_twenty_queries():
    assert len(readme_queries()) >= 20


@pytest.fixture
def filled(tor_network, victoria, tmp_path):
    config = yaml.safe_load((tor_network.directory / testnet.AGENT_CONFIG).read_text())
    config.update({"state_dir": str(tmp_path / "state"), "store": {"url": victoria.url},
                   "query": {"url": victoria.url}})
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    for _ in range(3):  # three periods: churn and *_over_time have something to work on
        assert agent("once", "--config", path, timeout=60).returncode == 0
        time.sleep(10)
    victoria.settled_export("tor_network_relays", 3)
    return path


def test_every_readme_query_runs_and_answers(filled):
    empty_allowed_but_seen = []
    for question, promql, may_be_empty in readme_queries():
        answer = agent("query", "--config", filled, "--format", "json", promql, timeout=30)
        assert answer.returncode == 0, f"{question}: {answer.stderr}"
        result = json.loads(answer.stdout)["result"]
        if not may_be_empty:
            assert result, f"{question}: no data for {promql}"
        elif result:
            empty_allowed_but_seen.append(question)
    table = agent("query", "--config", filled, "sort_desc(tor_network_flag_relays)", timeout=30)
    print(f"\n$ allium-agent query 'sort_desc(tor_network_flag_relays)'\n{table.stdout}")
    print("may-be-empty queries that had data:", empty_allowed_but_seen)


def test_range_csv_and_bad_queries(filled):
    ranged = agent("query", "--config", filled, "--range", "5m", "--step", "10s", "--format", "csv",
                   "tor_network_relays", timeout=30)
    assert ranged.returncode == 0
    rows = ranged.stdout.splitlines()
    assert rows[0] == "__name__,time,value" and len(rows) >= 4
    bad = agent("query", "--config", filled, "sum(tor_network_relays", timeout=30)
    assert bad.returncode == 1 and "query failed:" in bad.stderr
    assert agent("query", "--config", filled, "--range", "7 days", "x", timeout=30).returncode == 2
