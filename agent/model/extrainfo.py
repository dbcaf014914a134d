"""Relays' extra-info descriptors as the agent keeps them: which document (digest, published) and its overload lines.

A relay publishes an extra-info descriptor with each server descriptor and
names it there by ``extra-info-digest`` (the SHA-1 of the document up to
and including ``router-signature\\n``, dir-spec "extra-info-digest"). Of
the ~60 lines of one the agent reads only two (tor 0.4.6+, proposal 328):

- ``overload-ratelimits``: the relay's BandwidthRate / BandwidthBurst token
  buckets ran dry (at most once a minute counted, read and write apart);
  tor writes it while the hour of the last such event is less than 24 h ago
  (rephist.c ``rep_hist_get_overload_stats_lines``:
  ``overload_happened_recently(.., 24)``);
- ``overload-fd-exhausted``: the relay ran out of file descriptors (sockets);
  tor writes it for 72 h, like ``overload-general``.

The agent fetches only the extra-infos whose digest it has not read yet
(``wanted_digests``) and remembers each relay's newest one between periods
(``newest_per_relay``; the state keeps it), so a relay's overload survives
periods without a fetch. Whether a line counts in a period is judged at the
period's valid-after with tor's own window for that line (``reported``),
not from the line's presence: an extra-info is published every ~18 h.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from agent.model.time import unix

#: tor writes ``overload-ratelimits`` while its time is within the last 24 h (rephist.c).
RATELIMITS_KEPT_SECONDS = 24 * 3600
#: tor writes ``overload-fd-exhausted`` while its time is within the last 72 h (rephist.c), as overload-general.
FD_EXHAUSTED_KEPT_SECONDS = 72 * 3600
#: A relay whose server descriptors have named no extra-info for this long is forgotten (the state stays bounded).
FORGET_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class RateLimitOverload:
    """An ``overload-ratelimits`` line: the hour of the last event, the configured limits and the counts."""

    at: datetime  # naive UTC, as written (tor rounds down to the hour)
    rate_limit: int  # BandwidthRate, bytes/s, as configured
    burst_limit: int  # BandwidthBurst, bytes
    read_count: int  # minutes in which reading hit a limit
    write_count: int  # minutes in which writing hit a limit


@dataclass(frozen=True)
class ExtraInfo:
    """What the agent keeps of one relay's extra-info descriptor."""

    nickname: str
    fingerprint: str  # upper-case hex
    published: datetime  # naive UTC
    digest: str  # SHA-1, upper-case hex: what a server descriptor's extra-info-digest names
    ratelimits: RateLimitOverload | None = None
    fd_exhausted: datetime | None = None  # the overload-fd-exhausted time (naive UTC)
    ignored: tuple[str, ...] = ()  # overload lines that were there but not read, each with why


def reported(moment: datetime | None, time: int, kept_seconds: int) -> bool:
    """Whether a line with this time counts at ``time`` (a valid-after): ``time - kept < moment <= time``.

    tor writes a line while its time is later than now - kept (rephist.c
    ``overload_happened_recently``); a time after ``time`` (a backfill of an
    hour whose documents came later) was not reported yet.
    """
    if moment is None:
        return False
    return 0 <= time - unix(moment) < kept_seconds


def newest_per_relay(remembered: Mapping[str, ExtraInfo], fetched: Iterable[ExtraInfo]) -> dict[str, ExtraInfo]:
    """Each relay's newest extra-info (by ``published``; a tie keeps the remembered one), remembered or fetched."""
    newest = dict(remembered)
    for extra in fetched:
        known = newest.get(extra.fingerprint)
        if known is None or extra.published > known.published:
            newest[extra.fingerprint] = extra
    return newest


def wanted_digests(named: Mapping[str, str], held: Mapping[str, ExtraInfo]) -> list[str]:
    """The digests to fetch, sorted: those the relays' server descriptors name (``named``: fingerprint ->
    extra-info-digest) that the relay's remembered extra-info (``held``) is not."""
    return sorted({digest for fingerprint, digest in named.items()
                   if (known := held.get(fingerprint)) is None or known.digest != digest})
