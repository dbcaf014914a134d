"""Renders the dashboard specs with grafana-foundation-sdk into Grafana 11 JSON, one file per dashboard and flavour.

``python -m agent.dashboards.render`` rewrites ``grafana/dashboards/``; a
test fails when the checked-in files differ from what the code renders.
Panels take their datasource from a ``datasource`` variable of the
flavour's type, so one file works with any datasource of that kind.
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    geomap,
    piechart,
    prometheus,
    stat,
    table,
    text,
    timeseries,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import FrameGeometrySourceMode, GraphThresholdsStyleMode
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    DynamicConfigValue,
    MatcherConfig,
    VariableOption,
    VariableRefresh,
)

from agent.dashboards import queries
from agent.dashboards.lookback import LATEST_WINDOW_SECONDS
from agent.dashboards.panels import Annotation, Dashboard, Panel, Series
from agent.dashboards.spec import DASHBOARDS, ROLES

OUTPUT = Path(__file__).parents[2] / "grafana" / "dashboards"
FLAVOURS = {"prometheus": "prometheus", "influxdb": "influxdb"}  # flavour -> datasource plugin type
_PANELS = {"timeseries": timeseries.Panel, "stat": stat.Panel, "table": table.Panel, "piechart": piechart.Panel,
           "bargauge": bargauge.Panel, "geomap": geomap.Panel, "text": text.Panel}
_REF_IDS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class InfluxQuery(cogvariants.Dataquery):
    """A raw InfluxQL target (the SDK has no InfluxDB builder)."""

    def __init__(self, ref_id: str, query: str, alias: str, datasource: DataSourceRef, table_format: bool):
        self.ref_id, self.query, self.alias, self.datasource = ref_id, query, alias, datasource
        self.table_format = table_format

    def to_json(self) -> dict:
        return {"refId": self.ref_id, "query": self.query, "rawQuery": True, "alias": self.alias,
                "resultFormat": "table" if self.table_format else "time_series", "datasource": self.datasource}


class Prebuilt(cogbuilder.Builder):
    """Hands an object the SDK cannot build (our InfluxQL target, a plugin's annotation) to its builders."""

    def __init__(self, built):
        self._internal = built

    def build(self):
        return self._internal


class AnnotationJSON:
    """An annotation query with the fields its datasource plugin reads.

    The SDK's model has only the schema's generic fields. Grafana's Prometheus
    plugin reads ``target.expr``/``target.interval`` and top-level
    ``titleFormat``/``tagKeys``; its InfluxDB plugin reads the InfluxQL
    annotation's top-level ``query``/``titleColumn``/``tagsColumn``.
    """

    def __init__(self, flavour: str, spec: Annotation):
        self.json = {"name": spec.name, "iconColor": spec.color, "enable": spec.enabled, "hide": False,
                     "datasource": _source(flavour)}
        if flavour == "prometheus":
            # The interval is the step, and the gap below which Grafana joins points into one region:
            # one voting period (1 h on the live network).
            self.json.update(target={"refId": "Anno", "expr": spec.promql, "interval": "1h"},
                             titleFormat=f"{{{{{spec.title}}}}}", tagKeys=",".join(spec.tags),
                             textFormat=spec.name, useValueForTime=False)
        else:
            self.json.update(query=spec.influxql, titleColumn=spec.title, textColumn="", tagsColumn=",".join(spec.tags))

    def to_json(self) -> dict:
        return self.json


def _source(flavour: str) -> DataSourceRef:
    """The dashboard's ``datasource`` variable, of the flavour's type."""
    return DataSourceRef(type_val=FLAVOURS[flavour], uid="${datasource}")


def _target(flavour: str, series: Series, ref_id: str, kind: str):
    source = _source(flavour)
    if flavour == "prometheus":
        target = prometheus.Dataquery().expr(queries.promql(series)).legend_format(series.legend).ref_id(ref_id)
        if kind in ("table", "bargauge", "piechart", "geomap", "stat"):
            target = target.instant()
        return target.datasource(source)
    return Prebuilt(InfluxQuery(ref_id, queries.influxql(series), queries.influx_legend(series), source,
                                          kind in ("table", "geomap")))


def _panel(flavour: str, spec: Panel):
    if flavour == "influxdb" and spec.influxdb is not None:
        spec = spec.influxdb
    built = _PANELS[spec.kind]().title(spec.title).span(spec.width).height(spec.height)
    if spec.description:
        built = built.description(spec.description)
    if spec.kind == "text":
        return built.content(spec.text)
    built = built.datasource(_source(flavour))
    for index, series in enumerate(spec.series):
        built = built.with_target(_target(flavour, series, _REF_IDS[index], spec.kind))
    if spec.kind == "timeseries":
        # Join points up to one voting period plus the margin apart (hourly InfluxQL buckets between them are null);
        # a longer gap (the agent was down) stays a gap.
        built = built.span_nulls(LATEST_WINDOW_SECONDS * 1000)
        if spec.threshold is not None:
            # A line at the threshold: below it red, above it green. Set on every number field by an override, which
            # Grafana applies alike: @grafana/schema types the panel-wide `thresholds.mode` as a TypeScript enum that
            # no JSON literal satisfies (tests/unit/test_dashboard_schema.py).
            thresholds = {"mode": "absolute", "steps": [{"color": "red", "value": None},
                                                         {"color": "green", "value": spec.threshold}]}
            built = (built.with_override(MatcherConfig(id_val="byType", options="number"),
                                         [DynamicConfigValue("thresholds", thresholds)])
                     .thresholds_style(common.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.LINE)))
        if spec.band is not None:
            # Grafana fills from the upper series down to the lower one (fillBelowTo names it by its legend).
            upper, lower = spec.band
            built = (built.override_by_name(upper, [DynamicConfigValue("custom.fillBelowTo", lower),
                                                    DynamicConfigValue("custom.fillOpacity", 20),
                                                    DynamicConfigValue("custom.lineWidth", 0)])
                     .override_by_name(lower, [DynamicConfigValue("custom.lineWidth", 0)]))
    if spec.kind == "geomap":
        # Countries are ISO codes: Grafana's built-in "countries" gazetteer places them.
        layer = (common.MapLayerOptions().type("markers").name("weight by country")
                 .location(common.FrameGeometrySource().mode(FrameGeometrySourceMode.LOOKUP)
                           .lookup("country").gazetteer("public/gazetteer/countries.json")))
        built = built.layers([layer])
    return built.unit(spec.unit)


