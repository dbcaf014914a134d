"""The point: one measurement, its tags and numeric fields at one period's time."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import repeat
from typing import Any, SupportsFloat

import numpy as np
from numpy.typing import NDArray


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


def point(measurement: str, tags: dict[str, str], fields: Mapping[str, SupportsFloat | None], time: int) -> Point:
    """Builds a Point, dropping None fields and casting the rest to float."""
    return Point(measurement, tags, {name: float(value) for name, value in fields.items() if value is not None}, time)


class PointColumns:
    """Many points of one measurement, one tag and one time, held as columns (the per-relay points).

    Thousands of relays a period make thousands of points of the same shape;
    as columns they are built with numpy and encoded in bulk
    (``agent.store.lineprotocol``). ``points()`` still gives one point per
    row, so everything that reads points reads these too. A NaN field is an
    absent field, as None is for ``point()``.
    """

    def __init__(self, measurement: str, tag: str, tag_values: list[str], fields: dict[str, NDArray[Any]],
                 time: int) -> None:
        self.measurement, self.tag, self.tag_values, self.time = measurement, tag, tag_values, time
        self.fields: dict[str, NDArray[np.float64]] = {name: np.array(column, float)
                                                       for name, column in fields.items()}  # copies: encoded later

    def __len__(self) -> int:
        return len(self.tag_values)

    def points(self) -> list[ColumnPoint]:
        return list(map(tuple.__new__, repeat(ColumnPoint), zip(repeat(self), range(len(self)))))

    def fields_of(self, row: int) -> dict[str, float]:
        values = ((name, float(column[row])) for name, column in self.fields.items())
        return {name: value for name, value in values if not math.isnan(value)}


class ColumnPoint(tuple[PointColumns, int]):
    """One row of a PointColumns, read like a Point: a (block, row) pair, made in bulk by ``points()``."""

    __slots__ = ()

    @property
    def measurement(self) -> str:
        return self[0].measurement

    @property
    def tags(self) -> dict[str, str]:
        return {self[0].tag: self[0].tag_values[self[1]]}

    @property
    def fields(self) -> dict[str, float]:
        return self[0].fields_of(self[1])

    @property
    def time(self) -> int:
        return self[0].time


def joined(points: list[Any], more: list[Any]) -> list[Any]:
    """``points`` plus ``more``, where a block of ``more``'s column points joins the block of the same rows.

    A later stage (a learner) adding per-relay fields then adds them to the
    period's own tor_relay points: one point per relay and period, not two.
    """
    blocks = {id(each[0]): each[0] for each in points if isinstance(each, ColumnPoint)}
    extra: list[Any] = []
    merged: set[int] = set()
    for each in more:
        if not isinstance(each, ColumnPoint):
            extra.append(each)
            continue
        block = each[0]
        if id(block) in merged:
            continue
        target = next((mine for mine in blocks.values() if mine.measurement == block.measurement
                       and mine.tag == block.tag and mine.time == block.time
                       and mine.tag_values == block.tag_values), None)
        if target is None:
            extra.append(each)
        else:
            target.fields.update(block.fields)
            merged.add(id(block))
    return [*points, *extra]
