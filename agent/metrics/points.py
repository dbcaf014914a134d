"""The point: one measurement, its tags and numeric fields at one period's time."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Point:
    """A time-series point; ``time`` is the consensus valid-after in Unix seconds.

    Using the valid-after (not the wall clock) makes a rerun or backfill of the
    same period overwrite its points instead of adding new ones. Fields are
    always floats: InfluxDB rejects a field whose type changes between writes,
    and strings belong in tags (VictoriaMetrics stores string fields as 0).
    """

    measurement: str
    tags: dict[str, str]
    fields: dict[str, float]
    time: int


def point(measurement: str, tags: dict[str, str], fields: dict, time: int) -> Point:
    """Builds a Point, dropping None fields and casting the rest to float."""
    return Point(measurement, tags, {name: float(value) for name, value in fields.items() if value is not None}, time)
