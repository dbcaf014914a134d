"""Collects one voting period into a Snapshot: fetch, parse, verify, discover.

Every authority is fetched in parallel (its own documents one after another,
which is gentler on DirPorts that throttle), all under one deadline. At the
deadline whatever has arrived is kept and the rest is recorded as such; an
authority that hangs or answers garbage costs only its own records.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import wait
from datetime import datetime, timezone

from agent.checks.consensus import time_problem
from agent.config.loader import Config
from agent.fetch.crosscheck import probe_orports, vote_digest, vote_holdings
from agent.fetch.http import PATHS, POLL_SECONDS, Deadline, download, new_session
from agent.fetch.workers import DaemonPool
from agent.loop.extrainfo import ExtraInfoJob
from agent.model.authorities import Authority, AuthorityChanges, from_consensus, merge
from agent.model.errors import DocumentError
from agent.model.extrainfo import ExtraInfo
from agent.model.snapshot import AuthorityView, DocKind, FetchRecord, Outcome, SignatureReport, Snapshot, accepted_by
from agent.parse.documents import parse_document
from agent.parse.extrainfo import named_digests
from agent.parse.signatures import check_signatures, trust_certificates

log = logging.getLogger(__name__)

#: Per authority, in this order: the certificates are small and every
#: signature check needs them, so they come first. Server descriptors come
#: from one authority only (see _DescriptorJob).
AUTHORITY_KINDS = (
    DocKind.KEY_CERTIFICATES,
    DocKind.CONSENSUS,
    DocKind.VOTE,
    DocKind.MICRODESC_CONSENSUS,
    DocKind.BANDWIDTH_FILE,
)

_VIEW_FIELDS = {
    DocKind.CONSENSUS: "consensus",
    DocKind.MICRODESC_CONSENSUS: "microdesc_consensus",
    DocKind.VOTE: "vote",
    DocKind.KEY_CERTIFICATES: "key_certificates",
    DocKind.BANDWIDTH_FILE: "bandwidth_file",
}


class _AuthorityJob:
    """One authority's fetches, run in a worker thread, readable at the deadline."""

    def __init__(self, authority: Authority, kinds: tuple[DocKind, ...], consensus_ok: queue.Queue):
        self.authority = authority
        self.kinds = kinds
        self.consensus_ok = consensus_ok
        self.view = AuthorityView(authority)
        self.records: dict[DocKind, FetchRecord] = {}
        self.vote_digest: str | None = None  # what the vote-propagation probe asks the others for
        self.in_flight: DocKind | None = None
        self._lock = threading.Lock()
        self._abandoned = False

    def run(self, deadline: Deadline, timeout: float) -> None:
        """Fetches every kind in turn; never raises (a surprise is recorded on the kind in flight)."""
        with new_session() as session:
            try:
                self._fetch_all(session, deadline, timeout)
            except Exception as error:
                log.exception("fetching from %s failed unexpectedly", self.authority.nickname)
                self._record_surprise(error)

    def _record_surprise(self, error: Exception) -> None:
        with self._lock:
            kind = self.in_flight
            if kind is None or self._abandoned:
                return
            self.records[kind] = FetchRecord(self.authority.nickname, kind, self.authority.base_url + PATHS[kind],
                                             started_at=datetime.now(timezone.utc),
                                             error=f"unexpected error: {type(error).__name__}: {str(error)[:200]}")
            self.in_flight = None

    def _fetch_all(self, session, deadline: Deadline, timeout: float) -> None:
        for kind in self.kinds:
            with self._lock:
                if self._abandoned:
                    return
                self.in_flight = kind
            fetched = download(session, self.authority, kind, deadline, timeout)
            document = _parse(fetched.record, fetched.body)
            with self._lock:
                if self._abandoned:
                    return
                self.records[kind] = fetched.record
                if document is not None:
                    setattr(self.view, _VIEW_FIELDS[kind], document)
                    # Only what is needed later is kept: nine votes' and the descriptors' bytes are ~40 MB (a
                    # consensus keeps its own bytes, whose signatures are checked at the end).
                    if kind is DocKind.VOTE:
                        self.vote_digest = vote_digest(fetched.body)
                self.in_flight = None
            if kind is DocKind.CONSENSUS and document is not None:
                self.consensus_ok.put(self.authority)
            if not fetched.record.answered:
                self._skip_rest(kind, f"not attempted: {self.authority.nickname} did not answer "
                                      f"the {kind.value} request")
                return

    def abandon(self) -> None:
        """From now on the job writes nothing: what it had is final."""
        with self._lock:
            self._abandoned = True

    def collect(self) -> list[FetchRecord]:
        """Stops the job and returns a record for every kind, finished or not."""
        self.abandon()
        with self._lock:
            for kind in self.kinds:
                if kind in self.records:
                    continue
                record = FetchRecord(self.authority.nickname, kind, self.authority.base_url + PATHS[kind],
                                     started_at=datetime.now(timezone.utc))
                if kind == self.in_flight:
                    record.error = "the cycle's deadline was reached during this download"
                else:
                    record.outcome, record.error = Outcome.SKIPPED, "not attempted: the cycle's deadline was reached"
                self.records[kind] = record
            return [self.records[kind] for kind in self.kinds]

    def _skip_rest(self, after: DocKind, reason: str) -> None:
        with self._lock:
            if self._abandoned:
                return
            for kind in self.kinds[self.kinds.index(after) + 1:]:
                self.records[kind] = FetchRecord(
                    self.authority.nickname, kind, self.authority.base_url + PATHS[kind],
                    started_at=datetime.now(timezone.utc), outcome=Outcome.SKIPPED, error=reason)


