"""The dashboards, once: panels over catalogue metrics, rendered to PromQL and InfluxQL by ``queries``.

The building blocks (Series, Panel, Dashboard, ``s``, the annotations) are
in ``agent.dashboards.panels``; the AROI dashboard is in
``agent.dashboards.aroi``. Every PromQL selector reads the newest sample
through ``latest`` (``agent.dashboards.lookback``): one sample an hour must
answer all through the hour.
"""

from __future__ import annotations

from agent.dashboards.aroi import AROI
from agent.dashboards.lookback import latest
from agent.dashboards.panels import ANOMALIES, FINDINGS, Dashboard, Panel, Series, s


def quality(field_name: str, legend: str) -> Series:
    """A field of the agent's alert-quality figures, the newest value per check (``agent/alerts/quality.py``)."""
    return Series("allium_agent_alert_quality", field_name, ("check",), (), f"{{{{check}}}} {legend}",
                  influxql=f'SELECT last("{field_name}") FROM "allium_agent_alert_quality" WHERE $timeFilter '
                           'GROUP BY "check"')


def by_operator(field_name: str, title: str, width: int = 8, unit: str = "percentunit") -> Panel:
    """A leaderboard of operators by contact (group="contact"): a relay is also in its family's group, so without the
    filter every relay would count twice."""
    selector = f'tor_operator_{field_name}{{group="contact"}}'
    return Panel(title, "bargauge", (Series(
        "tor_operator", field_name, ("operator",), (("group", "contact"),), "{{operator}}",
        promql=f"topk(15, {latest(selector)})",
        influxql=f'SELECT last("{field_name}") FROM "tor_operator" WHERE $timeFilter AND "group" = \'contact\' '
                 'GROUP BY "operator"'),), unit=unit, width=width, height=10)


#: The roles of ``tor_network_role`` and ``tor_forecast`` (docs/forecast.md), the values of the ``role`` variable.
ROLES = ("guard", "middle", "exit")


def capacity(horizon: int) -> Panel:
    """The daily mean of the role's advertised bandwidth against the forecast made ``horizon`` days before, with its
    80 % band (docs/forecast.md). InfluxQL has no offset (Grafana's time shift moves a whole panel), so its flavour
    shows the newest forecasts as a table instead."""
    where = (("horizon_days", str(horizon)), ("quantity", "advertised"), ("role", "$role"))
    matchers = ", ".join(f'{tag}="{value}"' for tag, value in where)

    def forecast(field_name: str, legend: str) -> Series:
        # The published method (the model tag) may change from one day to the next: one line whatever it is.
        selector = f"tor_forecast_{field_name}{{{matchers}}}"
        return Series("tor_forecast", field_name, (), where, legend,
                      promql=f"max without (model) ({latest(selector, f'{horizon}d')})")

    title = f"Advertised bandwidth of the $role relays: {horizon}-day forecast"
    actual = Series("tor_network_role", "advertised_bandwidth_bytes", (), (("role", "$role"),),
                    "daily mean (last 24 h)",
                    promql='avg_over_time(tor_network_role_advertised_bandwidth_bytes{role="$role"}[1d])')
    conditions = " AND ".join(f"\"{tag}\" = '{value}'" for tag, value in where)
    newest = Series("tor_forecast", "value", ("model",), where, "{{model}}",
                    influxql=f'SELECT last("value") AS "forecast", last("low") AS "low", last("high") AS "high" '
                             f'FROM "tor_forecast" WHERE {conditions} AND $timeFilter GROUP BY "model"')
    return Panel(
        title, "timeseries", (actual, forecast("value", "forecast"), forecast("low", "forecast low"),
                              forecast("high", "forecast high")), unit="Bps", band=("forecast high", "forecast low"),
        description=f"The mean of the last 24 hours against the forecast of that day's mean made {horizon} days "
                    "before, in its 80 % band; both are the same UTC day at midnight (docs/forecast.md). Forecasts "
                    "start once a day has closed; the model is used only after 28 days and where it beats the "
                    "naive forecasts.",
        influxdb=Panel(title, "table", (newest,), unit="Bps",
                       description=f"The newest {horizon}-day forecast of the role's daily mean advertised bandwidth "
                                   "and its 80 % band, per published method (docs/forecast.md). InfluxQL cannot "
                                   "shift a query in time, so the forecast is not drawn against the actual series "
                                   "here (the Prometheus-flavour dashboard does)."))