def build(flavour: str, spec: Dashboard):
    board = (dashboard.Dashboard(spec.title).uid(f"{spec.uid}-{flavour}").description(spec.description)
             .tags(["tor", "allium-agent", flavour]).time("now-24h", "now").refresh("5m").timezone("utc")
             .readonly())
    board = board.with_variable(dashboard.DatasourceVariable("datasource").label("Datasource").type(FLAVOURS[flavour]))
    if "role" in spec.variables:
        board = board.with_variable(dashboard.CustomVariable("role").label("Role").values(",".join(ROLES))
                                    .current(VariableOption(text=ROLES[0], value=ROLES[0]))
                                    .options([VariableOption(selected=role == ROLES[0], text=role, value=role)
                                              for role in ROLES]))
    if "fingerprint" in spec.variables:
        query = ("label_values(tor_relay_weight, fingerprint)" if flavour == "prometheus"
                 else 'SHOW TAG VALUES FROM "tor_relay" WITH KEY = "fingerprint"')
        board = board.with_variable(dashboard.QueryVariable("fingerprint").label("Relay fingerprint").query(query)
                                    .datasource(_source(flavour)).refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))
    # Grafana's own "Annotations & Alerts" (its alert rules' state changes) first, as Grafana writes it.
    board = board.annotation(dashboard.AnnotationQuery().name("Annotations & Alerts").built_in(1).enable(True)
                             .hide(True).icon_color("rgba(0, 211, 255, 1)").type("dashboard")
                             .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --")))
    for annotation in spec.annotations:
        board = board.annotation(Prebuilt(AnnotationJSON(flavour, annotation)))
    for panel in spec.panels:
        board = board.with_row(dashboard.Row(panel.title)) if panel.kind == "row" else board.with_panel(
            _panel(flavour, panel))
    return board.build()


def _tidy(board: dict) -> dict:
    """Drops the interval-variable settings the SDK writes on every variable: Grafana's schema knows them
    only on interval variables (tsc against @grafana/schema flags them)."""
    for variable in board.get("templating", {}).get("list", []):
        if variable.get("type") != "interval":
            for key in ("auto", "auto_count", "auto_min"):
                variable.pop(key, None)
    return board


def render_all() -> dict[Path, str]:
    """Relative path -> JSON text of every dashboard in both flavours (deterministic)."""
    rendered = {}
    for flavour in FLAVOURS:
        for spec in DASHBOARDS:
            board = _tidy(json.loads(json.dumps(build(flavour, spec), cls=JSONEncoder)))
            text_json = json.dumps(board, indent=2, sort_keys=True) + "\n"
            rendered[Path(flavour) / f"{spec.uid}.json"] = text_json
    return rendered


def main() -> None:
    for relative, content in render_all().items():
        path = OUTPUT / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        print(path)


if __name__ == "__main__":
    main()
