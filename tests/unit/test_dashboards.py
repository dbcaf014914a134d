"""The dashboards: rendered files match the code, every metric exists, Grafana 11 JSON."""

import json

from agent.dashboards import queries
from agent.dashboards.render import OUTPUT, render_all
from agent.dashboards.spec import DASHBOARDS
from agent.metrics.catalogue import catalogue


def test_checked_in_dashboards_are_what_the_code_renders():
    rendered = render_all()
    on_disk = {path.relative_to(OUTPUT) for path in OUTPUT.rglob("*.json")}
    assert on_disk == set(rendered), "run: python -m agent.dashboards.render"
    for relative, content in rendered.items():
        assert (OUTPUT / relative).read_text() == content, f"{relative} is stale: python -m agent.dashboards.render"


def test_every_series_names_a_catalogued_metric_with_its_tags():
    known = {key: entry for key, entry in catalogue().items()}
    for board in DASHBOARDS:
        for panel in board.panels:
            for series in panel.series:
                assert (series.measurement, series.field) in known, f"{board.uid}/{panel.title}: {series}"
                tags = set(known[(series.measurement, series.field)].tags)
                assert set(series.by) | {tag for tag, _ in series.where} <= tags, f"{board.uid}/{panel.title}"


def test_both_flavours_have_the_same_panels_and_sensible_queries():
    rendered = render_all()
    for board in DASHBOARDS:
        prom = json.loads(rendered[OUTPUT.joinpath("prometheus", f"{board.uid}.json").relative_to(OUTPUT)])
        influx = json.loads(rendered[OUTPUT.joinpath("influxdb", f"{board.uid}.json").relative_to(OUTPUT)])
        assert [p["title"] for p in prom["panels"]] == [p["title"] for p in influx["panels"]]
        assert prom["uid"] != influx["uid"] and prom["schemaVersion"] >= 39  # Grafana 11
        for panel in influx["panels"]:
            for target in panel.get("targets", []):
                assert "$timeFilter" in target["query"] and target["rawQuery"] is True


def test_queries_from_a_series():
    from agent.dashboards.spec import s

    series = s("tor_authority_fetch", "latency_seconds", "authority", document="consensus")
    assert queries.promql(series) == 'tor_authority_fetch_latency_seconds{document="consensus"}'
    assert queries.influxql(series) == ('SELECT last("latency_seconds") FROM "tor_authority_fetch" WHERE '
                                        "\"document\" = 'consensus' AND $timeFilter GROUP BY time($__interval), "
                                        '"authority" fill(null)')
    assert queries.influx_legend(series) == "$tag_authority"
