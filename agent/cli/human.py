"""How the command line shows things to people: the one place for sizes, durations, numbers, times and tables.

Every human (non-JSON) output of ``allium-agent`` goes through these, so the
commands agree with each other: sizes in binary units (``1.0 GiB``),
durations in the largest units that matter (``185 ms``, ``8.2 s``,
``3 h 20 min``), numbers by magnitude (``0.004182``, ``12,345``), every time
in UTC written ``2026-12-06T11:00:00Z``, counts with their noun in the right
number (``1 period``, ``2 periods``) and aligned columns. JSON and CSV keep
the raw values; these are for reading only.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timezone

_SIZE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 period``, ``2 periods``, ``0 periods``; ``nouns`` for an irregular plural (``delivery``, ``deliveries``)."""
    return f"{count:,} {noun if count == 1 else nouns or noun + 's'}"


def joined(parts: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)


def size(count: float | None) -> str:
    """Bytes in binary units: ``512 B``, ``230.4 KiB``, ``1.0 GiB``; ``-`` for None."""
    if count is None:
        return "-"
    if abs(count) < 1024:
        return f"{count:.0f} B"
    value = float(count)
    for unit in _SIZE_UNITS:
        value /= 1024
        if abs(value) < 1024 or unit == _SIZE_UNITS[-1]:
            break
    return f"{value:.1f} {unit}"


def duration(seconds: float | None) -> str:
    """``185 ms``, ``8.2 s``, ``42 s``, ``1 min 30 s``, ``45 min``, ``3 h 20 min``, ``2 d 4 h``; ``-`` for None.

    Precision shrinks as the duration grows: nobody reads the seconds of a
    three-hour outage. A negative duration (a clock behind ours) keeps its sign.
    """
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds == 0:
        return "0 s"
    if seconds < 0.001:
        return f"{seconds * 1000:.1g} ms"
    if seconds < 0.9995:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 9.95:
        return f"{seconds:.1f} s"
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 599.5:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    if minutes < 24 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, rest = divmod(round(seconds / 3600), 24)
    return f"{days} d {rest} h" if rest else f"{days} d"


def number(value: object, digits: int = 4) -> str:
    """A number by its magnitude: ``0.004182`` (``digits`` significant), ``3.142``, ``12,345``, ``1.5e-07``.

    Whole numbers stay whole (``6``, ``1,234,567``), fractions of 1,000 and
    more are rounded to whole ones, tiny and huge ones take an exponent.
    Takes what a PromQL answer holds too (``"0.00418232400034"``, ``"NaN"``,
    ``"+Inf"``); text that is not a number is returned as it is.
    """
    if isinstance(value, bool) or value is None:
        return str(value)
    try:
        figure = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(figure):
        return "NaN"
    if math.isinf(figure):
        return "+Inf" if figure > 0 else "-Inf"
    magnitude = abs(figure)
    if magnitude >= 1e15 or 0 < magnitude < 1e-4:
        return f"{figure:.{digits}g}"
    if figure == int(figure):
        return f"{int(figure):,}"
    decimals = digits - 1 - math.floor(math.log10(magnitude))
    if decimals <= 0 or abs(round(figure, decimals)) >= 10 ** (digits - 1):
        return f"{figure:,.0f}"
    return f"{figure:.{decimals}f}".rstrip("0").rstrip(".")


def utc(moment: datetime | float | str | None) -> str:
    """A time in UTC as ``2026-12-06T11:00:00Z``: from Unix seconds, a datetime (naive: UTC) or ISO text.

    ``-`` for None; text that is not an ISO time is returned as it is.
    """
    if moment is None:
        return "-"
    if isinstance(moment, str):
        text = moment
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return text
    if isinstance(moment, datetime):
        stamp = moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
    else:
        try:
            stamp = datetime.fromtimestamp(moment, timezone.utc)
        except (OverflowError, OSError, ValueError):
            return str(moment)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def printable(text: object) -> str:
    """Text from the state or a server (addresses, subjects, errors) with control characters shown as escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def table(rows: Iterable[Sequence[object]], header: Sequence[str] | None = None, right: Collection[int] = (),
          indent: str = "") -> list[str]:
    """Aligned columns two spaces apart, one line per row; columns numbered in ``right`` are right-aligned.

    With no header it is a list of ``label  value`` lines, the values in one
    column. Cells are shown with ``printable``; lines carry no trailing blanks.
    """
    body = [[printable(cell) for cell in row] for row in rows]
    lines = ([list(header)] if header is not None else []) + body
    if not lines:
        return []
    columns = max(len(line) for line in lines)
    widths = [max((len(line[i]) for line in lines if i < len(line)), default=0) for i in range(columns)]
    return [indent + "  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                               for i, cell in enumerate(line)).rstrip() for line in lines]
