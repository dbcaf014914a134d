"""Backfill: replays archived voting periods through the same metrics and store path.

Documents are grouped into periods by valid-after (consensuses, microdesc
consensuses, votes); a document whose valid-after is no date is named and
skipped. Key certificates verify every consensus they cover, and trust
comes from the configured authorities only; which consensus a period uses
when several claim it, and which are rejected, is ``agent.loop.archived``'s
rule. Each period gets the newest server descriptor each relay had
published by its valid-after. Periods are replayed in time order, so churn
is measured against the preceding period of the input. Nothing is ever
sent to people: backfill writes points only.

With ``detect`` (``backfill --detect``) the periods are also learned by
anomaly detection, in valid-after order, into the very state ``run`` and
``once`` resume from (``detectors.pickle``, ``agent.pipeline.record.Detectors``),
so an agent installed today starts with baselines learned from the archive
instead of warming up for two days. Judging in the workers builds each
period's detector facts exactly as live (``judge`` calls its detector with
``facts_of(snapshot, consensus, table)``; in a worker that "detector" only
keeps the facts, ``_FactsKept``); this process feeds them, in time order,
to the one real detector (``Detector.update``), whose findings and
``tor_anomaly`` points join the period as judge would have added them. The
points are stored; the findings are counted, never alerted on. A period not
newer than what the detector already learned (``last_time``) is skipped by
the engine; a period written before but not yet learned is computed again
(and rewritten, the same points) to be learned. The state is saved after
each run of periods written, so an interrupted backfill resumes learning
where the saved state stops.

Parsing, metrics, checks and line protocol take about 37 ms of CPU a
consecutive hour (each consensus's entries are looked up among the previous
one's, ``agent.parse.entrymemory``; 75 ms when nothing repeats), so with
``--jobs`` N runs of consecutive periods are computed in N worker processes
(each reads the period before its run again, for churn and for its
entries); this process alone writes the store and the state, in time order.

Resumable and idempotent: each written period is recorded in the state
file and skipped next time unless --force; rewriting a period writes the
same timestamps, so the store overwrites rather than duplicates.

Limits of this version (not hidden): consensuses and votes that are files
are read again when replayed, but archive members are held in memory
(zstd'd), as are parsed descriptors, so import a CollecTor tarball a month
or so at a time; no one file or member may expand past
``max_document_bytes`` (``agent.parse.archive.MAX_DOCUMENT_BYTES``, 128 MiB,
by default); bandwidth files are read and checked but not yet used by any
metric.
"""

from __future__ import annotations

import bisect
import logging
import multiprocessing
import pickle
import re
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import zstandard
from tqdm import tqdm

from agent.config.loader import Config
from agent.loop.archived import (
    BackfillResult,
    KeptDocument,
    Period,
    archived_snapshot,
    chosen_consensus,
    configured_identities,
    parse_raw,
)
from agent.metrics.geoip import GeoIP
from agent.metrics.period import relays_of
from agent.model.errors import StateError
from agent.model.points import Point
from agent.model.snapshot import DocKind, Snapshot
from agent.model.time import unix
from agent.parse.archive import MAX_DOCUMENT_BYTES, RawDocument, ReadReport, read_paths
from agent.parse.documents import collector_paused
from agent.parse.entrymemory import EntryMemory
from agent.parse.signatures import trust_certificates
from agent.pipeline.judge import WARMING_UP, Memory, PeriodResult, judge
from agent.pipeline.record import Detectors, record
from agent.pipeline.state import State
from agent.store.lineprotocol import encode_all
from agent.store.outbox import compress, decompress
from agent.store.store import EncodedPoints, Store

__all__ = ["BackfillResult", "KeptDocument", "Period", "archived_snapshot", "backfill", "newest_snapshot"]

log = logging.getLogger(__name__)

_VALID_AFTER = re.compile(rb"^valid-after (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)$", re.M)


#: Periods computed together: a worker reads the period before a run again for its churn (and its entries to
#: look the run's first one up in), once per run: 2 % of the work with runs of 24, 1 % with 48.
RUN_PERIODS = 48


