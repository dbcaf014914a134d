"""A Series as PromQL (VictoriaMetrics / Prometheus naming: measurement_field) or InfluxQL."""

from __future__ import annotations

from agent.dashboards.spec import Series


def promql(series: Series) -> str:
    if series.promql:
        return series.promql
    name = f"{series.measurement}_{series.field}"
    if not series.where:
        return name
    matchers = ", ".join(f'{tag}="{value}"' for tag, value in series.where)
    return f"{name}{{{matchers}}}"


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