NETWORK = Dashboard("allium-network", "Tor network overview",
                    "Relays, flags, churn, weight by role, versions, platforms, countries, concentration.", (
    Panel("Relays in the consensus", "stat", (s("tor_network", "relays"),), width=6, height=5),
    Panel("Signatures on the newest consensus", "stat", (s("tor_network", "signatures"),), width=6, height=5),
    Panel("Votes the consensus was built from", "stat", (s("tor_network", "votes"),), width=6, height=5),
    Panel("Advertised bandwidth", "stat", (s("tor_network", "advertised_bandwidth_bytes"),), unit="Bps",
          width=6, height=5),
    Panel("Relays by flag", "timeseries", (s("tor_network_flag", "relays", "flag"),)),
    Panel("Churn: relays joining and leaving per period", "timeseries",
          (s("tor_network", "joined_relays", legend="joined"), s("tor_network", "left_relays", legend="left"))),
    Panel("Consensus weight by role", "timeseries", (s("tor_network_role", "weight_fraction", "role"),),
          unit="percentunit"),
    Panel("Advertised bandwidth by role", "timeseries", (s("tor_network_role", "advertised_bandwidth_bytes", "role"),),
          unit="Bps"),
    Panel("Relays by version status", "piechart", (s("tor_network_version", "relays", "status"),), width=8),
    Panel("Relays by tor series", "piechart", (s("tor_network_version_series", "relays", "series"),), width=8),
    Panel("Relays by platform", "piechart", (s("tor_network_platform", "relays", "os"),), width=8),
    Panel("Consensus weight by country", "geomap", (s("tor_network_country", "weight_fraction", "country"),),
          unit="percentunit", width=12, height=10),
    Panel("Relays by country", "bargauge", (s("tor_network_country", "relays", "country"),), width=12, height=10),
    Panel("Weight held by the top 5 countries, operators and families", "timeseries",
          (s("tor_network_concentration", "top5_fraction", "by"),), unit="percentunit"),
    Panel("Exit probability by country (top 10)", "bargauge", (Series(
        "tor_network_country", "exit_probability", ("country",), (), "{{country}}",
        promql=f"topk(10, {latest('tor_network_country_exit_probability')})",
        influxql='SELECT last("exit_probability") FROM "tor_network_country" WHERE $timeFilter GROUP BY "country"'),),
          unit="percentunit",
          description="The chance that a client's exit is in the country: the sum of its relays' exit probabilities "
                      "(docs/paths.md)."),
    Panel("Network health score (0-100)", "timeseries", (s("tor_health_score", "value", legend="score"),),
          threshold=75, width=12,
          description="One figure per period: the weighted mean of its components (docs/health-score.md); below 75 "
                      "a quarter of the weight is lost."),
    Panel("Health score: what each component contributes", "timeseries",
          (s("tor_health_component", "contribution", "component"),), width=12,
          description="Weight times score per component; they add up to the score, so a drop shows the part that "
                      "moved."),
    Panel("Overloaded relays", "timeseries",
          (s("tor_network", "overloaded_relays", legend="overload-general (72 h)"),
           s("tor_network", "overload_fd_exhausted_relays", legend="out of file descriptors (72 h)"),
           s("tor_network", "overload_ratelimits_relays", legend="rate limit reached (24 h)")), width=24,
          description="Relays whose newest descriptor reports overload within tor's window; file descriptors and "
                      "rate limits come from extra-info descriptors, fetched by digest (docs/alerts.md)."),
    Panel("Consensus age at each authority (ns flavour)", "timeseries",
          (s("tor_authority_consensus", "age_seconds", "authority", flavour="ns"),), unit="s", width=24),
    Panel("Capacity", "row"),
    capacity(7),
    capacity(30),
), variables=("role",), annotations=FINDINGS)

