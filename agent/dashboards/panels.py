"""The building blocks of the dashboards: series, panels, annotations, dashboards (``agent.dashboards.spec`` and
``agent.dashboards.aroi`` declare them; ``queries`` and ``render`` turn them into targets and Grafana JSON).

A Series names a measurement and field (the catalogue's names), the tags it
is split by and filtered on; ``promql``/``influxql`` are given only where a
panel needs more than "this field, per these tags".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agent.dashboards.lookback import latest


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
    kind: str  # timeseries | stat | table | piechart | bargauge | geomap | text | row (a heading for what follows)
    series: tuple[Series, ...] = ()
    unit: str = "short"
    description: str = ""
    width: int = 12
    height: int = 8
    text: str = ""
    threshold: float | None = None  # timeseries: a line at this value (e.g. 1 where a margin meets its threshold)
    band: tuple[str, str] | None = None  # timeseries: legends of the (upper, lower) series, filled between them
    #: The InfluxQL flavour's own panel (same title) where InfluxQL cannot say what the PromQL panel says.
    influxdb: Panel | None = None


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
    variables: tuple[str, ...] = field(default_factory=tuple)  # known: "fingerprint" (a relay), "role" (ROLES)
    annotations: tuple[Annotation, ...] = ()


def s(measurement: str, field_name: str, *by: str, legend: str = "", **where: str) -> Series:
    return Series(measurement, field_name, tuple(by), tuple(sorted(where.items())),
                  legend or " ".join(f"{{{{{tag}}}}}" for tag in by) or field_name.replace("_", " "))


def findings(severity: str, color: str, enabled: bool = True) -> Annotation:
    """An annotation for the active findings of one severity, one region per check."""
    return Annotation(
        f"{severity.capitalize()} findings", color,
        promql=latest(f'tor_health_active{{severity="{severity}"}}') + " > 0",
        # One row per check and period while it is active; Grafana joins rows into regions only for
        # PromQL, so InfluxDB shows a mark per period instead.
        influxql=f'SELECT "active", "check", "severity" FROM "tor_health" WHERE "active" > 0 AND '
                 f'"severity" = \'{severity}\' AND $timeFilter',
        title="check", tags=("severity",), enabled=enabled)


#: Periods a learned baseline judged anomalous, titled with the series.
ANOMALIES = Annotation(
    "Anomalies", "purple", promql=latest('tor_anomaly_anomalous{detector="baseline"}') + " > 0",
    influxql='SELECT "anomalous", "series" FROM "tor_anomaly" WHERE "detector" = \'baseline\' AND "anomalous" > 0 '
             'AND $timeFilter',
    title="series", tags=("detector",))

#: Every dashboard shows when the network had a problem; info findings are there to switch on.
FINDINGS = (findings("critical", "red"), findings("warning", "orange"), findings("info", "blue", enabled=False))
