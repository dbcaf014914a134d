"""The dashboards: rendered files match the code, every metric exists, Grafana 11 JSON."""

import json
import re

from agent.dashboards import queries
from agent.dashboards.lookback import LATEST_WINDOW, LATEST_WINDOW_SECONDS
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
            for series in panel.series + (panel.influxdb.series if panel.influxdb else ()):
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
    assert queries.promql(series) == 'last_over_time(tor_authority_fetch_latency_seconds{document="consensus"}[70m])'
    assert queries.influxql(series) == ('SELECT last("latency_seconds") FROM "tor_authority_fetch" WHERE '
                                        "\"document\" = 'consensus' AND $timeFilter GROUP BY time($__interval), "
                                        '"authority" fill(null)')
    assert queries.influx_legend(series) == "$tag_authority"


#: A selector of one of our metrics, with its matchers if it has any.
_SELECTOR = re.compile(r"\b(?:tor|allium_agent)_\w+(?:\{[^}]*\})?")


def bare_selectors(promql: str) -> list[str]:
    """The selectors of ``promql`` not followed by a range (``[70m]``): with one sample an hour they find nothing
    after hh:05 (the engines' 5-minute lookback)."""
    return [match.group() for match in _SELECTOR.finditer(promql) if not promql[match.end():].lstrip().startswith("[")]


def test_every_ready_made_promql_reads_through_a_window():
    """Dashboard targets and annotations, alert rules and the README's queries: no bare selector (docs/queries.md)."""
    from agent.dashboards.alerting import RULES
    from tests.integration.test_queries import readme_queries

    expressions = {f"rule {rule.name}": rule.expr for rule in RULES}
    expressions |= {f"README: {question}": promql for question, promql, _ in readme_queries()}
    rendered = render_all()
    for relative, content in rendered.items():
        if relative.parts[0] == "prometheus":
            board = json.loads(content)
            expressions |= {f"{relative} / {panel['title']} / {target['refId']}": target["expr"]
                            for panel in board["panels"] for target in panel.get("targets", [])}
            expressions |= {f"{relative} / {annotation['name']}": annotation["target"]["expr"]
                            for annotation in board["annotations"]["list"] if not annotation.get("builtIn")}
    assert len(expressions) > 80
    assert bare_selectors('topk(3, tor_x{a="b"}) / last_over_time(tor_y{c="d"}[70m])') == ['tor_x{a="b"}']
    assert {what: bare_selectors(promql) for what, promql in expressions.items() if bare_selectors(promql)} == {}


def test_the_window_is_the_live_lookback_and_the_store_flags_use_it():
    from agent.store.query import duration_seconds
    from agent.store.victoria_flags import lookback_seconds, victoria_flags

    assert duration_seconds(LATEST_WINDOW) == LATEST_WINDOW_SECONDS == lookback_seconds(3600) == 70 * 60
    assert victoria_flags(3600) == ["-dedup.minScrapeInterval=1s", "-search.latencyOffset=0s",
                                    "-search.maxLookback=4200s"]
    assert lookback_seconds(10) == 610  # the private network's 10 s: still the margin for writing


def test_panel_options_fit_their_targets():
    """A band fills between two of its panel's legends; a threshold line is drawn; rows only head panels; the
    InfluxQL flavour's own panel keeps the title; every variable a query uses is the dashboard's."""
    rendered = render_all()
    for board in DASHBOARDS:
        for flavour in ("prometheus", "influxdb"):
            content = json.loads(rendered[OUTPUT.joinpath(flavour, f"{board.uid}.json").relative_to(OUTPUT)])
            variables = {variable["name"] for variable in content["templating"]["list"]}
            for panel in content["panels"]:
                text = json.dumps(panel.get("targets", []))
                assert set(re.findall(r"\$\{?(fingerprint|role)\b", text)) <= variables, (board.uid, panel["title"])
                if panel["type"] == "row":
                    assert not panel.get("targets") and not panel["collapsed"]
                for override in panel.get("fieldConfig", {}).get("overrides", []):
                    below = [p["value"] for p in override["properties"] if p["id"] == "custom.fillBelowTo"]
                    legends = {target.get("legendFormat") for target in panel["targets"]}
                    assert set(below) <= legends and (not below or override["matcher"]["options"] in legends)
        for panel in board.panels:
            assert panel.influxdb is None or panel.influxdb.title == panel.title


def test_the_new_panels_say_what_they_should():
    from agent.dashboards.spec import NETWORK, OPERATORS, RELAY

    def panel(board, title):
        [found] = [p for p in board.panels if p.title == title]
        return found

    for position in ("guard", "middle", "exit"):
        [series] = panel(OPERATORS, f"{position.capitalize()} probability by operator").series
        # group="contact" only: every relay is in its family's operator too.
        assert queries.promql(series) == (f'topk(15, last_over_time(tor_operator_{position}_probability'
                                          f'{{group="contact"}}[70m]))')
        assert queries.influxql(series) == (f'SELECT last("{position}_probability") FROM "tor_operator" WHERE '
                                            "$timeFilter AND \"group\" = 'contact' GROUP BY \"operator\"")
    [top10] = panel(OPERATORS, "Exit probability held by the top 10 operators").series
    assert queries.promql(top10) == 'sum(topk(10, last_over_time(tor_operator_exit_probability{group="contact"}[70m])))'
    margins = panel(RELAY, "Flag margins (1 = threshold)")
    assert margins.threshold == 1 and [s.field for s in margins.series] == [
        "fast_margin", "guard_bw_margin", "guard_wfu_margin", "guard_tk_margin", "stable_margin", "hsdir_uptime_margin"]
    forecast = panel(NETWORK, "Advertised bandwidth of the $role relays: 7-day forecast")
    assert [queries.promql(s) for s in forecast.series] == [
        'avg_over_time(tor_network_role_advertised_bandwidth_bytes{role="$role"}[1d])'] + [
        f'max without (model) (last_over_time(tor_forecast_{field}{{horizon_days="7", quantity="advertised", '
        f'role="$role"}}[70m] offset 7d))' for field in ("value", "low", "high")]
    assert forecast.band == ("forecast high", "forecast low") and forecast.influxdb is not None
    assert forecast.influxdb.kind == "table" and "role" in NETWORK.variables
