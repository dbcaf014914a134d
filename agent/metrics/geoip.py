"""Country of an IPv4 address from tor's own GeoIP file (Debian: tor-geoipdb).

The file is tor's ``geoip``: comment lines, then ``LOW,HIGH,CC`` with the
addresses as integers, sorted and non-overlapping. Loading is the only I/O;
lookups are a vectorised binary search. The ~390,000 ranges are held as
two int64 columns and a uint16 code per range (about 7 MB; as Python
lists they took 60 MB while loading). ``load_or_empty`` keeps those columns
in a cache (``agent.metrics.geoipcache``) keyed by the file's content, so
only the first start after the file changes parses it (0.5-1 s; loading the
cache takes milliseconds).
"""

from __future__ import annotations

import logging
import re
import socket
from itertools import islice
from pathlib import Path

import numpy as np

from agent.metrics import geoipcache

log = logging.getLogger(__name__)

UNKNOWN = "??"
DEFAULT_PATH = Path("/usr/share/tor/geoip")
_CHUNK_LINES = 50_000  # lines parsed at a time while loading, so the Python objects of one chunk are all we hold
KNOWN_LIMIT = 20_000  # addresses whose country is remembered: a period's relays (~7,000) and then some


class GeoIP:
    """IPv4 ranges and their two-letter country codes (``names[code]``; code 0 is '??')."""

    def __init__(self, starts: np.ndarray, ends: np.ndarray, codes: np.ndarray, names: list[str]):
        self.starts, self.ends, self.codes, self.names = starts, ends, codes, names
        self._known: dict[str, str] = {}  # address -> country of recent lookups (bounded: KNOWN_LIMIT)

    @classmethod
    def load(cls, path: Path | str = DEFAULT_PATH) -> GeoIP:
        names = {UNKNOWN: 0}
        starts, ends, codes = [], [], []
        with open(path, encoding="ascii", errors="replace") as lines:
            number = 0
            while chunk := list(islice(lines, _CHUNK_LINES)):
                low, high, code = _parse_chunk(chunk, number, path, names)
                starts.append(low)
                ends.append(high)
                codes.append(code)
                number += len(chunk)
        starts, ends, codes = (np.concatenate(parts) if parts else np.zeros(0, dtype)
                               for parts, dtype in ((starts, np.int64), (ends, np.int64), (codes, np.uint16)))
        order = np.argsort(starts, kind="stable")
        return cls(starts[order], ends[order], codes[order], list(names))

    @classmethod
    def empty(cls) -> GeoIP:
        """A database that knows no country (every lookup says '??')."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint16), [UNKNOWN])

    def countries(self, addresses: list[str]) -> list[str]:
        """Two-letter codes (upper case) for IPv4 addresses; '??' where unknown.

        Relays keep their addresses from one period to the next, so the
        countries of the last lookups are remembered (when full, only those
        of the addresses at hand are kept).
        """
        if len(self.starts) == 0 or not addresses:
            return [UNKNOWN] * len(addresses)
        countries = list(map(self._known.get, addresses))
        missing = [row for row, country in enumerate(countries) if country is None]
        if missing:
            new_addresses = [addresses[row] for row in missing]
            fresh = self._look_up(new_addresses)
            for row, country in zip(missing, fresh):
                countries[row] = country
            if len(self._known) + len(fresh) > KNOWN_LIMIT:
                self._known = dict(zip(addresses, countries))
            else:
                self._known.update(zip(new_addresses, fresh))
        return countries

    def _look_up(self, addresses: list[str]) -> list[str]:
        numbers = np.fromiter(map(_to_int, addresses), np.int64, len(addresses))
        index = np.searchsorted(self.starts, numbers, side="right") - 1
        safe = np.clip(index, 0, None)
        inside = (index >= 0) & (numbers <= self.ends[safe]) & (numbers >= 0)
        names = self.names
        return [names[code] for code in np.where(inside, self.codes[safe], 0).tolist()]


_LINE = re.compile(r"^([0-9]+),([0-9]+),([^,\s]*)\r?$", re.M)


def _parse_chunk(lines: list[str], first: int, path, names: dict[str, int]):
    """The ranges of some lines of the file: all at once, or line by line to name a malformed one."""
    rows = _LINE.findall("".join(lines))
    if len(rows) == sum(1 for line in lines if line.strip() and not line.startswith("#")):
        lows, highs, codes = zip(*rows) if rows else ((), (), ())
        indices = {code: names.setdefault(code.upper() if len(code) == 2 else UNKNOWN, len(names))
                   for code in dict.fromkeys(codes)}
        try:
            return (np.fromiter(map(int, lows), np.int64, len(lows)),
                    np.fromiter(map(int, highs), np.int64, len(highs)),
                    np.fromiter(map(indices.__getitem__, codes), np.uint16, len(codes)))
        except OverflowError:
            raise ValueError(f"{path}: a number out of range in lines {first + 1}-{first + len(lines)}") from None
    return _parse_lines(lines, first, path, names)


def _parse_lines(lines: list[str], first: int, path, names: dict[str, int]):
    starts, ends, codes = [], [], []
    for number, line in enumerate(lines, start=first + 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            low, high, code = line.strip().split(",")
            starts.append(int(low))
            ends.append(int(high))
            code = code.upper() if len(code) == 2 else UNKNOWN
            codes.append(names.setdefault(code, len(names)))
        except ValueError:
            raise ValueError(f"{path}:{number}: not a LOW,HIGH,CC line: {line.strip()[:60]!r}") from None
    try:
        return np.array(starts, np.int64), np.array(ends, np.int64), np.array(codes, np.uint16)
    except OverflowError:
        raise ValueError(f"{path}: a number out of range in lines {first + 1}-{first + len(lines)}") from None


def _to_int(address: str) -> int:
    try:
        return int.from_bytes(socket.inet_pton(socket.AF_INET, address), "big")
    except (OSError, TypeError, ValueError):
        return -1


def load_or_empty(path: Path | str | None, cache_dir: Path | str | None = None) -> GeoIP:
    """The GeoIP database at ``path``, or an empty one with a warning if unreadable.

    Through the cache in ``cache_dir`` (default: the user's cache directory,
    ``agent.metrics.geoipcache.default_cache_dir``): the same database as
    ``GeoIP.load(path)``, parsed only when the file changed since the cache
    was built. The cache failing in any way costs the parse, never the load.
    """
    if path is None:
        return GeoIP.empty()
    try:
        return _cached(path, Path(cache_dir) if cache_dir is not None else geoipcache.default_cache_dir())
    except OSError as error:
        log.warning("GeoIP file %s unreadable (%s); countries will be '??'", path, error.strerror)
        return GeoIP.empty()


def _cached(path: Path | str, cache_dir: Path | None) -> GeoIP:
    if cache_dir is None:
        return GeoIP.load(path)
    key = geoipcache.source_key(path)  # reads the file: OSError here is the file's, not the cache's
    cache = geoipcache.cache_file(path, cache_dir)
    columns = geoipcache.read(cache, key)
    if columns is not None:
        return GeoIP(*columns)
    geoip = GeoIP.load(path)
    if geoipcache.source_key(path) == key:  # not changed while it was parsed: the cache holds what the key names
        geoipcache.write(cache, key, (geoip.starts, geoip.ends, geoip.codes, geoip.names))
    return geoip
