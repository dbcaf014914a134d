"""The numbers and times of what stem parses, checked as tor reads them, before stem reads them.

stem parses network status headers and footers, key certificates and
bandwidth files (``agent.parse.documents``), and reads their numbers with
``int()`` after ``str.isdigit()`` and their times with a ``\\d`` pattern: it
takes Unicode digits, numbers of any size and years such as 9999. These
checks read the same lines with ``agent.parse.grammar`` (ASCII, tor's bounds)
and raise ValueError naming the line; the order of a document's times and the
flags of its entries are checked once stem has parsed it (``check_network_status``).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from agent.parse.grammar import (
    FIRST_YEAR,
    INT32_MAX,
    INT32_MIN,
    INT_MAX,
    LAST_SECOND,
    LONG_MAX,
    LONG_MIN,
    MAX_KNOWN_FLAGS,
    MAX_PROTOCOL_VERSION,
    PORT_MAX,
    UINT32_MAX,
    UINT64_MAX,
    YEAR_LIMIT,
    all_match,
    number,
    parse_time,
)

#: A line as stem reads it: an optional "opt", the keyword, then its arguments after spaces or tabs.
_KEYWORD_LINE = re.compile(r"(?:opt[ \t]+)?([A-Za-z0-9-]+)(?:[ \t]+(.*))?")


def _numbers(low: int, high: int, positions: slice = slice(None)) -> Callable[[str], None]:
    """A check that the words at ``positions`` are numbers from ``low`` to ``high``.

    Words are split on single spaces, as stem splits them, so each position is the one stem reads (an empty
    word, which stem refuses too, is not a number).
    """
    def check(arguments: str) -> None:
        for word in arguments.split(" ")[positions]:
            number(word, low, high)
    return check


def _mapping(low: int, high: int, ordered: bool) -> Callable[[str], None]:
    """A check of ``key=value`` words: each value a number from ``low`` to ``high``; keys strictly increasing
    where ``ordered`` (tor refuses params out of order or given twice)."""
    def check(arguments: str) -> None:
        keys = []
        for word in arguments.split(" ") if arguments else ():  # stem takes an empty line as no mappings
            key, equals, value = word.partition("=")
            if not equals:
                raise ValueError(f"{word[:60]!r} is not key=value")
            number(value, low, high)
            keys.append(key)
        if ordered and any(before >= after for before, after in zip(keys, keys[1:])):
            raise ValueError("keys must be in order, each once")
    return check


def _known_flags(arguments: str) -> None:
    """At most tor's 64 flags, in order, each once (ns_parse.c refuses known-flags out of order)."""
    flags = [flag for flag in arguments.split(" ") if flag]  # as stem reads them
    if len(flags) > MAX_KNOWN_FLAGS:
        raise ValueError(f"{len(flags)} flags, more than tor's {MAX_KNOWN_FLAGS} (MAX_KNOWN_FLAGS_IN_VOTE)")
    if any(before >= after for before, after in zip(flags, flags[1:])):
        raise ValueError("flags must be in order, each once")


_THRESHOLD = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,20})?%?")


def _thresholds(arguments: str) -> None:
    """flag-thresholds: ``key=value``, each value an ASCII integer (in a long) or decimal, or a percentage."""
    for word in arguments.split(" ") if arguments else ():
        value = word.partition("=")[2]
        if _THRESHOLD.fullmatch(value) is None:
            raise ValueError(f"{word[:60]!r} is not a number")
        if value.lstrip("-").isdigit():
            number(value, LONG_MIN, LONG_MAX)


def _protocols(arguments: str) -> None:
    """Protocol lists (``Name=1-2,4``): every version an ASCII number from 0 to tor's MAX_PROTOCOL_VERSION."""
    for word in arguments.split(" "):
        versions = word.partition("=")[2]
        for bound in re.split("[,-]", versions) if versions else ():
            number(bound, 0, MAX_PROTOCOL_VERSION)


