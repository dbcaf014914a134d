"""Relays that report overload: per relay (tor_relay) and for the network (tor_network), from server and
extra-info descriptors.

Since tor 0.4.6 a relay writes ``overload-general 1 <hour>`` into its server
descriptor after it found itself overloaded (proposal 328, dir-spec
"server-descriptor-format"): its out-of-memory handler ran, it dropped ntor
onionskins (at least 1 % over a 6 h assessment with 1,000 requests or
more), it ran out of local TCP ports, or (some versions) its DNS timed out
too often. The time is the hour of the last such event, rounded down. tor
keeps the line in the descriptors it publishes for 72 h after that hour
(rephist.c ``overload_happened_recently(.., 72)``: while time > now - 72 h);
another event moves the time and starts the 72 h again. Relay Search and
Onionoo mark a relay "overloaded" from this line alone.

A relay publishes a new descriptor only every 18 h or on a change, so a
descriptor can still carry a line whose 72 h have passed: the window is
applied here, at the period's valid-after, rather than trusting the line's
presence. A relay is overloaded in a period when its newest descriptor has the
line and valid-after - 72 h < time <= valid-after. A time after the
valid-after (a backfill replaying an hour with later descriptors) was not
reported yet in that period. Lines the parser ignored (malformed: see
``agent.parse.fastdesc``) count as no line, and are counted.

``overload-ratelimits`` and ``overload-fd-exhausted`` are in extra-info
descriptors, which the agent fetches incrementally by digest
(``agent.loop.extrainfo``) and remembers per relay between periods
(``Snapshot.extra_infos``: each relay's newest held). They are judged the
same way, each with the window tor writes it for (rephist.c): a relay's
``overload_fd_exhausted`` is 1 while valid-after - 72 h < time <= valid-after,
its ``overload_ratelimits`` while valid-after - 24 h < time <= valid-after
(tor drops that line after 24 h, not 72 h). Both are absent for relays
whose extra-info the agent does not hold (no fetch yet: unknown, not 0).

Pure: the period's relay table, its server descriptors and the extra-infos
held in, columns and points out. The descriptors are matched to relays as ``relays.build_table``
matches them (by fingerprint, the newest published).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from agent.metrics.relays import RelayTable
from agent.model.extrainfo import FD_EXHAUSTED_KEPT_SECONDS, RATELIMITS_KEPT_SECONDS, ExtraInfo
from agent.model.extrainfo import reported as line_reported
from agent.model.points import Point, point
from agent.model.relays import OVERLOAD_KEPT_SECONDS
from agent.model.time import unix


@dataclass(frozen=True)
class Overload:
    """Per relay of a table (its order): overload as of one period.

    ``since`` is the Unix time of the relay's ``overload-general`` line
    (NaN without a descriptor, without the line, or with an ignored line);
    ``known`` says which relays have a descriptor at all.
    """

    since: np.ndarray
    known: np.ndarray
    overloaded: np.ndarray
    age_seconds: np.ndarray
    ignored: int  # descriptors (newest of their relay) whose overload-general line was ignored
    # From extra-infos (``extra_of``): which relays have one held, and which report each overload now.
    extra: ExtraOverload | None = None

    @property
    def any_descriptor(self) -> bool:
        return bool(self.known.any())


@dataclass(frozen=True)
class ExtraOverload:
    """Per relay of a table (its order): the overload lines of its newest extra-info held, as of one period."""

    known: np.ndarray  # the agent holds an extra-info of the relay
    ratelimits: np.ndarray  # its overload-ratelimits time within 24 h before the valid-after
    fd_exhausted: np.ndarray  # its overload-fd-exhausted time within 72 h before the valid-after
    ignored: int = 0  # held extra-infos of consensus relays with an overload line ignored


def extra_of(table: RelayTable, extra_infos: Mapping[str, ExtraInfo], time: int) -> ExtraOverload:
    """Each relay's extra-info overload at ``time`` (the valid-after), from its newest extra-info held."""
    matched = [extra_infos.get(fingerprint) for fingerprint in table.fingerprints]
    known = np.array([extra is not None for extra in matched], bool)
    ratelimits = np.array([extra is not None and extra.ratelimits is not None
                           and line_reported(extra.ratelimits.at, time, RATELIMITS_KEPT_SECONDS)
                           for extra in matched], bool)
    fd = np.array([extra is not None and line_reported(extra.fd_exhausted, time, FD_EXHAUSTED_KEPT_SECONDS)
                   for extra in matched], bool)
    ignored = sum(1 for extra in matched if extra is not None and extra.ignored)
    return ExtraOverload(known, ratelimits, fd, ignored)


