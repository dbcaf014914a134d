"""The dashboards, once: panels over catalogue metrics, rendered to PromQL and InfluxQL by ``queries``.

A Series names a measurement and field (the catalogue's names), the tags it
is split by and filtered on; ``promql``/``influxql`` are given only where a
panel needs more than "this field, per these tags".
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Series:
    measurement: str
    field: str
    by: tuple[str, ...] = ()
    where: tuple[tuple[str, str], ...] = ()  # (tag, value); a value may be a dashboard variable like $fingerprint
    legend: str = ""
    promql: str | None = None
    influxql: str | None = None


@dataclass(frozen=True)
class Panel:
    title: str
    kind: str  # timeseries | stat | table | piechart | bargauge | geomap | text
    series: tuple[Series, ...] = ()
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    text: str = ""


@dataclass(frozen=True)
class Annotation:
    """Regions on every time axis while a series is above zero, e.g. while a finding is active.

    ``title`` and ``tags`` name series labels (PromQL) or columns (InfluxQL):
    Grafana titles a region with the label's value and tags it with the others.
    """

    name: str
    color: str
    promql: str
    influxql: str
    title: str
    tags: tuple[str, ...]
    enabled: bool = True


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    variables: tuple[str, ...] = field(default_factory=tuple)  # "fingerprint" is the one known variable
    annotations: tuple[Annotation, ...] = ()


def s(measurement: str, field_name: str, *by: str, legend: str = "", **where: str) -> Series:
    return Series(measurement, field_name, tuple(by), tuple(sorted(where.items())),
                  legend or " ".join(f"{{{{{tag}}}}}" for tag in by) or field_name.replace("_", " "))


def findings(severity: str, color: str, enabled: bool = True) -> Annotation:
    """An annotation for the active findings of one severity, one region per check."""
    return Annotation(
        f"{severity.capitalize()} findings", color,
        promql=f'tor_health_active{{severity="{severity}"}} > 0',
        # One row per check and period while it is active; Grafana joins rows into regions only for
        # PromQL, so InfluxDB shows a mark per period instead.
        influxql=f'SELECT "active", "check", "severity" FROM "tor_health" WHERE "active" > 0 AND '
                 f'"severity" = \'{severity}\' AND $timeFilter',
        title="check", tags=("severity",), enabled=enabled)


#: Periods a learned baseline judged anomalous, titled with the series.
ANOMALIES = Annotation(
    "Anomalies", "purple", promql='tor_anomaly_anomalous{detector="baseline"} > 0',
    influxql='SELECT "anomalous", "series" FROM "tor_anomaly" WHERE "detector" = \'baseline\' AND "anomalous" > 0 '
             'AND $timeFilter',
    title="series", tags=("detector",))

def quality(field_name: str, legend: str) -> Series:
    """A field of the agent's alert-quality figures, the newest value per check (``agent/alerts/quality.py``)."""
    return Series("allium_agent_alert_quality", field_name, ("check",), (), f"{{{{check}}}} {legend}",
                  influxql=f'SELECT last("{field_name}") FROM "allium_agent_alert_quality" WHERE $timeFilter '
                           'GROUP BY "check"')


#: Every dashboard shows when the network had a problem; info findings are there to switch on.
FINDINGS = (findings("critical", "red"), findings("warning", "orange"), findings("info", "blue", enabled=False))

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
    Panel("Consensus age at each authority (ns flavour)", "timeseries",
          (s("tor_authority_consensus", "age_seconds", "authority", flavour="ns"),), unit="s"),
), annotations=FINDINGS)

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
        promql="tor_authority_key_expiry_seconds / 86400",
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
        promql="tor_health_active > 0",
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
), variables=("fingerprint",), annotations=FINDINGS)

OPERATORS = Dashboard("allium-operators", "Operators",
                      "Operators by contact or family: relays, weight, flags, spread.", (
    Panel("Largest operators by consensus weight", "bargauge", (Series(
        "tor_operator", "weight_fraction", ("operator",), (), "{{operator}}",
        promql="topk(15, tor_operator_weight_fraction)",
        influxql='SELECT last("weight_fraction") FROM "tor_operator" WHERE $timeFilter GROUP BY "operator"'),),
          unit="percentunit", height=10),
    Panel("Most countries", "bargauge", (Series(
        "tor_operator", "countries", ("operator",), (), "{{operator}}",
        promql="topk(15, tor_operator_countries)",
        influxql='SELECT last("countries") FROM "tor_operator" WHERE $timeFilter GROUP BY "operator"'),), height=10),
    Panel("Most platforms", "bargauge", (Series(
        "tor_operator", "platforms", ("operator",), (), "{{operator}}",
        promql="topk(15, tor_operator_platforms)",
        influxql='SELECT last("platforms") FROM "tor_operator" WHERE $timeFilter GROUP BY "operator"'),), height=10),
    Panel("Relays per operator", "table", (s("tor_operator", "relays", "operator", "group"),), height=10),
    Panel("Guard and exit relays per operator", "timeseries",
          (s("tor_operator", "guard_relays", "operator", legend="{{operator}} guards"),
           s("tor_operator", "exit_relays", "operator", legend="{{operator}} exits")), width=24),
), annotations=FINDINGS)

ALERTS = Dashboard("allium-alerts", "Anomalies and alerts",
                   "Findings, anomaly detection and the agent's alert delivery.", (
    Panel("Active findings by severity", "timeseries", (Series(
        "tor_health", "active", ("severity",), (), "{{severity}}",
        promql="sum by (severity) (tor_health_active)",
        # No subquery: InfluxDB 1.x runs them slowly. One sample per check and period, so a bucket
        # of one voting period sums to the active findings (wider buckets add periods up).
        influxql='SELECT sum("active") FROM "tor_health" WHERE $timeFilter GROUP BY time($__interval), "severity" '
                 'fill(null)'),)),
    Panel("Silenced findings", "timeseries", (Series(
        "tor_health", "silenced", ("check",), (), "{{check}}",
        promql="tor_health_silenced > 0",
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
        promql='tor_anomaly_anomalous{detector="baseline"} > 0',
        influxql='SELECT last("anomalous") FROM "tor_anomaly" WHERE "detector" = \'baseline\' AND "anomalous" > 0 '
                 'AND $timeFilter GROUP BY "series"'),)),
    Panel("Relays flagged by the per-relay detectors", "timeseries",
          (s("tor_anomaly", "anomalous", "series", detector="relays"),), width=12),
    Panel("Largest group of relays arriving together (shared traits)", "timeseries",
          (s("tor_anomaly", "observed", legend="relays", detector="groups"),), width=12),
    Panel("Baselines still warming up", "stat", (Series(
        "tor_anomaly", "warming", (), (("detector", "baseline"),), "warming",
        promql='sum(tor_anomaly_warming{detector="baseline"})',
        # One sample per series and period (no subquery: slow on InfluxDB 1.x), as for the findings above.
        influxql='SELECT sum("warming") FROM "tor_anomaly" WHERE "detector" = \'baseline\' AND $timeFilter '
                 'GROUP BY time($__interval) fill(null)'),), width=24, height=4),
), annotations=FINDINGS + (ANOMALIES,))

DASHBOARDS = (NETWORK, AUTHORITIES, RELAY, OPERATORS, ALERTS)
