"""A Series as PromQL (VictoriaMetrics / Prometheus naming: measurement_field) or InfluxQL.

PromQL asks for each series' newest sample within one voting period plus a
margin (``agent.dashboards.lookback``), so that a panel answers at any moment
of the hour, not only in the 5 minutes after the period's valid-after.
InfluxQL needs no such window: its ``last()`` over ``$timeFilter`` buckets has
no lookback, and Grafana's stat, gauge and pie panels reduce to the last value
that is not null.
"""

from __future__ import annotations

from agent.dashboards.lookback import LATEST_WINDOW, latest
from agent.dashboards.panels import Series

__all__ = ["LATEST_WINDOW", "influx_legend", "influxql", "latest", "promql"]


def promql(series: Series) -> str:
    if series.promql:
        return series.promql
    name = f"{series.measurement}_{series.field}"
    if not series.where:
        return latest(name)
    matchers = ", ".join(f'{tag}="{value}"' for tag, value in series.where)
    return latest(f"{name}{{{matchers}}}")


def influxql(series: Series) -> str:
    if series.influxql:
        return series.influxql
    conditions = [f"\"{tag}\" = '{value}'" for tag, value in series.where] + ["$timeFilter"]
    group = ", ".join(["time($__interval)"] + [f'"{tag}"' for tag in series.by])
    return (f'SELECT last("{series.field}") FROM "{series.measurement}" WHERE {" AND ".join(conditions)} '
            f"GROUP BY {group} fill(null)")


def influx_legend(series: Series) -> str:
    """Grafana's InfluxQL alias syntax: $tag_<name> where PromQL legends say {{name}}."""
    legend = series.legend
    for tag in series.by:
        legend = legend.replace(f"{{{{{tag}}}}}", f"$tag_{tag}")
    return legend