def overload_of(table: RelayTable, descriptors: list[Any], time: int,
                extra_infos: Mapping[str, ExtraInfo] | None = None) -> Overload:
    """Each relay's overload at ``time`` (the period's valid-after), from its newest descriptor in ``descriptors``
    and (``extra_infos``: the snapshot's, by fingerprint) its newest extra-info held.

    Reads ``overload_general`` (a naive UTC datetime or None) and
    ``overload_general_ignored`` of ``agent.parse.fastdesc`` descriptors; a
    descriptor without them (stem's, in tests) counts as one without the line.
    No ``extra_infos`` (none held, or extra-infos not fetched) leaves the
    extra-info fields out.
    """
    newest: dict[str, Any] = {}
    for descriptor in descriptors:
        known = newest.get(descriptor.fingerprint)
        if known is None or descriptor.published > known.published:
            newest[descriptor.fingerprint] = descriptor
    matched = [newest.get(fingerprint) for fingerprint in table.fingerprints] if newest else [None] * len(table)
    since = np.full(len(table), np.nan)
    ignored = 0
    for row, descriptor in enumerate(matched):
        if descriptor is None:
            continue
        moment: datetime | None = getattr(descriptor, "overload_general", None)
        if moment is not None:
            since[row] = unix(moment)
        elif getattr(descriptor, "overload_general_ignored", None) is not None:
            ignored += 1
    known = np.array([descriptor is not None for descriptor in matched], bool)
    age = time - since  # NaN stays NaN
    with np.errstate(invalid="ignore"):  # comparisons with NaN are False, as wanted
        reported = age >= 0
        overloaded = reported & (age < OVERLOAD_KEPT_SECONDS)
    return Overload(since=since, known=known, overloaded=overloaded, age_seconds=np.where(reported, age, np.nan),
                    ignored=ignored, extra=extra_of(table, extra_infos, time) if extra_infos else None)


def overload_fields(overload: Overload) -> dict[str, np.ndarray]:
    """The tor_relay columns (for ``relay.relay_points``'s ``more``): NaN, so left out, where unknown.

    ``overloaded`` is 0 or 1 for relays whose descriptor we have; absent for
    the others (no descriptor says nothing). ``overload_age_seconds`` is there
    whenever the newest descriptor has a line reported by the period, also
    past the 72 h (a stale line the relay has not replaced yet).
    """
    fields = {
        "overloaded": np.where(overload.known, overload.overloaded.astype(float), np.nan),
        "overload_age_seconds": overload.age_seconds,
    }
    extra = overload.extra
    if extra is not None:  # 0 or 1 where the relay's extra-info is held, else absent
        fields["overload_ratelimits"] = np.where(extra.known, extra.ratelimits.astype(float), np.nan)
        fields["overload_fd_exhausted"] = np.where(extra.known, extra.fd_exhausted.astype(float), np.nan)
    return fields


def overload_network_points(table: RelayTable, overload: Overload, time: int) -> list[Point]:
    """The tor_network fields: overloaded relays, their share of consensus weight, lines ignored; and from
    extra-infos the relays reporting rate-limit and fd overload among those whose extra-info is held.

    Each group is left out when its documents are missing (no server
    descriptor, no extra-info held): a 0 would read as "no relay is
    overloaded".
    """
    extra = overload.extra
    fields: dict[str, float | int] = {}
    if overload.any_descriptor:
        total = float(table.weight.sum())
        share = float(table.weight[overload.overloaded].sum()) / total if total > 0 else 0.0
        fields |= {"overloaded_relays": int(np.count_nonzero(overload.overloaded)),
                   "overloaded_weight_fraction": share, "overload_lines_ignored": overload.ignored}
    if extra is not None and extra.known.any():  # the counts are among the relays whose extra-info is held
        fields |= {"extra_info_relays": int(np.count_nonzero(extra.known)),
                   "overload_ratelimits_relays": int(np.count_nonzero(extra.ratelimits)),
                   "overload_fd_exhausted_relays": int(np.count_nonzero(extra.fd_exhausted)),
                   "extra_info_overload_lines_ignored": extra.ignored}
    return [point("tor_network", {}, fields, time)] if fields else []
