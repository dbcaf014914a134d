"""One voting period as the agent saw it: the documents and a record of each fetch.

A Snapshot is plain data. The live loop builds it from DirPort downloads
(``agent.loop.collect``), a backfill from files; everything downstream (metrics,
checks, detection) reads only this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

from agent.model.authorities import Authority, AuthorityChanges
from agent.model.extrainfo import ExtraInfo

if TYPE_CHECKING:
    from stem.descriptor.networkstatus import KeyCertificate


def quorum(authority_count: int) -> int:
    """Valid signatures a client needs: more than half of the voting authorities it knows."""
    return authority_count // 2 + 1


def accepted_by(report: SignatureReport | None, authorities: list[Authority]) -> bool:
    """Would a client knowing ``authorities`` accept a consensus with these signatures?

    Like tor's client, it counts only valid signatures of authorities it knows
    and needs more than half of them.
    """
    if report is None:
        return False
    known = {authority.v3ident for authority in authorities}
    return len(report.valid_identities & known) >= quorum(len(known))


class DocKind(str, Enum):
    """The documents fetched each period, named as in the config and JSON output."""

    CONSENSUS = "consensus"
    MICRODESC_CONSENSUS = "consensus-microdesc"
    VOTE = "vote"
    KEY_CERTIFICATES = "key-certificates"
    BANDWIDTH_FILE = "bandwidth-file"
    SERVER_DESCRIPTORS = "server-descriptors"
    # Fetched by digest after the server descriptors, when ``fetch.extra_info`` is on (not a ``fetch.documents``
    # choice: the server descriptors name which to fetch).
    EXTRA_INFOS = "extra-infos"


#: The kinds ``fetch.documents`` chooses among (extra-infos have their own switch, ``fetch.extra_info``).
DOCUMENT_KINDS = tuple(kind for kind in DocKind if kind is not DocKind.EXTRA_INFOS)


class Outcome(str, Enum):
    OK = "ok"
    ABSENT = "absent"  # the authority does not serve this document (404 on a bandwidth file)
    FAILED = "failed"
    SKIPPED = "skipped"  # not attempted: deadline reached, or its authority was unreachable


@dataclass
class FetchRecord:
    """What happened to one (authority, document) fetch; failures are data too."""

    authority: str
    kind: DocKind
    url: str
    started_at: datetime
    outcome: Outcome = Outcome.FAILED
    status: int | None = None
    latency_seconds: float | None = None
    bytes: int = 0
    wire_bytes: int = 0
    clock_skew_seconds: float | None = None
    digest: str | None = None
    error: str | None = None
    rejected: bool = False  # downloaded, but the document failed to parse or was of the wrong kind

    @property
    def answered(self) -> bool:
        """True when the DirPort answered with any HTTP status."""
        return self.status is not None


@dataclass(frozen=True)
class SignatureCheck:
    """The verdict on one ``directory-signature`` of a consensus."""

    identity: str
    algorithm: str
    valid: bool
    reason: str | None = None


@dataclass(frozen=True)
class SignatureReport:
    """Every signature of one consensus document and whether it verifies."""

    checks: tuple[SignatureCheck, ...]

    @property
    def valid_identities(self) -> frozenset[str]:
        return frozenset(check.identity for check in self.checks if check.valid)


@dataclass(frozen=True)
class OrPortProbe:
    """A TCP connect to one of an authority's ORPort addresses."""

    authority: str
    endpoint: str  # "address:port", IPv6 in brackets
    latency_seconds: float | None  # None when the connect failed
    error: str | None = None

    @property
    def reachable(self) -> bool:
        return self.latency_seconds is not None


@dataclass(frozen=True)
class VoteHolding:
    """Whether ``holder`` serves ``author``'s current vote when asked for it by digest."""

    holder: str
    author: str
    digest: str
    held: bool | None  # None: the holder could not be asked or the period rotated meanwhile
    detail: str | None = None


@dataclass
class AuthorityView:
    """The documents one authority served this period (None where it failed)."""

    authority: Authority
    consensus: object | None = None
    consensus_signatures: SignatureReport | None = None
    microdesc_consensus: object | None = None
    microdesc_signatures: SignatureReport | None = None
    vote: object | None = None
    key_certificates: list[KeyCertificate] = field(default_factory=list)
    bandwidth_file: object | None = None


@dataclass
class Snapshot:
    """One voting period: per-authority documents, fetch records, descriptors."""

    vantage: str
    started_at: datetime
    finished_at: datetime
    authorities: list[Authority]
    views: dict[str, AuthorityView]
    records: list[FetchRecord]
    changes: AuthorityChanges = field(default_factory=AuthorityChanges)
    server_descriptors: list[Any] = field(default_factory=list)  # agent.parse.fastdesc's (tests: stem's)
    # Each relay's newest extra-info the agent holds this period (fetched now by digest, or remembered from an
    # earlier period), by fingerprint; and the extra-info-digest each relay's newest server descriptor names.
    extra_infos: dict[str, ExtraInfo] = field(default_factory=dict)
    extra_info_digests: dict[str, str] = field(default_factory=dict)
    orport_probes: list[OrPortProbe] = field(default_factory=list)
    vote_holdings: list[VoteHolding] = field(default_factory=list)
    # A period read from an archive (backfill) rather than fetched: its one
    # consensus, and its signature report (None when no certificate in the
    # input covers it: archived consensuses are then taken as published).
    archived_consensus: object | None = None
    archived_signatures: SignatureReport | None = None

    def accepted(self, report: SignatureReport | None) -> bool:
        """Would a client that knows our watched authorities accept these signatures?"""
        return accepted_by(report, self.authorities)

    @property
    def archived(self) -> bool:
        return self.archived_consensus is not None

    def latest_consensus(self) -> Any:
        """The accepted ns consensus with the newest valid-after, or None."""
        if self.archived:
            if self.archived_signatures is None or self.accepted(self.archived_signatures):
                return self.archived_consensus
            return None
        served: list[Any] = [view.consensus for view in self.views.values()
                             if view.consensus is not None and self.accepted(view.consensus_signatures)]
        return max(served, key=lambda consensus: consensus.valid_after, default=None)

    def signatures_of(self, consensus: object) -> SignatureReport | None:
        """The signature report of a consensus in this snapshot (None if unverified)."""
        if consensus is self.archived_consensus:
            return self.archived_signatures
        return next((view.consensus_signatures for view in self.views.values() if view.consensus is consensus), None)

    @property
    def valid_after(self) -> datetime | None:
        latest = self.latest_consensus()
        return latest.valid_after if latest is not None else None

    def votes(self) -> list[Any]:
        """The votes that arrived this period, one per authority that served one."""
        return [view.vote for view in self.views.values() if view.vote is not None]

    def records_of(self, nickname: str) -> list[FetchRecord]:
        return [record for record in self.records if record.authority == nickname]