def _dir_address(arguments: str) -> None:
    number(arguments.rpartition(":")[2], 0, PORT_MAX)


#: Keyword -> check of its arguments, for the lines of network status headers and footers and of key
#: certificates whose numbers or times stem reads. Bounds are tor's (agent.parse.grammar names where).
_LINE_CHECKS: dict[str, Callable[[str], object]] = {
    "network-status-version": _numbers(0, INT_MAX, slice(0, 1)),
    "dir-key-certificate-version": _numbers(0, INT_MAX, slice(0, 1)),
    "consensus-method": _numbers(1, INT_MAX),
    "consensus-methods": _numbers(1, INT_MAX),
    "voting-delay": _numbers(0, INT_MAX),
    "published": parse_time,
    "valid-after": parse_time,
    "fresh-until": parse_time,
    "valid-until": parse_time,
    "dir-key-published": parse_time,
    "dir-key-expires": parse_time,
    "known-flags": _known_flags,
    "params": _mapping(INT32_MIN, INT32_MAX, ordered=True),
    "bandwidth-weights": _mapping(INT32_MIN, INT32_MAX, ordered=False),
    "flag-thresholds": _thresholds,
    "dir-source": _numbers(0, PORT_MAX, slice(4, 6)),
    "dir-address": _dir_address,
    "shared-rand-commit": _numbers(0, UINT32_MAX, slice(0, 1)),
    "shared-rand-previous-value": _numbers(0, UINT64_MAX, slice(0, 1)),
    "shared-rand-current-value": _numbers(0, UINT64_MAX, slice(0, 1)),
    "recommended-client-protocols": _protocols,
    "recommended-relay-protocols": _protocols,
    "required-client-protocols": _protocols,
    "required-relay-protocols": _protocols,
}


def check_lines(text: str, first_line: int = 1) -> None:
    """Checks every line of a header and footer or of key certificates whose numbers or times stem reads.

    ``first_line``: the number of the text's first line in the document, for naming a refused line.
    """
    in_object = False
    for line_number, line in enumerate(text.split("\n"), first_line):
        if in_object or line.startswith("-----BEGIN "):  # keys and signatures: base64, no keywords
            in_object = not line.startswith("-----END ")
            continue
        match = _KEYWORD_LINE.fullmatch(line)
        check = _LINE_CHECKS.get(match[1]) if match else None
        if check is not None:
            try:
                check(match[2] or "")
            except ValueError as error:
                raise ValueError(f"line {line_number}: {match[1]}: {error}") from None


def check_network_status(header, entries) -> None:
    """What tor requires of a parsed network status beyond its lines: valid-after < fresh-until < valid-until, and
    a vote's entries flag only what its known-flags lists (tor reads a vote's flags as bits of that list)."""
    if not header.valid_after < header.fresh_until < header.valid_until:
        raise ValueError(f"valid-after {header.valid_after}, fresh-until {header.fresh_until} and valid-until "
                         f"{header.valid_until} are not in order")
    if header.is_vote:
        unknown = set().union(*map(set, entries.flag_lines)) - set(header.known_flags)
        if unknown:
            raise ValueError(f"an entry has the flag {sorted(unknown)[0][:40]!r}, which known-flags does not list")


# -- bandwidth files ---------------------------------------------------------------------------------------------

#: A line's first ``bw=`` (``node_id=``) and the rest of its line, of a text with a newline in front: taking the
#: rest of the line in the match lets the engine skip to the next line, ~20 times faster than searching it.
_BW = re.compile(r"[ \t\n]bw=([^ \t\n]*)([^\n]*)")
_NODE_ID = re.compile(r"[ \t\n]node_id=([^ \t\n]*)([^\n]*)")
_BW_LINES = re.compile(r"^[0-9]{1,19}$", re.M)
_NODE_ID_LINES = re.compile(r"^\$[0-9A-Fa-f]{40}$", re.M)
_ISO_TIME = re.compile(r"([0-9]{4})-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}")
_HEADER_END = ("=====", "====")


