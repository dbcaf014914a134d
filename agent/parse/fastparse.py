"""A focused fast path for router status entries (consensus, votes, microdesc consensus), into columns.

stem's validating parser builds every field of every entry (exit policies,
protocol sets, ...) and takes about 0.5 s per full consensus or vote. The
agent reads a handful of fields, so this reads exactly those, with the same
names, types and values as stem (``tests/unit/test_fastparse.py`` compares
them with stem field by field on every real document we have), and checks
what it reads as tor's grammar allows it (``agent.parse.grammar``: ASCII
numbers within tor's types, legal nicknames, times in sane years): a
malformed line raises ValueError naming it. The header and
footer stay stem's (parsed and validated by stem, without the entries);
signatures are verified by ``agent.parse.signatures``.

The work is done per kind of line, not per entry: one regular expression
picks the lines we read (the rest are skipped in C), each line is assigned
to its entry by a running count of ``r`` lines, and each kind is checked
and converted in bulk; a line the bulk check refuses is read on its own,
which names what is wrong with it. ``r`` lines are also remembered by their
text: the consensus and the nine votes of a period, and consecutive hours,
mostly repeat them.

A vote's ``stats`` lines (tor 0.4.7+, tor#40314: the authority's WFU, time
known and MTBF of the relay) are kept too, but never refuse a document: tor
writes them and never reads them (no rule of its parser names the keyword).
A line ``agent.model.entries.read_stats`` cannot read whole, or a second one
in an entry, gives that entry no figures.
"""

from __future__ import annotations

import binascii
import re
from datetime import datetime
from functools import lru_cache
from itertools import islice

import numpy as np
import stem.version

from agent.model.entries import ABSENT, STATS_KEYS, RouterEntries, read_stats_lines
from agent.parse import grammar

ENTRY_START = b"\nr "
FOOTER_START = b"\ndirectory-footer"


