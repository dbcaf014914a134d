"""Every ready-made query in the README, run with `allium-agent query` against a real VictoriaMetrics.

The VictoriaMetrics is filled by the agent itself: `once` against the private
Tor network, a few periods in a row. Each query must parse and, unless the
README marks it "may be empty", return data.
"""

import json
import re
from pathlib import Path

import pytest

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


def test_every_readme_query_runs_and_answers(filled_victoria):
    empty_allowed_but_seen = []
    for question, promql, may_be_empty in readme_queries():
        answer = agent("query", "--config", filled_victoria, "--format", "json", promql, timeout=30)
        assert answer.returncode == 0, f"{question}: {answer.stderr}"
        result = json.loads(answer.stdout)["result"]
        if not may_be_empty:
            assert result, f"{question}: no data for {promql}"
        elif result:
            empty_allowed_but_seen.append(question)
    answering = [query for query in readme_queries() if not query[2]]
    for question, promql, _ in answering[::4][:5]:  # five of them, as a person would run them
        table = agent("query", "--config", filled_victoria, promql, timeout=30)
        print(f"\n# {question}\n$ allium-agent query '{promql}'\n{table.stdout}", end="")
    print("may-be-empty queries that had data:", empty_allowed_but_seen)


def test_range_csv_and_bad_queries(filled_victoria):
    ranged = agent("query", "--config", filled_victoria, "--range", "5m", "--step", "10s", "--format", "csv",
                   "tor_network_relays", timeout=30)
    assert ranged.returncode == 0
    rows = ranged.stdout.splitlines()
    assert rows[0] == "__name__,time,value" and len(rows) >= 4
    bad = agent("query", "--config", filled_victoria, "sum(tor_network_relays", timeout=30)
    assert bad.returncode == 1 and "query failed:" in bad.stderr
    assert agent("query", "--config", filled_victoria, "--range", "7 days", "x", timeout=30).returncode == 2