class _DescriptorJob:
    """Server descriptors from one authority: the first whose consensus arrived.

    Runs beside the authority jobs so that a hanging authority does not delay
    it; tries the next authority that served a consensus if one fails. Then,
    with an ``extra_infos`` job, the extra-infos the descriptors name that it
    has not read, from the same authority (``agent.loop.extrainfo``).
    """

    def __init__(self, candidates: queue.Queue, extra_infos: ExtraInfoJob | None = None):
        self.candidates = candidates
        self.extra_infos = extra_infos
        self.descriptors: list = []
        self.records: list[FetchRecord] = []
        self._lock = threading.Lock()
        self._abandoned = False

    def run(self, deadline: Deadline, timeout: float) -> None:
        with new_session() as session:
            try:
                self._fetch(session, deadline, timeout)
            except Exception:
                log.exception("fetching server descriptors failed unexpectedly")

    def _fetch(self, session, deadline: Deadline, timeout: float) -> None:
        while not deadline.expired():
            try:  # in slices, so that a cancelled deadline is seen
                authority = self.candidates.get(timeout=min(POLL_SECONDS, deadline.remaining()))
            except queue.Empty:
                continue
            if authority is None:  # every authority job has finished
                return
            fetched = download(session, authority, DocKind.SERVER_DESCRIPTORS, deadline, timeout)
            descriptors = _parse(fetched.record, fetched.body)
            with self._lock:
                if self._abandoned:
                    return
                self.records.append(fetched.record)
                if descriptors is not None:
                    self.descriptors = descriptors
            if descriptors is not None:
                if self.extra_infos is not None and fetched.body is not None:
                    named = named_digests(fetched.body)
                    del fetched  # the descriptors' bytes (~20 MB) are not held while the extra-infos arrive
                    self.extra_infos.run(session, authority, named, deadline, timeout)
                return

    def collect(self) -> tuple[list, list[FetchRecord]]:
        with self._lock:
            self._abandoned = True
            return self.descriptors, list(self.records)


def _parse(record: FetchRecord, body: bytes | None):
    """Parses a downloaded body; a bad document is recorded on its record and dropped."""
    if body is None:
        return None
    try:
        return parse_document(record.kind, body, f"{record.authority} ({record.url})")
    except DocumentError as error:
        record.outcome, record.error, record.rejected = Outcome.FAILED, str(error), True
        log.warning("rejected %s", error)
        return None


