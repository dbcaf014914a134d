"""Checking the proofs that are due, concurrently, and in a thread of their own so no period waits for them.

``Verifier.refresh`` runs one round: the due (domain, method) pairs of the
claims, ``settings.concurrency`` at a time, each result into the cache. A
check that raises is a failed proof of that domain, never the end of the
round. ``BackgroundVerifier`` runs rounds in a daemon thread: the daemon
submits the claims of each period and reads the proofs as they stand, and a
period never waits for an operator's slow web server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

from agent.aroi.cache import Due, ProofCache
from agent.aroi.settings import AroiConfig
from agent.model.aroi import DomainProof, ProofBook
from agent.model.ciiss import ContactFields, parse_contact

log = logging.getLogger(__name__)

UriChecker = Callable[[str, AroiConfig, int], DomainProof]
DnsChecker = Callable[[str, Iterable[str], AroiConfig, int], DomainProof]
Progress = Callable[[int, int], Any]
MAX_ERROR_CHARACTERS = 300  # a checker's exception text, as a failed proof keeps it


@dataclass(frozen=True)
class RefreshReport:
    """One round: proofs checked, domains whose proof lists a claiming relay, unreadable and refused proofs."""

    checked: int = 0
    verified: int = 0  # distinct domains whose proof lists at least one of the relays claiming it
    failed: int = 0
    refused: int = 0
    duration_seconds: float = 0.0
    cancelled: int = 0  # due checks not started because the verifier was stopped


class Verifier:
    """Checks due proofs with ``fetch_uri`` (uri-rsa) and ``check_dns`` (dns-rsa); by default agent.aroi's own."""

    def __init__(self, settings: AroiConfig, cache: ProofCache, fetch_uri: UriChecker | None = None,
                 check_dns: DnsChecker | None = None):
        # Imported here: the checkers are modules of their own (and tests pass checkers of theirs).
        if fetch_uri is None:
            from agent.aroi.uri import fetch_uri_proof
            fetch_uri = fetch_uri_proof
        if check_dns is None:
            from agent.aroi.dns import check_dns_proof
            check_dns = check_dns_proof
        self.settings, self.cache = settings, cache
        self.fetch_uri: UriChecker = fetch_uri
        self.check_dns: DnsChecker = check_dns

    def refresh(self, claims: Mapping[str, ContactFields], now: int, progress: Progress | None = None,
                cancel: threading.Event | None = None, everything: bool = False) -> RefreshReport:
        """Checks every due proof of ``claims`` (fingerprint -> contact), puts the results in the cache, saves it.

        ``progress(done, total)`` is called as checks finish. When ``cancel``
        is set, checks not yet started are dropped and those in flight finish.
        ``everything`` checks every claimed proof, due or not (``aroi verify --all``).
        """
        started = time.monotonic()
        due = self.cache.due(claims, now, self.settings, everything=everything)
        contacts = {fingerprint.upper(): contact for fingerprint, contact in claims.items()}
        counts = {"checked": 0, "failed": 0, "refused": 0, "cancelled": 0}
        verified: set[str] = set()
        if progress:
            progress(0, len(due))
        if due:
            with ThreadPoolExecutor(min(self.settings.concurrency, len(due)), thread_name_prefix="aroi-check") as pool:
                items: dict[Future[DomainProof | None], Due] = {pool.submit(self._check, item, now, cancel): item
                                                           for item in due}
                pending = set(items)
                while pending:
                    done, pending = wait(pending, None if cancel is None else 0.2, FIRST_COMPLETED)
                    if cancel is not None and cancel.is_set():
                        dropped = {future for future in pending if future.cancel()}
                        pending -= dropped
                        counts["cancelled"] += len(dropped)
                    for future in done:
                        result = future.result()  # _check raises nothing; futures cancelled above are not here
                        if result is None:  # cancel was set before this check started
                            counts["cancelled"] += 1
                            continue
                        proof = self._with_emails(result, items[future], contacts)
                        self.cache.put(proof)
                        counts["checked"] += 1
                        if proof.error is not None:
                            counts["refused" if proof.refused else "failed"] += 1
                        if proof.listed & set(items[future].fingerprints):
                            verified.add(proof.domain)
                        if progress:
                            progress(counts["checked"], len(due))
        self.cache.prune(claims, now)
        try:
            self.cache.save()
        except OSError as error:
            log.warning("AROI proof cache %s could not be saved (%s); it is kept in memory", self.cache.path, error)
        report = RefreshReport(counts["checked"], len(verified), counts["failed"], counts["refused"],
                               time.monotonic() - started, counts["cancelled"])
        log.info("AROI proofs: %d checked in %.1f s, %d domains verified, %d failed, %d refused%s",
                 report.checked, report.duration_seconds, report.verified, report.failed, report.refused,
                 f", {report.cancelled} left for later" if report.cancelled else "")
        return report

    def _check(self, item: Due, now: int, cancel: threading.Event | None) -> DomainProof | None:
        """One check (None when cancelled before it started); an exception becomes a failed proof saying so."""
        if cancel is not None and cancel.is_set():
            return None
        try:
            if item.method == "uri-rsa":
                proof = self.fetch_uri(item.domain, self.settings, now)
            else:
                proof = self.check_dns(item.domain, item.fingerprints, self.settings, now)
            if (proof.domain, proof.method) != (item.domain, item.method):
                raise ValueError(f"the checker answered for {proof.domain} {proof.method}")
            return proof
        except Exception as error:  # noqa: BLE001 -- one domain's failure never ends the round
            log.warning("AROI %s check of %s raised %s: %s", item.method, item.domain, type(error).__name__, error,
                        exc_info=not isinstance(error, OSError | ValueError))
            text = f"the check failed: {type(error).__name__}: {error}"[:MAX_ERROR_CHARACTERS]
            return DomainProof(item.domain, item.method, now, error=text)

    @staticmethod
    def _with_emails(proof: DomainProof, item: Due, contacts: Mapping[str, ContactFields]) -> DomainProof:
        """The proof with the email addresses of the claiming relays it lists (a stranger's claim adds none),
        and at most ``kept_listed`` of the fingerprints it lists (the claiming ones first)."""
        emails = frozenset().union(*(contacts[fingerprint].emails for fingerprint in item.fingerprints
                                     if fingerprint in proof.listed and fingerprint in contacts))
        if not proof.listed & frozenset(item.fingerprints):
            # Verifies none of the relays claiming it: not an operator (yet), and what it lists is kept nowhere.
            return replace(proof, emails=emails, listed=frozenset())
        return replace(proof, emails=emails, listed=kept_listed(proof.listed, item.fingerprints))


