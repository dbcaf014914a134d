"""Points to InfluxDB line protocol, seconds precision.

Our own encoder rather than influxdb-client's Point: it is a few lines, runs
on every point of every period (tens of thousands), and a test holds its
output against influxdb-client's for the same points.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

from agent.metrics.points import ColumnPoint, Point, PointColumns

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\ ", "\r": r"\ ", "\\": "/"})
_NEEDS_ESCAPE = re.compile(r"[,= \n\r\\]")
_KEY_OR_TAG = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": r"\ ", "\r": r"\ ", "\\": "/"})


def encode(point: Point) -> str:
    """One line: ``measurement,tag=v field=1.5 <unix seconds>``.

    Tag values are attacker-controlled (contact lines): newlines become (escaped) spaces
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


def encode_all(points: Iterable[Point | ColumnPoint]) -> list[str]:
    """Lines for every point that has at least one field (a column block's rows are encoded in bulk)."""
    lines = []
    for item in points:
        if type(item) is ColumnPoint:
            block, row = item
            if block.lines is None:
                block.lines = encode_columns(block)
            if block.lines[row]:
                lines.append(block.lines[row])
        elif item.fields:
            lines.append(encode(item))
    return lines


def encode_columns(block: PointColumns) -> list[str]:
    """The line of every row of a column block ('' for a row without fields), built column by column.

    The same text ``encode`` gives each row as a Point, except the field order:
    the 0/1 columns (flags) come first, as one piece per distinct combination.
    """
    rows = len(block)
    head = _measurement(block.measurement) + "," + _key(block.tag) + "="
    pieces = []
    binary = [name for name, column in block.fields.items() if np.isin(column, (0.0, 1.0)).all()]
    if binary:
        codes = np.zeros(rows, np.int64)
        for bit, name in enumerate(binary):
            codes |= block.fields[name].astype(np.int64) << bit
        combinations, inverse = np.unique(codes, return_inverse=True)
        texts = ["".join(f",{_key(name)}={(code >> bit) & 1}" for bit, name in enumerate(binary))
                 for code in combinations.tolist()]
        pieces.append([texts[index] for index in inverse.tolist()])
    for name, column in block.fields.items():
        if name not in binary:
            pieces.append(_field_texts("," + _key(name) + "=", column))
    fields = ["".join(parts)[1:] for parts in zip(*pieces)] if pieces else [""] * rows
    time = f" {block.time}"
    values = block.tag_values
    if _NEEDS_ESCAPE.search("".join(values)):
        values = [value.translate(_KEY_OR_TAG) for value in values]
    return [head + value + " " + text + time if text else "" for value, text in zip(values, fields)]


def _field_texts(prefix: str, column: np.ndarray) -> list[str]:
    """``prefix + number`` per row, '' where the value is NaN (absent)."""
    present = ~np.isnan(column)
    values = np.where(present, column, 0)
    whole = present & (np.abs(values) < 1e15) & (values == np.floor(values))
    if whole.all():  # integral values: int text equals the float's shortest text without '.0'
        return [prefix + text for text in map(str, column.astype(np.int64).tolist())]
    return [prefix + _number(value) if keep else "" for value, keep in zip(column.tolist(), present.tolist())]
