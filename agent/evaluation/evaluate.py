"""The evaluation harness: replays with and without incidents, per detector detection rate and false alarms.

For each seed, one unperturbed replay runs ``periods`` periods; every
detector's findings after the warm-up are false alarms. At set periods the
run is forked (detector and replay deep-copied) and one incident injected;
a detector detects it if it fires within ``window`` periods, counting the
incident's own period as 0. A false alarm is counted at its onset (a
detector firing that did not fire the period before), as the alert
engine tells it once. ``allium-agent evaluate`` prints the table; real
history is replayed and scored by ``agent.evaluation.real``.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from dataclasses import dataclass, field

from tqdm import tqdm

from agent.detect.engine import DETECTORS, Detector
from agent.detect.settings import DetectSettings
from agent.evaluation.replay import INCIDENTS, Incident, Replay

#: How people call the injected incidents (the README's words), by the replay's kind.
INCIDENT_NAMES = {"flood": "flood", "vanish": "mass departure", "bwauth_half": "measurement collapse",
                  "version_wave": "version wave"}


def detector_of(finding) -> str:
    """Which detector a finding came from, as the table names it ("" for one that is no detection)."""
    for kind in DETECTORS:
        if finding.check in kind.checks:
            return kind.label(finding)
    return ""


def firing(result) -> set[str]:
    """The detectors that fired: alone (unsilenced) or as a part of the period's incident (agent.detect.incident)."""
    from agent.detect.incident import PART_OF

    return {detector_of(f) for f in result.findings if f.silenced_by in (None, PART_OF) and detector_of(f)}


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
        header = ["detector", "false alarms / 1000 periods"] + [f"{INCIDENT_NAMES.get(kind, kind)}: detected, periods"
                                                                 for kind in INCIDENTS]
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
             window: int = 2, progress: bool = False) -> Evaluation:
    """Runs the replays; ``progress``: backfill's progress bar (tqdm, on stderr, with its ETA) over every period."""
    evaluation = Evaluation()
    with tqdm(total=len(seeds) * periods, unit="period", desc="evaluate", disable=not progress, smoothing=0.1) as bar:
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
                bar.update()
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