def backfill(paths: list[Path], config: Config, state: State, store: Store, geoip: GeoIP,
             since: datetime | None = None, until: datetime | None = None, force: bool = False,
             progress: bool = True, jobs: int = 1, run_periods: int = RUN_PERIODS,
             max_document_bytes: int = MAX_DOCUMENT_BYTES, detect: bool = False) -> BackfillResult:
    """Reads ``paths`` and writes every period in [since, until] not yet written (all with ``force``).

    With ``jobs`` > 1, runs of ``run_periods`` consecutive periods are computed
    (parsed, metrics, checks, line protocol) in that many worker processes;
    this process writes them to the store and the state in time order. A file
    or archive member larger than ``max_document_bytes`` is named and skipped.
    With ``detect``, anomaly detection's saved state also learns the periods,
    in time order (see the module's docstring); a period written before but
    newer than what it learned is computed and written again to be learned.
    """
    learner = _Learner(config) if detect else None  # loaded first: an unusable state stops before any work
    result = BackfillResult()
    periods, certificates, descriptors = _gather(paths, result, max_document_bytes)
    trusted, rejected = trust_certificates(certificates)
    for problem in rejected:
        result.read.problem("key certificate", problem)
    ordered = [periods[key] for key in sorted(periods)]
    result.periods_found = len(ordered)
    done = state.backfilled()
    chosen = [p for p in ordered if (since is None or p.valid_after >= since)
              and (until is None or p.valid_after <= until)]
    todo = [p for p in chosen if force or unix(p.valid_after) not in done
            or (learner is not None and learner.wants(unix(p.valid_after)))]
    result.periods_already_done = len(chosen) - len(todo)
    result.periods_without_consensus = sum(1 for p in todo if not p.consensuses)
    todo = [p for p in todo if p.consensuses]
    inputs = _RunInputs(config, geoip, certificates, sorted(descriptors, key=lambda d: d.published), detect)
    with tqdm(total=len(todo), unit="period", desc="backfill", disable=not progress, smoothing=0.1) as bar, \
            _inputs_here(inputs, trusted):
        for (run, _), (computed, found) in _computed_runs(_runs(todo, periods, run_periods), inputs, jobs):
            result.add(found)
            for period, facts in computed:
                if learner is not None and facts is not None:
                    learner.learn(period, facts, result)
                saved = record(period, store, state, backfilled_at=int(time.time()))
                result.periods_written += 1
                result.points += saved.points
                result.lines_written += saved.lines_written
                result.periods_waiting = saved.periods_waiting
            if learner is not None:  # after the run's periods are marked written: see _Learner
                learner.save()
            bar.update(len(run))
    if learner is not None:
        result.learned_until = learner.detector.last_time
    return result


class _Learner:
    """Anomaly detection's saved state (the one ``run`` and ``once`` resume from), learning replayed periods.

    Periods come in valid-after order (runs in order, each run's periods in
    order, whatever ``--jobs``). The state is saved only after a whole run is
    written, so what was learned and what is marked written agree: after an
    interruption, the periods newer than the saved state's last one are
    computed again (``wants``) and learned then.
    """

    def __init__(self, config: Config):
        self.detectors = Detectors(config)
        detector: Any = self.detectors.load()  # an agent.detect.engine.Detector
        if detector is None:  # the reason is logged
            from agent.detect.engine import STATE_FILE

            raise StateError(Path(config.state_dir) / STATE_FILE,
                             "anomaly detection's state could not be loaded (see the log); nothing was replayed")
        self.detector = detector
        self.learned_before: int | None = detector.last_time
        self.unsaved = False

    def wants(self, period_time: int) -> bool:
        """A period the saved state has not learned yet (computed again even if written before)."""
        return self.learned_before is None or period_time > self.learned_before

    def learn(self, period: PeriodResult, packed: bytes, result: BackfillResult) -> None:
        """The period's facts through the detector; its findings and points join the period, as judge adds them.

        Detection failing never fails the period (as live: logged, the period
        is written without).
        """
        facts = pickle.loads(decompress(packed))  # from our own worker process (or this one)
        try:
            detection = self.detector.update(facts)
        except Exception:
            log.exception("anomaly detection failed for the period of %s; its metrics are written regardless",
                          period.time)
            return
        if detection.skipped:
            result.periods_learned_before += 1
            return
        self.unsaved = True
        result.periods_learned += 1
        result.anomalies += sum(1 for finding in detection.findings if finding.check != WARMING_UP)
        period.findings += detection.findings  # never alerted on: backfill records without ``alert``
        period.points = _with_points(period.points, detection.points)
        period.detector_learned = True

    def save(self) -> None:
        if self.unsaved:
            self.detectors.save(self.detector)
            self.unsaved = False


