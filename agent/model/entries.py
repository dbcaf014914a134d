"""Router status entries as columns: what ~80,000 entries a period cost least to hold and to count.

A consensus or vote lists 7,000-9,000 relays; the agent reads their flags,
bandwidths and Measured= values over and over (flag tallies, measured
counts, agreement with the consensus) and only rarely one entry whole.
``RouterEntries`` keeps each field as a column (flags as a code into the
few distinct flag lines of the document) and still behaves as stem's
``routers`` mapping, fingerprint -> entry, building an entry only when one
is asked for. ``entries_of`` gives the columns of any document: a parsed
one (``agent.model.network_status.NetworkStatus``) holds them, one built
by stem (tests' ``.create()``) is converted. A vote's ``stats`` lines
(the authority's WFU, time known and MTBF of each relay) are read here,
by ``read_stats``, for the parser and the eligibility metrics alike.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import datetime
from functools import reduce
from operator import itemgetter, or_
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from stem.version import Version

ABSENT = -1  # bandwidth or Measured= not given (stem: None)
StatsFigures = tuple[float | None, float | None, float | None]  # (wfu, tk, mtbf); None: not given

# -- a vote's stats lines (dir-spec: votes since tor 0.4.7, tor#40314) --------------------------------------------

#: The figures of a ``stats`` line, in the order ``RouterEntries.stats`` and ``read_stats`` give them.
STATS_KEYS = ("wfu", "tk", "mtbf")
#: tor writes "wfu=%.6f tk=%lu mtbf=%.0f": WFU a fraction of 0-1, the others plain non-negative numbers (no sign,
#: exponent, NaN or Unicode digit); at most 20 digits, as many as an unsigned 64-bit number has.
_WFU, _FIGURE = r"0(?:\.[0-9]{1,20})?|1(?:\.0{1,20})?", r"[0-9]{1,20}(?:\.[0-9]{1,20})?"
_STATS_VALUES = {"wfu": re.compile(_WFU), "tk": re.compile(_FIGURE), "mtbf": re.compile(_FIGURE)}
#: Lines as tor writes them, joined by newlines: a fullmatch says each line is "wfu=W tk=T mtbf=M" of the values
#: ``read_stats`` reads. Deleting the keys' letters and "=" then leaves the values, in order, to be read in bulk.
_LINE_AS_WRITTEN = rf"wfu=(?:{_WFU}) tk=(?:{_FIGURE}) mtbf=(?:{_FIGURE})"
_AS_WRITTEN = re.compile(rf"{_LINE_AS_WRITTEN}(?:\n{_LINE_AS_WRITTEN})*")
_KEYS_AWAY = str.maketrans("", "", "wfutkmb=")


def read_stats(text: str) -> StatsFigures | None:
    """(wfu, tk, mtbf) of one ``stats`` line, given what follows its keyword; None: the line gives us nothing.

    tor writes the line and never reads it (its parser skips the keyword), so no vote is refused for it, and the
    line counts whole or not at all: a word that is not key=value, a known key given twice or a value that is no
    plain number in range (a WFU above 1) leaves the entry without figures rather than with figures from a line we
    cannot read. Unknown keys are ignored (dir-spec allows more); a known key left out is None.
    """
    values: dict[str, float] = {}
    for word in text.split():
        key, equals, value = word.partition("=")
        pattern = _STATS_VALUES.get(key)
        if not equals or not key or (pattern is not None and (key in values or not pattern.fullmatch(value))):
            return None
        if pattern is not None:
            values[key] = float(value)
    return (values.get("wfu"), values.get("tk"), values.get("mtbf")) if values else None


def read_stats_lines(texts: list[str]) -> NDArray[np.float64]:
    """``read_stats`` of each line (what follows each keyword), as rows of ``STATS_KEYS`` columns, NaN where None.

    Lines as tor writes them, the norm, are read in bulk, the same way: ``float`` of the same texts.
    """
    joined = "\n".join(texts)
    if _AS_WRITTEN.fullmatch(joined):
        return np.array(joined.translate(_KEYS_AWAY).split(), float).reshape(len(texts), len(STATS_KEYS))
    read = [read_stats(text) or (None,) * len(STATS_KEYS) for text in texts]
    return np.array([[np.nan if value is None else value for value in figures] for figures in read],
                    float).reshape(len(texts), len(STATS_KEYS))


#: Where a vote's entries are, as the vote parser finds them (``agent.parse.fastparse.split_network_status``), and
#: in them each entry's ``r`` line (its identity) and its ``stats`` lines, as the parser picks them.
_ENTRY_AND_STATS_LINES = re.compile(rb"^(?:(?:opt )?r[ \t]+[^ \t\n]*[ \t]+([^ \t\n]*)|stats(?: ([^\n]*))?$)", re.M)


def read_vote_stats(raw: bytes) -> dict[str, StatsFigures]:
    """Fingerprint -> (wfu, tk, mtbf) of its entry's ``stats`` line, from a vote's bytes, for what has no parsed
    vote. As the parser gives them: each line read by ``read_stats``, and an entry with two lines given none."""
    start = raw.find(b"\nr ")
    if start < 0:
        return {}
    end = raw.find(b"\ndirectory-footer", start)
    end = raw.find(b"\ndirectory-signature ", start) if end < 0 else end
    lines: dict[str, list[bytes]] = {}
    fingerprint = None
    for match in _ENTRY_AND_STATS_LINES.finditer(raw, start, len(raw) if end < 0 else end):
        if match[1] is not None:
            fingerprint = _identity(match[1])
        elif fingerprint is not None:
            lines.setdefault(fingerprint, []).append(match[2] or b"")
    read = {fingerprint: read_stats(texts[0].decode("utf-8", "replace")) if len(texts) == 1 else None
            for fingerprint, texts in lines.items()}
    return {fingerprint: figures for fingerprint, figures in read.items() if figures is not None}


def _identity(text: bytes) -> str | None:
    """The upper-case hex of an ``r`` line's base64 identity; None unless it is 20 bytes (the parser refuses it)."""
    try:
        digest = base64.b64decode(text + b"=", validate=True)
    except (binascii.Error, ValueError):
        return None
    return digest.hex().upper() if len(digest) == 20 else None