#: Listed fingerprints kept per proof beyond the claiming relays: a 1 MiB proof can list 25,000 made-up
#: fingerprints, and thousands of hostile domains must not hold millions of strings. The largest operators run
#: a few hundred relays; what is cut only shortens TorOperatorProofStale's list.
MAX_UNCLAIMED_LISTED = 2000


def kept_listed(listed: frozenset[str], claiming: Iterable[str]) -> frozenset[str]:
    """``listed``, or (beyond MAX_UNCLAIMED_LISTED others) its claiming fingerprints and the first others."""
    claimed = listed & frozenset(claiming)
    if len(listed) - len(claimed) <= MAX_UNCLAIMED_LISTED:
        return listed
    return claimed | frozenset(sorted(listed - claimed)[:MAX_UNCLAIMED_LISTED])


def claims_of(descriptors: Iterable[Any]) -> dict[str, ContactFields]:
    """Fingerprint (upper case) -> the contact line of its newest descriptor (``.fingerprint``, ``.contact``,
    ``.published``), read as CIISS."""
    newest: dict[str, Any] = {}
    for descriptor in descriptors:
        fingerprint = str(descriptor.fingerprint).upper()
        kept = newest.get(fingerprint)
        if kept is None or (descriptor.published is not None
                            and (kept.published is None or descriptor.published > kept.published)):
            newest[fingerprint] = descriptor
    parsed: dict[Any, ContactFields] = {}  # a contact line shared by many relays is read once
    for descriptor in newest.values():
        if descriptor.contact not in parsed:
            parsed[descriptor.contact] = parse_contact(descriptor.contact)
    return {fingerprint: parsed[descriptor.contact] for fingerprint, descriptor in newest.items()}


class BackgroundVerifier:
    """Runs ``verifier``'s rounds in a daemon thread; the newest submission waits, older ones not started are dropped.

    The cache is touched only under its own lock, so ``book`` may be read at
    any time, mid-round included.
    """

    def __init__(self, verifier: Verifier):
        self.verifier = verifier
        self.last_report: RefreshReport | None = None
        self._condition = threading.Condition()
        self._waiting: tuple[Mapping[str, ContactFields], int] | None = None
        self._busy = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aroi-verifier", daemon=True)
        self._thread.start()

    def submit(self, claims: Mapping[str, ContactFields], now: int) -> None:
        """Asks for a round over ``claims``; returns at once. It replaces a submission not yet started."""
        with self._condition:
            self._waiting = (claims, now)
            self._condition.notify()

    def book(self) -> ProofBook:
        """The proofs as they stand (a snapshot)."""
        return self.verifier.cache.book()

    def note_consensus(self, fingerprints: Collection[str], time: int) -> None:
        """``ProofCache.note_consensus``, safe mid-round (the next round saves it)."""
        self.verifier.cache.note_consensus(fingerprints, time)

    @property
    def busy(self) -> bool:
        """True while a round runs or waits to."""
        with self._condition:
            return self._busy or self._waiting is not None

    def stop(self, timeout: float | None = None) -> bool:
        """Ends the thread: a round in progress drops the checks not started and finishes those in flight
        (each bounded by ``timeout_seconds``). True when the thread has ended within ``timeout``."""
        with self._condition:
            self._stop.set()
            self._waiting = None
            self._condition.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._condition:
                while self._waiting is None and not self._stop.is_set():
                    self._condition.wait()
                if self._stop.is_set():
                    return
                claims, now = self._waiting  # type: ignore[misc]  # not None: the loop above says so
                self._waiting, self._busy = None, True
            try:
                self.last_report = self.verifier.refresh(claims, now, cancel=self._stop)
            except Exception:  # noqa: BLE001 -- a round that fails is logged; the next submission gets its own
                log.exception("AROI proof round failed")
            finally:
                with self._condition:
                    self._busy = False
