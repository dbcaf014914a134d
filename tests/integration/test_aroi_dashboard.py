"""Every target of the AROI dashboard (both flavours) against a real VictoriaMetrics and a real InfluxDB 1.x holding
aroi_points of two real consecutive hours: 10:00 before any proof was checked, 11:00 with a ProofBook verifying
alpha, bravo and thirty single-relay operators (the scenario of tests/unit/test_metrics_aroi.py).

Each answer is held against the points written: the newest period's series and values for PromQL (instant queries
at the dashboard's moment, range queries for the timeseries panels), the last value of each series in the window
for InfluxQL, the top ten values for the leaderboards.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest
import requests

from agent.dashboards.aroi import AROI
from agent.dashboards.render import OUTPUT
from agent.metrics.aroi import CATEGORIES, aroi_points
from agent.model.points import Point
from agent.store.lineprotocol import encode_all
from tests.unit.test_metrics_aroi import World

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOUR10, HOUR11 = 1582970400, 1582974000  # the consensuses' valid-after
AT = HOUR11 + 900  # the dashboard's moment: 10:00 is beyond the 70-minute window, so PromQL sees only 11:00
WINDOW = f"time >= {HOUR10 - 3600}s AND time <= {AT}s"  # the InfluxQL dashboard's $timeFilter
TOP_N = 8


@dataclass
class Filled:
    influx: object  # tests.integration.influx.InfluxDB
    victoria: object  # tests.integration.victoria.VictoriaMetrics
    periods: dict[int, list[Point]]  # valid-after -> the points written for it


@pytest.fixture(scope="module")
def filled(hour10, hour11, descriptors, tmp_path_factory):
    from tests.integration.influx import InfluxDB
    from tests.integration.victoria import VictoriaMetrics

    world = World(hour10, descriptors)
    periods = {HOUR10: aroi_points(world.table_for(hour10), None, TOP_N, HOUR10),  # backfill: not verified
               HOUR11: aroi_points(world.table_for(hour11), world.proofs, TOP_N, HOUR11)}
    lines = encode_all([item for points in periods.values() for item in points])
    directory = tmp_path_factory.mktemp("aroi-stores")
    influx = InfluxDB(directory / "influxdb").start()
    victoria = VictoriaMetrics(directory / "vmdata").start()
    try:
        influx.write(lines)
        answer = requests.post(f"{victoria.url}/write", params={"precision": "s"}, data="\n".join(lines).encode(),
                               timeout=60)
        assert answer.status_code == 204, answer.text
        victoria.settled_export("tor_aroi_verified_relays", 2)
        victoria.settled_query("tor_aroi_champion_score", AT)
        yield Filled(influx, victoria, periods)
    finally:
        victoria.stop()
        influx.stop()


def rendered_targets(flavour: str):
    """(spec series, panel type, target) of every target of the rendered dashboard, matched by title and refId."""
    board = json.loads((OUTPUT / flavour / f"{AROI.uid}.json").read_text())
    panels = {panel.title: panel for panel in AROI.panels}
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            spec = panels[panel["title"]]
            yield spec.series["ABCDEFGHIJKLMNOPQRSTUVWXYZ".index(target["refId"])], panel, target


def written(series, points: list[Point], keys=None) -> dict[frozenset, float]:
    """{labels: value} of the series' field in ``points`` (labels: the point's tags, or only ``keys``)."""
    found = {}
    for item in points:
        if item.measurement == series.measurement and series.field in item.fields \
                and all(item.tags.get(tag) == value for tag, value in series.where):
            labels = item.tags.items() if keys is None else [(k, v) for k, v in item.tags.items() if k in keys]
            found[frozenset(labels)] = item.fields[series.field]
    return found


def prom_instant(victoria, expr: str) -> dict[frozenset, float]:
    answer = requests.get(f"{victoria.url}/api/v1/query", params={"query": expr, "time": AT}, timeout=10).json()
    assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
    return {frozenset((k, v) for k, v in item["metric"].items() if k != "__name__"): float(item["value"][1])
            for item in answer["data"]["result"]}


def prom_range(victoria, expr: str) -> dict[frozenset, dict[int, float]]:
    answer = requests.get(f"{victoria.url}/api/v1/query_range", timeout=10, params={
        "query": expr, "start": HOUR10, "end": AT, "step": "600s"}).json()
    assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
    return {frozenset((k, v) for k, v in item["metric"].items() if k != "__name__"):
            {int(t): float(v) for t, v in item["values"]} for item in answer["data"]["result"]}


def expected_answer(expr: str, newest: dict[frozenset, float]) -> dict[frozenset, float] | tuple[int, dict]:
    """What the expression should answer from the newest period's values: all of them, all as 1 (the wheel), or
    (k, candidates) for a top-k leaderboard (ties at the cut make the exact set ambiguous)."""
    top = re.match(r"topk\((\d+), ", expr)
    if top:
        positive = expr.rstrip(")").endswith("> 0")
        return int(top.group(1)), {labels: value for labels, value in newest.items() if value > 0 or not positive}
    if expr.endswith("* 0 + 1"):
        return dict.fromkeys(newest, 1.0)
    return newest


def test_every_prometheus_target_answers_what_was_written(filled):
    checked = []
    for series, panel, target in rendered_targets("prometheus"):
        what = f"{panel['title']} / {target['refId']}: {target['expr']}"
        got = prom_instant(filled.victoria, target["expr"])
        assert got, f"{what}: no data"
        expected = expected_answer(target["expr"], written(series, filled.periods[HOUR11]))
        if isinstance(expected, tuple):
            k, candidates = expected
            assert len(got) == min(k, len(candidates)), what
            assert sorted(got.values(), reverse=True) == pytest.approx(
                sorted(candidates.values(), reverse=True)[:k]), what
            assert all(candidates[labels] == pytest.approx(value) for labels, value in got.items()), what
        else:
            assert got == pytest.approx(expected), what
        if panel["type"] == "timeseries":  # over time: each period's value at its own moment
            ranges = prom_range(filled.victoria, target["expr"])
            for time, points in filled.periods.items():
                for labels, value in written(series, points).items():
                    assert ranges[labels][time] == pytest.approx(value), f"{what} at {time}"
        checked.append(panel["title"])
    assert len(checked) == sum(len(panel.series) for panel in AROI.panels)


def test_the_prometheus_answers_name_the_scenarios_operators(filled):
    """The plausible figures, spelled out: the wheel names alpha for countries and frontier, the boards rank it."""
    wheel = prom_instant(filled.victoria, "last_over_time(tor_aroi_champion_score[70m]) * 0 + 1")
    champions = {dict(labels)["category"]: dict(labels)["domain"] for labels in wheel}
    assert set(champions) == set(CATEGORIES)
    assert champions["countries"] == champions["frontier"] == "alpha.example"
    outcomes = {dict(labels)["outcome"]: value for labels, value in prom_instant(
        filled.victoria, "last_over_time(tor_aroi_outcome_relays[70m])").items()}
    assert outcomes["verified"] == 4 + 30 and outcomes["not_listed"] == 3 and outcomes["refused"] == 1
    unlisted = prom_instant(filled.victoria, "topk(10, last_over_time(tor_aroi_operator_claimed_unverified[70m]) > 0)")
    assert {dict(labels)["domain"]: value for labels, value in unlisted.items()} == {
        "alpha.example": 2.0, "bravo.example": 2.0}
    before = filled.victoria.query("last_over_time(tor_aroi_outcome_relays[70m])", at=HOUR10 + 60)
    assert {item["metric"]["outcome"]: float(item["value"][1]) for item in before}["verified"] == 0


def influx_answer(influx, query: str) -> tuple[dict[frozenset, float], dict[frozenset, dict[int, float]]]:
    """{labels: the last value that is not null} and {labels: {time: value}}; labels are the GROUP BY tags plus any
    selected tag column (the champions table selects domain beside last("score"))."""
    result = influx.query(query)["results"][0]
    assert "error" not in result, f"{result['error']} in {query}"
    last, rows = {}, {}
    for series in result.get("series", []):
        columns = series["columns"]
        for row in series["values"]:
            labels = frozenset({**series.get("tags", {}), **dict(zip(columns[2:], row[2:]))}.items())
            if row[1] is not None:
                last[labels] = float(row[1])
                rows.setdefault(labels, {})[int(row[0])] = float(row[1])
    return last, rows


def test_every_influxdb_target_answers_what_was_written(filled):
    checked = []
    for series, panel, target in rendered_targets("influxdb"):
        query = target["query"].replace("$timeFilter", WINDOW).replace("$__interval", "10m")
        what = f"{panel['title']} / {target['refId']}: {query}"
        last, rows = influx_answer(filled.influx, query)
        assert last, f"{what}: no data"
        # last() over the window, per GROUP BY group: the newest point that passes the filter (with its tags).
        groups = set(re.findall(r'"(\w+)"', query.partition("GROUP BY")[2]))
        newest: dict[frozenset, tuple[frozenset, float]] = {}
        for time in sorted(filled.periods):
            for labels, value in written(series, filled.periods[time], set(series.by)).items():
                if value > 0 or '"claimed_unverified" > 0' not in query:
                    newest[frozenset(item for item in labels if item[0] in groups)] = (labels, value)
        expected = {labels: 1.0 if "* 0 + 1" in query else value for labels, value in newest.values()}
        assert last == pytest.approx(expected), what
        if panel["type"] == "timeseries":
            for time, points in filled.periods.items():
                for labels, value in written(series, points, set(series.by)).items():
                    assert rows[labels][time] == pytest.approx(value), f"{what} at {time}"
        checked.append(panel["title"])
    assert len(checked) == sum(len(panel.series) for panel in AROI.panels)
