"""judge: one period's Snapshot and what earlier periods left -> its points, findings and memory for the next.

The one way a period is judged, live (``once``, ``run``) or replayed
(``backfill``). It does no I/O: what it needs of earlier periods comes in a
``Memory`` (read from the state by the caller), and what the next period
needs goes out in the ``PeriodResult`` for ``record`` to keep. Detection is
the one part with a model that learns: the detector in the memory is
advanced in place, and ``record`` saves it.

Kept free of River and SciPy imports (about a second to load), so backfill's
worker processes and ``check`` do not pay for them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Protocol, cast

from agent.checks.registry import Context
from agent.checks.run import health_points, run_checks
from agent.config.loader import Config
from agent.metrics.geoip import GeoIP
from agent.metrics.period import relays_of, snapshot_points
from agent.metrics.relays import RelayTable, table_of
from agent.model.entries import ABSENT, entries_of
from agent.model.findings import Finding
from agent.model.points import Point
from agent.model.relays import PreviousRelays
from agent.model.snapshot import Snapshot
from agent.model.time import naive_utc_now, unix
from agent.store.store import EncodedPoints, encode_points

log = logging.getLogger(__name__)

#: A bandwidth authority is remembered this many periods after its last Measured= vote.
BWAUTH_MEMORY_PERIODS = 24
WARMING_UP = "TorAnomalyDetectionWarmingUp"


class Detector(Protocol):
    """What judge needs of anomaly detection (``agent.detect.engine.Detector``)."""

    def update(self, facts: Any) -> Any: ...


@dataclass(frozen=True)
class Memory:
    """What judging a period may know of earlier ones."""

    previous_relays: PreviousRelays | None = None  # the period before's relays, for churn
    bandwidth_authorities: Mapping[str, float] = field(default_factory=dict)  # nickname -> last Measured= vote
    detector: Detector | None = None  # None: no anomaly detection this period


@dataclass
class PeriodResult:
    """A judged period: what to store, what to alert on, and what the next period needs."""

    time: int  # the period's valid-after (Unix seconds), or the fetch time without a consensus
    points: list[Point] | EncodedPoints  # encoded where a worker process judged it (backfill)
    findings: list[Finding]
    relays: PreviousRelays | None  # this period's relays (None without a consensus)
    bandwidth_authorities: dict[str, float]
    snapshot: Snapshot | None = None
    table: RelayTable | None = None
    detector_learned: bool = False  # the memory's detector learned this period: save it

    @property
    def has_consensus(self) -> bool:
        return self.relays is not None

    def encoded(self) -> PeriodResult:
        """The result with its points encoded and without snapshot and relay table (to send between processes)."""
        points = self.points if isinstance(self.points, EncodedPoints) else encode_points(self.points)
        return replace(self, points=points, snapshot=None, table=None)


def period_time_of(snapshot: Snapshot) -> int:
    """The time a period's points carry: its consensus's valid-after, or when we fetched without one."""
    consensus = snapshot.latest_consensus()
    return unix(consensus.valid_after) if consensus is not None else unix(snapshot.started_at)


def judge(snapshot: Snapshot, memory: Memory, config: Config, geoip: GeoIP) -> PeriodResult:
    """Metrics, check findings and (with a detector in the memory) anomalies of one period.

    Without an accepted consensus the checks still run: unreachable
    authorities and a lost quorum are exactly what must be reported then.
    """
    consensus = snapshot.latest_consensus()
    time = period_time_of(snapshot)
    table = table_of(snapshot, consensus, geoip) if consensus is not None else None
    points = snapshot_points(snapshot, memory.previous_relays, geoip, config.metrics.operators_top_n, table)
    findings, bandwidth_authorities = judge_checks(snapshot, memory, config)
    points += health_points(findings, time)
    result = PeriodResult(time, points, findings, relays_of(consensus) if consensus is not None else None,
                          bandwidth_authorities, snapshot, table)
    if consensus is not None and table is not None and memory.detector is not None:
        _detect(result, memory.detector, snapshot, consensus, table)
    return result


def judge_checks(snapshot: Snapshot, memory: Memory, config: Config) -> tuple[list[Finding], dict[str, float]]:
    """The checks' findings, and which authorities measure bandwidth as of this period.

    A live snapshot is judged against the clock; an archived one as of the
    middle of its own period, so history is not reported as stale.
    """
    consensus = snapshot.latest_consensus()
    remembered = dict(memory.bandwidth_authorities)
    if consensus is not None and remembered:
        horizon = (consensus.fresh_until - consensus.valid_after).total_seconds() * BWAUTH_MEMORY_PERIODS
        remembered = {name: seen for name, seen in remembered.items()
                      if consensus.valid_after.timestamp() - seen <= horizon}
    context = Context(snapshot, _judged_at(snapshot), config.checks.thresholds, frozenset(remembered))
    findings = run_checks(context, config.checks.silences, config.checks.disabled)
    if consensus is not None:
        for view in snapshot.views.values():
            if view.vote is not None and (entries_of(view.vote).measured != ABSENT).any():
                remembered[view.authority.nickname] = consensus.valid_after.timestamp()
    return findings, remembered


def _judged_at(snapshot: Snapshot) -> datetime:
    consensus = snapshot.latest_consensus()
    if snapshot.archived and consensus is not None:
        middle: datetime = consensus.valid_after + (consensus.fresh_until - consensus.valid_after) / 2
        return middle
    return naive_utc_now()


def _detect(result: PeriodResult, detector: Detector, snapshot: Snapshot, consensus: Any, table: RelayTable) -> None:
    """Adds anomaly findings and score points; detection failing never fails the period."""
    from agent.detect.facts import facts_of

    try:
        detection = detector.update(facts_of(snapshot, consensus, table))
    except Exception:
        log.exception("anomaly detection failed this period; metrics and checks are saved regardless")
        return
    result.findings += detection.findings
    result.points = [*cast(list[Point], result.points), *detection.points]  # judged here: not encoded yet
    result.detector_learned = not detection.skipped
    if detection.warming:
        warming = next(f for f in detection.findings if f.check == WARMING_UP)
        log.info("anomaly detection is warming up: %s", warming.description)
