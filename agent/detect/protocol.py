"""The detector protocol: River's ``score_one``/``learn_one`` for one voting period, and what a detector sees.

The engine runs whatever ``agent.detect.engine.DETECTORS`` lists: it scores
every detector on the period first, then lets every one learn it, so no
detector judges a period it has already learned. ``BaseDetector`` gives the
defaults (settings bound from the detector's own dataclass, nothing to learn,
one row in the evaluation table), so a detector is one module plus one entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from agent.detect.facts import PeriodFacts
from agent.detect.settings import DetectSettings, bind
from agent.model.findings import Finding
from agent.model.points import Point

if TYPE_CHECKING:  # relays.py holds a detector itself, so it imports this module
    from agent.detect.relays import RelayChanges, RelayMemory


@dataclass
class Scores:
    """What one detector said about one period."""

    findings: list[Finding] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)  # tor_anomaly points (see agent.metrics.catalogue)
    details: list = field(default_factory=list)  # its own results (verdicts, anomalies, clusters, rule hits)
    warming: bool = False  # still learning: the agent logs it and says so in a silenced finding
    pending: Any = None  # what score_one hands to learn_one (never reported, never saved)


@dataclass
class Period:
    """One period as every detector sees it: the facts, and the relay memory's view of them.

    The relay memory (who is known, who joined, left or is new, each
    relay's presence and flag history) is shared by the detectors and
    learned by the engine after all of them; during ``score_one`` and
    ``learn_one`` it still holds the previous periods only (plus a zeroed
    row for each relay seen for the first time).
    """

    facts: PeriodFacts
    memory: RelayMemory
    rows: np.ndarray  # each relay's row in the memory (its per-relay columns)
    changes: RelayChanges
    flags_before: np.ndarray  # each relay's flags in the previous periods (0 for a first sighting)
    periods_learned: int = 0  # periods the engine learned before this one (a detector's warm-up counts them)
    #: detector name -> its Scores, filled in DETECTORS order: a detector may read those scored before it.
    scores: dict[str, Scores] = field(default_factory=dict)

    def details_of(self, name: str) -> list:
        """The details of a detector scored earlier this period ([] if there is none)."""
        scored = self.scores.get(name)
        return scored.details if scored is not None else []


class DetectorProtocol(Protocol):
    """What the engine needs of a detector; its state is its instance, pickled with the engine's."""

    name: ClassVar[str]  # its key in the state, in DetectionResult.scores and in tor_anomaly's "detector" tag
    checks: ClassVar[dict[str, str]]  # Finding.check -> summary, for each kind of detection it reports
    STATE_VERSION: ClassVar[int]  # bump when its pickled state changes shape: a saved one then starts afresh

    def __init__(self, settings: DetectSettings) -> None: ...

    def configure(self, settings: DetectSettings) -> None:
        """Takes the config's current settings (after a state is loaded); learned state is kept."""

    def score_one(self, period: Period) -> Scores:
        """Judges the period against what was learned so far (it may prepare, e.g. add a model, not learn)."""

    def learn_one(self, period: Period) -> None:
        """Takes the period in; ``period.scores[self.name]`` holds what it said (to keep anomalies out)."""

    @classmethod
    def label(cls, finding: Finding) -> str:
        """The evaluation table's row for one of its findings."""

    @classmethod
    def labels(cls) -> list[str]:
        """Every row it can have in the evaluation table (quiet ones too)."""


class BaseDetector:
    """Defaults for DetectorProtocol: settings bound from ``Settings``, nothing to learn, one evaluation row."""

    name: ClassVar[str] = ""
    checks: ClassVar[dict[str, str]] = {}
    STATE_VERSION: ClassVar[int] = 1
    #: A dataclass of ``agent.detect.settings.setting`` fields, or None for a detector without settings.
    Settings: ClassVar[type | None] = None

    def __init__(self, settings: DetectSettings):
        self.version = type(self).STATE_VERSION
        self.configure(settings)

    def configure(self, settings: DetectSettings) -> None:
        self.settings: Any = bind(self.Settings, settings) if self.Settings is not None else None

    def score_one(self, period: Period) -> Scores:
        raise NotImplementedError

    def learn_one(self, period: Period) -> None:
        """Nothing to learn: a stateless detector, or one reading the shared relay memory."""

    def finding(self, check: str, severity: str, subjects: dict, description: str, values: dict,
                silenced_by: str | None = None) -> Finding:
        """A finding of one of this detector's ``checks``, with that check's summary."""
        return Finding(check, severity, subjects, self.checks[check], description, values, silenced_by)

    @classmethod
    def label(cls, finding: Finding) -> str:
        return cls.name

    @classmethod
    def labels(cls) -> list[str]:
        return [cls.name]