AUTHORITIES = Dashboard("allium-authorities", "Directory authorities and consensus health",
                        "What the consensus-health page shows, over time: one line per authority.", (
    Panel("Consensus fetched (1 = yes)", "timeseries",
          (s("tor_authority_fetch", "ok", "authority", document="consensus"),), width=8),
    Panel("Consensus download latency", "timeseries",
          (s("tor_authority_fetch", "latency_seconds", "authority", document="consensus"),), unit="s", width=8),
    Panel("Clock skew (authority minus agent)", "timeseries",
          (s("tor_authority_fetch", "clock_skew_seconds", "authority", document="consensus"),), unit="s", width=8),
    Panel("Vote in the consensus (1 = yes)", "timeseries", (s("tor_authority", "voted", "authority"),), width=8),
    Panel("Relays voted about", "timeseries", (s("tor_authority", "vote_relays", "authority"),), width=8),
    Panel("Relays measured (bandwidth authorities)", "timeseries",
          (s("tor_authority", "measured_relays", "authority"),), width=8),
    Panel("Total measured weight (totalcw)", "timeseries",
          (s("tor_authority", "total_measured_weight", "authority"),), width=8),
    Panel("Days until the signing key certificate expires", "timeseries", (Series(
        "tor_authority", "key_expiry_seconds", ("authority",), (), "{{authority}}",
        promql=latest("tor_authority_key_expiry_seconds") + " / 86400",
        influxql='SELECT last("key_expiry_seconds") / 86400 FROM "tor_authority" WHERE $timeFilter '
                 'GROUP BY time($__interval), "authority" fill(null)'),), unit="d", width=8),
    Panel("ORPort addresses reachable", "timeseries",
          (s("tor_authority_probe", "orport_reachable", "authority"),), width=8),
    Panel("Other authorities' votes held (vote propagation)", "timeseries",
          (s("tor_authority_probe", "votes_held", "authority"),), width=12),
    Panel("Flags given only in the vote, not in the consensus", "timeseries",
          (s("tor_authority_flag", "only_in_vote", "authority", "flag"),), width=12),
    Panel("Active findings", "table", (Series(
        "tor_health", "active", ("check", "severity"), (), "{{check}}",
        promql=latest("tor_health_active") + " > 0",
        influxql='SELECT last("active") FROM "tor_health" WHERE $timeFilter GROUP BY "check", "severity"'),),
          width=24),
), annotations=FINDINGS)

RELAY = Dashboard("allium-relay", "Relay", "One relay by fingerprint: flags, weight, who lists and measures it.", (
    Panel("Flags (1 = has it)", "timeseries", tuple(
        s("tor_relay", f"flag_{flag}", legend=flag, fingerprint="$fingerprint")
        for flag in ("running", "valid", "fast", "stable", "guard", "exit", "hsdir")), width=24),
    Panel("Consensus weight", "timeseries", (s("tor_relay", "weight", fingerprint="$fingerprint"),)),
    Panel("Share of the consensus weight", "timeseries",
          (s("tor_relay", "weight_fraction", fingerprint="$fingerprint"),), unit="percentunit"),
    Panel("Authorities listing it", "timeseries", (s("tor_relay", "authorities_listing", fingerprint="$fingerprint"),)),
    Panel("Bandwidth authorities measuring it", "timeseries",
          (s("tor_relay", "bwauths_measuring", fingerprint="$fingerprint"),)),
    Panel("Flag margins (1 = threshold)", "timeseries", tuple(
        s("tor_relay", f"{margin}_margin", legend=legend, fingerprint="$fingerprint")
        for margin, legend in (("fast", "Fast: bandwidth"), ("guard_bw", "Guard: bandwidth"),
                               ("guard_wfu", "Guard: WFU"), ("guard_tk", "Guard: time known"),
                               ("stable", "Stable: MTBF or uptime"), ("hsdir_uptime", "HSDir: uptime"))),
          threshold=1,
          description="Each figure over the authorities' threshold for the flag, the median over the votes listing "
                      "the relay: above 1 it qualifies, below 1 it falls short. A margin is missing where a vote "
                      "does not show the figure (WFU and time known need the votes' stats lines). docs/relays.md."),
    Panel("Reliability: share of time in the consensus and Running", "timeseries", tuple(
        s("tor_relay", name, legend=name.replace("_", " "), fingerprint="$fingerprint")
        for name in ("presence_7d", "presence_30d", "running_7d", "running_30d")), unit="percentunit",
          description="Time-weighted over the periods the agent recorded (docs/reliability.md)."),
    Panel("Risk of dropping out within a day", "timeseries",
          (s("tor_relay", "dropout_risk", legend="drop-out risk", fingerprint="$fingerprint"),), unit="percentunit",
          description="How often relays with the same recent history dropped out within 24 periods (docs/relays.md, "
                      "At-risk warnings); written after the learner's first week."),
    Panel("Overloaded (1 = reported within tor's window)", "timeseries",
          (s("tor_relay", "overloaded", legend="overload-general (72 h)", fingerprint="$fingerprint"),
           s("tor_relay", "overload_fd_exhausted", legend="out of file descriptors (72 h)",
             fingerprint="$fingerprint"),
           s("tor_relay", "overload_ratelimits", legend="rate limit reached (24 h)", fingerprint="$fingerprint")),
          description="From the server descriptor (overload-general) and the extra-info descriptor (the others); "
                      "a rate limit reached is usually the operator's own BandwidthRate (docs/alerts.md)."),
    Panel("Path-selection probability", "timeseries", tuple(
        s("tor_relay", f"{position}_probability", legend=position, fingerprint="$fingerprint")
        for position in ("guard", "middle", "exit")), unit="percentunit",
          description="The chance that a client picks the relay for each position (Onionoo's probabilities; "
                      "docs/paths.md)."),
), variables=("fingerprint",), annotations=FINDINGS)

