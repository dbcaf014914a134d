"""What the detectors read from one voting period, as plain columns (no stem objects).

The live loop builds it from a Snapshot and the metrics' relay
table; the evaluation harness builds it from real relays it replays, so
every detector sees the same shape. The relay table is taken by its shape
(``RelayColumns``), so detection does not depend on ``agent.metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from agent.model.entries import ABSENT, RouterEntries, entries_of
from agent.model.snapshot import DocKind, Outcome, Snapshot
from agent.model.time import unix

#: The flags a relay's mask holds, bit i for FLAGS[i]: agent.metrics.relays.KNOWN_FLAGS when this was written
#: (a test keeps them in step). The masks are saved in the detector state, so a flag is only ever appended.
FLAGS = ("Authority", "BadExit", "Exit", "Fast", "Guard", "HSDir", "MiddleOnly", "NoEdConsensus",
         "Running", "Stable", "StaleDesc", "Sybil", "V2Dir", "Valid")
FLAG_BITS = {flag: 1 << index for index, flag in enumerate(FLAGS)}


class RelayColumns(Protocol):
    """What ``relay_facts`` reads of a relay table (agent.metrics.relays.RelayTable has it), one row per relay."""

    fingerprints: list[str]
    flags: dict[str, np.ndarray]  # flag -> bool column
    weight: np.ndarray
    advertised_bytes: np.ndarray
    listed_by: np.ndarray
    country: list[str]
    operator_id: list[str | None]
    family_id: list[str | None]
    version: list[str | None]
    platform: list[str]


@dataclass
class RelayFacts:
    """One row per relay of the consensus."""

    fingerprint: list[str]
    nickname: list[str]
    address: list[str]
    or_port: np.ndarray
    dir_port: np.ndarray
    flags: np.ndarray  # uint32 mask, FLAG_BITS
    weight: np.ndarray
    advertised: np.ndarray  # bytes/s, NaN without a descriptor
    listed_by: np.ndarray  # votes that list the relay
    country: list[str]
    operator: list[str | None]  # contact key, else family key, else None
    version: list[str | None]
    platform: list[str]

    def __len__(self) -> int:
        return len(self.fingerprint)

    def has(self, flag: str) -> np.ndarray:
        return (self.flags & FLAG_BITS[flag]) != 0

    def take(self, rows: np.ndarray) -> RelayFacts:
        """The rows given (indices or a boolean mask), in that order."""
        rows = np.flatnonzero(rows) if rows.dtype == bool else rows
        pick = lambda values: [values[i] for i in rows]  # noqa: E731
        return RelayFacts(pick(self.fingerprint), pick(self.nickname), pick(self.address), self.or_port[rows],
                          self.dir_port[rows], self.flags[rows], self.weight[rows], self.advertised[rows],
                          self.listed_by[rows], pick(self.country), pick(self.operator), pick(self.version),
                          pick(self.platform))


@dataclass
class PeriodFacts:
    """One voting period: its time, its relays, and what each authority voted and served."""

    time: int  # valid-after, unix seconds
    period_seconds: int
    relays: RelayFacts
    #: authority nickname -> vote_relays, measured_relays, total_measured_weight, consensus_latency_seconds
    authorities: dict[str, dict[str, float]] = field(default_factory=dict)


def facts_of(snapshot: Snapshot, consensus, table: RelayColumns) -> PeriodFacts:
    """The facts of a recorded period; ``table`` is the metrics' relay table of ``consensus`` (with votes)."""
    relays = relay_facts(table, entries_of(consensus), table.listed_by)
    period = unix(consensus.fresh_until) - unix(consensus.valid_after)
    return PeriodFacts(unix(consensus.valid_after), period, relays, _authority_facts(snapshot))


def relay_facts(table: RelayColumns, routers: RouterEntries, listed_by: np.ndarray) -> RelayFacts:
    """The relay columns from the metrics' table and the consensus's router entries (same order)."""
    flags = np.zeros(len(routers), np.uint32)
    for flag, column in table.flags.items():
        if flag in FLAG_BITS:
            flags |= column.astype(np.uint32) * np.uint32(FLAG_BITS[flag])
    return RelayFacts(
        fingerprint=list(table.fingerprints),
        nickname=list(routers.nicknames),
        address=list(routers.addresses),
        or_port=routers.or_ports.astype(np.int32),
        dir_port=routers.dir_ports.astype(np.int32),
        flags=flags,
        weight=table.weight.copy(),
        advertised=table.advertised_bytes.copy(),
        listed_by=listed_by,
        country=list(table.country),
        operator=[op or family for op, family in zip(table.operator_id, table.family_id)],
        version=list(table.version),
        platform=list(table.platform),
    )


def _authority_facts(snapshot: Snapshot) -> dict[str, dict[str, float]]:
    facts: dict[str, dict[str, float]] = {}
    for nickname, view in snapshot.views.items():
        values = facts.setdefault(nickname, {})
        if view.vote is not None:
            entries = entries_of(view.vote)
            measured = entries.measured[entries.measured != ABSENT]
            values["vote_relays"] = float(len(entries))
            if len(measured):
                values["measured_relays"] = float(len(measured))
                values["total_measured_weight"] = float(measured.sum(dtype=float))  # int64 would wrap around
    for record in snapshot.records:
        if record.kind is DocKind.CONSENSUS and record.outcome is Outcome.OK and record.latency_seconds is not None:
            facts.setdefault(record.authority, {})["consensus_latency_seconds"] = record.latency_seconds
    return {nickname: values for nickname, values in facts.items() if values}
