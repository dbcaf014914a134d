"""One detection step per period: every detector in DETECTORS scores it, then every one learns it.

Adding a detector is a module with a class following
``agent.detect.protocol`` and its entry in DETECTORS. The whole detector
state (the shared relay memory and each detector's own, River models
included) is one picklable object, saved atomically after each period and
loaded at the next, so a restarted agent resumes where it stopped instead
of warming up again. A period not newer than the last one learned is
ignored (a rerun).
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.detect.facts import PeriodFacts
from agent.detect.groups import SybilGroups
from agent.detect.incident import merge
from agent.detect.protocol import DetectorProtocol, Period, Scores
from agent.detect.relays import RelayAnomalies, RelayMemory
from agent.detect.rules import ThresholdRules
from agent.detect.series import NetworkBaselines
from agent.detect.settings import DetectSettings, declared
from agent.model.files import set_aside, write_atomically
from agent.model.findings import Finding
from agent.model.points import Point

log = logging.getLogger(__name__)

#: The detectors the engine runs, in this order (a detector may read the scores of those before it:
#: the baselines name the groups' members first among arrivals). Their findings and points come in this order.
DETECTORS: tuple[type[DetectorProtocol], ...] = (RelayAnomalies, SybilGroups, NetworkBaselines, ThresholdRules)


def detector_settings(detectors: tuple[type[DetectorProtocol], ...] = DETECTORS) -> dict[str, tuple[Any, str]]:
    """Every config key the detectors declare -> (default, converter name); a key two declare must agree."""
    keys: dict[str, tuple[Any, str]] = {}
    for kind in detectors:
        for key, declared_as in (declared(kind.Settings) if kind.Settings is not None else {}).items():
            if keys.setdefault(key, declared_as) != declared_as:
                raise ValueError(f"{key}: declared differently by two detectors ({keys[key]} and {declared_as})")
    return keys

STATE_FILE = "detectors.pickle"
#: 2: each detector's state is its own object in ``Detector.detectors`` (1 kept them on the engine; upgraded on load).
STATE_VERSION = 2


@dataclass
class DetectionResult:
    scores: dict[str, Scores] = field(default_factory=dict)  # detector name -> what it said
    findings: list[Finding] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    warming: bool = False
    skipped: bool = False

    @classmethod
    def of(cls, scores: dict[str, Scores]) -> DetectionResult:
        """What the detectors said; two or more firing become one incident (``agent.detect.incident``)."""
        merged = merge({name: scored.findings for name, scored in scores.items()})
        return cls(scores, [finding for findings in merged.values() for finding in findings],
                   [each for scored in scores.values() for each in scored.points],
                   any(scored.warming for scored in scores.values()))

    def details(self, name: str) -> list:
        return self.scores[name].details if name in self.scores else []

    @property
    def verdicts(self) -> list:
        return self.details(NetworkBaselines.name)

    @property
    def relay_anomalies(self) -> list:
        return self.details(RelayAnomalies.name)

    @property
    def clusters(self) -> list:
        return self.details(SybilGroups.name)

    @property
    def rule_hits(self) -> list:
        return self.details(ThresholdRules.name)


class Detector:
    """Every detector of the agent, and the relay memory they share, as one object that pickles."""

    def __init__(self, settings: DetectSettings, detectors: tuple[type[DetectorProtocol], ...] = DETECTORS):
        self.version = STATE_VERSION
        self.settings = settings
        self.relays = RelayMemory()
        self.detectors: dict[str, DetectorProtocol] = {kind.name: kind(settings) for kind in detectors}
        self.last_time: int | None = None
        self.periods = 0

    @property
    def series(self) -> dict:
        """The learned baselines' models by series name (for tests and benchmarks)."""
        baselines: Any = self.detectors[NetworkBaselines.name]
        return baselines.series

    def __setstate__(self, state: dict) -> None:
        if state.get("version") == 1:
            state = _from_version_1(state)
        self.__dict__.update(state)

    def update(self, facts: PeriodFacts) -> DetectionResult:
        """Scores the period with every detector, then lets every one (and the relay memory) learn it."""
        if self.last_time is not None and facts.time <= self.last_time:
            return DetectionResult(skipped=True)
        relays = facts.relays
        rows, unknown = self.relays.rows_of(relays)
        flags_before = self.relays.flags[rows].copy()
        changes = self.relays.changes(relays, rows, unknown, facts.time, facts.period_seconds)
        period = Period(facts, self.relays, rows, changes, flags_before, periods_learned=self.periods)
        for name, detector in self.detectors.items():
            period.scores[name] = detector.score_one(period)
        for detector in self.detectors.values():
            detector.learn_one(period)
        self.relays.learn(relays, rows, facts.time)
        self.last_time, self.periods = facts.time, self.periods + 1
        return DetectionResult.of(period.scores)

    def configure(self, settings: DetectSettings, detectors: tuple[type[DetectorProtocol], ...] = DETECTORS) -> None:
        """Follows the config and DETECTORS after a load; each detector's learned state is kept.

        A detector new in DETECTORS, or whose STATE_VERSION changed since the
        state was saved, starts learning afresh; one no longer listed is dropped.
        """
        self.settings, saved, self.detectors = settings, self.detectors, {}
        for kind in detectors:
            detector = saved.get(kind.name)
            if isinstance(detector, kind) and getattr(detector, "version", None) == kind.STATE_VERSION:
                detector.configure(settings)
            else:
                log.info("anomaly detector %s starts learning (new, or its saved state has another layout)",
                         kind.name)
                detector = kind(settings)
            self.detectors[kind.name] = detector


def _from_version_1(state: dict) -> dict:
    """A state saved before the detectors were separate objects: the baselines and rule windows move in."""
    detectors: dict[str, Any] = {kind.name: kind(state["settings"]) for kind in DETECTORS}
    detectors[NetworkBaselines.name].series = state.pop("series")
    detectors[ThresholdRules.name].windows = state.pop("rules")
    return {**state, "version": STATE_VERSION, "detectors": detectors}


class DetectorFile:
    """The pickled detector state in the state directory; a damaged file is set aside, never fatal."""

    def __init__(self, state_dir: Path, settings: DetectSettings):
        self.path, self.settings = Path(state_dir) / STATE_FILE, settings

    def load(self) -> Detector:
        if not self.path.exists():
            return Detector(self.settings)
        try:
            with self.path.open("rb") as handle:
                detector = pickle.load(handle)
            if getattr(detector, "version", None) != STATE_VERSION:
                raise ValueError(f"state version {getattr(detector, 'version', None)}, expected {STATE_VERSION}")
        except Exception as error:  # noqa: BLE001 -- any unreadable state means: start learning again
            set_aside(self.path, error, "detection warms up again")
            return Detector(self.settings)
        detector.configure(self.settings)  # thresholds follow the config, the learned state is kept
        return detector

    def save(self, detector: Detector) -> None:
        write_atomically(self.path, pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL))