def split_network_status(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(header, entries, footer) of a network status document; entries start at the first ``r`` line."""
    start = raw.find(ENTRY_START)
    if start < 0:
        return raw, b"", b""
    end = raw.find(FOOTER_START, start)
    if end < 0:
        end = raw.find(b"\ndirectory-signature ", start)
    if end < 0:
        end = len(raw)
    return raw[:start + 1], raw[start + 1:end + 1], raw[end + 1:]


#: The lines the agent reads, keyword included; the rest are skipped in C. Anchored on the newline before each
#: line (the text gets one in front and one at the end), which the engine finds far faster than ``^``. A line's
#: first character is its keyword, so a ``stats`` line, which would be an ``s`` (flags) line that way, is picked
#: without its "s": as "tats ...", keyword "t", which no other line we pick has (a line that really starts with
#: "tats" fails the look-ahead). Only votes have them, and a vote is never of the microdesc flavour. Written so
#: (no look-behind, no look-ahead after the line) it is as fast as the pattern without stats lines was.
_ENTRY_LINES = re.compile(r"\n(?:s(?=tats[ \n])|(?=[rsavw][ \n]))([rsavw][^\n]*|tats[^\n]*)")
_STATS_KEYWORD = b"t"
_MICRODESC_ENTRY_LINES = re.compile(r"\n([rsavwm](?: [^\n]*)?)(?=\n)")
#: Shapes stem also accepts, seen in no real document since 2012, so only looked for once: the old ``opt``
#: prefix, and a tab or more than one space after a keyword. Where present they are rewritten first.
_UNUSUAL_LINES = re.compile(r"\n(?:opt |[rsavwm](?:\t| [ \t]))")
_KEYWORD_START = re.compile(r"\n(?:opt )?([rsavwm])(?:[ \t]+|(?=\n))")
_IPV4_LINES = re.compile(rf"^{grammar.IPV4_TEXT}$", re.M)
_DAY_LINES = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", re.M)
_CLOCK_LINES = re.compile(r"^[0-9]{2}:[0-9]{2}:[0-9]{2}$", re.M)
#: The common ``w`` lines: "Bandwidth=N" (consensus, with " Unmeasured=1" where too few bandwidth authorities
#: measured the relay) and "Bandwidth=N Measured=M" (bandwidth authorities' votes); any other line is the fourth
#: group and goes through ``_w_line``. One match per line of the text, which starts with a newline. Numbers are
#: ASCII digits (``\d`` would take any Unicode digit) and at most 10 of them: tor reads both as uint32.
_W_VALUE = re.compile(r"\n(?:Bandwidth=([0-9]{1,10})(?: Measured=([0-9]{1,10}))?( Unmeasured=1)?(?=\n|\Z)|([^\n]*))")
_MICRODESC_DIGEST_LINES = re.compile(r"^[A-Za-z0-9+/]{43}=?$", re.M)  # tor: the base64 of a 32-byte digest
_BASE64_CHARACTERS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def parse_router_entries(entries: bytes, microdesc: bool, first_line: int = 1) -> RouterEntries:
    """The entries of every ``r`` block as columns; raises ValueError on a malformed line we read, naming it
    by its number in the document (``first_line``: the number of the entries' first line there)."""
    return parse_entry_text(entries.decode("utf-8", "replace"), microdesc, first_line)


def parse_entry_text(entries: str, microdesc: bool, first_line: int = 1) -> RouterEntries:
    """``parse_router_entries`` of the entries' text, already decoded."""
    text = "\n" + entries + "\n"
    if _UNUSUAL_LINES.search(text):
        text = _KEYWORD_START.sub(r"\n\1 ", text)  # lines keep their numbers: no newline is added or removed
    picking = _MICRODESC_ENTRY_LINES if microdesc else _ENTRY_LINES
    try:
        return _parse_lines(picking.findall(text), microdesc)
    except ValueError as error:
        raise ValueError(_numbered(str(error), text, picking, first_line)) from None


#: How the checks below name a line: by its index among the lines picked (they do not see the document).
_PICKED_LINE = re.compile(r"(?:router status entry )?(?:line )?(\d+): (.*)", re.S)


def _numbered(message: str, text: str, picking: re.Pattern, first_line: int) -> str:
    """``message`` with the picked line it names given by its number in the document (only when refusing)."""
    named = _PICKED_LINE.fullmatch(message)
    if named is None:
        return message
    line = next(islice(picking.finditer(text), int(named[1]), None), None)
    if line is None:
        return message
    lines_before = text.count("\n", 0, line.start())  # the text starts with a newline of its own
    return f"line {first_line + lines_before}: {named[2]}"


def _parse_lines(lines: list[str], microdesc: bool) -> RouterEntries:
    """The columns of the picked lines (each with its keyword first)."""
    keywords = np.frombuffer("".join([line[0] for line in lines]).encode("ascii"), "S1")
    starts = keywords == b"r"
    row_of_line = np.cumsum(starts) - 1  # lines before the first r line belong to no entry (-1) and are skipped
    r_lines = np.flatnonzero(starts)
    columns = _r_columns([lines[i][2:] for i in r_lines.tolist()], r_lines, microdesc)
    count = len(r_lines)

    def of_kind(keyword: bytes) -> tuple[list[int], list[str], list[int]]:
        """(rows, values, line numbers) of the lines of one keyword that belong to an entry."""
        numbers = np.flatnonzero((keywords == keyword) & (row_of_line >= 0))
        start = 5 if keyword == _STATS_KEYWORD else 2  # after "tats " or "s "
        return row_of_line[numbers].tolist(), [lines[i][start:] for i in numbers.tolist()], numbers.tolist()

    digest_line = (b"m",) if microdesc else ()
    kinds = {keyword: of_kind(keyword) for keyword in (b"s", b"v", b"w", b"a", _STATS_KEYWORD) + digest_line}
    for keyword in (b"s", b"v", b"w") + digest_line:
        _refuse_repeats(keyword.decode(), *kinds[keyword])  # stem allows each once: which would count?
    for keyword in (b"s",) + digest_line:
        _refuse_missing(keyword.decode(), kinds[keyword][0], r_lines)  # stem requires them
    flag_lines, flag_code = _flags(*kinds[b"s"], count)
    bandwidth, measured, unmeasured, unrecognized = _bandwidths(*kinds[b"w"], count)
    rows, values, _ = kinds[b"v"]
    known = list(map(_version, values))
    version_lines = _scattered(rows, [line for line, _ in known], count)
    versions = _scattered(rows, [version for _, version in known], count)
    or_addresses: dict[int, list] = {}
    for row, value, number in zip(*kinds[b"a"]):
        or_addresses.setdefault(row, []).append(_or_address(value, number))
    digests = _microdescriptor_digests(*kinds[b"m"], count) if microdesc else None
    stats_rows, stats_values, _ = kinds[_STATS_KEYWORD]
    parsed = RouterEntries(**columns, flag_lines=flag_lines, flag_code=flag_code, bandwidth=bandwidth,
                           measured=measured, unmeasured=unmeasured, version_lines=version_lines, versions=versions,
                           or_addresses=or_addresses, unrecognized=unrecognized, microdescriptor_digests=digests,
                           stats=_stats(stats_rows, stats_values, count) if stats_rows else None)
    if len(set(parsed.fingerprints)) != count:
        _refuse_duplicates(parsed.fingerprints, r_lines)
    return parsed


#: Parsed ``r`` lines by their text. The same line is in the consensus and in every vote listing that descriptor,
#: and in the next hour's documents (a relay publishes a new descriptor about once in 18 hours), so most lines
#: of a period, and of consecutive archived consensuses, are parsed once. Bounded: when full, only the lines of
#: the document at hand are kept. One per flavour (a microdesc consensus's r line has no digest).
_R_CACHES: dict[bool, dict[str, tuple]] = {False: {}, True: {}}
R_CACHE_LIMIT = 20_000


def _r_columns(r_values: list[str], numbers: np.ndarray, microdesc: bool) -> dict:
    """Identity, address and ports of every entry, from its ``r`` line (cached, or checked in bulk)."""
    cache = _R_CACHES[microdesc]
    known = list(map(cache.get, r_values))
    missing = [row for row, fields in enumerate(known) if fields is None]
    if missing:
        fresh = _parse_r_values([r_values[row] for row in missing], numbers[missing], microdesc)
        for row, fields in zip(missing, fresh):
            known[row] = fields
        if len(cache) + len(fresh) > R_CACHE_LIMIT:  # full: keep this document's lines, the likeliest next
            cache.clear()
            cache.update(zip(r_values, known))
        else:
            cache.update(zip([r_values[row] for row in missing], fresh))
    columns = list(zip(*known)) if known else [()] * 7
    nicknames, fingerprints, digests, published, addresses, or_ports, dir_ports = columns
    return {"fingerprints": list(fingerprints), "nicknames": list(nicknames), "digests": list(digests),
            "published": list(published), "addresses": list(addresses),
            "or_ports": np.array(or_ports, np.int32), "dir_ports": np.array(dir_ports, np.int32)}


def _parse_r_values(r_values: list[str], numbers: np.ndarray, microdesc: bool) -> list[tuple]:
    """(nickname, fingerprint, digest, published, address, ORPort, DirPort) of each line, each field checked."""
    parts = [value.split(" ") for value in r_values]
    if any(len(fields) != (7 if microdesc else 8) for fields in parts):
        _refuse_malformed_r(r_values, numbers, microdesc)
    columns = list(zip(*parts)) or [()] * (7 if microdesc else 8)
    if microdesc:
        columns.insert(2, (None,) * len(parts))
    nicknames, identities, digests, days, clocks, addresses, or_ports, dir_ports = columns
    digits = _all_digits(or_ports) and _all_digits(dir_ports)
    or_port_numbers = list(map(int, or_ports)) if digits else []
    dir_port_numbers = list(map(int, dir_ports)) if digits else []
    well_formed = grammar.all_match(_IPV4_LINES, addresses) and grammar.all_nicknames(nicknames)
    if not digits or not well_formed or (or_port_numbers and (
            min(or_port_numbers) < 1 or max(or_port_numbers) > 65535 or max(dir_port_numbers) > 65535)):
        _refuse_malformed_r(r_values, numbers, microdesc)
    return list(zip(nicknames, _hex_identities(identities, numbers),
                    digests if microdesc else _hex_identities(digests, numbers),
                    _published(days, clocks, numbers), addresses, or_port_numbers, dir_port_numbers))


def _all_digits(texts: tuple) -> bool:
    """Every text is a run of 1-5 ASCII digits, as ``grammar.parse_port`` wants them (the range is checked after)."""
    joined = "".join(texts)
    digits = not joined or (joined.isascii() and joined.isdigit())
    return all(texts) and digits and max(map(len, texts), default=0) <= 5


def _refuse_malformed_r(r_values: list[str], numbers: np.ndarray, microdesc: bool) -> None:
    """Raises ValueError naming the first malformed ``r`` line (the bulk checks found one)."""
    for value, number in zip(r_values, numbers.tolist()):
        _r_line(value, microdesc, number)
    raise ValueError("router status entries: an r line is malformed")


def _r_line(value: str, microdesc: bool, number: int) -> None:
    """Checks one ``r`` line field by field; raises ValueError naming what is wrong with it."""
    parts = value.split(" ")
    if len(parts) != (7 if microdesc else 8):
        raise ValueError(f"router status entry line {number}: 'r {value[:80]}' has {len(parts)} fields")
    address, or_port, dir_port = parts[-3:]
    if not grammar.is_nickname(parts[0]):
        raise ValueError(f"router status entry line {number}: nickname {parts[0][:40]!r} is not 1-19 letters and "
                         "digits")
    if not grammar.is_ipv4(address):
        raise ValueError(f"router status entry line {number}: {address!r} is not an IPv4 address")
    grammar.parse_port(or_port, number, allow_zero=False)
    grammar.parse_port(dir_port, number)


def _hex_identities(texts: tuple, numbers: np.ndarray) -> list[str]:
    """Base64 identities or digests (20 bytes) as stem gives them: upper-case hex."""
    try:
        hexes = [binascii.a2b_base64(text + "=" * (-len(text) % 4), strict_mode=True).hex().upper() for text in texts]
        if not hexes or set(map(len, hexes)) == {40}:
            return hexes
    except ValueError:  # binascii.Error, or non-ASCII text: named below
        pass
    for row, text in enumerate(texts):
        try:
            if len(grammar.base64_hex(text)) != 40:
                raise ValueError(f"{text[:60]!r} is not the base64 of 20 bytes")
        except ValueError as error:
            raise ValueError(f"router status entry line {int(numbers[row])}: {error}") from None
    raise ValueError("router status entries: an identity is malformed")


def _published(days: tuple, clocks: tuple, numbers: np.ndarray) -> list[datetime]:
    """Each entry's publication time, in years we accept (``agent.parse.grammar``)."""
    try:
        if grammar.all_match(_DAY_LINES, days) and grammar.all_match(_CLOCK_LINES, clocks) and (
                not days or (min(days) >= str(grammar.FIRST_YEAR) and max(days) < str(grammar.YEAR_LIMIT))):
            return list(map(datetime.fromisoformat, map(" ".join, zip(days, clocks))))  # ISO reads them as we would
        return list(map(grammar.parse_time, map(" ".join, zip(days, clocks))))
    except ValueError:  # name the line
        for row, (day, clock) in enumerate(zip(days, clocks)):
            try:
                grammar.parse_time(f"{day} {clock}")
            except ValueError as error:
                raise ValueError(f"router status entry line {int(numbers[row])}: {error}") from None
        raise


def _flags(rows: list[int], values: list[str], numbers: list[int], count: int) -> tuple[list[list[str]], np.ndarray]:
    """Each distinct ``s`` line's flags once, and per row the code of its line (0: no ``s`` line).

    A line giving a flag twice, or an empty one (two spaces), is refused, as stem refuses it.
    """
    distinct = dict.fromkeys([""] + values)
    codes = dict(zip(distinct, range(len(distinct))))
    flag_code = np.zeros(count, np.int32)
    flag_code[rows] = list(map(codes.__getitem__, values))
    flag_lines = [value.split(" ") if value else [] for value in distinct]
    for flags in flag_lines:
        if "" in flags or len(set(flags)) != len(flags):
            line = " ".join(flags)
            raise ValueError(f"router status entry line {numbers[values.index(line)]}: 's {line[:80]}' gives a flag "
                             "twice or an empty one")
    return flag_lines, flag_code


def _bandwidths(rows: list[int], values: list[str], numbers: list[int], count: int):
    """Bandwidth, Measured=, Unmeasured=1 and unrecognised items of every ``w`` line."""
    bandwidth = np.full(count, ABSENT, np.int64)
    measured = np.full(count, ABSENT, np.int64)
    unmeasured = np.zeros(count, bool)
    unrecognized: dict[int, list[str]] = {}
    matches = _W_VALUE.findall("\n" + "\n".join(values)) if values else []
    bands, measures, unmeasured_texts, _ = (np.array(texts, object) for texts in zip(*matches)) if matches \
        else (np.zeros(0, object),) * 4
    rows_column = np.array(rows, np.int64)
    common, with_measured = bands != "", measures != ""
    bandwidth[rows_column[common]] = list(map(int, bands[common]))
    measured[rows_column[with_measured]] = list(map(int, measures[with_measured]))
    unmeasured[rows_column[unmeasured_texts != ""]] = True
    limit = grammar.UINT32_MAX
    too_large = np.flatnonzero(common & ((bandwidth[rows_column] > limit) | (measured[rows_column] > limit)))
    if len(too_large):  # 10 digits, but not a uint32: named by the line on its own
        _w_line(values[int(too_large[0])], numbers[int(too_large[0])])
    for index in np.flatnonzero(~common).tolist():  # the lines the bulk pattern did not take
        row = rows[index]
        for name, item in _w_line(values[index], numbers[index]).items():
            if name == "bandwidth":
                bandwidth[row] = item
            elif name == "measured":
                measured[row] = item
            elif name == "unmeasured":
                unmeasured[row] = True
            else:
                unrecognized.setdefault(row, []).extend(item)
    return bandwidth, measured, unmeasured, unrecognized


def _w_line(value: str, number: int) -> dict:
    """A ``w`` line the bulk pattern did not take: its items, checked as stem checks them."""
    if not value.startswith("Bandwidth="):
        raise ValueError(f"router status entry line {number}: 'w {value[:60]}' must start with Bandwidth=")
    items: dict = {}
    for item in value.split(" "):
        key, _, number_text = item.partition("=")
        if key in ("Bandwidth", "Measured"):
            if not (number_text.isascii() and number_text.isdigit()):
                raise ValueError(f"router status entry line {number}: {key}= needs a number: w {value[:60]}")
            try:
                items[key.lower()] = grammar.number(number_text, 0, grammar.UINT32_MAX)  # tor reads both as uint32
            except ValueError:
                raise ValueError(f"router status entry line {number}: {key}= is out of range (0-{grammar.UINT32_MAX}): "
                                 f"w {value[:60]}") from None
        elif key == "Unmeasured":
            if number_text != "1":
                raise ValueError(f"router status entry line {number}: Unmeasured= must be 1: w {value[:60]}")
            items["unmeasured"] = True
        else:
            items.setdefault("unrecognized", []).append(item)
    return items


def _stats(rows: list[int], values: list[str], count: int) -> np.ndarray:
    """Per row (wfu, tk, mtbf) of its ``stats`` line, NaN where not given; never refuses (see the module's doc).

    A second line in one entry is not refused as a second ``s``, ``v`` or ``w`` line is (stem refuses those, and
    which would count?): tor has no rule for the keyword, so the vote is still one, but neither line counts.
    """
    column = np.full((count, len(STATS_KEYS)), np.nan)
    column[rows] = read_stats_lines(values)
    row_numbers = np.array(rows, np.int64)
    column[row_numbers[1:][np.diff(row_numbers) == 0]] = np.nan  # rows come in order: a repeat follows its first
    return column


def _or_address(value: str, number: int) -> tuple[str, int, bool]:
    try:
        return grammar.or_address(value)
    except ValueError as error:
        raise ValueError(f"router status entry line {number}: 'a {value[:60]}' {error}") from None


@lru_cache(maxsize=4096)
def _version(line: str) -> tuple:
    """(the line, stem's Version for 'Tor x.y.z...' or None for other software), cached: a few hundred distinct
    lines, so every entry with a line shares its text too."""
    if not line.startswith("Tor "):
        return line, None
    try:
        return line, stem.version.Version(line[4:].split(" ", 1)[0])
    except ValueError:
        return line, None


def _microdescriptor_digests(rows: list[int], values: list[str], numbers: list[int], count: int) -> list:
    """The ``m`` line of each row (None without one), each the base64 of a 32-byte digest as tor requires."""
    joined = "".join(values).encode("utf-8", "replace")
    if not (set(map(len, values)) <= {43} and not joined.translate(None, _BASE64_CHARACTERS)) and \
            not grammar.all_match(_MICRODESC_DIGEST_LINES, values):  # the common shape, else the pattern's
        bad = next(index for index, value in enumerate(values) if not _MICRODESC_DIGEST_LINES.fullmatch(value))
        raise ValueError(f"router status entry line {numbers[bad]}: 'm {values[bad][:60]}' is not a microdescriptor "
                         "digest")
    return _scattered(rows, values, count)


def _scattered(rows: list[int], values, count: int) -> list:
    """A column of ``count`` rows: ``values`` at ``rows``, None elsewhere."""
    column = np.full(count, None, object)
    column[rows] = values
    return column.tolist()


def _refuse_missing(keyword: str, rows: list[int], r_lines: np.ndarray) -> None:
    if len(rows) < len(r_lines):  # repeats are refused already, so some entry lacks the line
        row = int(np.flatnonzero(np.isin(np.arange(len(r_lines)), rows, invert=True))[0])
        raise ValueError(f"router status entry line {int(r_lines[row])}: no '{keyword}' line in the entry")


def _refuse_repeats(keyword: str, rows: list[int], values: list[str], numbers: list[int]) -> None:
    repeated = np.flatnonzero(np.diff(np.array(rows, np.int64)) == 0) if len(rows) > 1 else []
    if len(repeated):
        number = numbers[int(repeated[0]) + 1]
        raise ValueError(f"router status entry line {number}: a second '{keyword}' line in one entry")


def _refuse_duplicates(fingerprints: list[str], numbers: np.ndarray) -> None:
    seen = set()
    for row, fingerprint in enumerate(fingerprints):
        if fingerprint in seen:
            raise ValueError(f"router status entry {int(numbers[row])}: fingerprint {fingerprint} listed twice")
        seen.add(fingerprint)
