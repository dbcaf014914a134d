"""One archived period for backfill: its documents kept until replayed, the consensus trust chooses, its Snapshot.

Trust comes from the configured authorities (``authorities.bootstrap``, their
v3 identities), never from what a document says about itself: each
consensus's signatures are checked with the key certificates in the input
(``agent.parse.signatures.trust_of``), and only signatures by configured
identities count, more than half of them needed, as a client requires.

- *verified*: a quorum of configured authorities signed it validly.
- *rejected* (never written, reported): a signature provably does not match
  it, or no configured authority signs it at all (it vouches for itself).
- *unverified*: anything else, e.g. an archive without certificates; it is
  written, as published, and counted as unverified.

When several consensuses claim one valid-after, those with the same signed
content are one document (the copy with more valid signatures is kept). Of
differing ones, rejected ones never count; the one verified document wins,
or the only unverified one if none verifies. When trust cannot choose (two
differing documents verified, or none verified and several unverified) the
period is not written. Every document not used is reported by name with the
reason (``conflicts``). Votes follow the same rule per author, each checked
with the key certificate it carries, and are used only if their author is a
configured authority or listed by the period's consensus.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.config.loader import Config
from agent.model.authorities import Authority, from_consensus
from agent.model.errors import DocumentError
from agent.model.snapshot import AuthorityView, DocKind, SignatureReport, Snapshot
from agent.parse.archive import MAX_DOCUMENT_BYTES, RawDocument, ReadReport, read_file
from agent.parse.documents import parse_document
from agent.parse.entrymemory import EntryMemory
from agent.parse.signatures import REJECTED, Trust, check_signatures, signed_portion, trust_of, vote_trust
from agent.store.outbox import compress, decompress


@dataclass(frozen=True)
class KeptDocument:
    """A consensus or vote held until its period is replayed.

    A file is read again then (only its path is held, and the cap it was read
    under); an archive member's bytes are held zstd'd (a month of hourly
    consensuses is ~1.7 GB of text; zstd packs and unpacks one in ~2 ms, zlib took ~20).
    """

    name: str
    kind: DocKind
    path: Path | None = None
    packed: bytes | None = None
    max_bytes: int = MAX_DOCUMENT_BYTES

    @classmethod
    def of(cls, document: RawDocument, max_bytes: int = MAX_DOCUMENT_BYTES) -> KeptDocument:
        if document.path is not None:
            return cls(document.name, document.kind, path=document.path, max_bytes=max_bytes)
        return cls(document.name, document.kind, packed=compress(document.raw))

    def read(self, report: ReadReport) -> RawDocument | None:
        """The document again; None (recorded in ``report``) if its file can no longer be read."""
        if self.path is None:
            return RawDocument(self.name, self.kind, decompress(self.packed))
        try:
            return RawDocument(self.name, self.kind, read_file(self.path, self.max_bytes), self.path)
        except DocumentError as error:  # replaced meanwhile by something that is no regular file, or grew
            report.problem(self.name, f"unusable when its period was replayed ({str(error).split(': ', 1)[-1]})")
        except OSError as error:
            report.problem(self.name, f"unreadable when its period was replayed ({error.strerror or error})")
        return None


@dataclass
class Period:
    """The archived documents of one valid-after, kept until replayed (more than one consensus: a conflict)."""

    valid_after: datetime
    consensuses: list[KeptDocument] = field(default_factory=list)
    votes: list[KeptDocument] = field(default_factory=list)


@dataclass
class BackfillResult:
    periods_found: int = 0
    periods_written: int = 0
    periods_already_done: int = 0
    periods_without_consensus: int = 0
    periods_unverified: int = 0
    periods_rejected: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # documents not used because another claims their period
    unknown_signers: Counter = field(default_factory=Counter)  # identity -> consensuses it signed, not counted
    points: int = 0
    lines_written: int = 0
    periods_waiting: int = 0
    documents: dict[str, int] = field(default_factory=dict)
    read: ReadReport = field(default_factory=ReadReport)
    # With --detect (``agent.loop.backfill``), counted by the main process only:
    periods_learned: int = 0  # periods anomaly detection learned, in valid-after order
    periods_learned_before: int = 0  # periods not newer than what it had already learned: skipped by the engine
    anomalies: int = 0  # anomaly findings of the periods learned (recorded as tor_anomaly points, never notified)
    learned_until: int | None = None  # the detector's last period (valid-after, Unix seconds) when done

    def add(self, found: BackfillResult) -> None:
        """Takes in what computing a run found (in a worker process or here)."""
        self.periods_unverified += found.periods_unverified
        self.periods_rejected += found.periods_rejected
        self.conflicts += found.conflicts
        self.unknown_signers.update(found.unknown_signers)
        self.read.unreadable += found.read.unreadable


def configured_identities(config: Config) -> frozenset[str]:
    """The v3 identities trust comes from: the configured authorities'."""
    return frozenset(authority.v3ident for authority in config.authorities.bootstrap)