class RouterEntry:
    """One router status entry: the fields the agent reads, named and typed as stem's RouterStatusEntryV3.

    Fields most entries lack are class-level defaults (an instance sets them
    only when its lines say so). The shared empty lists are replaced, never
    appended to.
    """

    or_addresses: list[tuple[str, int, bool]] = []  # (address, port, is IPv6)
    flags: list[str] = []
    unrecognized_bandwidth_entries: list[str] = []
    version_line: str | None
    version: Version | None
    bandwidth: int | None
    measured: int | None
    microdescriptor_digest: str | None
    stats: StatsFigures | None  # a vote's stats line (``read_stats``); None without one
    version_line = version = bandwidth = measured = microdescriptor_digest = stats = None
    is_unmeasured = False

    def __init__(self, nickname: str, fingerprint: str, digest: str | None, published: datetime, address: str,
                 or_port: int, dir_port: int | None) -> None:
        self.nickname, self.fingerprint, self.digest, self.published = nickname, fingerprint, digest, published
        self.address, self.or_port, self.dir_port = address, or_port, dir_port


class RouterEntries(Mapping[str, RouterEntry]):
    """Fingerprint -> RouterEntry, held as columns in document order.

    ``flag_code[row]`` indexes ``flag_lines`` (each distinct ``s`` line's
    flags, once); ``bandwidth`` and ``measured`` hold ``ABSENT`` where the
    entry gives none. Rare fields (``a`` lines, unrecognised ``w`` items) are
    kept per row in dicts. ``stats`` holds a vote's stats lines, one row per
    entry and one column per ``STATS_KEYS`` (NaN: not given, or the line is
    not read), and is None for a document without any (consensuses, votes
    before tor 0.4.7): 24 bytes an entry, 0.2 MB a vote.
    """

    def __init__(self, fingerprints: list[str], nicknames: list[str], digests: list[str | None],
                 published: list[datetime], addresses: list[str], or_ports: NDArray[np.integer[Any]],
                 dir_ports: NDArray[np.integer[Any]], flag_lines: list[list[str]], flag_code: NDArray[np.int32],
                 bandwidth: NDArray[np.int64], measured: NDArray[np.int64], unmeasured: NDArray[np.bool_],
                 version_lines: list[str | None], versions: list[Version | None],
                 or_addresses: dict[int, list[tuple[str, int, bool]]], unrecognized: dict[int, list[str]],
                 microdescriptor_digests: list[str | None] | None,
                 stats: NDArray[np.float64] | None = None) -> None:
        self.fingerprints, self.nicknames, self.digests, self.published = fingerprints, nicknames, digests, published
        self.addresses, self.or_ports, self.dir_ports = addresses, or_ports, dir_ports
        self.flag_lines, self.flag_code = flag_lines, flag_code
        self.bandwidth, self.measured, self.unmeasured = bandwidth, measured, unmeasured
        self.version_lines, self.versions = version_lines, versions
        self.or_addresses, self.unrecognized = or_addresses, unrecognized
        self.microdescriptor_digests = microdescriptor_digests
        self.stats = stats
        self._rows: dict[str, int] | None = None
        self._built: dict[int, RouterEntry] = {}
        self._rows_in: dict[int, tuple[RouterEntries, NDArray[np.int64]]] = {}
        self._by_address: dict[tuple[str, int], int] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without what is built on demand (``_rows_in`` is keyed by the ids of this process's objects)."""
        return {**self.__dict__, "_rows": None, "_built": {}, "_rows_in": {}, "_by_address": None}

    @property
    def rows(self) -> dict[str, int]:
        """Fingerprint -> row, built the first time something looks a relay up."""
        if self._rows is None:
            self._rows = dict(zip(self.fingerprints, range(len(self.fingerprints))))
        return self._rows

    # -- the mapping stem's ``routers`` is ------------------------------------------------------------------

    def __getitem__(self, fingerprint: str) -> RouterEntry:
        return self.entry(self.rows[fingerprint])

    def __contains__(self, fingerprint: object) -> bool:
        return fingerprint in self.rows

    def __iter__(self) -> Iterator[str]:
        return iter(self.fingerprints)

    def __len__(self) -> int:
        return len(self.fingerprints)

    def entry(self, row: int) -> RouterEntry:
        """The entry of ``row``, built once."""
        built = self._built.get(row)
        if built is None:
            built = self._built[row] = self._build(row)
        return built

    def _build(self, row: int) -> RouterEntry:
        entry = RouterEntry(self.nicknames[row], self.fingerprints[row], self.digests[row], self.published[row],
                            self.addresses[row], int(self.or_ports[row]), int(self.dir_ports[row]) or None)
        if self.flag_lines[self.flag_code[row]]:
            entry.flags = list(self.flag_lines[self.flag_code[row]])
        if self.bandwidth[row] != ABSENT:
            entry.bandwidth = int(self.bandwidth[row])
        if self.measured[row] != ABSENT:
            entry.measured = int(self.measured[row])
        if self.unmeasured[row]:
            entry.is_unmeasured = True
        if row in self.unrecognized:
            entry.unrecognized_bandwidth_entries = list(self.unrecognized[row])
        if self.version_lines[row] is not None:
            entry.version_line, entry.version = self.version_lines[row], self.versions[row]
        if row in self.or_addresses:
            entry.or_addresses = list(self.or_addresses[row])
        if self.microdescriptor_digests is not None:
            entry.microdescriptor_digest = self.microdescriptor_digests[row]
        if self.stats is not None:
            entry.stats = self.stats_of(row)
        return entry

    def stats_of(self, row: int) -> StatsFigures | None:
        """(wfu, tk, mtbf) of the entry's stats line (None: a figure not given); None when it has none we read."""
        if self.stats is None or np.isnan(self.stats[row]).all():
            return None
        wfu, tk, mtbf = (None if value != value else value for value in self.stats[row].tolist())  # NaN != NaN
        return wfu, tk, mtbf

    # -- columns ------------------------------------------------------------------------------------------

    def has_flag(self, flag: str) -> NDArray[np.bool_]:
        """Per row: does the entry have ``flag``."""
        return np.array([flag in flags for flags in self.flag_lines], bool)[self.flag_code]

    def flag_masks(self, bits: dict[str, int]) -> NDArray[np.uint64]:
        """Per row: the OR of ``bits`` of the entry's flags (flags not in ``bits`` count 0), as uint64.

        A vote knows at most 64 flags (tor's MAX_KNOWN_FLAGS_IN_VOTE; the parser refuses more), one bit each:
        bit 63 needs the unsigned type, and OR, unlike a sum, keeps a flag listed twice to its one bit.
        """
        masks = [reduce(or_, [bits.get(flag, 0) for flag in flags], 0) for flags in self.flag_lines]
        return np.array(masks, np.uint64)[self.flag_code]

    def flag_counts(self) -> Counter[str]:
        """Flag -> entries that have it."""
        per_line = np.bincount(self.flag_code, minlength=len(self.flag_lines))
        counts: Counter[str] = Counter()
        for flags, entries in zip(self.flag_lines, per_line.tolist()):
            for flag in flags:
                counts[flag] += entries
        return counts

    def flag_sets(self) -> list[frozenset[str]]:
        """Per row: the entry's flags as a frozenset (one object per distinct flag line)."""
        sets = [frozenset(flags) for flags in self.flag_lines]
        return [sets[code] for code in self.flag_code.tolist()]

    def has_ipv6_orport(self) -> NDArray[np.bool_]:
        """Per row: does an ``a`` line give an IPv6 ORPort."""
        column = np.zeros(len(self), bool)
        for row, addresses in self.or_addresses.items():
            column[row] = any(is_v6 for _, _, is_v6 in addresses)
        return column

    def indices_in(self, other: RouterEntries) -> NDArray[np.int64]:
        """Per row of ``self``: the row of the same relay in ``other``, or -1 (kept: metrics and checks ask again)."""
        known = self._rows_in.get(id(other))
        if known is None or known[0] is not other:
            rows = other.rows
            known = self._rows_in[id(other)] = (other, np.fromiter(
                (rows.get(fingerprint, -1) for fingerprint in self.fingerprints), np.int64, len(self)))
        return known[1]

    def rows_by_address(self) -> dict[tuple[str, int], int]:
        """(IPv4 address, ORPort) -> row of the relay there (the last one, if two share it); built once."""
        if self._by_address is None:
            self._by_address = dict(zip(zip(self.addresses, self.or_ports.tolist()), range(len(self))))
        return self._by_address

    @classmethod
    def picked(cls, first: RouterEntries, second: RouterEntries, rows: NDArray[np.integer[Any]]) -> RouterEntries:
        """The entries at ``rows`` of ``first`` followed by ``second`` (rows index the two one after the other).

        How a consensus is made of the previous one's entries and its own new
        ones (``agent.parse.entrymemory``): flags keep one code per distinct line.
        """
        order = rows.tolist()
        pick = itemgetter(*order) if len(order) > 1 else (lambda items: tuple(items[row] for row in order))

        def listed(name: str) -> list[Any]:
            return list(pick(getattr(first, name) + getattr(second, name)))

        def array(name: str) -> NDArray[Any]:
            return cast("NDArray[Any]", np.concatenate([getattr(first, name), getattr(second, name)])[rows])

        lines = first.flag_lines + second.flag_lines
        codes = np.concatenate([first.flag_code, second.flag_code + len(first.flag_lines)])[rows]
        used, codes = np.unique(codes, return_inverse=True)
        texts = [" ".join(lines[code]) for code in used.tolist()]
        distinct = dict(zip(dict.fromkeys([""] + texts), range(len(texts) + 1)))  # code 0: no flags, as parsed
        flag_code = np.array([distinct[text] for text in texts], np.int32)[codes.reshape(-1)]
        stats = None if first.stats is None and second.stats is None else \
            np.concatenate([_stats_column(first), _stats_column(second)])[rows]
        new_row = np.full(len(first) + len(second), -1, np.int64)
        new_row[rows] = np.arange(len(order))

        def per_row(name: str) -> dict[int, Any]:
            items = {**getattr(first, name),
                     **{len(first) + row: value for row, value in getattr(second, name).items()}}
            return {int(new_row[row]): value for row, value in items.items() if new_row[row] >= 0}

        return cls(
            fingerprints=listed("fingerprints"), nicknames=listed("nicknames"), digests=listed("digests"),
            published=listed("published"), addresses=listed("addresses"), or_ports=array("or_ports"),
            dir_ports=array("dir_ports"), flag_lines=[text.split(" ") if text else [] for text in distinct],
            flag_code=flag_code, bandwidth=array("bandwidth"), measured=array("measured"),
            unmeasured=array("unmeasured"), version_lines=listed("version_lines"), versions=listed("versions"),
            or_addresses=per_row("or_addresses"), unrecognized=per_row("unrecognized"),
            microdescriptor_digests=listed("microdescriptor_digests") if first.microdescriptor_digests is not None
            else None, stats=stats,
        )

    @classmethod
    def from_entries(cls, routers: Mapping[str, Any]) -> RouterEntries:
        """Columns of a mapping of stem (or our own) entries, e.g. a document built by stem's ``.create()``."""
        entries = list(routers.values())
        lines: dict[tuple[str, ...], int] = {(): 0}
        codes = [lines.setdefault(tuple(entry.flags or ()), len(lines)) for entry in entries]

        def column(name: str, absent: int = ABSENT) -> NDArray[np.int64]:
            return np.array([absent if getattr(entry, name, None) is None else getattr(entry, name)
                             for entry in entries], np.int64)

        microdesc = any(getattr(entry, "microdescriptor_digest", None) is not None for entry in entries)
        figures = [getattr(entry, "stats", None) for entry in entries]  # ours may have them; stem's never do
        return cls(
            fingerprints=[entry.fingerprint for entry in entries], nicknames=[entry.nickname for entry in entries],
            digests=[entry.digest for entry in entries], published=[entry.published for entry in entries],
            addresses=[entry.address for entry in entries], or_ports=column("or_port", 0),
            dir_ports=column("dir_port", 0), flag_lines=[list(flags) for flags in lines],
            flag_code=np.array(codes, np.int32), bandwidth=column("bandwidth"), measured=column("measured"),
            unmeasured=np.array([bool(entry.is_unmeasured) for entry in entries], bool),
            version_lines=[entry.version_line for entry in entries], versions=[entry.version for entry in entries],
            or_addresses={row: list(entry.or_addresses) for row, entry in enumerate(entries) if entry.or_addresses},
            unrecognized={row: list(entry.unrecognized_bandwidth_entries) for row, entry in enumerate(entries)
                          if entry.unrecognized_bandwidth_entries},
            microdescriptor_digests=[entry.microdescriptor_digest for entry in entries] if microdesc else None,
            stats=np.array([[np.nan if value is None else value for value in (each or (None,) * 3)]
                            for each in figures], float).reshape(-1, 3) if any(figures) else None,
        )


def _stats_column(entries: RouterEntries) -> NDArray[np.float64]:
    """``entries.stats``, or a column of NaN rows for a document without stats lines."""
    return entries.stats if entries.stats is not None else np.full((len(entries), len(STATS_KEYS)), np.nan)


def take(column: NDArray[Any], rows: NDArray[np.integer[Any]], absent: float) -> NDArray[Any]:
    """``column[rows]`` where a row is given, ``absent`` where it is -1 (``indices_in``'s "not listed")."""
    if not len(column):
        return np.full(len(rows), absent, column.dtype)
    return np.where(rows >= 0, column[np.maximum(rows, 0)], absent)


def entries_of(document: Any) -> RouterEntries:
    """The router entries of a network status document as columns.

    A parsed document (``agent.model.network_status.NetworkStatus``) holds
    them already. A document stem built (tests' ``.create()``) is converted
    each time it is asked: nothing is written onto the stem object, and only
    tests pass those.
    """
    entries = getattr(document, "entries", None)
    if isinstance(entries, RouterEntries):
        return entries
    routers = document.routers
    return routers if isinstance(routers, RouterEntries) else RouterEntries.from_entries(routers)
