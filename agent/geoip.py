"""Country of an IPv4 address from tor's own GeoIP file (Debian: tor-geoipdb).

The file is tor's ``geoip``: comment lines, then ``LOW,HIGH,CC`` with the
addresses as integers, sorted and non-overlapping. Loading is the only I/O;
lookups are a vectorised binary search.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

UNKNOWN = "??"
DEFAULT_PATH = Path("/usr/share/tor/geoip")


class GeoIP:
    """IPv4 ranges and their two-letter country codes."""

    def __init__(self, starts: np.ndarray, ends: np.ndarray, codes: np.ndarray):
        self.starts, self.ends, self.codes = starts, ends, codes

    @classmethod
    def load(cls, path: Path | str = DEFAULT_PATH) -> "GeoIP":
        starts, ends, codes = [], [], []
        with open(path, encoding="ascii", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip() or line.startswith("#"):
                    continue
                try:
                    low, high, code = line.strip().split(",")
                    starts.append(int(low))
                    ends.append(int(high))
                    codes.append(code.upper() if len(code) == 2 else UNKNOWN)
                except ValueError:
                    raise ValueError(f"{path}:{number}: not a LOW,HIGH,CC line: {line.strip()[:60]!r}") from None
        order = np.argsort(np.array(starts, dtype=np.int64), kind="stable")
        return cls(np.array(starts, dtype=np.int64)[order], np.array(ends, dtype=np.int64)[order],
                   np.array(codes, dtype=object)[order])

    @classmethod
    def empty(cls) -> "GeoIP":
        """A database that knows no country (every lookup says '??')."""
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, object))

    def countries(self, addresses: list[str]) -> list[str]:
        """Two-letter codes (upper case) for IPv4 addresses; '??' where unknown."""
        numbers = np.array([_to_int(address) for address in addresses], dtype=np.int64)
        if len(self.starts) == 0 or len(numbers) == 0:
            return [UNKNOWN] * len(addresses)
        index = np.searchsorted(self.starts, numbers, side="right") - 1
        safe = np.clip(index, 0, None)
        inside = (index >= 0) & (numbers <= self.ends[safe]) & (numbers >= 0)
        return [code if hit else UNKNOWN for code, hit in zip(self.codes[safe], inside)]


def _to_int(address: str) -> int:
    try:
        return int(ipaddress.IPv4Address(address))
    except ValueError:
        return -1


def load_or_empty(path: Path | str | None) -> GeoIP:
    """The GeoIP database at ``path``, or an empty one with a warning if unreadable."""
    if path is None:
        return GeoIP.empty()
    try:
        return GeoIP.load(path)
    except OSError as error:
        log.warning("GeoIP file %s unreadable (%s); countries will be '??'", path, error.strerror)
        return GeoIP.empty()