def _with_points(points: list[Point] | EncodedPoints, more: list[Point]) -> list[Point] | EncodedPoints:
    """``points`` and ``more`` as one period's points (encoded ones packed again as one outbox payload).

    The outbox unpacks one zstd frame per record, so the lines are packed
    again, streamed through one compressor (a period's 2.6 MB of text is not
    copied again to be joined).
    """
    if not more:
        return points
    if not isinstance(points, EncodedPoints):
        return [*points, *more]
    parts = [decompress(points.payload), b"\n"] if points.line_count else []
    parts.append("\n".join(encode_all(more)).encode())
    # One frame with its size in the header, as the outbox's decompress needs, like agent.store.outbox.compress's.
    packer = zstandard.ZstdCompressor(level=1).compressobj(size=sum(len(part) for part in parts))
    payload = b"".join([*(packer.compress(part) for part in parts), packer.flush()])
    return EncodedPoints(payload, points.line_count + len(more))


class _FactsKept:
    """The detector judge calls in a backfill computation: it keeps the period's facts and scores nothing.

    judge builds the facts exactly as for a live period; the one real
    detector learns them later, in time order, in the main process.
    """

    NOT_SCORED = SimpleNamespace(findings=(), points=(), skipped=True, warming=False)

    def __init__(self) -> None:
        self.facts: Any = None

    def update(self, facts: Any) -> Any:
        self.facts = facts
        return self.NOT_SCORED

    def packed(self) -> bytes | None:
        """The facts, pickled and zstd'd: 0.28 MB a period of 7,000 relays (0.75 MB only pickled; their strings
        held as objects for a run of 48 would cost ~150 MB). Packing costs the worker ~5 ms, unpacking ~3 ms."""
        return compress(pickle.dumps(self.facts, protocol=pickle.HIGHEST_PROTOCOL)) if self.facts is not None \
            else None


@dataclass(frozen=True)
class _RunInputs:
    """What every run needs besides its periods (sent once to each worker process)."""

    config: Config
    geoip: GeoIP
    certificates: list
    descriptors: list  # sorted by publication time
    detect: bool = False  # keep each period's detector facts (``_FactsKept``)


def _runs(todo: list[Period], periods: dict, size: int) -> list[tuple[list[Period], Period | None]]:
    """Runs of up to ``size`` periods, each with the input's period before its first (for that one's churn)."""
    with_consensus = sorted(key for key, period in periods.items() if period.consensuses)
    runs = []
    for start in range(0, len(todo), size):
        run = todo[start:start + size]
        index = bisect.bisect_left(with_consensus, run[0].valid_after)
        runs.append((run, periods[with_consensus[index - 1]] if index else None))
    return runs


def _computed_runs(runs: list, inputs: _RunInputs, jobs: int):
    """(run, (computed periods, what computing found)) in time order, here or in ``jobs`` processes."""
    if jobs <= 1 or len(runs) <= 1:
        for run in runs:
            yield run, compute_run(*run)
        return
    context = multiprocessing.get_context("spawn")  # not fork: this process may hold threads and open files
    pool = ProcessPoolExecutor(min(jobs, len(runs)), mp_context=context, initializer=_start_worker,
                               initargs=(inputs,))
    try:
        yield from zip(runs, pool.map(compute_run, *zip(*runs)))
    finally:  # on an error or Ctrl-C here, runs not started are dropped (they are not marked written)
        pool.shutdown(wait=True, cancel_futures=True)


_WORKER: dict = {}


def _start_worker(inputs: _RunInputs, trusted: dict | None = None) -> None:
    """A worker's inputs; it trusts the certificates itself (verified keys do not pickle)."""
    if trusted is None:
        trusted, _ = trust_certificates(inputs.certificates)
    _WORKER.update(inputs=inputs, trusted=trusted)


@contextmanager
def _inputs_here(inputs: _RunInputs, trusted: dict):
    """The run inputs in this process too (runs are computed here with one job), dropped afterwards."""
    _start_worker(inputs, trusted)
    try:
        yield
    finally:
        _WORKER.clear()


def compute_run(run: list[Period], before: Period | None
                ) -> tuple[list[tuple[PeriodResult, bytes | None]], BackfillResult]:
    """Each period of a run judged, its points encoded (in a worker process or this one), and what it found.

    With each period its detector facts, packed (``--detect``), or None.
    """
    inputs, trusted, found = _WORKER["inputs"], _WORKER["trusted"], BackfillResult()
    feed = _DescriptorFeed(inputs.descriptors)
    periods = {period.valid_after: period for period in ([before] if before else []) + run}
    computed, previous = [], None
    entries = EntryMemory()  # each consensus's entries are looked up among the previous one's
    # For the whole run: what a period leaves behind is freed by reference counting.
    with collector_paused():
        for period in run:
            snapshot = archived_snapshot(period, inputs.config, trusted, feed.until(period.valid_after), found,
                                         entries)
            if snapshot is None:
                continue
            consensus: Any = snapshot.archived_consensus
            kept = _FactsKept() if inputs.detect else None
            memory = Memory(_previous_relays(period, periods, previous, consensus, trusted, inputs.config),
                            detector=kept)
            judged = judge(snapshot, memory, inputs.config, inputs.geoip)
            previous = consensus.valid_after, judged.relays
            computed.append((judged.backfilled(), kept.packed() if kept is not None else None))
    return computed, found


