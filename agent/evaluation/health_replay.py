"""Backfills the network health score over the 2014-2016 depictor vote history, through a real store, to a PNG.

    python -m agent.evaluation.health_replay --depictor CSV [--out PNG] [--store URL]

Why: the score's formula (``agent.metrics.health``) has to show on real
history that it drops at the documented incidents and stays steady
otherwise, and the picture in docs/health-score.md has to come from what a
dashboard would see: the points are written to VictoriaMetrics (InfluxDB line
protocol, ``/api/v2/write``), read back with PromQL (``/api/v1/query_range``)
and only that answer is drawn.

The depictor CSV has, per authority and hour, the relays its vote lists and
how many it measured. So the replay scores three components (authorities,
churn, coverage); freshness, capacity and diversity have no inputs in it and
are left out with the weights renormalised. A row in which some vote lists
fewer than half the relays of the largest vote of the hour (0 included) is a
truncated download of depictor's collector, not a network event: it is a
collection gap and gets no score.

Without ``--store`` a VictoriaMetrics of its own is started on 127.0.0.1 with
a temporary data directory and stopped by PID; a store given with ``--store``
must keep 2014 (``-retentionPeriod=100y``). Sends nothing off 127.0.0.1
unless told to. The PNG is drawn with numpy and zlib (a 5x7 bitmap font
below): no plotting library to install for one picture.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests

from agent.metrics.health import WINDOW_PERIODS, Component, HealthInputs, HealthState, health_points
from agent.model.points import Point
from agent.store.embedded import INSTALL_HINT, EmbeddedSettings, EmbeddedVictoria

HOUR = 3600
THRESHOLD = 75.0  # "incident" line; docs/health-score.md says where it comes from
GAP_FRACTION = 0.5  # a vote below this share of the hour's largest vote is a truncated download


def _unix(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp())


@dataclass(frozen=True)
class Incident:
    """A documented incident: its name and first and last affected hour (inclusive)."""

    name: str
    start: int
    end: int

    def covers(self, moment: int) -> bool:
        return self.start <= moment <= self.end


INCIDENTS = (
    Incident("Heartbleed", _unix("2014-04-17T21:00:00Z"), _unix("2014-04-17T23:00:00Z")),
    Incident("LizardNSA", _unix("2014-12-26T14:00:00Z"), _unix("2014-12-27T01:00:00Z")),
)


@dataclass(frozen=True)
class Row:
    """One hour of the depictor CSV: per voting authority, the relays its vote lists and those it measured."""

    time: int
    known: dict[str, int]
    measured: dict[str, int]


@dataclass(frozen=True)
class Scored:
    time: int
    score: float | None
    components: list[Component]
    gap: bool


def read_depictor(path: Path) -> list[Row]:
    """The CSV's rows; an authority with an empty cell did not vote that hour."""
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        names = [column[:-len("_known")] for column in reader.fieldnames or () if column.endswith("_known")
                 and not column.startswith("median")]
        rows = []
        for line in reader:
            known = {name: int(line[f"{name}_known"]) for name in names if line[f"{name}_known"]}
            measured = {name: int(line[f"{name}_bwauth"]) for name in names if line.get(f"{name}_bwauth")}
            rows.append(Row(_unix(line["valid_after_utc"]), known, measured))
    return rows


def collection_gap(row: Row) -> bool:
    """True when some vote lists fewer than half the relays of the hour's largest one (or none voted)."""
    largest = max(row.known.values(), default=0)
    return largest == 0 or min(row.known.values()) < GAP_FRACTION * largest


def replay(rows: Iterable[Row]) -> list[Scored]:
    """The score of every row, in order; a collection gap gets none and breaks the churn chain.

    Expected authorities: those that voted in the four weeks before (depictor
    has no configured list). Churn: the hour-to-hour change of the median
    vote size (net change), a lower bound of the flows of relays joining and
    leaving, which the live agent counts relay by relay.
    """
    state, last_vote = HealthState(), {}
    previous: tuple[int, float] | None = None  # the last scored row's time and median vote size
    scored = []
    for row in rows:
        if collection_gap(row):
            scored.append(Scored(row.time, None, [], True))
            previous = None
            continue
        for name in row.known:
            last_vote[name] = row.time
        roster = [name for name, seen in last_vote.items() if row.time - seen <= WINDOW_PERIODS * HOUR]
        relays = float(statistics.median(row.known.values()))
        change = relays - previous[1] if previous is not None and row.time - previous[0] == HOUR else None
        ratios = [count / row.known[name] for name, count in row.measured.items() if count > 0 and name in row.known]
        inputs = HealthInputs(
            authorities=len(roster), votes=len(row.known), relays=relays, net_change=change,
            bandwidth_authorities=len(ratios), measured_ratio=statistics.median(ratios) if ratios else None)
        score, components = state.score(inputs)
        scored.append(Scored(row.time, score, components, False))
        previous = (row.time, relays)
    return scored


