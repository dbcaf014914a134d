"""The monthly report's chart: each relay's consensus weight and advertised bandwidth over the month, as a PNG.

About 600 x 240 pixels, two panels side by side, one line per relay (at most
``MAX_LINES``, the heaviest by median weight). Drawn with matplotlib's Agg
canvas on a Figure of its own (no pyplot: no global state, safe in the
daemon's threads) in the DejaVu Sans font matplotlib ships, so nothing is
fetched. The alt text says in words what the lines show.
"""

from __future__ import annotations

import io
import math
import statistics

from agent.reports.monthly import DAY, Month, MonthlyReport, Samples
from agent.reports.units import bandwidth, percent, weight

WIDTH, HEIGHT, DPI = 600, 240, 100
MAX_LINES = 5
#: Colour-blind-safe (Okabe-Ito), distinguishable in greyscale by line style too.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00")
STYLES = ("-", "--", "-.", ":", "-")


def charted(report: MonthlyReport) -> list[str]:
    """The fingerprints drawn: the heaviest relays with any weight sample, by median weight."""
    def weight(fingerprint: str) -> float:
        values = [value for _, value in report.series.get(fingerprint, {}).get("weight", [])]
        return statistics.median(values) if values else -1.0
    drawn = [relay.fingerprint for relay in report.relays if weight(relay.fingerprint) >= 0]
    return sorted(drawn, key=lambda fp: (-weight(fp), fp))[:MAX_LINES]


def render(report: MonthlyReport) -> bytes:
    """The chart as PNG bytes (it says so in the panel when there is nothing to draw)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI)
    FigureCanvasAgg(figure)
    names = {relay.fingerprint: relay.nickname or relay.fingerprint[:8] for relay in report.relays}
    drawn = charted(report)
    panels = (("weight", "Consensus weight", 1.0), ("advertised_bandwidth_bytes", "Advertised bandwidth (MB/s)", 1e6))
    for index, (field, title, scale) in enumerate(panels):
        axes = figure.add_subplot(1, 2, index + 1)
        axes.set_title(title, fontsize=9)
        for number, fingerprint in enumerate(drawn):
            samples = report.series.get(fingerprint, {}).get(field, [])
            days, values = _broken(samples, report.month, scale)
            if days:
                axes.plot(days, values, STYLES[number], color=COLOURS[number], linewidth=1.2,
                          label=names.get(fingerprint, fingerprint[:8]))
        if not drawn:
            axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes, fontsize=9)
        axes.set_xlim(1, report.month.hours / 24 + 1)
        axes.set_xlabel(f"day of {report.month.label} (UTC)", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(True, linewidth=0.3, alpha=0.5)
        axes.ticklabel_format(axis="y", useOffset=False, style="plain")
        if index == 0 and drawn:
            axes.legend(fontsize=7, frameon=False, loc="best")
    figure.tight_layout(pad=0.6)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _broken(samples: Samples, month: Month, scale: float) -> tuple[list[float], list[float]]:
    """Sample times as fractional days of the month (the 1st at 0:00 UTC is 1.0) and the values over ``scale``,
    with a gap (NaN) wherever more than 90 minutes pass without a sample: an absent relay is no straight line."""
    days: list[float] = []
    values: list[float] = []
    before = None
    for at, value in sorted(samples):
        if before is not None and at - before > 5400:
            days.append(1 + (before + 3600 - month.start) / DAY)
            values.append(math.nan)
        days.append(1 + (at - month.start) / DAY)
        values.append(value / scale)
        before = at
    return days, values


def alt_text(report: MonthlyReport) -> str:
    """What the chart shows, in words: per relay drawn, its weight and bandwidth from the first week to the last."""
    drawn = set(charted(report))
    if not drawn:
        return f"Chart for {report.month.label}: no consensus weight or bandwidth was recorded for your relays."
    parts = []
    for relay in report.relays:
        if relay.fingerprint in drawn:
            parts.append(f"{relay.name}: weight {weight(relay.weight.first)} to {weight(relay.weight.last)} "
                         f"({percent(relay.weight.percent)}), advertised bandwidth {bandwidth(relay.bandwidth.first)}"
                         f" to {bandwidth(relay.bandwidth.last)} ({percent(relay.bandwidth.percent)})")
    more = len(report.relays) - len(drawn)
    tail = f"; {more} more relays not drawn" if more > 0 else ""
    return (f"Line charts of consensus weight and advertised bandwidth per day of {report.month.label} (UTC), "
            f"first-week median to last-week median: " + "; ".join(parts) + tail + ".")