def _gather(paths: list[Path], result: BackfillResult, max_bytes: int = MAX_DOCUMENT_BYTES):
    periods: dict[datetime, Period] = {}
    certificates: dict[bytes, Any] = {}
    descriptors: list = []
    counts: dict[str, int] = defaultdict(int)
    for document in read_paths(paths, result.read, max_bytes):
        counts[document.kind.value] += 1
        if document.kind in (DocKind.CONSENSUS, DocKind.VOTE):
            valid_after = _valid_after(document, result.read)
            if valid_after is None:
                continue
            period = periods.setdefault(valid_after, Period(valid_after))
            kept = period.consensuses if document.kind is DocKind.CONSENSUS else period.votes
            kept.append(KeptDocument.of(document, max_bytes))  # several consensuses: chosen when replayed
        elif document.kind in (DocKind.KEY_CERTIFICATES, DocKind.SERVER_DESCRIPTORS, DocKind.BANDWIDTH_FILE):
            parsed = parse_raw(document, result.read)
            if document.kind is DocKind.KEY_CERTIFICATES and parsed:
                certificates.update((certificate.get_bytes(), certificate) for certificate in parsed)
            elif document.kind is DocKind.SERVER_DESCRIPTORS and parsed:
                descriptors.extend(parsed)
        # microdesc consensuses are counted but not replayed: no metric reads them yet.
    result.documents = dict(counts)
    return periods, list(certificates.values()), descriptors


def _valid_after(document: RawDocument, report: ReadReport) -> datetime | None:
    match = _VALID_AFTER.search(document.raw[:4000])
    if match is None:
        report.problem(document.name, f"{document.kind.value} without a valid-after line")
        return None
    text = match.group(1).decode()
    try:  # datetime() names the field that is wrong; strptime only says the text does not match
        year, month, day, hour, minute, second = (int(number) for number in re.findall(r"\d+", text))
        return datetime(year, month, day, hour, minute, second)
    except ValueError as error:  # month 13, February 30, hour 24, ...
        report.problem(document.name, f"{document.kind.value} skipped: its valid-after {text!r} is no date ({error})")
        return None


class _DescriptorFeed:
    """Newest descriptor per relay published by a time; periods must come in time order."""

    def __init__(self, descriptors: list):
        self._sorted = sorted(descriptors, key=lambda d: d.published)  # linear when they already are
        self._next = 0
        self.newest: dict[str, object] = {}

    def until(self, moment: datetime) -> list:
        while self._next < len(self._sorted) and self._sorted[self._next].published <= moment:
            descriptor = self._sorted[self._next]
            self.newest[descriptor.fingerprint] = descriptor
            self._next += 1
        return list(self.newest.values())


def newest_snapshot(paths: list[Path], config: Config,
                    max_document_bytes: int = MAX_DOCUMENT_BYTES) -> tuple[Snapshot | None, BackfillResult]:
    """The newest period in ``paths`` with a usable consensus, as a Snapshot (for ``check --from``).

    A newer period whose consensuses are all rejected, or in a conflict trust
    cannot settle, is reported in the result and passed over.
    """
    result = BackfillResult()
    periods, certificates, descriptors = _gather(paths, result, max_document_bytes)
    trusted, _ = trust_certificates(certificates)
    for key in sorted(periods, reverse=True):
        period = periods[key]
        if period.consensuses:
            snapshot = archived_snapshot(period, config, trusted, _DescriptorFeed(descriptors).until(key), result)
            if snapshot is not None:
                return snapshot, result
    return None, result


def _previous_relays(period: Period, periods: dict, previous, consensus, trusted: dict, config: Config):
    """Relays of the period one period length before this one, from the replay or the input.

    The input's period is chosen by the same rule as when it is replayed; a
    problem with it is reported then, not here.
    """
    before = period.valid_after - (consensus.fresh_until - consensus.valid_after)
    if previous is not None and previous[0] == before:
        return previous[1]
    earlier = periods.get(before)
    if earlier is None or not earlier.consensuses:
        return None  # the input lacks it: no churn for this period rather than churn against an older one
    chosen = chosen_consensus(earlier, configured_identities(config), trusted, BackfillResult())
    return relays_of(chosen.document) if chosen is not None else None
