"""Backfill: replays archived voting periods through the same metrics and store path.

Documents are grouped into periods by valid-after (consensuses, microdesc
consensuses, votes); key certificates verify every consensus they cover;
each period gets the newest server descriptor each relay had published by
its valid-after. Periods are replayed in time order, so churn is measured
against the preceding period of the input. Nothing is ever sent to people:
backfill writes points only.

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
or so at a time; bandwidth files are read and checked but not yet used by
any metric.
"""

from __future__ import annotations

import bisect
import logging
import multiprocessing
import re
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from agent.config.loader import Config
from agent.metrics.geoip import GeoIP
from agent.metrics.period import relays_of
from agent.model.authorities import from_consensus
from agent.model.errors import DocumentError
from agent.model.snapshot import AuthorityView, DocKind, Snapshot
from agent.model.time import unix
from agent.parse.archive import RawDocument, ReadReport, read_paths
from agent.parse.documents import collector_paused, parse_document
from agent.parse.entrymemory import EntryMemory
from agent.parse.signatures import check_signatures, trust_certificates
from agent.pipeline.judge import Memory, PeriodResult, judge
from agent.pipeline.record import record
from agent.pipeline.state import State
from agent.store.outbox import compress, decompress
from agent.store.store import Store

log = logging.getLogger(__name__)

_VALID_AFTER = re.compile(rb"^valid-after (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)$", re.M)


#: Periods computed together: a worker reads the period before a run again for its churn (and its entries to
#: look the run's first one up in), once per run: 2 % of the work with runs of 24, 1 % with 48.
RUN_PERIODS = 48


@dataclass(frozen=True)
class KeptDocument:
    """A consensus or vote held until its period is replayed.

    A file is read again then (only its path is held); an archive member's
    bytes are held zstd'd (a month of hourly consensuses is ~1.7 GB of text;
    zstd packs and unpacks one in ~2 ms, zlib took ~20).
    """

    name: str
    kind: DocKind
    path: Path | None = None
    packed: bytes | None = None

    @classmethod
    def of(cls, document: RawDocument) -> KeptDocument:
        if document.path is not None:
            return cls(document.name, document.kind, path=document.path)
        return cls(document.name, document.kind, packed=compress(document.raw))

    def read(self, report: ReadReport) -> RawDocument | None:
        """The document again; None (recorded in ``report``) if its file can no longer be read."""
        if self.path is None:
            return RawDocument(self.name, self.kind, decompress(self.packed))
        try:
            return RawDocument(self.name, self.kind, self.path.read_bytes(), self.path)
        except OSError as error:
            report.problem(self.name, f"unreadable when its period was replayed ({error.strerror or error})")
            return None


@dataclass
class Period:
    """The archived documents of one valid-after, kept until replayed."""

    valid_after: datetime
    consensus: KeptDocument | None = None
    votes: list[KeptDocument] = field(default_factory=list)


@dataclass
class BackfillResult:
    periods_found: int = 0
    periods_written: int = 0
    periods_already_done: int = 0
    periods_without_consensus: int = 0
    periods_unverified: int = 0
    periods_rejected: list[str] = field(default_factory=list)
    points: int = 0
    lines_written: int = 0
    periods_waiting: int = 0
    documents: dict[str, int] = field(default_factory=dict)
    read: ReadReport = field(default_factory=ReadReport)


def backfill(paths: list[Path], config: Config, state: State, store: Store, geoip: GeoIP,
             since: datetime | None = None, until: datetime | None = None, force: bool = False,
             progress: bool = True, jobs: int = 1, run_periods: int = RUN_PERIODS) -> BackfillResult:
    """Reads ``paths`` and writes every period in [since, until] not yet written (all with ``force``).

    With ``jobs`` > 1, runs of ``run_periods`` consecutive periods are computed
    (parsed, metrics, checks, line protocol) in that many worker processes;
    this process writes them to the store and the state in time order.
    """
    result = BackfillResult()
    periods, certificates, descriptors = _gather(paths, result)
    trusted, rejected = trust_certificates(certificates)
    for problem in rejected:
        result.read.problem("key certificate", problem)
    ordered = [periods[key] for key in sorted(periods)]
    result.periods_found = len(ordered)
    done = state.backfilled()
    chosen = [p for p in ordered if (since is None or p.valid_after >= since)
              and (until is None or p.valid_after <= until)]
    todo = [p for p in chosen if force or unix(p.valid_after) not in done]
    result.periods_already_done = len(chosen) - len(todo)
    result.periods_without_consensus = sum(1 for p in todo if p.consensus is None)
    todo = [p for p in todo if p.consensus is not None]
    inputs = _RunInputs(config, geoip, certificates, sorted(descriptors, key=lambda d: d.published))
    with tqdm(total=len(todo), unit="period", desc="backfill", disable=not progress, smoothing=0.1) as bar, \
            _inputs_here(inputs, trusted):
        for (run, _), (computed, found) in _computed_runs(_runs(todo, periods, run_periods), inputs, jobs):
            result.periods_unverified += found.periods_unverified
            result.periods_rejected += found.periods_rejected
            result.read.unreadable += found.read.unreadable
            for period in computed:
                saved = record(period, store, state, backfilled_at=int(time.time()))
                result.periods_written += 1
                result.points += saved.points
                result.lines_written += saved.lines_written
                result.periods_waiting = saved.periods_waiting
            bar.update(len(run))
    return result