OPERATORS = Dashboard("allium-operators", "Operators",
                      "Operators by contact or family: relays, weight, flags, spread.", (
    Panel("Largest operators by consensus weight", "bargauge", (Series(
        "tor_operator", "weight_fraction", ("operator",), (), "{{operator}}",
        promql=f"topk(15, {latest('tor_operator_weight_fraction')})",
        influxql='SELECT last("weight_fraction") FROM "tor_operator" WHERE $timeFilter GROUP BY "operator"'),),
          unit="percentunit", height=10),
    Panel("Most countries", "bargauge", (Series(
        "tor_operator", "countries", ("operator",), (), "{{operator}}",
        promql=f"topk(15, {latest('tor_operator_countries')})",
        influxql='SELECT last("countries") FROM "tor_operator" WHERE $timeFilter GROUP BY "operator"'),), height=10),
    Panel("Most platforms", "bargauge", (Series(
        "tor_operator", "platforms", ("operator",), (), "{{operator}}",
        promql=f"topk(15, {latest('tor_operator_platforms')})",
        influxql='SELECT last("platforms") FROM "tor_operator" WHERE $timeFilter GROUP BY "operator"'),), height=10),
    Panel("Relays per operator", "table", (s("tor_operator", "relays", "operator", "group"),), height=10),
    Panel("Guard and exit relays per operator", "timeseries",
          (s("tor_operator", "guard_relays", "operator", legend="{{operator}} guards"),
           s("tor_operator", "exit_relays", "operator", legend="{{operator}} exits")), width=24),
    by_operator("running_30d", "Most reliable operators: Running over 30 days"),
    by_operator("flag_changes_per_week", "Most flag changes per week", unit="short"),
    by_operator("family_not_mutual", "Family entries not returned (tor ignores them)", unit="short"),
    by_operator("family_cert_invalid", "Relays whose family-cert does not count", unit="short"),
    by_operator("guard_probability", "Guard probability by operator"),
    by_operator("middle_probability", "Middle probability by operator"),
    by_operator("exit_probability", "Exit probability by operator"),
    Panel("Exit probability held by the top 10 operators", "stat", (Series(
        "tor_operator", "exit_probability", (), (("group", "contact"),), "top 10 operators",
        promql="sum(topk(10, " + latest('tor_operator_exit_probability{group="contact"}') + "))",
        # The ten largest of each interval (one voting period), summed; the panel shows the newest interval's sum.
        influxql='SELECT sum("top") FROM (SELECT top("exit_probability", "operator_id", 10) AS "top" FROM '
                 '"tor_operator" WHERE $timeFilter AND "group" = \'contact\' GROUP BY time($__interval)) '
                 'WHERE $timeFilter GROUP BY time($__interval) fill(none)'),), unit="percentunit", width=24,
          height=4, description="The chance that a client's exit belongs to one of the ten operators (by contact) "
                                "holding the most exit probability (docs/paths.md)."),
), annotations=FINDINGS)

