"""Points to InfluxDB line protocol, seconds precision.

Our own encoder rather than influxdb-client's Point: it is a few lines, runs
on every point of every period (tens of thousands), and a test holds its
output against influxdb-client's for the same points.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from itertools import chain, repeat

import numpy as np

from agent.model.points import ColumnPoint, Point, PointColumns

_MEASUREMENT = str.maketrans({",": r"\,", " ": r"\ ", "\n": r"\ ", "\r": r"\ ", "\\": "/"})
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
    blocks: dict[int, tuple[PointColumns, list[str]]] = {}  # id -> (block, its lines), encoded once per call
    for item in points:
        if type(item) is ColumnPoint:
            block, row = item
            encoded = blocks.get(id(block))
            if encoded is None:
                encoded = blocks[id(block)] = (block, encode_columns(block))
            if encoded[1][row]:
                lines.append(encoded[1][row])
        elif item.fields:
            lines.append(encode(item))
    return lines


def encode_columns(block: PointColumns) -> list[str]:
    """The line of every row of a column block ('' for a row without fields), built column by column.

    The same text ``encode`` gives each row as a Point, except the field order:
    the 0/1 columns (flags) come first, as one piece per distinct combination.
    With them every row has a field, and the block's text is joined in one go
    and split into lines (tag values are escaped, so they hold no newline).
    Each row is a few pieces: its head and tag, its flags, each field with its
    key, and the time (a row of 6,500 relays' 22 fields in ~3.5 ms).
    """
    head = _measurement(block.measurement) + "," + _key(block.tag) + "="
    binary = [name for name, column in block.fields.items() if np.isin(column, (0.0, 1.0)).all()]
    pieces = [_field_pieces("," + _key(name) + "=", column) for name, column in block.fields.items()
              if name not in binary]
    if not len(block) or not binary:  # a row could lack every field: each row's fields joined on their own
        fields = ["".join(parts)[1:] for parts in zip(*pieces)] if pieces else [""] * len(block)
        return [head + value + " " + text + f" {block.time}" if text else ""
                for value, text in zip(_tag_values(block), fields)]
    text = "".join(chain.from_iterable(zip(_prefixed(head, _tag_values(block), " "), _combination_texts(block, binary),
                                           *pieces, repeat(f" {block.time}\n"))))
    return text.split("\n")[:-1]


#: What a tag value must not hold unescaped.
_ESCAPED = tuple(map(chr, _KEY_OR_TAG))


def _tag_values(block: PointColumns) -> list[str]:
    values = block.tag_values
    joined = "".join(values)
    if any(character in joined for character in _ESCAPED):  # fingerprints never: six scans of the text
        values = [value.translate(_KEY_OR_TAG) for value in values]
    return values


def _prefixed(prefix: str, texts: list[str], suffix: str = "") -> list[str]:
    """``prefix + text + suffix`` of each text, none holding a newline (joined and split again at C speed)."""
    return (prefix + (suffix + "\n" + prefix).join(texts) + suffix).split("\n") if texts else []


def _combination_texts(block: PointColumns, binary: list[str]) -> list[str]:
    """Per row: ``flag_a=1,flag_b=0,...`` of the 0/1 columns, one text per distinct combination."""
    codes = np.zeros(len(block), np.int64)
    for bit, name in enumerate(binary):
        codes |= block.fields[name].astype(np.int64) << bit
    combinations, inverse = np.unique(codes, return_inverse=True)
    texts = [",".join(f"{_key(name)}={(code >> bit) & 1}" for bit, name in enumerate(binary))
             for code in combinations.tolist()]
    return [texts[index] for index in inverse.tolist()]


def _field_pieces(prefix: str, column: np.ndarray) -> list[str]:
    """What one field adds to each row: ``prefix + number``, or '' where the row has no value (NaN)."""
    present = ~np.isnan(column)
    if present.all():
        return _numbers(column, prefix)
    texts = np.full(len(column), "", object)
    texts[present] = _numbers(column[present], prefix)
    return texts.tolist()


def _numbers(column: np.ndarray, prefix: str) -> list[str]:
    """``prefix + _number(value)`` of each value (none NaN), formatted by repr of the whole list at once."""
    if not len(column):
        return []
    if ((np.abs(column) < 1e15) & (column == np.floor(column))).all():  # int text is the float's without '.0'
        return (prefix + repr(column.astype(np.int64).tolist())[1:-1].replace(", ", "\n" + prefix)).split("\n")
    # Fractions repeat (relays of equal weight): each distinct value is formatted once, its shortest
    # round-trip text; '.0' only ends integral values, and is dropped there as _number does.
    distinct, inverse = np.unique(column, return_inverse=True)
    texts = repr(distinct.tolist())[1:-1].replace(".0, ", ", ")
    texts = (texts[:-2] if texts.endswith(".0") else texts).split(", ")
    return list(map(_prefixed(prefix, texts).__getitem__, inverse.tolist()))
