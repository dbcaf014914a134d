"""Tor version status, classified the way tor itself does (versions.c).

tor_version_is_obsolete() sorts a relay's version against the consensus's
``server-versions`` into recommended, new (newer than all: "experimental"),
new in series, old (older than all: "obsolete") and unrecommended. Onionoo
publishes the same five names, so dashboards read familiar words.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import cast

RECOMMENDED = "recommended"
EXPERIMENTAL = "experimental"
NEW_IN_SERIES = "new_in_series"
OBSOLETE = "obsolete"
UNRECOMMENDED = "unrecommended"
UNKNOWN = "unknown"

STATUSES = (RECOMMENDED, EXPERIMENTAL, NEW_IN_SERIES, OBSOLETE, UNRECOMMENDED, UNKNOWN)

_VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:\.(\d+))?(?:-(\w+))?")
#: tor orders pre-releases before the release of the same number (versions.c).
_STATUS_RANK = {"dev": 0, "alpha": 1, "beta": 2, "rc": 3}
_RELEASE = 4


def parse_version(text: str | None) -> tuple[int, int, int, int, int] | None:
    """'0.4.8.9' -> (0, 4, 8, 9, 4); '0.4.9.1-alpha' -> (0, 4, 9, 1, 1); None if unreadable."""
    if not text:
        return None
    match = _VERSION.match(text.strip())
    if not match:
        return None
    *numbers, status = match.groups()
    rank = _RELEASE if status is None else _STATUS_RANK.get(status.lower(), 0)
    return cast("tuple[int, int, int, int, int]", (*(int(part or 0) for part in numbers), rank))  # _VERSION's 4 numbers


def series(text: str | None) -> str:
    """'0.4.8.9' -> '0.4.8' (tor's release series); 'unknown' if unreadable."""
    version = parse_version(text)
    return ".".join(map(str, version[:3])) if version else UNKNOWN


def classify(version_text: str | None, recommended: tuple[str, ...]) -> str:
    """The status of ``version_text`` against the recommended list."""
    return _classify(version_text, tuple(recommended))


@lru_cache(maxsize=4096)
def _classify(version_text: str | None, recommended: tuple[str, ...]) -> str:
    mine = parse_version(version_text)
    parsed = [parse_version(item) for item in recommended]
    listed = [item for item in parsed if item is not None]
    if mine is None or not listed:
        return UNKNOWN
    if mine in listed:
        return RECOMMENDED
    found_newer = any(item > mine for item in listed)
    found_older = any(item < mine for item in listed)
    in_series = [item for item in listed if item[:3] == mine[:3]]
    found_newer_in_series = any(item > mine for item in in_series)
    if not found_newer:
        return EXPERIMENTAL
    if in_series and not found_newer_in_series:
        return NEW_IN_SERIES
    if not found_older:
        return OBSOLETE
    return UNRECOMMENDED
