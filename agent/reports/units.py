"""The monthly report's figures as people read them: UTC times with Z, MB/s, percentages, hours."""

from __future__ import annotations

from datetime import datetime, timezone


def utc(moment: int | None) -> str:
    """``2024-05-31T23:00Z``; ``-`` for None."""
    if moment is None:
        return "-"
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def bandwidth(bytes_per_second: float | None) -> str:
    """Advertised bandwidth in decimal units, as tor's and Relay Search's: ``850 kB/s``, ``12.3 MB/s``."""
    if bytes_per_second is None:
        return "-"
    for unit, size in (("GB/s", 1e9), ("MB/s", 1e6), ("kB/s", 1e3)):
        if bytes_per_second >= size:
            value = bytes_per_second / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{bytes_per_second:.0f} B/s"


def weight(value: float | None) -> str:
    """A consensus weight (a unitless number, about kB/s): whole, with thousands separators."""
    return "-" if value is None else f"{value:,.0f}"


def percent(value: float | None, signed: bool = True) -> str:
    """``+5.9 %``, ``-12.0 %``, ``0.0 %``; ``n/a`` when there is nothing to compare."""
    if value is None:
        return "n/a"
    return f"{value:+.1f} %" if signed and round(value, 1) != 0 else f"{abs(value) if signed else value:.1f} %"


def share(part: int, whole: int) -> str:
    """``700 h of 744 h (94.1 %)``."""
    return f"{part:,} h of {whole:,} h ({percent(100 * part / whole if whole else None, signed=False)})"