@dataclass(frozen=True)
class _RunInputs:
    """What every run needs besides its periods (sent once to each worker process)."""

    config: Config
    geoip: GeoIP
    certificates: list
    descriptors: list  # sorted by publication time


def _runs(todo: list[Period], periods: dict, size: int) -> list[tuple[list[Period], Period | None]]:
    """Runs of up to ``size`` periods, each with the input's period before its first (for that one's churn)."""
    with_consensus = sorted(key for key, period in periods.items() if period.consensus is not None)
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


def compute_run(run: list[Period], before: Period | None) -> tuple[list[PeriodResult], BackfillResult]:
    """Each period of a run judged, its points encoded (in a worker process or this one), and what it found."""
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
            consensus = snapshot.archived_consensus
            memory = Memory(_previous_relays(period, periods, previous, consensus))
            judged = judge(snapshot, memory, inputs.config, inputs.geoip).encoded()
            computed.append(judged)
            previous = consensus.valid_after, judged.relays
    return computed, found


def _gather(paths: list[Path], result: BackfillResult):
    periods: dict[datetime, Period] = {}
    certificates, descriptors = {}, []
    counts: dict[str, int] = defaultdict(int)
    for document in read_paths(paths, result.read):
        counts[document.kind.value] += 1
        if document.kind in (DocKind.CONSENSUS, DocKind.VOTE):
            valid_after = _valid_after(document, result.read)
            if valid_after is None:
                continue
            period = periods.setdefault(valid_after, Period(valid_after))
            if document.kind is DocKind.CONSENSUS:
                period.consensus = KeptDocument.of(document)
            else:
                period.votes.append(KeptDocument.of(document))
        elif document.kind in (DocKind.KEY_CERTIFICATES, DocKind.SERVER_DESCRIPTORS, DocKind.BANDWIDTH_FILE):
            parsed = _parse(document, result.read)
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
    return datetime.strptime(match.group(1).decode(), "%Y-%m-%d %H:%M:%S")


def _parse(document: RawDocument | None, report: ReadReport, entries: EntryMemory | None = None):
    if document is None:  # could not be read again (recorded)
        return None
    try:
        return parse_document(document.kind, document.raw, document.name, memory=entries)
    except DocumentError as error:
        report.add(str(error))  # names the document already
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


def archived_snapshot(period: Period, config: Config, trusted: dict, descriptors: list,
                      result: BackfillResult, entries: EntryMemory | None = None) -> Snapshot | None:
    """The Snapshot of an archived period: its consensus, its votes in their authorities' views.

    None if the consensus is unusable: unparseable, or a signature provably does
    not match it. Without certificates for enough signers it is taken as archived
    (counted as unverified).
    """
    document = period.consensus.read(result.read)
    consensus = _parse(document, result.read, entries)
    if consensus is None:
        return None
    name = document.name
    authorities = from_consensus(consensus)
    views = {authority.nickname: AuthorityView(authority) for authority in authorities}
    for kept_vote in period.votes:
        vote = _parse(kept_vote.read(result.read), result.read)
        voters = from_consensus(vote) if vote is not None else []
        if voters:
            views.setdefault(voters[0].nickname, AuthorityView(voters[0])).vote = vote
    report = check_signatures(consensus, trusted)
    now = datetime.now(timezone.utc)
    snapshot = Snapshot(config.vantage, now, now, authorities, views, [], server_descriptors=descriptors,
                        archived_consensus=consensus, archived_signatures=report)
    if snapshot.latest_consensus() is None:
        if any(check.reason == "signature does not match the document" for check in report.checks):
            result.periods_rejected.append(f"{name}: a signature does not match the document "
                                           f"({len(report.valid_identities)} of {len(consensus.signatures)} valid)")
            return None
        snapshot.archived_signatures = None
        result.periods_unverified += 1
    return snapshot


def newest_snapshot(paths: list[Path], config: Config) -> tuple[Snapshot | None, BackfillResult]:
    """The newest period with a consensus in ``paths``, as a Snapshot (for ``check --from``)."""
    result = BackfillResult()
    periods, certificates, descriptors = _gather(paths, result)
    trusted, _ = trust_certificates(certificates)
    with_consensus = [periods[key] for key in sorted(periods) if periods[key].consensus is not None]
    if not with_consensus:
        return None, result
    newest = with_consensus[-1]
    return archived_snapshot(newest, config, trusted, _DescriptorFeed(descriptors).until(newest.valid_after),
                             result), result


def _previous_relays(period: Period, periods: dict, previous, consensus):
    """Relays of the period one period length before this one, from the replay or the input."""
    before = period.valid_after - (consensus.fresh_until - consensus.valid_after)
    if previous is not None and previous[0] == before:
        return previous[1]
    earlier = periods.get(before)
    if earlier is None or earlier.consensus is None:
        return None  # the input lacks it: no churn for this period rather than churn against an older one
    document = earlier.consensus.read(ReadReport())  # a problem with it is reported when its own period is replayed
    try:
        return relays_of(parse_document(DocKind.CONSENSUS, document.raw, document.name)) if document else None
    except DocumentError:
        return None
