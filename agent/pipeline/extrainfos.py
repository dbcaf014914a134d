"""The state's memory of relays' extra-info descriptors (table ``extra_infos``, see ``agent.pipeline.state``).

Per relay the newest extra-info read: its digest (so the next period does
not fetch it again, ``agent.loop.extrainfo``), published time and overload
lines (so a relay's overload-ratelimits / overload-fd-exhausted hold
through periods in which nothing new was fetched). ``seen`` is the last live
period whose server descriptors named an extra-info for the relay; a relay
not seen for ``FORGET_SECONDS`` (7 days) is dropped, so the table holds
about the relays of the last week (~10,000 rows, ~2 MB). A row that cannot
be read is quarantined like any other (``State``) and costs only itself:
its extra-info is fetched again.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from agent.model.extrainfo import FORGET_SECONDS, ExtraInfo, RateLimitOverload
from agent.model.snapshot import Snapshot
from agent.model.time import unix
from agent.pipeline.state import State


def remembered_extra_infos(state: State) -> dict[str, ExtraInfo]:
    """Each relay's newest extra-info as the state holds it (unreadable rows quarantined)."""
    found: dict[str, ExtraInfo] = {}
    rows = state.db.execute("SELECT fingerprint, nickname, digest, published, overload FROM extra_infos").fetchall()
    for fingerprint, nickname, digest, published, overload in rows:
        try:
            found[fingerprint] = _decoded(fingerprint, nickname, digest, published, overload)
        except (ValueError, TypeError, KeyError, OverflowError, OSError) as error:
            state._quarantine("extra_infos", "fingerprint", fingerprint, overload, str(error))
    return found


def save_extra_infos(state: State, snapshot: Snapshot, time: int) -> int:
    """Remembers a live period's extra-infos (``time``: its valid-after); returns how many rows changed.

    Writes the relays whose newest extra-info is not the stored one, marks
    every relay the server descriptors named as seen, and forgets the relays
    not seen for 7 days, in one transaction.
    """
    stored = dict(state.db.execute("SELECT fingerprint, digest FROM extra_infos").fetchall())
    changed = [extra for fingerprint, extra in snapshot.extra_infos.items() if stored.get(fingerprint) != extra.digest]
    named = sorted(snapshot.extra_info_digests)
    with state.db:
        state.db.execute("BEGIN")
        state.db.executemany("INSERT OR REPLACE INTO extra_infos VALUES (?, ?, ?, ?, ?, ?)",
                             [(extra.fingerprint, extra.nickname, extra.digest, unix(extra.published), time,
                               _encoded(extra)) for extra in changed])
        state.db.executemany("UPDATE extra_infos SET seen = MAX(seen, ?) WHERE fingerprint = ?",
                             [(time, fingerprint) for fingerprint in named])
        state.db.execute("DELETE FROM extra_infos WHERE seen < ?", (time - FORGET_SECONDS,))
    return len(changed)


def _encoded(extra: ExtraInfo) -> str:
    limits = extra.ratelimits
    return json.dumps({
        "ratelimits": None if limits is None else [unix(limits.at), limits.rate_limit, limits.burst_limit,
                                                   limits.read_count, limits.write_count],
        "fd_exhausted": None if extra.fd_exhausted is None else unix(extra.fd_exhausted),
        "ignored": list(extra.ignored)})


def _decoded(fingerprint: Any, nickname: Any, digest: Any, published: Any, overload: Any) -> ExtraInfo:
    """A row back as an ExtraInfo; ValueError, TypeError or KeyError if it is not what ``_encoded`` writes."""
    if not all(isinstance(text, str) for text in (fingerprint, nickname, digest, overload)):
        raise TypeError("a text column holds something else")
    data = json.loads(overload)
    limits = data["ratelimits"]
    ratelimits = None
    if limits is not None:
        if not (isinstance(limits, list) and len(limits) == 5 and all(type(n) is int for n in limits)):
            raise ValueError("ratelimits is not five whole numbers")
        ratelimits = RateLimitOverload(_time(limits[0]), *limits[1:])
    fd = data["fd_exhausted"]
    ignored = data["ignored"]
    if not (isinstance(ignored, list) and all(isinstance(reason, str) for reason in ignored)):
        raise ValueError("ignored is not a list of reasons")
    return ExtraInfo(nickname, fingerprint, _time(published), digest, ratelimits,
                     None if fd is None else _time(fd), tuple(ignored))


def _time(seconds: Any) -> datetime:
    """Unix seconds as naive UTC (as the parsers give times)."""
    if type(seconds) is not int:
        raise TypeError(f"not a time: {seconds!r:.40}")
    return datetime.fromtimestamp(seconds, timezone.utc).replace(tzinfo=None)
