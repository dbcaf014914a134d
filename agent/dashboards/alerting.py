"""Alert rules, once: rendered as a Prometheus rule file (vmalert, Prometheus) and as Grafana provisioning, in
PromQL (VictoriaMetrics, Prometheus) and in InfluxQL (InfluxDB).

``python -m agent.dashboards.alerting`` rewrites ``alerting/allium-rules.yml``,
``grafana/provisioning/alerting/allium-rules.yml`` (PromQL) and
``grafana/provisioning/alerting-influxdb/allium-rules.yml`` (InfluxQL); a test
fails when they differ from the code. The agent's own alert engine (email,
Matrix) does not need these; they are for people who alert from Grafana or vmalert.

Every expression reads the newest sample of each series within one voting
period plus a margin (``latest``, ``agent.dashboards.lookback``) instead of a
bare selector: with one sample an hour a bare selector matches only in the 5
minutes after hh:00 (the engines' default lookback), so a ``for: 2h`` rule
could never fire and every other one would resolve at hh:05 and fire again at
the next hh:00. No evaluator setting is needed (vmalert's
``-datasource.queryStep``, Prometheus's ``--query.lookback-delta``).

A rule is what it measures per series (``measure``) and when that fires. The
Prometheus rule file says it as one PromQL expression (``expr``: the measure and
its comparison); Grafana rules query the measure (PromQL or InfluxQL), reduce
each series to its last value and compare that in a threshold expression, so
that the comparison is Grafana's in both flavours (InfluxQL cannot filter on
an aggregate). An InfluxQL rule reads the last ``window`` seconds (one voting
period plus the margin, as ``latest``) through ``time > now() - 70m`` in its
query, not through Grafana's ``$timeFilter``: Grafana's provisioning expands
``$NAME`` as an environment variable in most fields (recent versions keep
query models raw), and tests/unit/test_compose.py holds every ``$`` of a
mounted provisioning file to the container's environment; so the InfluxQL
holds no ``$`` at all, and answers alike outside Grafana.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from agent.dashboards.lookback import LATEST_WINDOW, LATEST_WINDOW_SECONDS, latest

ROOT = Path(__file__).parents[2]
PROMETHEUS_RULES = ROOT / "alerting" / "allium-rules.yml"
GRAFANA_RULES = ROOT / "grafana" / "provisioning" / "alerting" / "allium-rules.yml"
GRAFANA_INFLUXDB_RULES = ROOT / "grafana" / "provisioning" / "alerting-influxdb" / "allium-rules.yml"
#: The Prometheus-type datasource the PromQL Grafana rules query (grafana/provisioning/datasources, and the
#: victoriametrics profile's grafana/provisioning/compose/victoriametrics/datasources.yml).
GRAFANA_DATASOURCE_UID = "allium-victoriametrics"
#: The InfluxDB (InfluxQL) datasource the InfluxQL Grafana rules query (the same files; the influxdb profile's
#: grafana/provisioning/compose/influxdb/datasources.yml).
GRAFANA_INFLUXDB_DATASOURCE_UID = "allium-influxdb"
WEEK = 7 * 86400


def recent(seconds: int) -> str:
    """An InfluxQL time condition: the last ``seconds`` (``time > now() - 70m``)."""
    size, unit = next((size, unit) for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s"))
                      if seconds % size == 0)
    return f"time > now() - {seconds // size}{unit}"


#: The newest period and the margin, in InfluxQL (``latest`` in PromQL).
LATEST = recent(LATEST_WINDOW_SECONDS)


@dataclass(frozen=True)
class Condition:
    """One flavour's Grafana condition: a query per series, its last value compared by ``evaluator``."""

    query: str
    evaluator: tuple[str, float]  # Grafana's threshold: ("gt", x) fires above x, ("lt", x) below x
    window: int = LATEST_WINDOW_SECONDS  # seconds the query reads back (its relative time range in Grafana)
    description: str = ""  # where this flavour measures something else than the rule's description says


@dataclass(frozen=True)
class Rule:
    name: str
    measure: str  # PromQL, one series per alert: what the rule compares
    compare: str  # the PromQL comparison that fires: "> 0", "== 0", "> 3 * 3600"
    evaluator: tuple[str, float]  # the same comparison as Grafana's threshold on the measure
    influxql: Condition  # the same measure in InfluxQL
    for_: str
    severity: str
    summary: str
    description: str  # may use {{ $labels.x }} and {{ $value }}

    @property
    def expr(self) -> str:
        """The Prometheus rule's expression: it fires for every series it returns."""
        return f"{self.measure} {self.compare}"

    @property
    def promql(self) -> Condition:
        return Condition(self.measure, self.evaluator, 3600)


