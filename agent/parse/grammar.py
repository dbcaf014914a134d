"""What tor's grammar allows in the fields the agent reads: ASCII numbers within tor's bounds, nicknames, times.

Python reads more as a number than tor does: ``int()`` and ``str.isdigit()``
take Unicode digits ("٥٠٠٠"), ``int()`` also signs, spaces and underscores,
and neither has a bound. tor reads every number with ``tor_parse_long`` or
``tor_parse_ulong`` (strtol: ASCII digits) into a C type, and refuses what
does not fit; the bounds below are tor's, each named with where tor sets it.
The fast parsers (``fastparse``, ``fastdesc``) read their fields with these;
``agent.parse.stemchecks`` checks with them the lines whose numbers and times
stem would read, before stem reads them.
"""

from __future__ import annotations

import binascii
import re
import socket
from datetime import datetime
from functools import lru_cache

UINT32_MAX = 2 ** 32 - 1  # w Bandwidth=, Measured=: tor_parse_ulong(.., 0, UINT32_MAX) (ns_parse.c)
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1  # params, bandwidth-weights: tor_parse_long(.., INT32_MIN, INT32_MAX)
INT_MAX = 2 ** 31 - 1  # descriptor bandwidth (routerparse.c); consensus-method, voting-delay (ns_parse.c): int
LONG_MIN, LONG_MAX = -2 ** 63, 2 ** 63 - 1  # descriptor uptime (routerparse.c), bandwidth file bw= (bwauth.c): long
UINT64_MAX = 2 ** 64 - 1  # shared-rand-*-value reveal counts: tor_parse_uint64 (shared_random_state.c)
PORT_MAX = 65535  # every port: tor_parse_long(.., 0, 65535)
MAX_KNOWN_FLAGS = 64  # MAX_KNOWN_FLAGS_IN_VOTE (dirvote.h): a vote's flags are bits of a uint64_t
MAX_PROTOCOL_VERSION = 63  # protover.c
#: Years of the times we accept: tor's parse_iso_time refuses any before 1970 and takes any later one; we stop at
#: 2200, well before 2262, where the nanosecond timestamps of the TSDB and numpy's datetime64[ns] overflow.
FIRST_YEAR, YEAR_LIMIT = 1970, 2200
LAST_SECOND = int((datetime(YEAR_LIMIT, 1, 1) - datetime(1970, 1, 1)).total_seconds()) - 1  # as a Unix time

_NICKNAME = re.compile(r"[A-Za-z0-9]{1,19}")
_TIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2}) ([0-9]{2}):([0-9]{2}):([0-9]{2})")
_HEX_40 = re.compile(r"[0-9A-Fa-f]{40}")
#: A dotted-quad IPv4 address, as stem checks one (no leading zeros).
IPV4_TEXT = r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(IPV4_TEXT)


def number(text: str, low: int, high: int) -> int:
    """``text`` read as tor reads a number: ASCII digits (a minus only where ``low`` < 0), from ``low`` to ``high``.

    ValueError naming the text and the range otherwise.
    """
    digits = text[1:] if low < 0 and text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 20) or not low <= int(text) <= high:
        raise ValueError(f"{text[:40]!r} is not a number from {low} to {high}")
    return int(text)


def is_nickname(text: str) -> bool:
    """1-19 ASCII letters and digits (tor's is_legal_nickname)."""
    return _NICKNAME.fullmatch(text) is not None


def all_nicknames(texts) -> bool:
    """Every text a nickname (in bulk: a few string scans in C, not one match each)."""
    joined = "".join(texts)
    return (not texts or (joined.isascii() and joined.isalnum() and min(map(len, texts)) >= 1
                          and max(map(len, texts)) <= 19))


def is_fingerprint(text: str) -> bool:
    """40 ASCII hex digits (tor's base16_decode of a DIGEST_LEN identity)."""
    return _HEX_40.fullmatch(text) is not None


def is_ipv4(text: str) -> bool:
    """A dotted-quad IPv4 address."""
    return _IPV4.fullmatch(text) is not None


def all_match(lines: re.Pattern, texts) -> bool:
    """Every text is a whole match of ``lines`` (a multi-line pattern; one pass over all of them)."""
    return len(lines.findall("\n".join(texts))) == len(texts)


@lru_cache(maxsize=16384)
def parse_time(text: str) -> datetime:
    """``YYYY-MM-DD HH:MM:SS`` (ASCII) as a naive UTC datetime from ``FIRST_YEAR`` to before ``YEAR_LIMIT``.

    ValueError naming the text otherwise, as for a day that does not exist. Cached: times repeat.
    """
    match = _TIME.fullmatch(text)
    try:
        if match is None:
            raise ValueError
        when = datetime(*map(int, match.groups()))
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not a time (YYYY-MM-DD HH:MM:SS)") from None
    return check_year(when, text)


def check_year(when: datetime, text: str) -> datetime:
    """``when``, if its year is one we accept; ValueError naming ``text`` otherwise."""
    if not FIRST_YEAR <= when.year < YEAR_LIMIT:
        raise ValueError(f"{text[:40]!r} is not a time from {FIRST_YEAR} to {YEAR_LIMIT - 1}")
    return when


def parse_port(text: str, number_of_line: int, allow_zero: bool = True) -> int:
    """A port (1-65535, or 0 where ``allow_zero``) in ASCII digits; ValueError naming the line otherwise."""
    try:
        return number(text, 0 if allow_zero else 1, PORT_MAX)
    except ValueError:
        raise ValueError(f"line {number_of_line}: {text[:40]!r} is not a port") from None


def base64_hex(text: str) -> str:
    """Base64 (padding optional) as upper-case hex, as stem gives identities and digests."""
    try:
        return binascii.a2b_base64(text + "=" * (-len(text) % 4), strict_mode=True).hex().upper()
    except (binascii.Error, ValueError):
        raise ValueError(f"{text[:60]!r} is not base64") from None


@lru_cache(maxsize=16384)  # the same addresses in the consensus and every vote
def or_address(value: str) -> tuple[str, int, bool]:
    """An ``a`` line's ``address:port`` (IPv6 in brackets) as (address, port, is IPv6); ValueError otherwise."""
    address, _, port = value.rpartition(":")
    bare = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    for family, is_ipv6 in ((socket.AF_INET6, True), (socket.AF_INET, False)):
        try:
            socket.inet_pton(family, bare)
            return bare, parse_port(port, 0, allow_zero=False), is_ipv6
        except (OSError, ValueError):
            continue
    raise ValueError("has no valid address")