@dataclass(frozen=True)
class Candidate:
    """One document claiming a period, parsed, with the verdict on its signatures."""

    name: str
    document: Any  # a NetworkStatus
    trust: Trust
    raw: bytes = field(repr=False)
    report: SignatureReport | None = None

    def content(self) -> bytes:
        """Digest of the signed portion: copies of one document share it (whatever their annotations, signatures)."""
        try:
            portion = signed_portion(self.raw, b"network-status-version", b"\ndirectory-signature ")
        except ValueError:
            portion = self.raw
        return hashlib.sha256(portion).digest()


def parse_raw(document: RawDocument | None, report: ReadReport, entries: EntryMemory | None = None):
    """The parsed document, or None with the reason recorded in ``report`` (a bad one never stops a backfill)."""
    if document is None:  # could not be read again (recorded)
        return None
    try:
        return parse_document(document.kind, document.raw, document.name, memory=entries)
    except DocumentError as error:
        report.add(str(error))  # names the document already
        return None


def _consensus_candidate(kept: KeptDocument, authorities: frozenset[str], trusted: dict, result: BackfillResult,
                         entries: EntryMemory | None) -> Candidate | None:
    document = kept.read(result.read)
    consensus = parse_raw(document, result.read, entries)
    if document is None or consensus is None:
        return None
    try:
        report = check_signatures(consensus, trusted)
    except ValueError as error:  # parsed, but no signed portion to check
        report = SignatureReport(())
        result.read.problem(kept.name, f"signatures cannot be checked ({error})")
    return Candidate(kept.name, consensus, trust_of(report, authorities), document.raw, report)


def _vote_candidate(kept: KeptDocument, result: BackfillResult) -> Candidate | None:
    document = kept.read(result.read)
    vote = parse_raw(document, result.read)
    if document is None or vote is None:
        return None
    try:
        trust = vote_trust(document.raw, vote)
    except Exception as error:  # an odd certificate or signature block: the vote cannot be trusted
        trust = Trust(REJECTED, f"its signature cannot be checked ({type(error).__name__}: {str(error)[:100]})")
    return Candidate(kept.name, vote, trust, document.raw)


def _chosen(candidates: list[Candidate], what: str, result: BackfillResult) -> Candidate | None:
    """The one candidate trust picks for ``what`` (a period or an author's vote), the others reported; or None."""
    distinct: dict[bytes, Candidate] = {}
    for candidate in candidates:  # copies of one document: keep the better-signed copy
        content = candidate.content() if len(candidates) > 1 else b""  # hashing a consensus costs ~7 ms
        kept = distinct.get(content)
        if kept is None or _rank(candidate) > _rank(kept):
            distinct[content] = candidate
    usable = [c for c in distinct.values() if not c.trust.rejected]
    verified = [c for c in usable if c.trust.verified]
    winner = verified[0] if len(verified) == 1 else usable[0] if len(usable) == 1 else None
    for candidate in distinct.values():
        if candidate is winner:
            continue
        verdict = f"this one is {candidate.trust.verdict}: {candidate.trust.reason}"
        if len(distinct) == 1:
            result.periods_rejected.append(f"{candidate.name}: rejected: {candidate.trust.reason}")
        elif winner is not None:
            result.conflicts.append(f"{candidate.name}: not used: {winner.name} also claims {what} and was used "
                                    f"({winner.trust.verdict}: {winner.trust.reason}); {verdict}")
        else:
            why = "several are verified" if len(verified) > 1 else "none is verified"
            others = ", ".join(c.name for c in distinct.values() if c is not candidate)
            result.conflicts.append(f"{candidate.name}: not used: {len(distinct)} differing documents claim {what} "
                                    f"and {why}, so none is used (the others: {others}); {verdict}")
    return winner


