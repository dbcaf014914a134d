"""Points to InfluxDB line protocol, seconds precision.

Our own encoder rather than influxdb-client's Point: it is a few lines, runs
on every point of every period (tens of thousands), and a test holds its
output against influxdb-client's for the same points.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

from agent.metrics.points import Point

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": " ", "\r": " ", "\\": "/"})
_KEY_OR_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " ", "\r": " ", "\\": "/"})


def encode(point: Point) -> str:
    """One line: ``measurement,tag=v field=1.5 <unix seconds>``.

    Tag values are attacker-controlled (contact lines): newlines become spaces
    and backslashes slashes, which keeps every line parseable.
    """
    head = _measurement(point.measurement)
    for key in sorted(point.tags):
        head += f",{_key(key)}={point.tags[key].translate(_KEY_OR_TAG)}"
    fields = ",".join(f"{_key(name)}={_number(value)}" for name, value in point.fields.items())
    return f"{head} {fields} {point.time}"


@lru_cache(maxsize=1024)  # measurement, tag and field names: a few hundred, escaped once
def _measurement(name: str) -> str:
    return name.translate(_MEASUREMENT)


@lru_cache(maxsize=1024)
def _key(name: str) -> str:
    return name.translate(_KEY_OR_TAG)


def _number(value: float) -> str:
    """Shortest round-trip text; integral values without '.0' (still floats: no 'i' suffix)."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def encode_all(points: Iterable[Point]) -> list[str]:
    """Lines for every point that has at least one field."""
    return [encode(item) for item in points if item.fields]