def _findings(severity: str) -> Condition:
    # tor_health has one series per check and severity: its newest sample is what PromQL's sum by (check) sums.
    return Condition(f'SELECT last("active") FROM "tor_health" WHERE "severity" = \'{severity}\' AND {LATEST} '
                     'GROUP BY "check"', ("gt", 0))


RULES = (
    Rule("TorCriticalFinding", "sum by (check) (" + latest('tor_health_active{severity="critical"}') + ")", "> 0",
         ("gt", 0), _findings("critical"), "0m", "critical", "A critical consensus-health finding is active",
         "{{ $labels.check }} is active ({{ $value }} findings); see `allium-agent check`."),
    Rule("TorWarningFinding", "sum by (check) (" + latest('tor_health_active{severity="warning"}') + ")", "> 0",
         ("gt", 0), _findings("warning"), "2h", "warning", "A consensus-health warning has lasted two hours",
         "{{ $labels.check }} has been active for 2 h ({{ $value }} findings)."),
    # Every sample of the last period and the margin (one an hour live: the newest period) says "not answered".
    # `answered` is 0 or 1, so "the largest is 0" is "the largest is below 1".
    Rule("TorAuthorityNotAnswering",
         'max_over_time(tor_authority_fetch_answered{document="consensus"}[' + LATEST_WINDOW + '])', "== 0",
         ("lt", 1), Condition('SELECT max("answered") FROM "tor_authority_fetch" WHERE "document" = \'consensus\' '
                              f'AND {LATEST} GROUP BY "authority", "vantage"', ("lt", 1)),
         "0m", "warning", "An authority has not answered for an hour",
         "{{ $labels.authority }} answered none of our consensus requests in the last hour "
         "(vantage {{ $labels.vantage }})."),
    Rule("TorConsensusOld", "min(" + latest('tor_authority_consensus_age_seconds{flavour="ns"}') + ")", "> 3 * 3600",
         ("gt", 3 * 3600),
         # The newest age per authority and vantage (a subquery over one period: cheap), then the smallest.
         Condition('SELECT min("age_seconds") FROM (SELECT last("age_seconds") AS "age_seconds" FROM '
                   f'"tor_authority_consensus" WHERE "flavour" = \'ns\' AND {LATEST} GROUP BY "authority", '
                   '"vantage")', ("gt", 3 * 3600)),
         "0m", "critical", "No authority serves a consensus younger than three hours",
         "The freshest consensus any authority serves is {{ $value | humanizeDuration }} old: "
         "clients will soon have no valid consensus."),
    Rule("TorNetworkAnomaly", "max by (series) (" + latest('tor_anomaly_anomalous{detector="baseline"}') + ")",
         "> 0", ("gt", 0),
         Condition(f'SELECT last("anomalous") FROM "tor_anomaly" WHERE "detector" = \'baseline\' AND {LATEST} '
                   'GROUP BY "series"', ("gt", 0)),
         "0m", "warning", "A network series left the range its learned baseline expects",
         "{{ $labels.series }} was judged anomalous this period (see the Anomalies dashboard and the agent's "
         "TorAnomalySeries alert for the expected range)."),
    # The newest success within a week, not within the lookback: a bare selector goes empty minutes after the agent
    # stops, so the rule could never fire for an agent that stopped (a week: the alert ends after a week of silence).
    # InfluxQL cannot subtract a value from now(): it counts the agent's records of the last 120 minutes instead
    # (per minute over the week, empty minutes 0, summed over the last 120), and has no data after a week of silence.
    Rule("AlliumAgentStale", "time() - max(max_over_time(allium_agent_last_success_seconds[1w]))", "> 2 * 3600",
         ("gt", 2 * 3600),
         Condition('SELECT moving_average("records", 120) * 120 FROM (SELECT count("last_success_seconds") AS '
                   f'"records" FROM "allium_agent" WHERE {recent(WEEK)} GROUP BY time(1m) fill(0))', ("lt", 1), WEEK,
                   "The agent has recorded no period in the last two hours; is allium-agent running?"),
         "0m", "warning", "The agent has recorded nothing for two hours",
         "The last recorded period is {{ $value | humanizeDuration }} old; is allium-agent running?"),
    Rule("AlliumAgentDeliveriesStuck", "max(" + latest("allium_agent_deliveries_waiting") + ")", "> 0", ("gt", 0),
         Condition('SELECT max("deliveries_waiting") FROM (SELECT last("deliveries_waiting") AS "deliveries_waiting" '
                   f'FROM "allium_agent" WHERE {LATEST} GROUP BY "vantage")', ("gt", 0)),
         "1h", "warning", "Alert messages have waited an hour for delivery",
         "{{ $value }} messages wait in the delivery outbox: is the SMTP server or homeserver down?"),
)