def collect(config: Config, authorities: list[Authority] | None = None,
            cancel: threading.Event | None = None, extra_infos: Mapping[str, ExtraInfo] | None = None) -> Snapshot:
    """Fetches one voting period from every authority and returns its Snapshot.

    Setting ``cancel`` ends the fetches early, as if the deadline had passed.
    ``extra_infos``: each relay's newest extra-info the state remembers; only
    the ones the server descriptors name beyond these are fetched
    (``fetch.extra_info``), and the snapshot holds both. None (the commands
    that keep no state: check, relay, aroi) fetches none: without a memory
    every period would fetch all of them.
    """
    started_at = datetime.now(timezone.utc)
    deadline = Deadline(config.fetch.deadline_seconds, cancel)
    timeout = config.fetch.timeout_seconds
    kinds = tuple(kind for kind in AUTHORITY_KINDS if kind in config.fetch.documents)
    known = list(authorities or config.authorities.bootstrap)
    # One more worker than authorities for the server-descriptor job. Daemon threads: a job abandoned at the
    # deadline ends by its sockets' bound, and meanwhile never keeps the process from exiting.
    pool = DaemonPool(config.fetch.max_workers + 1, "fetch")
    consensus_ok: queue.Queue = queue.Queue()
    extra_job = ExtraInfoJob(extra_infos) if config.fetch.extra_info and extra_infos is not None else None
    descriptor_job = _DescriptorJob(consensus_ok, extra_job)
    try:
        if DocKind.SERVER_DESCRIPTORS in config.fetch.documents:
            descriptor_future = pool.submit(descriptor_job.run, deadline, timeout)
        jobs = _run_jobs(pool, known, kinds, deadline, timeout, consensus_ok)
        trusted = _verify(jobs, known)
        watched, changes = known, AuthorityChanges()
        if config.authorities.discover:
            watched, changes = _discover(jobs, known, _now_current(config))
            # New authorities, and known ones at a new address, are fetched now.
            fetched = {(job.authority.v3ident, job.authority.address, job.authority.dir_port) for job in jobs.values()}
            new = [a for a in watched if (a.v3ident, a.address, a.dir_port) not in fetched]
            for authority in new:
                jobs.pop(authority.nickname, None)
            jobs.update(_run_jobs(pool, new, kinds, deadline, timeout, consensus_ok))
            trusted = _verify(jobs, watched)
        consensus_ok.put(None)
        probes, holdings = _cross_check(pool, config, jobs, watched, deadline)
        if DocKind.SERVER_DESCRIPTORS in config.fetch.documents:
            _wait(deadline, [descriptor_future])
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    descriptors, descriptor_records = descriptor_job.collect()
    held, named, extra_records = extra_job.collect() if extra_job is not None else ({}, {}, [])
    records = [record for job in jobs.values() for record in job.collect()] + descriptor_records + extra_records
    log.debug("trusted %d signing keys", len(trusted))
    return Snapshot(
        vantage=config.vantage,
        started_at=started_at,
        finished_at=datetime.now(timezone.utc),
        authorities=watched,
        views={nickname: job.view for nickname, job in jobs.items()},
        records=records,
        changes=changes,
        server_descriptors=descriptors,
        extra_infos=held,
        extra_info_digests=named,
        orport_probes=probes,
        vote_holdings=holdings,
    )


def _cross_check(pool, config: Config, jobs: dict[str, _AuthorityJob], watched: list[Authority], deadline: Deadline):
    """ORPort probes (in the background) and the vote-propagation matrix, once the documents are in."""
    timeout = config.fetch.timeout_seconds
    orports = None
    if config.fetch.probe_orports:
        current = _now_current(config)
        consensuses = [job.view.consensus for job in jobs.values()
                       if job.view.consensus is not None and current(job.view.consensus)]
        newest = max(consensuses, key=lambda consensus: consensus.valid_after, default=None)
        orports = pool.submit(probe_orports, watched, newest, deadline, timeout)
    holdings = []
    if config.fetch.probe_vote_propagation:
        answering = [job.authority for job in jobs.values()
                     if any(record.answered for record in job.records.values())]
        digests = {nickname: job.vote_digest for nickname, job in jobs.items() if job.vote_digest is not None}
        holdings = vote_holdings(pool, answering, digests, deadline, timeout)
    if orports is None:
        return [], holdings
    _wait(deadline, [orports])
    return (orports.result() if orports.done() and orports.exception() is None else []), holdings


