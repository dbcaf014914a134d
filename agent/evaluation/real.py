"""``allium-agent evaluate --history``: a history replayed through the detectors, scored, and told as tables or JSON.

The tables (definitions: ``agent.evaluation.scoring``, docs/anomalies.md
"Real history"):

- per detector and for all detectors together: labelled events caught
  (``caught/events (own period + next)``) and, per 1,000 judged unlabelled
  periods, alarm onsets and alarm-hours; each for warning-or-worse alarms
  and for any alarm;
- per labelled event: whether and when it was caught, and by which detectors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from agent.detect.engine import DETECTORS
from agent.detect.settings import DetectSettings
from agent.evaluation.history import History
from agent.evaluation.realrun import Replayed, replay
from agent.evaluation.scoring import ANY, LEVELS, OVERALL, SEVERE, Label, Score, score

DETECTOR_NAMES = tuple(label for kind in DETECTORS for label in kind.labels())


@dataclass
class RealResult:
    history: str  # what was replayed (History.describe)
    series: str
    period_hours: float
    slice: tuple[int, int]
    jobs: int
    warmup_periods: int
    replayed: Replayed
    score: Score
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        score = self.score
        return {
            "history": self.history, "series": self.series, "period_hours": self.period_hours,
            "slice": list(self.slice), "jobs": self.jobs, "parts": self.replayed.parts,
            "lead_in_periods": self.replayed.lead_in,
            "warmup_periods": self.warmup_periods, "updates": self.replayed.updates,
            "skipped": self.replayed.skipped, "judged_periods": score.judged, "unlabelled_periods": score.unlabelled,
            "events_labelled": len(score.events), "events_judged": score.events_judged,
            "seconds": round(self.seconds, 1),
            "detectors": {name: {
                "caught": {level: len(tally.caught[level]) for level in LEVELS},
                "caught_in_own_period": {level: tally.caught[level].count(0) for level in LEVELS},
                "caught_in_next_period": {level: tally.caught[level].count(1) for level in LEVELS},
                "onsets": dict(tally.onsets), "alarm_periods": dict(tally.alarm_periods),
                "onsets_per_1000": {level: round(score.per_1000(tally.onsets[level]), 3) for level in LEVELS},
                "alarm_periods_per_1000": {level: round(score.per_1000(tally.alarm_periods[level]), 3)
                                           for level in LEVELS}}
                for name, tally in score.tallies.items()},
            "events": [{"name": event.label.name, "first_hour": _hour(event.label.first),
                        "last_hour": _hour(event.label.last), "judged": event.judged, "delay": event.delay,
                        "detectors": event.detectors} for event in score.events],
        }


def evaluate_history(history: History, settings: DetectSettings, labels: list[Label], start: int = 0,
                     stop: int | None = None, jobs: int = 1, geoip_file: str | None = None,
                     progress: bool = True) -> RealResult:
    """Replays ``history`` (periods ``start``..``stop``) and scores it against the labels of its series."""
    began = time.monotonic()
    stop = len(history) if stop is None else min(stop, len(history))
    replayed = replay(history, settings, start, stop, jobs, geoip_file, progress)
    scored = score(history.series, replayed.periods, labels, DETECTOR_NAMES, history.period_seconds)
    return RealResult(history.describe(), history.series, history.period_seconds / 3600, (start, stop), jobs,
                      settings.warmup_periods, replayed, scored, time.monotonic() - began)


def text(result: RealResult) -> str:
    """The result as aligned tables, with what was replayed above them."""
    score, replayed = result.score, result.replayed
    period = "hour" if result.period_hours == 1 else f"period of {result.period_hours:g} h"
    parts = (f" in {replayed.parts} parts, each after the first led in by {replayed.lead_in} periods not judged"
             if replayed.parts > 1 else "")
    lines = [
        f"History: {result.history}",
        f"Replayed periods {result.slice[0]}..{result.slice[1]} with Detector.update ({replayed.updates:,} updates"
        f"{parts}; {replayed.skipped} skipped as not newer); warm-up {result.warmup_periods} periods; "
        f"{score.judged:,} judged, {score.unlabelled:,} of them unlabelled (one {period} each); "
        f"{score.events_judged} of {len(score.events)} labelled events judged; {result.seconds:.0f} s.",
        "Caught: events with an alarm in their own period or the next (own + next). Rates: per 1,000 judged "
        "unlabelled periods. warning+: warning or critical alarms only.",
        "",
    ]
    header = ["detector", f"caught {SEVERE}", f"caught {ANY}", f"onsets/1k {SEVERE}", f"onsets/1k {ANY}",
              f"alarm-{_unit(result)}/1k {SEVERE}", f"alarm-{_unit(result)}/1k {ANY}"]
    rows = []
    for name, tally in score.tallies.items():
        if name != OVERALL and not tally.alarm_periods[ANY] and not tally.caught[ANY] and name not in DETECTOR_NAMES:
            continue
        rows.append([name, *(_caught(tally.caught[level], score.events_judged) for level in LEVELS),
                     *(f"{score.per_1000(tally.onsets[level]):.2f}" for level in LEVELS),
                     *(f"{score.per_1000(tally.alarm_periods[level]):.2f}" for level in LEVELS)])
    lines += table(header, rows)
    if score.events_judged:
        outside = len(score.events) - score.events_judged
        lines += ["", "Labelled events judged (delay: 0 = own period, 1 = next; - = missed)"
                  + (f"; {outside} more lie outside the judged periods" if outside else "") + ":", ""]
        event_rows = []
        for event in score.events:
            first, last = _hour(event.label.first), _hour(event.label.last)
            hours = first if last == first else f"{first}..{last[11:] if last[:10] == first[:10] else last}"
            if not event.judged:
                continue
            fired = ", ".join(f"{name} ({delay})" for name, delay in sorted(event.detectors.items(),
                                                                             key=lambda item: (item[1], item[0])))
            event_rows.append([event.label.name, hours, *(_delay(event.delay.get(level)) for level in LEVELS),
                               fired or "-"])
        lines += table(["event", "hour (UTC)", SEVERE, ANY, "detectors (delay)"], event_rows, frozenset({0, 1, 4}))
    return "\n".join(lines)


def table(header: list[str], rows: list[list[str]], left: frozenset[int] = frozenset({0})) -> list[str]:
    """A Markdown table padded so its columns line up in a terminal too (``left`` columns left, the rest right)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(cell).ljust(width) if index in left else str(cell).rjust(width)
                                 for index, (cell, width) in enumerate(zip(cells, widths))) + " |"

    rule = "|" + "|".join(":" + "-" * (width + 1) if index in left else "-" * (width + 1) + ":"
                          for index, width in enumerate(widths)) + "|"
    return [line(header), rule, *(line(row) for row in rows)]


def _caught(delays: list[int], events: int) -> str:
    if not events:
        return "-"
    return f"{len(delays)}/{events} ({delays.count(0)}+{delays.count(1)})"


def _delay(delay: int | None) -> str:
    return "-" if delay is None else str(delay)


def _unit(result: RealResult) -> str:
    return "hours" if result.period_hours == 1 else "periods"


def _hour(moment: int) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H")