def _rank(candidate: Candidate) -> tuple:
    return (candidate.trust.verified, not candidate.trust.rejected, candidate.trust.valid)


def chosen_consensus(period: Period, authorities: frozenset[str], trusted: dict, result: BackfillResult,
                     entries: EntryMemory | None = None) -> Candidate | None:
    """The consensus trust picks for ``period`` (others, and rejected ones, reported in ``result``); or None."""
    candidates = [c for kept in period.consensuses
                  if (c := _consensus_candidate(kept, authorities, trusted, result, entries)) is not None]
    for candidate in candidates:
        result.unknown_signers.update(candidate.trust.unknown_signers)
    return _chosen(candidates, f"valid-after {period.valid_after:%Y-%m-%d %H:%M:%S}", result)


def _votes(period: Period, listed: list[Authority], configured: tuple[Authority, ...],
           result: BackfillResult) -> list[tuple[Authority, Candidate]]:
    """(author, vote) of each author trust picks a vote of; the author configured or listed by the consensus."""
    known = {authority.v3ident: authority for authority in (*configured, *listed)}  # the consensus's lines last
    by_author: dict[str, list[Candidate]] = {}
    for kept in period.votes:
        candidate = _vote_candidate(kept, result)
        if candidate is None:
            continue
        author = candidate.document.directory_authorities[0].v3ident.upper()
        if author not in known:
            result.periods_rejected.append(f"{kept.name}: rejected: a vote by {author}, an authority neither "
                                           "configured nor listed in its period's consensus")
            continue
        by_author.setdefault(author, []).append(candidate)
    picked = []
    for author, candidates in sorted(by_author.items()):
        what = f"to be {known[author].nickname}'s vote of {period.valid_after:%Y-%m-%d %H:%M:%S}"
        winner = _chosen(candidates, what, result)
        if winner is not None:
            picked.append((known[author], winner))
    return picked


def archived_snapshot(period: Period, config: Config, trusted: dict, descriptors: list,
                      result: BackfillResult, entries: EntryMemory | None = None) -> Snapshot | None:
    """The Snapshot of an archived period: the consensus trust picks, the votes in their authorities' views.

    None if no consensus is usable (unparseable, rejected, or a conflict trust
    cannot settle); reasons are in ``result``. An unverified consensus is
    taken as archived (counted as unverified).
    """
    chosen = chosen_consensus(period, configured_identities(config), trusted, result, entries)
    if chosen is None:
        return None
    consensus = chosen.document
    authorities = from_consensus(consensus)
    views = {authority.nickname: AuthorityView(authority) for authority in authorities}
    for author, vote in _votes(period, authorities, config.authorities.bootstrap, result):
        view = views.setdefault(author.nickname, AuthorityView(author))
        if view.authority.v3ident == author.v3ident:
            view.vote = vote.document
        else:
            result.periods_rejected.append(f"{vote.name}: rejected: a vote by {author.v3ident}, whose nickname "
                                           f"{author.nickname} the period's consensus gives {view.authority.v3ident}")
    now = datetime.now(timezone.utc)
    snapshot = Snapshot(config.vantage, now, now, authorities, views, [], server_descriptors=descriptors,
                        archived_consensus=consensus, archived_signatures=chosen.report)
    if not chosen.trust.verified or snapshot.latest_consensus() is None:
        # Unverified, or verified by the configured authorities but not by most of those it lists itself:
        # taken as archived, without a signature report (a client would not have it; checks skip it).
        snapshot.archived_signatures = None
        result.periods_unverified += 1
    return snapshot