def summary(scored: list[Scored], threshold: float = THRESHOLD) -> list[tuple[str, int, float, float, float]]:
    """Per incident window and for the other scored hours: (name, hours, min, median, share >= threshold)."""
    groups: dict[str, list[float]] = {incident.name: [] for incident in INCIDENTS}
    groups["other hours"] = []
    for item in scored:
        if item.score is not None:
            name = next((i.name for i in INCIDENTS if i.covers(item.time)), "other hours")
            groups[name].append(item.score)
    return [(name, len(values), min(values), statistics.median(values),
             sum(v >= threshold for v in values) / len(values)) for name, values in groups.items() if values]


def line_protocol(points: Iterable[Point]) -> str:
    """Points as InfluxDB line protocol, seconds precision (tags here are plain words: no escaping needed)."""
    lines = []
    for item in points:
        tags = "".join(f",{key}={value}" for key, value in sorted(item.tags.items()))
        fields = ",".join(f"{key}={value!r}" for key, value in item.fields.items())
        lines.append(f"{item.measurement}{tags} {fields} {item.time}")
    return "\n".join(lines)


def write(url: str, scored: Iterable[Scored], batch: int = 20000) -> int:
    """Writes every scored period's points; returns the number of lines."""
    points = [p for item in scored if not item.gap for p in health_points(item.score, item.components, item.time)]
    for first in range(0, len(points), batch):
        answer = requests.post(f"{url}/api/v2/write", params={"precision": "s"}, timeout=60,
                               data=line_protocol(points[first:first + batch]).encode())
        answer.raise_for_status()
    requests.get(f"{url}/internal/force_flush", timeout=30)
    return len(points)


def query_range(url: str, promql: str, start: int, end: int, step: int = HOUR) -> dict[str, dict[int, float]]:
    """``promql`` over [start, end] at ``step``: {its component label (or "") : {time: value}}.

    In chunks of 20,000 steps: VictoriaMetrics answers at most 30,000 points per series and query.
    """
    series: dict[str, dict[int, float]] = {}
    for first in range(start, end + 1, 20000 * step):
        answer = requests.post(f"{url}/api/v1/query_range", timeout=120, data={
            "query": promql, "start": first, "end": min(end, first + 19999 * step), "step": step}).json()
        if answer.get("status") != "success":
            raise RuntimeError(f"{promql}: {answer}")
        for result in answer["data"]["result"]:
            values = series.setdefault(result["metric"].get("component", ""), {})
            values.update({int(t): float(v) for t, v in result["values"]})
    return series


@contextmanager
def own_victoria() -> Iterator[str]:
    """The agent's embedded store (``agent.store.embedded``) on a temporary directory, stopped by PID afterwards."""
    with tempfile.TemporaryDirectory(prefix="health-replay-") as data:
        store = EmbeddedVictoria.start_or_attach(EmbeddedSettings(Path(data), "victoria-metrics", 8428, 100))
        if store is None:
            raise SystemExit(f"no store for the replay: {INSTALL_HINT}, or pass --store")
        try:
            yield store.url
        finally:
            store.stop()


# The PNG: a numpy RGB canvas, a 5x7 font (each glyph 7 rows of 5 bits, one base-32 digit a row), zlib.
_CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-.:%()/<,=+"
_GLYPHS = dict(zip(_CHARS, (
    "EHJLPHE 4C4444E EH1248V V2421HE 26AIV22 VGU11HE 68GUHHE V124888 EHHEHHE EHHF12C EHHVHHH UHHUHHU EHGGGHE "
    "SIHHHIS VGGUGGV VGGUGGG EHGNHHF HHHVHHH E44444E 72222IC HIKOKIH GGGGGGV HRLLHHH HHPLJHH EHHHHHE UHHUGGG "
    "EHHHLID UHHUKIH FGGE11U V444444 HHHHHHE HHHHHA4 HHHLLLA HHA4AHH HHA4444 V1248GV 000V000 00000CC 0CC0CC0 "
    "OP248J3 2488842 8422248 01248G0 248G842 0000C48 00V0V00 044V440").split()))
INK, GREY, LIGHT, BLUE, PALE_BLUE = (40, 40, 40), (150, 150, 150), (225, 225, 225), (31, 80, 160), (120, 160, 215)
RED, PALE_RED, ORANGE = (190, 30, 30), (255, 205, 205), (230, 130, 0)


def _text(canvas: np.ndarray, x: int, y: int, text: str, colour: tuple[int, int, int], scale: int = 1) -> None:
    for index, char in enumerate(text.upper()):
        for row, digit in enumerate(_GLYPHS.get(char, "0000000")):
            bits = int(digit, 32)
            for column in range(5):
                if bits >> (4 - column) & 1:
                    left, top = x + (index * 6 + column) * scale, y + row * scale
                    canvas[top:top + scale, left:left + scale] = colour


