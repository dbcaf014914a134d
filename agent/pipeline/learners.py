"""Stages that learn from every live period and keep what they learned: one list, one way to load and save.

A learner reads the judged period (its points, findings, relay table) and
returns points of its own; its state is pickled in the state directory
after each live period (``agent.model.files.PickledState``), so a restart
resumes. Backfilled periods arrive out of order and are not learned. A
learner failing never fails the period: its points are missing, logged.
Adding one is its module plus one entry in ``LEARNERS``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.model.files import PickledState
from agent.model.points import Point, joined

log = logging.getLogger(__name__)


class Learner(Protocol):
    def learn(self, result: Any) -> list[Point]:
        """Takes one judged live period in (a ``PeriodResult``); returns its points (none for a rerun)."""


@dataclass(frozen=True)
class LearnerKind:
    name: str  # its state file: state_dir/<name>.pickle
    version: int  # the layout of its pickled state: a state saved in another starts afresh
    make: Callable[[Any], Learner]  # config -> a fresh learner (imported only when a live period is learned)


def _forecaster(config: Any) -> Learner:
    from agent.forecast.model import Forecaster  # River: imported only here

    return Forecaster()


def _reliability(config: Any) -> Learner:
    from agent.metrics.reliability import ReliabilityLearner

    return ReliabilityLearner(config.metrics.operators_top_n)


def _atrisk(config: Any) -> Learner:
    from agent.metrics.atrisk import AtRiskLearner

    return AtRiskLearner()


def _health(config: Any) -> Learner:
    from agent.metrics.health import HealthLearner

    return HealthLearner()


#: Every learner, in the order they learn a period (the health score reads the period's anomaly findings).
LEARNERS: tuple[LearnerKind, ...] = (
    LearnerKind("forecast", 2, _forecaster),  # 2: the River model pickled as bytes, unpickled on first use
    LearnerKind("reliability", 1, _reliability),
    LearnerKind("atrisk", 1, _atrisk),  # reads the flag margins among the period's points
    LearnerKind("health", 1, _health),
)


def _state(kind: LearnerKind, state_dir: Path, config: Any) -> PickledState[Learner]:
    return PickledState(state_dir, kind.name, kind.version, lambda: kind.make(config))


def load_learners(state_dir: Path, config: Any) -> dict[str, Learner]:
    """Each learner's saved state (a fresh one where there is none or it is unreadable), following the config."""
    learners = {}
    for kind in LEARNERS:
        try:
            learner = _state(kind, state_dir, config).load()
            if hasattr(learner, "configure"):
                learner.configure(config)
            learners[kind.name] = learner
        except Exception:
            log.exception("the %s state could not be loaded; it does not learn this period", kind.name)
    return learners


def learn(result: Any, learners: dict[str, Learner]) -> list[str]:
    """Lets every learner take the period in, adding its points to ``result.points``; returns who learned."""
    learned = []
    for name, learner in learners.items():
        try:
            result.points = joined(result.points, learner.learn(result))
            result.warnings = (*result.warnings, *getattr(learner, "warnings", ()))
        except Exception:
            log.exception("%s failed this period; metrics and checks are saved regardless", name)
            continue
        learned.append(name)
    return learned


def save_learners(state_dir: Path, learners: dict[str, Learner], learned: list[str]) -> None:
    for kind in LEARNERS:
        if kind.name in learned and kind.name in learners:
            try:
                _state(kind, state_dir, None).save(learners[kind.name])
            except Exception:
                log.exception("the %s state could not be saved; it resumes from the last saved one", kind.name)
