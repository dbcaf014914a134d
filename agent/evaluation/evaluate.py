"""The evaluation harness: replays with and without incidents, per detector detection rate and false alarms.

For each seed, one unperturbed replay runs ``periods`` periods; every
detector's findings after the warm-up are false alarms. At set periods the
run is forked (detector and replay deep-copied) and one incident injected;
a detector detects it if it fires within ``window`` periods, counting the
incident's own period as 0. A false alarm is counted at its onset (a
detector firing that did not fire the period before), as the alert
engine tells it once. ``allium-agent evaluate`` prints the table.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

from agent.detect.baseline import SeriesModel
from agent.detect.engine import DETECTORS, Detector
from agent.detect.series import BaselineSettings, series_model
from agent.detect.settings import DetectSettings, bind
from agent.evaluation.replay import INCIDENTS, Incident, Replay


def detector_of(finding) -> str:
    """Which detector a finding came from, as the table names it ("" for one that is no detection)."""
    for kind in DETECTORS:
        if finding.check in kind.checks:
            return kind.label(finding)
    return ""


def firing(result) -> set[str]:
    return {detector_of(f) for f in result.findings if f.silenced_by is None and detector_of(f)}


@dataclass
class Evaluation:
    periods: int = 0  # judged periods of unperturbed replays (after warm-up)
    false_alarms: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    trials: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    detected: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))

    def detectors(self) -> list[str]:
        """Every detector the agent runs (quiet ones too), and any other that fired."""
        names = {label for kind in DETECTORS for label in kind.labels()}
        return sorted(names | set(self.false_alarms) | {detector for detector, _ in self.detected})

    def table(self) -> str:
        header = ["detector", "false alarms / 1000 periods"] + [f"{kind}: detected, periods" for kind in INCIDENTS]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for detector in self.detectors():
            cells = [detector, f"{1000 * self.false_alarms.get(detector, 0) / max(self.periods, 1):.1f}"]
            for kind in INCIDENTS:
                delays = self.detected.get((detector, kind), [])
                trials = self.trials.get(kind, 0)
                cells.append(f"{len(delays)}/{trials}, {sum(delays) / len(delays):.1f}" if delays else f"0/{trials}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)


def evaluate(base, reserve, settings: DetectSettings, seeds: list[int], periods: int, incidents_every: int = 50,
             window: int = 2, progress=None) -> Evaluation:
    """Runs the replays; ``progress(seed, period)`` is called now and then for long runs."""
    evaluation = Evaluation()
    for seed in seeds:
        replay, detector = Replay(base, reserve, seed), Detector(settings)
        before: set[str] = set()
        for index in range(periods):
            if index >= settings.warmup_periods and (index - settings.warmup_periods) % incidents_every == 0:
                for offset, kind in enumerate(INCIDENTS):
                    _trial(evaluation, replay, detector, Incident(kind, index + offset), window)
            fired = firing(detector.update(replay.period_facts(index, None)))
            if index >= settings.warmup_periods:
                evaluation.periods += 1
                for name in fired - before:  # an alarm is its onset: the alert engine tells it once
                    evaluation.false_alarms[name] += 1
            before = fired
            if progress is not None and index % 100 == 0:
                progress(seed, index)
    return evaluation


def _trial(evaluation: Evaluation, replay: Replay, detector: Detector, incident: Incident, window: int) -> None:
    """Forks the run, advances to the incident and records which detectors fire and when."""
    replay, detector = copy.deepcopy(replay), copy.deepcopy(detector)
    for index in range(_next_index(detector, replay), incident.period):
        detector.update(replay.period_facts(index, None))
    evaluation.trials[incident.kind] += 1
    seen: set[str] = set()
    for delay in range(window + 1):
        index = incident.period + delay
        fired = firing(detector.update(replay.period_facts(index, incident if delay == 0 else None)))
        for name in fired - seen:
            evaluation.detected[(name, incident.kind)].append(delay)
        seen |= fired


def _next_index(detector: Detector, replay: Replay) -> int:
    if detector.last_time is None:
        return 0
    return (detector.last_time - replay.start) // replay.period + 1


#: Documented incidents in the depictor series (timeseries/MANIFEST.md), as UTC hour ranges.
DEPICTOR_INCIDENTS = {"Heartbleed rejections": ("2014-04-16T00", "2014-04-21T00"),
                      "LizardNSA Sybil flood": ("2014-12-26T12", "2014-12-27T06")}
DEPICTOR_COLUMNS = {"known": "authority_vote_relays", "bwauth": "authority_measured_relays"}
#: "2015-11 … 2016-05: rows with known=0 or tiny values are collection gaps, not network events" (MANIFEST).
DEPICTOR_GAP_MONTHS = ("2015-11", "2016-06")


@dataclass
class RealReplay:
    """What the per-authority baselines said over the real hourly vote counts of 2014-2016 (alarm onsets)."""

    periods: int = 0
    judged: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # series-periods outside incidents
    alarms_outside: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    alarms_in_gap_months: int = 0  # of alarms_outside: in the months of documented collection gaps
    caught: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # incident -> series fired
    first_alarm: dict[str, str] = field(default_factory=dict)


def replay_depictor(path, settings: DetectSettings) -> RealReplay:
    """Feeds each authority's hourly vote size and measured count to the same baselines the agent runs.

    A 0 is a collection gap (no vote recorded), not a value, so it is skipped.
    """
    import calendar
    import csv
    from datetime import datetime

    baseline = bind(BaselineSettings, settings)
    models: dict[str, SeriesModel] = {}
    firing: set[str] = set()
    report = RealReplay()
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            hour = row["valid_after_utc"][:13]
            time = calendar.timegm(datetime.strptime(hour, "%Y-%m-%dT%H").timetuple())
            incident = next((name for name, (start, end) in DEPICTOR_INCIDENTS.items() if start <= hour < end), None)
            report.periods += 1
            for column, value in row.items():
                authority, _, kind = column.rpartition("_")
                if kind not in DEPICTOR_COLUMNS or authority == "median" or not value or float(value) == 0:
                    continue
                name = f'{DEPICTOR_COLUMNS[kind]}{{authority="{authority}"}}'
                model = models.get(name)
                if model is None:
                    model = models[name] = series_model(name, 24, baseline)
                model.resume(time, 3600)
                verdict = model.judge(name, float(value), baseline.z_threshold)
                model.learn(float(value), verdict, time, 3600)
                family = name.split("{")[0]
                if not incident and not verdict.warming:
                    report.judged[family] += 1
                onset = verdict.anomalous and name not in firing
                (firing.add if verdict.anomalous else firing.discard)(name)
                if onset:
                    if incident:
                        report.caught[incident].append(name)
                        report.first_alarm.setdefault(incident, hour)
                    else:
                        report.alarms_outside[family] += 1
                        report.alarms_in_gap_months += DEPICTOR_GAP_MONTHS[0] <= hour[:7] <= DEPICTOR_GAP_MONTHS[1]
    return report
