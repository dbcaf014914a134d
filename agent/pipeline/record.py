"""record: the effects of one judged period, in one order for ``once``, ``run`` and ``backfill``.

Alert first (it never fails the period), then one save of the period's
points with the agent's self-metrics, then what the next period needs (its
relays, the bandwidth authorities, the detector's learned state, the
relay directory the REST API searches, and the relays' extra-infos) into the state. ``memory_of`` reads
that memory back for the next ``judge``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from agent.config.loader import Config
from agent.model.ciiss import ContactFields
from agent.model.entries import entries_of
from agent.model.points import Point
from agent.model.snapshot import Snapshot
from agent.pipeline.extrainfos import save_extra_infos
from agent.pipeline.judge import Detector, Memory, PeriodResult, period_time_of
from agent.pipeline.learners import load_learners, save_learners
from agent.pipeline.state import DirectoryEntry, State
from agent.store.store import SaveResult, Store

log = logging.getLogger(__name__)


class Detectors:
    """Anomaly detection's saved state (``agent.detect.engine.DetectorFile``), loaded only when enabled.

    River and SciPy are imported on the first load, never for a period
    that does not detect.
    """

    def __init__(self, config: Config):
        self.config = config

    def load(self) -> Detector | None:
        from agent.detect.engine import DetectorFile

        try:
            return DetectorFile(self.config.state_dir, self.config.detect.settings).load()
        except Exception:
            log.exception("anomaly detection's state could not be loaded; this period is not scored")
            return None

    def save(self, detector: Detector) -> None:
        from agent.detect.engine import DetectorFile

        try:
            DetectorFile(self.config.state_dir, self.config.detect.settings).save(cast(Any, detector))
        except Exception:
            log.exception("anomaly detection's state could not be saved; it resumes from the last saved one")


def memory_of(snapshot: Snapshot, state: State, detectors: Detectors | None = None,
              learners: Config | None = None) -> Memory:
    """What the state remembers for judging ``snapshot``: the relays before it, bandwidth authorities, detector,
    and (``learners``: the config of a live period) the learners' states."""
    consensus = snapshot.latest_consensus()
    previous = state.relays_before(period_time_of(snapshot)) if consensus is not None else None
    detector = detectors.load() if detectors is not None and consensus is not None else None
    learned = load_learners(state.directory, learners) if learners is not None and consensus is not None else {}
    return Memory(previous, state.bandwidth_authorities(), detector, learned)


def record(result: PeriodResult, store: Store, state: State, memory: Memory | None = None,
           alert: Callable[[PeriodResult], None] | None = None,
           self_metrics: Callable[[PeriodResult], list[Point]] | None = None,
           detectors: Detectors | None = None, backfilled_at: int | None = None) -> SaveResult:
    """Alerts on, stores and remembers one judged period; returns what the store did with its points.

    ``alert`` is called first and must not raise; ``self_metrics`` adds the
    agent's own points to the same save; a backfilled period
    (``backfilled_at``) is marked written and leaves the live memory alone.
    """
    if alert is not None:
        alert(result)
    points = result.points
    if self_metrics is not None:
        if not isinstance(points, list):
            raise TypeError("self-metrics join a live period's points, which are never encoded ahead")
        points = [*points, *self_metrics(result)]
    saved = store.save(points, result.time)
    if backfilled_at is not None:
        state.mark_backfilled(result.time, backfilled_at)
        return saved
    if result.relays is not None:
        state.save_relays(result.time, result.relays)
        state.set_bandwidth_authorities(result.bandwidth_authorities)
        save_directory(result, state)
        if result.snapshot is not None and not result.snapshot.archived:
            save_extra_infos(state, result.snapshot, result.time)
    if result.detector_learned and detectors is not None and memory is not None and memory.detector is not None:
        detectors.save(memory.detector)
    if result.learned and memory is not None:
        save_learners(state.directory, memory.learners, result.learned)
    log.debug("period %s: %d points, %s", result.time, saved.points, describe(saved))
    return saved


def directory_of(result: PeriodResult) -> list[DirectoryEntry]:
    """The relay directory of a judged live period: each relay's nickname, country, version, contact line and
    verified operator (``result.proofs``' verdict; none without proofs). Empty without a relay table."""
    table = result.table
    consensus = result.snapshot.latest_consensus() if result.snapshot is not None else None
    if table is None or consensus is None:
        return []
    entries = entries_of(consensus)
    nicknames = dict(zip(entries.fingerprints, entries.nicknames))
    contacts: list[ContactFields | None] = list(table.contacts) or [None] * len(table)
    directory = []
    for row, fingerprint in enumerate(table.fingerprints):
        contact = contacts[row]
        operator = result.proofs.verdict(fingerprint, contact).verified_domain \
            if result.proofs is not None and contact is not None else None
        country = table.country[row]
        directory.append(DirectoryEntry(
            fingerprint, nicknames.get(fingerprint), country if len(country) == 2 and country.isalpha() else None,
            table.version[row], (contact.raw.strip() or None) if contact is not None else None, operator))
    return directory


def save_directory(result: PeriodResult, state: State) -> None:
    """Replaces the state's relay directory with this live period's (for the REST API's relay search).

    A failure is logged and costs the API only a stale directory: it never fails the period.
    """
    try:
        entries = directory_of(result)
        if entries:
            state.replace_relay_directory(result.time, entries)
    except Exception:
        log.exception("period %s: the relay directory could not be written; the API searches the last one",
                      result.time)


def describe(saved: SaveResult) -> str:
    """One line on where the points went."""
    if not saved.stored:
        return "NOT stored: the outbox is full"
    if saved.destination is None:
        return f"kept in the outbox ({_periods(saved.periods_waiting)} wait; no store)"
    if saved.error:
        return f"kept in the outbox ({_periods(saved.periods_waiting)} wait): {saved.error}"
    return f"{saved.lines_written} written to {saved.destination} ({_periods(saved.periods_written)})"


def _periods(count: int) -> str:
    return f"{count} period" if count == 1 else f"{count} periods"
