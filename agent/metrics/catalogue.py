"""The metric catalogue: every measurement, field, tag set, type, unit and meaning.

``catalogue.csv`` beside this file is the one list; tests hold every emitted
point against it and ``docs/metrics.md`` is generated from it
(``python -m agent.metrics.catalogue > docs/metrics.md``; a test fails when
the file is stale).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from agent.model.points import Point

#: Tags whose values grow with the network, each confined to its own measurement.
UNBOUNDED_TAGS = {"fingerprint": "tor_relay"}


@dataclass(frozen=True)
class Metric:
    measurement: str
    field: str
    tags: tuple[str, ...]
    type: str
    unit: str
    description: str

    @property
    def prometheus_name(self) -> str:
        """The name VictoriaMetrics gives it: measurement_field."""
        return f"{self.measurement}_{self.field}"


@lru_cache(maxsize=1)
def catalogue() -> dict[tuple[str, str], Metric]:
    text = resources.files("agent.metrics").joinpath("catalogue.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return {(row["measurement"], row["field"]): Metric(row["measurement"], row["field"], tuple(row["tags"].split()),
                                                        row["type"], row["unit"], row["description"]) for row in rows}


def tags_of(measurement: str) -> tuple[str, ...] | None:
    for metric in catalogue().values():
        if metric.measurement == measurement:
            return metric.tags
    return None


def problems(points: Iterable[Point]) -> list[str]:
    """Why points do not fit the catalogue (empty when they all do); one line per kind of problem."""
    found: set[str] = set()
    entries = catalogue()
    for item in points:
        expected_tags = tags_of(item.measurement)
        if expected_tags is None:
            found.add(f"{item.measurement}: measurement not in the catalogue")
            continue
        if set(item.tags) != set(expected_tags):
            found.add(f"{item.measurement}: tags {sorted(item.tags)} != catalogued {sorted(expected_tags)}")
        for tag, value in item.tags.items():
            if not isinstance(value, str) or not value:
                found.add(f"{item.measurement}: tag {tag} must be a non-empty string, got {value!r}")
        for name, value in item.fields.items():
            if (item.measurement, name) not in entries:
                found.add(f"{item.measurement}: field {name} not in the catalogue")
            if not isinstance(value, float) or math.isnan(value) or math.isinf(value):
                found.add(f"{item.measurement}.{name}: value must be a finite float, got {value!r}")
        if not isinstance(item.time, int) or item.time <= 0:
            found.add(f"{item.measurement}: time must be Unix seconds, got {item.time!r}")
    return sorted(found)


def render_markdown() -> str:
    """docs/metrics.md."""
    lines = [
        "# Metrics",
        "",
        "Generated from `agent/metrics/catalogue.csv` by `python -m agent.metrics.catalogue`; do not edit.",
        "",
        "Every point is stamped with the valid-after of the newest accepted consensus, so rewriting a",
        "period overwrites it. Fields are floats; booleans are 0/1. In InfluxDB a field is",
        "`measurement.field`; VictoriaMetrics (and PromQL) names it `measurement_field` with the tags",
        "as labels. Measurements with a `vantage` tag depend on where the agent stands.",
        f"Unbounded tags: {', '.join(f'`{tag}` (only in `{where}`)' for tag, where in UNBOUNDED_TAGS.items())};",
        "`tor_operator` is limited to the top operators by weight (`metrics.operators_top_n`).",
        "",
    ]
    by_measurement: dict[str, list[Metric]] = {}
    for metric in catalogue().values():
        by_measurement.setdefault(metric.measurement, []).append(metric)
    for measurement, metrics in by_measurement.items():
        tags = ", ".join(f"`{tag}`" for tag in metrics[0].tags) or "none"
        lines += [f"## {measurement}", "", f"Tags: {tags}", "",
                  "| field | PromQL name | type | unit | description |", "|---|---|---|---|---|"]
        lines += [f"| `{m.field}` | `{m.prometheus_name}` | {m.type} | {m.unit} | {m.description} |" for m in metrics]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render_markdown(), end="")