def _run_jobs(pool, authorities, kinds, deadline, timeout, consensus_ok) -> dict[str, _AuthorityJob]:
    jobs = {authority.nickname: _AuthorityJob(authority, kinds, consensus_ok) for authority in authorities}
    futures = {pool.submit(job.run, deadline, timeout): job for job in jobs.values()}
    done, late = _wait(deadline, futures)
    for future in late:
        futures[future].abandon()  # so nothing changes under the verification below
    for future in done:
        if future.exception() is not None:
            log.error("fetch job failed unexpectedly", exc_info=future.exception())
    return jobs


def _wait(deadline: Deadline, futures):
    """Waits for the futures until the deadline passes or is cancelled (checked every 0.2 s)."""
    pending = set(futures)
    done: set = set()
    while pending and deadline.remaining() > 0:
        finished, pending = wait(pending, timeout=min(0.2, deadline.remaining()))
        done |= finished
    return done, pending


def _verify(jobs: dict[str, _AuthorityJob], authorities: list[Authority]) -> dict:
    """Checks every consensus's signatures against all certificates any authority served.

    Runs only on finished or abandoned jobs, so no worker changes them meanwhile.
    """
    certificates = {}
    for job in jobs.values():
        for certificate in job.view.key_certificates:
            certificates[certificate.get_bytes()] = certificate
    trusted, rejected = trust_certificates(certificates.values())
    for problem in rejected:
        log.warning("rejected %s", problem)
    for job in jobs.values():
        view = job.view
        for kind, document_attribute, report_attribute in (
                (DocKind.CONSENSUS, "consensus", "consensus_signatures"),
                (DocKind.MICRODESC_CONSENSUS, "microdesc_consensus", "microdesc_signatures")):
            document = getattr(view, document_attribute)
            if document is None:
                continue
            try:
                report = check_signatures(document, trusted)
            except Exception as error:  # a document that parsed but has no signable portion
                log.warning("cannot check the signatures of the %s from %s: %s", kind.value,
                            job.authority.nickname, error)
                report = SignatureReport(())
            setattr(view, report_attribute, report)
            _note_unsigned(job, kind, report, authorities)
    return trusted


def _note_unsigned(job: _AuthorityJob, kind: DocKind, report, authorities: list[Authority]) -> None:
    if not accepted_by(report, authorities):
        log.warning("%s from %s lacks a quorum of valid signatures (%d valid)",
                    kind.value, job.authority.nickname, len(report.valid_identities))


def _discover(jobs: dict[str, _AuthorityJob], known: list[Authority], current: Callable[[object], bool]):
    """Merges the authorities listed by the newest accepted and ``current`` consensus with ``known``."""
    accepted = [job.view.consensus for job in jobs.values()
                if job.view.consensus is not None and accepted_by(job.view.consensus_signatures, known)
                and current(job.view.consensus)]
    if not accepted:
        return known, AuthorityChanges()
    latest = max(accepted, key=lambda consensus: consensus.valid_after)
    return merge(known, from_consensus(latest))


def _now_current(config: Config) -> Callable[[object], bool]:
    """Whether a consensus could be the current one now: one dated impossibly far from now is never followed.

    The snapshot keeps it: ``agent.pipeline.judge.admissible`` refuses it there, by name and with the reason.
    """
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    tolerance = config.checks.thresholds.consensus_ahead_seconds

    def current(consensus: object) -> bool:
        try:
            return time_problem(consensus, now, tolerance) is None
        except Exception:  # times that do not even compare
            return False

    return current
