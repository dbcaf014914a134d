"""A vote's flag thresholds and its per-relay statistics, as ``agent.metrics.eligibility`` judges flags by them.

``flag-thresholds`` (dir-spec 3.4.1) states one authority's thresholds: each
value is read as tor prints it (``%lu``, guard-wfu as a percentage), and a
value that does not read is kept as a problem rather than guessed. Each
entry's ``stats wfu= tk= mtbf=`` line (tor#40314, 2021) is that authority's
own weighted fractional uptime, weighted time known and mean time between
failures of the relay. Pure: a vote's bytes or parsed entries in, plain data out.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.model.entries import entries_of, read_vote_stats

# -- flag-thresholds ---------------------------------------------------------------------------------------------

_BOOLEAN = frozenset({"enough-mtbf", "ignoring-advertised-bws"})
_NUMBER = re.compile(r"([0-9]+)(?:\.([0-9]+))?(%?)")
_ULONG_MAX = 2**64 - 1  # tor prints each value with %lu
_THRESHOLDS_LINE = re.compile(rb"^flag-thresholds(?:[ \t]([^\n]*))?$", re.M)


@dataclass(frozen=True)
class Thresholds:
    """One vote's flag-thresholds: ``values`` (guard-wfu as a fraction), ``problems`` (what was ignored, and why),
    ``present`` False when the vote has no flag-thresholds line (tor before ticket 8151, 2013)."""

    values: Mapping[str, float] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    present: bool = True

    def get(self, key: str) -> float | None:
        return self.values.get(key)


def parse_flag_thresholds(text: str) -> Thresholds:
    """The ``key=value`` words of a flag-thresholds line; a malformed word is ignored with its reason, never raised.

    Values are ASCII digits with an optional fraction, as tor writes them (``%lu``, ``%.03f%%``): no sign, NaN,
    exponent or value past 2^64; a percentage (at most 100 %) for guard-wfu only; booleans 0 or 1. A key given
    twice with different values is ambiguous: dropped. Keys tor may add later are kept (unused here).
    """
    seen: dict[str, float] = {}
    dropped: set[str] = set()
    problems: list[str] = []
    for word in text.split():
        key, equals, value = word.partition("=")
        number, why = _threshold_value(key, value) if equals and key else (None, "")
        if not equals or not key:
            problems.append(f"{word[:40]!r}: not key=value, ignored")
        elif number is None:
            problems.append(f"{key[:40]!r}: {why}, ignored")
        elif key in seen and seen[key] != number:
            dropped.add(key)
            del seen[key]
            problems.append(f"{key[:40]!r}: given twice with different values, both ignored")
        elif key not in dropped:
            seen[key] = number  # the same value twice is harmless
    return Thresholds(seen, tuple(problems))


def _threshold_value(key: str, value: str) -> tuple[float | None, str]:
    match = _NUMBER.fullmatch(value)
    if match is None:
        return None, f"negative value {value[:20]!r}" if value.startswith("-") else f"{value[:20]!r} is not a number"
    whole, fraction, percent = match.groups()
    if len(whole) > 20 or int(whole) > _ULONG_MAX:  # the length first: int() refuses over 4,300 digits
        return None, f"{value[:20]!r}... is out of range" if len(value) > 20 else f"{value!r} is out of range"
    number = float(f"{whole}.{(fraction or '0')[:20]}") / (100 if percent else 1)
    if (key == "guard-wfu") != bool(percent):
        return None, "a percentage where tor writes a number" if percent else "not a percentage"
    if number > 1 and percent:
        return None, f"{value[:20]!r} is more than 100%"
    if key in _BOOLEAN and number not in (0, 1):
        return None, f"{value[:20]!r} is not 0 or 1"
    return number, ""


def thresholds_of(vote: Any) -> Thresholds:
    """A vote's flag-thresholds, read from its bytes (stem 1.8.2 reads 100.000% as 0.1: ``'0.' + '100000'``)."""
    try:
        raw = vote.get_bytes()
    except Exception:  # a document stem built without its bytes: take stem's values
        raw = None
    if raw:
        match = _THRESHOLDS_LINE.search(raw)
        if match is None:
            return Thresholds(present=False)
        return parse_flag_thresholds((match.group(1) or b"").decode("ascii", "replace"))
    parsed = getattr(vote, "flag_thresholds", None) or {}
    return Thresholds({key: float(value) for key, value in parsed.items()}, present=bool(parsed))


# -- the authority's per-relay statistics ------------------------------------------------------------------------

@dataclass(frozen=True)
class RelayStats:
    """WFU (0-1), weighted time known and MTBF (seconds) of one relay, as one authority has them or as derived."""

    wfu: float | None = None
    tk: float | None = None
    mtbf: float | None = None
    source: str = "the vote's stats line"
    derived: bool = False


def vote_stats(raw: bytes) -> dict[str, RelayStats]:
    """Fingerprint -> its entry's ``stats`` line, from a vote's bytes (``agent.model.entries.read_vote_stats``, which
    reads them as the vote parser does); ``VoteStats`` gives a parsed vote's the same."""
    return {fingerprint: RelayStats(*figures) for fingerprint, figures in read_vote_stats(raw).items()}


class VoteStats(Mapping[str, RelayStats]):
    """A parsed vote's own ``stats`` lines (``RouterEntries.stats``) as fingerprint -> RelayStats, each built when
    asked; ``margin_columns`` reads them as columns, whole. What ``vote_stats`` gives from the vote's bytes."""

    def __init__(self, vote: Any) -> None:
        self.entries = entries_of(vote)

    def __getitem__(self, fingerprint: str) -> RelayStats:
        row = self.entries.rows.get(fingerprint)
        figures = None if row is None else self.entries.stats_of(row)
        if figures is None:
            raise KeyError(fingerprint)
        return RelayStats(*figures)

    def __iter__(self) -> Iterator[str]:
        return (self.entries.fingerprints[row] for row in self._rows().tolist())

    def __len__(self) -> int:
        return len(self._rows())

    def _rows(self) -> np.ndarray:
        """The rows whose entry has figures."""
        stats = self.entries.stats
        return np.zeros(0, np.int64) if stats is None else np.flatnonzero(~np.isnan(stats).all(axis=1))
