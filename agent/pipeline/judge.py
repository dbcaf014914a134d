"""judge: one period's Snapshot and what earlier periods left -> its points, findings and memory for the next.

The one way a period is judged, live (``once``, ``run``) or replayed
(``backfill``). It does no I/O: what it needs of earlier periods comes in a
``Memory`` (read from the state by the caller), and what the next period
needs goes out in the ``PeriodResult`` for ``record`` to keep. Detection is
the one part with a model that learns: the detector in the memory is
advanced in place, and ``record`` saves it.

Whatever one authority serves can cost only that authority's records: a
live consensus dated impossibly far from the present is refused before
anything is judged (``admissible``), and a document that makes metrics or a
check fail is found, excluded and named in ``PeriodResult.rejected`` while
the rest of the period is judged without it (``agent.pipeline.isolation``).

Kept free of River and SciPy imports (about a second to load), so backfill's
worker processes and ``check`` do not pay for them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Protocol, cast

from agent.checks.catalog import CHECKS
from agent.checks.consensus import CONSENSUS_KINDS, TIME_REFUSED, time_problem
from agent.checks.registry import Check, Context
from agent.checks.run import health_points, run_checks
from agent.checks.settings import CheckThresholds
from agent.config.loader import Config
from agent.metrics.aroi import aroi_points
from agent.metrics.authority import fetch_points
from agent.metrics.geoip import GeoIP
from agent.metrics.period import relays_of, snapshot_points
from agent.metrics.relays import RelayTable, table_of
from agent.model.aroi import EMPTY, ProofBook
from agent.model.entries import ABSENT, entries_of
from agent.model.findings import Finding, Hit
from agent.model.points import Point
from agent.model.relays import PreviousRelays
from agent.model.snapshot import FetchRecord, Snapshot
from agent.model.time import naive_utc_now, unix
from agent.pipeline.isolation import RAISED, VIEW_DOCUMENTS, Trial, documents_of, isolate, rejecting, without
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
    learners: dict[str, Any] = field(default_factory=dict)  # agent.pipeline.learners: forecast, ...
    proofs: ProofBook | None = None  # operators' AROI proofs (agent.aroi); None: not verified (backfill)


@dataclass
class PeriodResult:
    """A judged period: what to store, what to alert on, and what the next period needs."""

    time: int  # the period's valid-after (Unix seconds), or the fetch time without a consensus
    points: list[Point] | EncodedPoints  # encoded where a worker process judged it (backfill)
    findings: list[Finding]
    relays: PreviousRelays | None  # this period's relays (None without a consensus)
    bandwidth_authorities: dict[str, float]
    snapshot: Snapshot | None = None  # the snapshot as judged: without the rejected documents
    table: RelayTable | None = None
    detector_learned: bool = False  # the memory's detector learned this period: save it
    learned: list[str] = field(default_factory=list)  # the memory's learners that took this period in: save them
    warnings: tuple[Any, ...] = ()  # per-relay warnings a learner gave this period (at-risk), for subscriptions
    rejected: list[FetchRecord] = field(default_factory=list)  # documents judging refused, each with its reason
    proofs: ProofBook | None = None  # the AROI proofs it was judged with (the reliability learner reads them)

    @property
    def has_consensus(self) -> bool:
        return self.relays is not None

    def backfilled(self) -> PeriodResult:
        """What ``record`` needs of a replayed period, small enough to hold a run of and send between processes.

        Its points encoded, without snapshot, relay table and relays: a
        replayed period leaves no memory in the state, and each period's
        relays (7,000 fingerprints with their flags) held for a run of 48 cost
        ~100 MB.
        """
        points = self.points if isinstance(self.points, EncodedPoints) else encode_points(self.points)
        return replace(self, points=points, snapshot=None, table=None, relays=None)


def period_time_of(snapshot: Snapshot) -> int:
    """The time a period's points carry: its consensus's valid-after, or when we fetched without one."""
    consensus = snapshot.latest_consensus()
    return unix(consensus.valid_after) if consensus is not None else unix(snapshot.started_at)


def judge(snapshot: Snapshot, memory: Memory, config: Config, geoip: GeoIP) -> PeriodResult:
    """Metrics, check findings and (with a detector in the memory) anomalies of one period.

    Without an accepted consensus the checks still run: unreachable
    authorities and a lost quorum are exactly what must be reported then.
    Never raises for what the authorities served: a consensus with
    impossible times and a document that breaks judging are left out and
    listed in ``rejected``; the snapshot judged is ``result.snapshot``.
    """
    screened, refused = admissible(snapshot, config.checks.thresholds)
    result = _isolated(screened, memory, config, geoip)
    result.rejected = refused + result.rejected
    result.proofs = memory.proofs
    judged = cast(Snapshot, result.snapshot)
    consensus = judged.latest_consensus() if result.has_consensus else None
    if consensus is not None and result.table is not None and memory.detector is not None:
        _detect(result, memory.detector, judged, consensus, result.table)
    if result.has_consensus and memory.learners and isinstance(result.points, list):
        from agent.pipeline.learners import learn

        result.learned = learn(result, memory.learners)
    return result


def admissible(snapshot: Snapshot, thresholds: CheckThresholds) -> tuple[Snapshot, list[FetchRecord]]:
    """The live snapshot without the consensuses whose times are impossible, and their records, marked refused.

    Such a consensus (``agent.checks.consensus.time_problem``), however well
    signed, must never become the period: the next run would wait for its
    time. An archived snapshot is history, judged as of its own time, and
    comes back as it is; so does a snapshot screened before.
    """
    if snapshot.archived:
        return snapshot, []
    now = _naive_utc(snapshot.started_at)
    refused = {}
    for key, view in snapshot.views.items():
        for kind in CONSENSUS_KINDS:
            document = getattr(view, VIEW_DOCUMENTS[kind][0])
            problem = None if document is None else _time_problem(document, now, thresholds.consensus_ahead_seconds)
            if problem is not None:
                refused[(key, kind)] = TIME_REFUSED + problem
    if not refused:
        return snapshot, []
    log.warning("%s", "; ".join(f"{key}'s {kind.value} {why}" for (key, kind), why in refused.items()))
    return rejecting(snapshot, refused)


def _isolated(snapshot: Snapshot, memory: Memory, config: Config, geoip: GeoIP) -> PeriodResult:
    """The period judged without the documents that break it (``agent.pipeline.isolation``), logged once."""

    def attempt(candidate: Snapshot) -> Trial[PeriodResult]:
        return _attempt(candidate, memory, config, geoip)

    first = attempt(snapshot)
    if first.fine():
        return cast(PeriodResult, first.result)
    found = isolate(snapshot, attempt, first)
    if found.trial is None:
        log.error("period %s: judging fails even without any document served (%s); only the fetch records are "
                  "recorded", _when(snapshot), first.problem, exc_info=_first_error(first))
        return _records_alone(snapshot, memory)
    broken = {name: error for name, error in first.failed.items() if name in found.tolerated}
    if broken:  # not any document's fault: the check's own, logged once with its traceback
        log.error("period %s: %s; that check's findings are missing", _when(snapshot),
                  Trial(first.result, broken).problem, exc_info=next(iter(broken.values())))
    if not found.reasons:
        return cast(PeriodResult, found.trial.result)
    judged, rejected = rejecting(snapshot, found.reasons)
    final = attempt(judged)
    result = cast(PeriodResult, final.result if final.fine(found.tolerated) else found.trial.result)
    result.rejected = rejected
    log.warning("period %s: %s; the rest of the period is judged without them", _when(snapshot),
                "; ".join(f"{record.authority}'s {record.kind.value} {record.error}" for record in rejected))
    return result


def _attempt(snapshot: Snapshot, memory: Memory, config: Config, geoip: GeoIP) -> Trial[PeriodResult]:
    """Judges ``snapshot`` (without detection), telling what raised or which checks failed."""
    failed: dict[str, BaseException] = {}
    try:
        result = measure(snapshot, memory, config, geoip, _watched(failed))
    except Exception as error:  # whatever a hostile document makes metrics or checks raise
        return Trial(None, {RAISED: error})
    return Trial(result, failed)


def _watched(failed: dict[str, BaseException]) -> tuple[Check, ...]:
    """The checks, each failure kept in ``failed`` (and reported as run_checks does, without its log line)."""

    def watch(registered: Check) -> Check:
        def run(context: Context) -> list[Hit]:
            try:
                return list(registered.run(context))
            except Exception as error:
                failed.setdefault(registered.id, error)
                return [Hit({}, "the check itself failed: see the agent log", severity="warning")]

        return replace(registered, run=run)

    return tuple(watch(registered) for registered in CHECKS)


def _records_alone(snapshot: Snapshot, memory: Memory) -> PeriodResult:
    """When nothing helps: the period's fetch records as points, at the fetch time (or the archived period's)."""
    bare = without(snapshot, documents_of(snapshot))
    try:
        time = period_time_of(bare)  # an archived period keeps its consensus's time
    except Exception:
        time = unix(snapshot.started_at)
    try:
        points = fetch_points(bare, time)
    except Exception:
        log.exception("period %s: even the fetch records cannot become points", _when(snapshot))
        points = []
    return PeriodResult(time, points, [], None, dict(memory.bandwidth_authorities), bare)


def _first_error(trial: Trial[PeriodResult]) -> BaseException | None:
    return next(iter(trial.failed.values()), None)


def _when(snapshot: Snapshot) -> str:
    """The period's name in a log line: its consensus's valid-after, or the fetch time."""
    try:
        consensus = snapshot.latest_consensus()
        return f"{consensus.valid_after:%Y-%m-%d %H:%M}" if consensus is not None \
            else f"fetched {snapshot.started_at:%Y-%m-%d %H:%M}"
    except Exception:
        return "(unreadable)"


def _time_problem(document: Any, now: datetime, tolerance: float) -> str | None:
    try:
        return time_problem(document, now, tolerance)
    except Exception as error:  # times stem parsed but that do not compare (hostile input)
        return f"its times cannot be compared: {type(error).__name__}: {error}"


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo is not None else moment


def measure(snapshot: Snapshot, memory: Memory, config: Config, geoip: GeoIP,
            checks: tuple[Check, ...] = CHECKS) -> PeriodResult:
    """Metrics and check findings of one period as it stands, without detection; raises what they raise."""
    consensus = snapshot.latest_consensus()
    time = period_time_of(snapshot)
    table = table_of(snapshot, consensus, geoip) if consensus is not None else None
    points = snapshot_points(snapshot, memory.previous_relays, geoip, config.metrics.operators_top_n, table)
    if table is not None:
        points += aroi_points(table, memory.proofs, config.metrics.operators_top_n, time)
    findings, bandwidth_authorities = judge_checks(snapshot, memory, config, checks)
    points += health_points(findings, time)
    return PeriodResult(time, points, findings, relays_of(consensus) if consensus is not None else None,
                        bandwidth_authorities, snapshot, table)


def judge_checks(snapshot: Snapshot, memory: Memory, config: Config,
                 checks: tuple[Check, ...] = CHECKS) -> tuple[list[Finding], dict[str, float]]:
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
    context = Context(snapshot, _judged_at(snapshot), config.checks.thresholds, frozenset(remembered),
                      memory.proofs or EMPTY)
    findings = run_checks(context, config.checks.silences, config.checks.disabled, checks)
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
