"""What a check is: a pure function of a Context that yields Hits, under a stable ID and severity.

Checks are listed explicitly in ``agent.checks.catalog.CHECKS``; ``check()``
only turns a function into a Check, it registers nothing. Thresholds come
from the config (DocTor's values by default); silences and maintenance
windows mute a check, optionally for one authority, until a given time, so a
known problem is muted without editing code (DocTor commented checks out).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from agent.checks.settings import CheckThresholds
from agent.model.aroi import EMPTY, ProofBook
from agent.model.findings import SEVERITIES, Hit
from agent.model.snapshot import Snapshot


@dataclass(frozen=True)
class Context:
    """What checks may read: the snapshot, the time, thresholds, and memory of earlier periods."""

    snapshot: Snapshot
    now: datetime  # naive UTC, like stem's datetimes
    thresholds: CheckThresholds
    bandwidth_authorities: frozenset[str] = frozenset()  # nicknames whose recent votes carried Measured=
    proofs: ProofBook = EMPTY  # operators' AROI proofs as last checked (empty: not checked, e.g. backfill)


@dataclass(frozen=True)
class Check:
    """A check function with its stable ID, default severity, static summary and DocTor origin."""

    id: str
    severity: str
    summary: str
    doctor: str  # the DocTor template it replaces, or "new"
    run: Callable[[Context], Iterable[Hit]]

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"check {self.id}: severity {self.severity!r} is not one of {', '.join(SEVERITIES)}")
        if not self.id.startswith("Tor"):
            raise ValueError(f"check {self.id}: IDs start with 'Tor' (alert names are CamelCase with a Tor prefix)")

    def __call__(self, context: Context) -> Iterable[Hit]:
        return self.run(context)


def check(check_id: str, severity: str, summary: str, doctor: str = "new") -> Callable[[Callable], Check]:
    """Makes a function a Check under a stable ID (list it in ``agent.checks.catalog.CHECKS``)."""

    def make(function: Callable[[Context], Iterable[Hit]]) -> Check:
        return Check(check_id, severity, summary, doctor, function)

    return make
