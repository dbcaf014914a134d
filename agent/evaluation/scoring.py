"""What the detectors said over real history, scored against labelled incidents (the definitions docs/anomalies.md
gives under "Real history").

- An *alarm* is a finding of ``DetectionResult.findings`` with ``silenced_by``
  None (the warming-up finding is silenced); its identity is its check and
  subjects, its detector ``evaluate.detector_of``'s label.
- *Judged* periods are those after the first ``warmup_periods`` of a replay.
- An *alarm-hour* is a judged period with at least one alarm; an *onset* an
  alarm whose identity did not fire in the previous judged period.
- A label's *window* runs from one period before its first hour to two
  periods after its last; *unlabelled* periods are the judged periods outside
  every window. Rates are per 1,000 judged unlabelled periods.
- An event is *caught* when an alarm fires in its own period (the first
  judged period in its labelled hours: delay 0) or the next one (delay 1).

Every count is kept twice: for any alarm, and for warning-or-worse alarms
alone (the same definitions applied to those only).
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from agent.evaluation.evaluate import detector_of
from agent.evaluation.populations import HOUR, hour_of
from agent.model.findings import Severity

ANY, SEVERE = "any", "warning+"
LEVELS = (SEVERE, ANY)
OVERALL = "all detectors"
EVENT, EXCLUDE = "event", "exclude"  # a label scored as an incident; one only kept out of the unlabelled periods
LABELS_FILE = "incidents.csv"


@dataclass(frozen=True)
class Alarm:
    identity: str  # check and subjects: the same alarm in two periods
    detector: str
    severe: bool  # warning or critical


@dataclass(frozen=True)
class Judged:
    """One judged period: its time and its alarms (small enough to send back from a worker process)."""

    time: int
    alarms: tuple[Alarm, ...]


@dataclass(frozen=True)
class Label:
    series: str
    name: str
    first: int  # unix seconds of its first hour
    last: int  # ... of its last hour
    kind: str  # EVENT or EXCLUDE
    source: str


def alarms_of(result) -> tuple[Alarm, ...]:
    """The alarms of one ``DetectionResult``."""
    severe = (Severity.CRITICAL, Severity.WARNING)
    return tuple(Alarm(f"{finding.check} {sorted(finding.subjects.items())}", detector_of(finding) or finding.check,
                       finding.severity in severe)
                 for finding in result.findings if finding.silenced_by is None)


def load_labels(path: Path | None = None) -> list[Label]:
    """The labelled incidents: ``path``, else the package's ``incidents.csv``."""
    if path is None:
        text = resources.files("agent.evaluation").joinpath(LABELS_FILE).read_text(encoding="utf-8")
        where = f"agent/evaluation/{LABELS_FILE}"
    else:
        text, where = Path(path).read_text(encoding="utf-8"), str(path)
    labels = []
    for line, row in enumerate(csv.DictReader(text.splitlines()), start=2):
        try:
            first, last = hour_of(row["first_hour"]), hour_of(row["last_hour"])
            kind = row["kind"].strip()
            if kind not in (EVENT, EXCLUDE) or last < first:
                raise ValueError(f"kind {kind!r} (event or exclude), hours {row['first_hour']}..{row['last_hour']}")
            labels.append(Label(row["series"].strip(), row["name"].strip(), first, last, kind, row["source"]))
        except (KeyError, ValueError, AttributeError) as error:
            raise ValueError(f"{where}, line {line}: not a label ({error})") from error
    return labels


@dataclass
class Tally:
    """One detector's (or all detectors') counts at both levels."""

    caught: dict[str, list[int]] = field(default_factory=lambda: {level: [] for level in LEVELS})  # delays
    onsets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    alarm_periods: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))


@dataclass
class EventResult:
    label: Label
    judged: bool  # its own period was judged (else it is not counted)
    delay: dict[str, int | None] = field(default_factory=dict)  # level -> 0, 1, or None (missed)
    detectors: dict[str, int] = field(default_factory=dict)  # detector -> delay, at any level


@dataclass
class Score:
    series: str
    judged: int = 0
    unlabelled: int = 0
    tallies: dict[str, Tally] = field(default_factory=dict)
    events: list[EventResult] = field(default_factory=list)

    @property
    def events_judged(self) -> int:
        return sum(event.judged for event in self.events)

    def per_1000(self, count: int) -> float:
        return 1000 * count / self.unlabelled if self.unlabelled else 0.0


def _alarms(period: Judged, detector: str, level: str) -> list[Alarm]:
    return [alarm for alarm in period.alarms if (detector == OVERALL or alarm.detector == detector)
            and (level == ANY or alarm.severe)]


def windows(times: list[int], labels: Iterable[Label], period_seconds: int = HOUR) -> list[bool]:
    """Per period (``times`` ascending): whether it lies in some label's window (one period before its first hour
    to two periods after its last). A label further than that from the periods has none among them."""
    inside = [False] * len(times)
    for label in labels:
        if not times or label.first > times[-1] + period_seconds \
                or label.last + HOUR - 1 + 2 * period_seconds < times[0]:
            continue
        begin = max(bisect.bisect_left(times, label.first) - 1, 0)
        end = min(bisect.bisect_right(times, label.last + HOUR - 1) - 1 + 2, len(times) - 1)
        for index in range(begin, end + 1):
            inside[index] = True
    return inside


def score(series: str, periods: list[Judged], labels: Iterable[Label], detectors: Iterable[str] = (),
          period_seconds: int = HOUR) -> Score:
    """Scores a replay's judged periods (in time order) against the labels of ``series``."""
    own = [label for label in labels if label.series == series]
    times = [period.time for period in periods]
    labelled = windows(times, own, period_seconds)
    found = {alarm.detector for period in periods for alarm in period.alarms}
    result = Score(series, len(periods), labelled.count(False))
    result.tallies = {name: Tally() for name in [OVERALL, *sorted(set(detectors) | found)]}
    for level in LEVELS:
        before: set[str] = set()
        for period, excluded in zip(periods, labelled):
            now = {alarm.identity for alarm in _alarms(period, OVERALL, level)}
            if not excluded:
                for name, tally in result.tallies.items():
                    alarms = _alarms(period, name, level)
                    tally.alarm_periods[level] += bool(alarms)
                    tally.onsets[level] += sum(alarm.identity not in before for alarm in alarms)
            before = now
    for label in own:
        if label.kind == EVENT:
            result.events.append(_event(label, periods, times, result.tallies))
    return result


def _event(label: Label, periods: list[Judged], times: list[int], tallies: dict[str, Tally]) -> EventResult:
    """Whether each detector fired in the event's own period or the next, recorded in ``tallies``."""
    index = bisect.bisect_left(times, label.first)
    if index == len(times) or times[index] > label.last + HOUR - 1:
        return EventResult(label, False)
    event = EventResult(label, True)
    for name, tally in tallies.items():
        for level in LEVELS:
            delay = next((delay for delay, period in enumerate(periods[index:index + 2])
                          if _alarms(period, name, level)), None)
            if delay is not None:
                tally.caught[level].append(delay)
                if name == OVERALL:
                    event.delay[level] = delay
                elif level == ANY:
                    event.detectors[name] = delay
        event.delay.setdefault(SEVERE, None)
        event.delay.setdefault(ANY, None)
    return event