def check_bandwidth_file(text: str, first_line: int = 1) -> None:
    """A bandwidth file's timestamp, header numbers and measurements' ``bw=`` and ``node_id=``, as tor reads them.

    tor (bwauth.c) reads the first line as a Unix time, ``bw=`` as a long and ``node_id=`` as ``$`` and 40 hex
    digits, and refuses a line with two ``bw=``. stem converts the header's numbers and times too.
    """
    lines = text.split("\n")
    try:
        number(lines[0].strip(), 0, LAST_SECOND)
    except ValueError as error:
        raise ValueError(f"line {first_line}: the timestamp {error} (a Unix time before {YEAR_LIMIT})") from None
    body = _check_header(lines, first_line)
    _check_measurements("\n".join(lines[body:]), first_line + body)


def _check_header(lines: list[str], first_line: int) -> int:
    """Checks the header's values (after the timestamp, delimited as stem does); returns the body's first index."""
    mappings = 0
    for index in range(1, len(lines)):
        line = lines[index].strip()
        if line in _HEADER_END:
            return index + 1
        if not line or ("node_id=" in line and not mappings):  # 1.0.0 files have no header
            return index
        key, equals, value = line.partition("=")
        mappings += bool(equals)
        _named(first_line + index, key, _header_value, value)
    return len(lines)


def _header_value(value: str) -> None:
    """A header value stem would read as a number or a time: ASCII, within a long or our years."""
    if not value.isascii() and any(character.isdigit() for character in value):
        raise ValueError(f"{value[:40]!r} has non-ASCII digits")
    if value.isdigit():
        number(value, 0, LONG_MAX)
    time = _ISO_TIME.match(value)
    if time and not FIRST_YEAR <= int(time[1]) < YEAR_LIMIT:
        raise ValueError(f"{value[:40]!r} is not a time from {FIRST_YEAR} to {YEAR_LIMIT - 1}")


def _check_measurements(body: str, first_line: int) -> None:
    """Every ``bw=`` an ASCII number within a long, every ``node_id=`` tor's, each once a line (in bulk)."""
    text = "\n" + body
    bandwidths, node_ids = _BW.findall(text), _NODE_ID.findall(text)
    values = [value for value, _ in bandwidths]
    if (all_match(_BW_LINES, values) and all(int(value) <= LONG_MAX for value in values if len(value) == 19)
            and all_match(_NODE_ID_LINES, [node_id for node_id, _ in node_ids])
            and not _given_twice("bw=", [rest for _, rest in bandwidths])
            and not _given_twice("node_id=", [rest for _, rest in node_ids])):
        return
    for line_number, line in enumerate(body.split("\n"), first_line):  # name the first line refused
        for key, found in (("bw", _BW.findall("\n" + line)), ("node_id", _NODE_ID.findall("\n" + line))):
            if found and _given_twice(f"{key}=", [found[0][1]]):
                raise ValueError(f"line {line_number}: {key}= is given twice")
        for value, _ in _BW.findall("\n" + line):
            _named(line_number, "bw", number, value, 0, LONG_MAX)
        for node_id, _ in _NODE_ID.findall("\n" + line):
            if _NODE_ID_LINES.fullmatch(node_id) is None:
                raise ValueError(f"line {line_number}: node_id {node_id[:60]!r} is not $ and 40 hex digits")


def _given_twice(key: str, rests: list[str]) -> bool:
    """Does ``key`` start a word in any of these rests of lines (after the line's first ``key``)?"""
    joined = "\n".join(rests)
    return f" {key}" in joined or f"\t{key}" in joined


def _named(line_number: int, key: str, check: Callable[..., object], *arguments: object) -> None:
    """``check(*arguments)``, its ValueError naming the line and the key."""
    try:
        check(*arguments)
    except ValueError as error:
        raise ValueError(f"line {line_number}: {key[:40]}: {error}") from None
