"""One voting period end to end: collect -> metrics -> store, and remember the relays."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from agent.collect import collect
from agent.config import Config
from agent.geoip import GeoIP
from agent.detect.facts import facts_of
from agent.detect.engine import DetectorFile
from agent.metrics import relays_of
from agent.period import period_points, period_time_of
from agent.snapshot import Snapshot
from agent.state import State
from agent.store import SaveResult, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CycleResult:
    snapshot: Snapshot
    saved: SaveResult
    findings: list = field(default_factory=list)


def run_cycle(config: Config, state: State, store: Store, geoip: GeoIP) -> CycleResult:
    """Fetches one period, turns it into points and hands them to the store."""
    snapshot = collect(config)
    return CycleResult(snapshot, *record_period(snapshot, config, state, store, geoip))


def record_period(snapshot: Snapshot, config: Config, state: State, store: Store,
                  geoip: GeoIP) -> tuple[SaveResult, list]:
    """Metrics, check findings and anomaly detection of a live period into the store.

    Returns what was saved and the findings: the checks', then (periods with a
    consensus) anomaly detection's, whose scores are saved as points. The
    previous period's relays (for churn) come from the state. Backfill shares
    ``agent.period.period_points`` with this, not the state or detection.
    """
    consensus = snapshot.latest_consensus()
    period_time = period_time_of(snapshot)
    previous = state.relays_before(period_time) if consensus is not None else None
    # The state lets the checks learn which authorities measure bandwidth.
    points, findings, table = period_points(snapshot, config, geoip, previous, state)
    if consensus is not None and config.detect.enabled:
        anomalies, anomaly_points = detect(snapshot, consensus, table, config)
        findings, points = findings + anomalies, points + anomaly_points
    saved = store.save(points, period_time)
    if consensus is not None:
        state.save_relays(period_time, relays_of(consensus))
    log.debug("period %s: %d points, %s", consensus.valid_after if consensus else "none (no accepted consensus)",
             saved.points, describe(saved))
    return saved, findings


def detect(snapshot: Snapshot, consensus, table, config: Config) -> tuple[list, list]:
    """Anomaly findings and score points of a period; detection failing never fails the period."""
    try:
        detectors = DetectorFile(config.state_dir, config.detect.settings)
        detector = detectors.load()
        result = detector.update(facts_of(snapshot, consensus, table))
        if not result.skipped:
            detectors.save(detector)
        if result.warming:
            warming = next(f for f in result.findings if f.check == "TorAnomalyDetectionWarmingUp")
            log.info("anomaly detection is warming up: %s", warming.description)
        return result.findings, result.points
    except Exception:
        log.exception("anomaly detection failed this period; metrics and checks are saved regardless")
        return [], []


def describe(saved: SaveResult) -> str:
    """One line on where the points went."""
    if not saved.stored:
        return "NOT stored: the outbox is full"
    if saved.destination is None:
        return f"kept in the outbox ({saved.periods_waiting} periods wait; no store.url configured)"
    if saved.error:
        return f"kept in the outbox ({saved.periods_waiting} periods wait): {saved.error}"
    return f"{saved.lines_written} written to {saved.destination} ({saved.periods_written} periods)"