ALERTS = Dashboard("allium-alerts", "Anomalies and alerts",
                   "Findings, anomaly detection and the agent's alert delivery.", (
    Panel("Active findings by severity", "timeseries", (Series(
        "tor_health", "active", ("severity",), (), "{{severity}}",
        promql=f"sum by (severity) ({latest('tor_health_active')})",
        # No subquery: InfluxDB 1.x runs them slowly. One sample per check and period, so a bucket
        # of one voting period sums to the active findings (wider buckets add periods up).
        influxql='SELECT sum("active") FROM "tor_health" WHERE $timeFilter GROUP BY time($__interval), "severity" '
                 'fill(null)'),)),
    Panel("Silenced findings", "timeseries", (Series(
        "tor_health", "silenced", ("check",), (), "{{check}}",
        promql=latest("tor_health_silenced") + " > 0",
        influxql='SELECT last("silenced") FROM "tor_health" WHERE $timeFilter GROUP BY time($__interval), "check" '
                 'fill(null)'),)),
    Panel("Alerts the agent tracks", "timeseries", (s("allium_agent", "alerts_active", "vantage"),), width=8),
    Panel("Messages waiting for delivery", "timeseries", (s("allium_agent", "deliveries_waiting", "vantage"),),
          width=8),
    Panel("Messages given up", "timeseries", (s("allium_agent", "deliveries_given_up", "vantage"),), width=8),
    Panel("Alert quality", "bargauge", (
        quality("alarms_per_1000_periods", "alarms per 1,000 periods"), quality("flaps", "flaps")), width=24,
          height=10, description="Per check or detector, over the periods the alert engine evaluated (docs/alerts.md, "
                                 "Alert quality): alarms per 1,000 periods, and alarms gone again within "
                                 "alerts.flap_periods periods (flaps). Written by `run`."),
    Panel("Anomaly scores of the learned baselines (1 = at the limit; above it: anomalous)", "timeseries",
          (s("tor_anomaly", "score", "series", detector="baseline"),), width=24,
          description="Each series' change in the period over its limit: 1.5 times the 99.5th percentile of its "
                      "own changes over four weeks, never below a share of the relays it counts "
                      "(docs/anomalies.md)."),
    Panel("Relays joining against the limit the baseline sets", "timeseries",
          (s("tor_anomaly", "observed", legend="joined", detector="baseline", series="joined"),
           s("tor_anomaly", "expected_high", legend="limit", detector="baseline", series="joined"))),
    Panel("Series judged anomalous", "table", (Series(
        "tor_anomaly", "anomalous", ("series",), (("detector", "baseline"),), "{{series}}",
        promql=latest('tor_anomaly_anomalous{detector="baseline"}') + " > 0",
        influxql='SELECT last("anomalous") FROM "tor_anomaly" WHERE "detector" = \'baseline\' AND "anomalous" > 0 '
                 'AND $timeFilter GROUP BY "series"'),)),
    Panel("Relays flagged by the per-relay detectors", "timeseries",
          (s("tor_anomaly", "anomalous", "series", detector="relays"),), width=12),
    Panel("Largest group of relays arriving together (shared traits)", "timeseries",
          (s("tor_anomaly", "observed", legend="relays", detector="groups"),), width=12),
    Panel("Baselines still warming up", "stat", (Series(
        "tor_anomaly", "warming", (), (("detector", "baseline"),), "warming",
        promql="sum(" + latest('tor_anomaly_warming{detector="baseline"}') + ")",
        # One sample per series and period (no subquery: slow on InfluxDB 1.x), as for the findings above.
        influxql='SELECT sum("warming") FROM "tor_anomaly" WHERE "detector" = \'baseline\' AND $timeFilter '
                 'GROUP BY time($__interval) fill(null)'),), width=24, height=4),
), annotations=FINDINGS + (ANOMALIES,))

DASHBOARDS = (NETWORK, AUTHORITIES, RELAY, OPERATORS, ALERTS, AROI)