def prometheus_rules() -> dict:
    return {"groups": [{"name": "allium-agent", "interval": "1m", "rules": [
        {"alert": rule.name, "expr": rule.expr, "for": rule.for_, "labels": {"severity": rule.severity},
         "annotations": {"summary": rule.summary, "description": rule.description}} for rule in RULES]}]}


def grafana_template(description: str) -> str:
    """A Prometheus-rule description in Grafana's template terms: Grafana's ``$value`` is a text listing every
    expression's value, so the value is the reduced one, ``$values.B.Value``."""
    return (description.replace("{{ $value | humanizeDuration }}", "{{ humanizeDuration $values.B.Value }}")
            .replace("{{ $value }}", "{{ $values.B.Value }}"))


#: flavour -> (datasource uid, folder, rule uid prefix); the folders differ so that one Grafana may load both files.
GRAFANA_FLAVOURS = {"prometheus": (GRAFANA_DATASOURCE_UID, "Tor", "allium-"),
                    "influxdb": (GRAFANA_INFLUXDB_DATASOURCE_UID, "Tor (InfluxDB)", "allium-influx-")}


def grafana_query(flavour: str, condition: Condition) -> dict:
    """The rule's query A: an instant PromQL query, or a raw InfluxQL one over its time range."""
    if flavour == "prometheus":
        return {"refId": "A", "expr": condition.query, "instant": True}
    return {"refId": "A", "query": condition.query, "rawQuery": True, "resultFormat": "time_series"}


def grafana_rules(flavour: str = "prometheus") -> dict:
    """Grafana unified-alerting provisioning (apiVersion 1): query A, reduce B (last), threshold C."""
    datasource, folder, prefix = GRAFANA_FLAVOURS[flavour]

    def rule(spec: Rule) -> dict:
        condition = spec.promql if flavour == "prometheus" else spec.influxql
        evaluator, threshold = condition.evaluator
        return {
            "uid": f"{prefix}{spec.name.lower()}"[:40], "title": spec.name, "condition": "C",
            "data": [
                {"refId": "A", "relativeTimeRange": {"from": condition.window, "to": 0}, "datasourceUid": datasource,
                 "model": grafana_query(flavour, condition)},
                {"refId": "B", "datasourceUid": "__expr__",
                 "model": {"refId": "B", "type": "reduce", "expression": "A", "reducer": "last"}},
                {"refId": "C", "datasourceUid": "__expr__",
                 "model": {"refId": "C", "type": "threshold", "expression": "B",
                           "conditions": [{"evaluator": {"type": evaluator, "params": [threshold]}}]}},
            ],
            "for": spec.for_, "noDataState": "OK", "execErrState": "Error",
            "labels": {"severity": spec.severity},
            "annotations": {"summary": spec.summary,
                            "description": grafana_template(condition.description or spec.description)},
        }
    return {"apiVersion": 1, "groups": [{"orgId": 1, "name": "allium-agent", "folder": folder, "interval": "1m",
                                         "rules": [rule(spec) for spec in RULES]}]}


def render_all() -> dict[Path, str]:
    header = "# Generated by `python -m agent.dashboards.alerting` from agent/dashboards/alerting.py; do not edit.\n"

    def dump(content: dict) -> str:
        return header + yaml.safe_dump(content, sort_keys=False, width=110)

    return {PROMETHEUS_RULES: dump(prometheus_rules()), GRAFANA_RULES: dump(grafana_rules("prometheus")),
            GRAFANA_INFLUXDB_RULES: dump(grafana_rules("influxdb"))}


def main() -> None:
    for path, content in render_all().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        print(path)


if __name__ == "__main__":
    main()
