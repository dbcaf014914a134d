"""Relays that report overload: per relay (tor_relay) and for the network (tor_network), from server descriptors.

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
descriptors, which the agent does not fetch (docs/alerts.md says why).

Pure: the period's relay table and its server descriptors in, columns and
points out. The descriptors are matched to relays as ``relays.build_table``
matches them (by fingerprint, the newest published).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from agent.metrics.relays import RelayTable
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

    @property
    def any_descriptor(self) -> bool:
        return bool(self.known.any())


def overload_of(table: RelayTable, descriptors: list[Any], time: int) -> Overload:
    """Each relay's overload at ``time`` (the period's valid-after), from its newest descriptor in ``descriptors``.

    Reads ``overload_general`` (a naive UTC datetime or None) and
    ``overload_general_ignored`` of ``agent.parse.fastdesc`` descriptors; a
    descriptor without them (stem's, in tests) counts as one without the line.
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
                    ignored=ignored)


def overload_fields(overload: Overload) -> dict[str, np.ndarray]:
    """The tor_relay columns (for ``relay.relay_points``'s ``more``): NaN, so left out, where unknown.

    ``overloaded`` is 0 or 1 for relays whose descriptor we have; absent for
    the others (no descriptor says nothing). ``overload_age_seconds`` is there
    whenever the newest descriptor has a line reported by the period, also
    past the 72 h (a stale line the relay has not replaced yet).
    """
    return {
        "overloaded": np.where(overload.known, overload.overloaded.astype(float), np.nan),
        "overload_age_seconds": overload.age_seconds,
    }


def overload_network_points(table: RelayTable, overload: Overload, time: int) -> list[Point]:
    """The tor_network fields: overloaded relays, their share of consensus weight, lines ignored.

    None when the period has no descriptor at all (their fetch failed): a 0
    would read as "no relay is overloaded".
    """
    if not overload.any_descriptor:
        return []
    total = float(table.weight.sum())
    share = float(table.weight[overload.overloaded].sum()) / total if total > 0 else 0.0
    return [point("tor_network", {}, {"overloaded_relays": int(np.count_nonzero(overload.overloaded)),
                                      "overloaded_weight_fraction": share,
                                      "overload_lines_ignored": overload.ignored}, time)]