def png_bytes(canvas: np.ndarray) -> bytes:
    """An RGB uint8 array as a PNG file (filter 0 on every row)."""
    height, width, _ = canvas.shape
    raw = b"".join(b"\x00" + canvas[row].tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def render(score: dict[int, float], components: dict[str, dict[int, float]], start: int, end: int,
           threshold: float = THRESHOLD, width: int = 1200) -> bytes:
    """The score (per pixel column: min to max of its hours) over the components, incidents shaded."""
    left, right, strip = 60, width - 16, 64
    panels = [("SCORE", score, 56, 300)]
    for index, (name, values) in enumerate(sorted(components.items())):
        top = 320 + index * (strip + 12)
        panels.append((name, values, top, top + strip))
    height = panels[-1][3] + 40
    canvas = np.full((height, width, 3), 255, np.uint8)
    span = max(end - start, 1)

    def x_of(moment: int) -> int:
        return left + round((moment - start) / span * (right - left))

    _text(canvas, left, 10, "NETWORK HEALTH SCORE, 2014-2016 DEPICTOR VOTES (FROM THE STORE)", INK, 2)
    _text(canvas, left, 34, f"EACH PIXEL COLUMN: RANGE (LIGHT) AND MEDIAN (DARK) OF ITS HOURS.  SHADED: DOCUMENTED "
          f"INCIDENTS.  DASHED: THRESHOLD {threshold:.0f}.", GREY)
    for incident in INCIDENTS:
        if incident.end >= start and incident.start <= end:
            x0 = x_of(incident.start)
            canvas[56:panels[-1][3], x0 - 1:max(x_of(incident.end), x0 + 1) + 2] = PALE_RED
            _text(canvas, min(x0 + 4, right - 60), 46, incident.name, RED)
    for year in range(datetime.fromtimestamp(start, timezone.utc).year, 2100):
        for month, label in ((1, str(year)), (7, "JUL")):
            moment = int(datetime(year, month, 1, tzinfo=timezone.utc).timestamp())
            if start <= moment <= end:
                canvas[56:panels[-1][3], x_of(moment)] = LIGHT
                _text(canvas, x_of(moment) - 3 * len(label), panels[-1][3] + 8, label, INK)
        if int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp()) > end:
            break
    for name, values, top, bottom in panels:
        def y_of(value: float, top: int = top, bottom: int = bottom) -> int:
            return bottom - 3 - round(min(100.0, max(0.0, value)) / 100 * (bottom - top - 6))

        canvas[top, left:right + 1] = canvas[bottom, left:right + 1] = GREY
        canvas[top:bottom + 1, left] = canvas[top:bottom + 1, right] = GREY
        if name != "SCORE":
            _text(canvas, left, top - 9, f"{name} (0-100)", INK)
        for tick in (0, 50, 100):
            _text(canvas, left - 6 - 6 * len(str(tick)), y_of(tick) - 3, str(tick), GREY)
        if name == "SCORE":
            canvas[y_of(threshold), left + 1:right:6] = ORANGE
            canvas[y_of(threshold), left + 2:right:6] = ORANGE
        columns: dict[int, list[float]] = {}
        for moment, value in values.items():
            columns.setdefault(x_of(moment), []).append(value)
        for column, found in columns.items():  # the range of the column's hours, then their median
            canvas[y_of(max(found)):y_of(min(found)) + 1, column] = PALE_BLUE
            canvas[y_of(statistics.median(found)), column] = BLUE
    return png_bytes(canvas)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.evaluation.health_replay",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--depictor", type=Path, required=True, help="vote_stats_hourly CSV (depictor's history)")
    parser.add_argument("--out", type=Path, help="PNG to draw from the store's answer")
    parser.add_argument("--store", help="VictoriaMetrics URL (default: start one on 127.0.0.1 with a temp dir)")
    args = parser.parse_args(argv)
    scored = replay(read_depictor(args.depictor))
    with (own_victoria() if args.store is None else _given(args.store.rstrip("/"))) as url:
        lines = write(url, scored)
        start, end = scored[0].time // HOUR * HOUR, scored[-1].time
        score = query_range(url, "last_over_time(tor_health_score_value[1h])", start, end).get("", {})
        components = query_range(url, "last_over_time(tor_health_component_score[1h])", start, end)
    print(f"{len(scored)} periods ({sum(s.gap for s in scored)} collection gaps), {lines} lines written, "
          f"{len(score)} score samples read back")
    print(f"| window | hours | min | median | share >= {THRESHOLD:.0f} |\n|---|---|---|---|---|")
    for name, hours, low, middle, share in summary(scored):
        print(f"| {name} | {hours} | {low:.1f} | {middle:.1f} | {share:.2%} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_bytes(render(score, components, start, end))
        print(f"wrote {args.out}")
    return 0


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url


if __name__ == "__main__":
    sys.exit(main())
