"""One row per relay of the consensus, as numpy columns, built in one linear pass.

Network, relay and operator metrics all read this table rather than walking
stem objects again. Votes and descriptors are joined by fingerprint with
dicts, so the cost stays linear in relays times authorities.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from agent.metrics.geoip import GeoIP
from agent.model import versions
from agent.model.ciiss import ContactFields, parse_contact
from agent.model.entries import ABSENT, RouterEntries, entries_of
from agent.model.family import effective_families, family_ids, normalised_contact, operator_key
from agent.model.time import unix

#: Every flag tor has voted in recent years; a flag missing from a consensus
#: is reported as 0 relays, not left out, so dashboards keep their series.
KNOWN_FLAGS = ("Authority", "BadExit", "Exit", "Fast", "Guard", "HSDir", "MiddleOnly", "NoEdConsensus",
               "Running", "Stable", "StaleDesc", "Sybil", "V2Dir", "Valid")

OS_NAMES = ("Linux", "FreeBSD", "OpenBSD", "NetBSD", "DragonFly", "Windows", "Darwin", "SunOS")
OTHER, NO_DESCRIPTOR = "other", "unknown"


@dataclass
class RelayTable:
    """Columns of per-relay facts for the relays of one consensus."""

    fingerprints: list[str]
    flags: dict[str, np.ndarray]
    weight: np.ndarray
    ipv6_orport: np.ndarray
    version: list[str | None]
    version_status: list[str]
    version_series: list[str]
    country: list[str]
    platform: list[str]
    operator_id: list[str | None]
    operator_label: list[str | None]
    family_id: list[str | None]
    advertised_bytes: np.ndarray
    ipv6_exit: np.ndarray
    listed_by: np.ndarray  # votes listing the relay
    measured_count: np.ndarray  # votes giving it a Measured= value
    measured_median: np.ndarray  # the median of those values (NaN without any)
    # The newest descriptor's contact line read as CIISS (agent.model.ciiss); parse_contact(None) without one.
    # Empty for a table made without contacts (by hand in tests): read as no contact line at all.
    contacts: list[ContactFields] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.fingerprints)

    @property
    def exit_role(self) -> np.ndarray:
        """Relays clients use as exits: Exit and not BadExit."""
        return self.flags["Exit"] & ~self.flags["BadExit"]


def table_of(snapshot, consensus, geoip: GeoIP) -> RelayTable:
    """The relay table of a period's ``consensus``, with the period's descriptors and votes."""
    return build_table(consensus, snapshot.server_descriptors, geoip, snapshot.votes())


def vote_tallies(relays: RouterEntries, votes: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per relay of ``relays``: votes listing it, votes measuring it, and the median Measured= value."""
    listed = np.zeros(len(relays), np.int16)
    values = np.full((len(votes), len(relays)), np.nan)
    for index, vote in enumerate(votes):
        entries = entries_of(vote)
        rows = entries.indices_in(relays)
        present = rows >= 0
        listed[rows[present]] += 1  # a fingerprint is listed once per vote
        measured = present & (entries.measured != ABSENT)
        values[index, rows[measured]] = entries.measured[measured]
    counts = np.count_nonzero(~np.isnan(values), axis=0)
    medians = np.full(len(relays), np.nan)
    if counts.any():
        medians[counts > 0] = np.nanmedian(values[:, counts > 0], axis=0)
    return listed, counts, medians


def build_table(consensus, descriptors: list, geoip: GeoIP, votes: list = ()) -> RelayTable:
    """The relay table of ``consensus``; ``descriptors`` and ``votes`` are matched by fingerprint."""
    relays = entries_of(consensus)
    listed, measured_count, measured_median = vote_tallies(relays, votes)
    by_fingerprint = {}
    for descriptor in descriptors:  # a relay may publish several in a period: keep the newest
        known = by_fingerprint.get(descriptor.fingerprint)
        if known is None or descriptor.published > known.published:
            by_fingerprint[descriptor.fingerprint] = descriptor
    matched = [by_fingerprint.get(fingerprint) for fingerprint in relays.fingerprints] if by_fingerprint \
        else [None] * len(relays)
    recommended = tuple(str(version) for version in consensus.server_versions)
    version_text = _version_texts(relays)
    raw_contacts = [d.contact if d is not None else None for d in matched]
    contacts = per_distinct(normalised_contact, raw_contacts)
    return RelayTable(
        fingerprints=relays.fingerprints,
        flags={flag: relays.has_flag(flag) for flag in sorted(set(KNOWN_FLAGS) | set(consensus.known_flags))},
        weight=np.maximum(relays.bandwidth, 0).astype(float),
        ipv6_orport=relays.has_ipv6_orport(),
        version=version_text,
        version_status=per_distinct(lambda text: versions.classify(text, recommended), version_text),
        version_series=per_distinct(versions.series, version_text),
        country=geoip.countries(relays.addresses),
        platform=per_distinct(_platform_name, [d.platform if d is not None else _ABSENT for d in matched]),
        operator_id=per_distinct(operator_id, contacts),
        operator_label=[contact[:64] if contact else None for contact in contacts],
        family_id=_families(matched, unix(consensus.valid_after) if getattr(consensus, "valid_after", None) else None),
        advertised_bytes=_advertised(matched),
        ipv6_exit=np.array(per_distinct(_ipv6_exit, [getattr(d, "exit_policy_v6", None) for d in matched]), bool),
        listed_by=listed,
        measured_count=measured_count,
        measured_median=measured_median,
        contacts=per_distinct(parse_contact, raw_contacts),
    )


_ABSENT = object()  # no descriptor (a descriptor without a platform line is another thing)


def per_distinct(function, values: list) -> list:
    """``[function(value) for value in values]``, calling ``function`` once per distinct value."""
    results = {value: function(value) for value in dict.fromkeys(values)}
    return list(map(results.__getitem__, values))


def _version_texts(relays: RouterEntries) -> list[str | None]:
    """Each relay's tor version as text (None without a v line or for other software)."""
    texts = {line: (str(version) if version is not None else None)
             for line, version in dict(zip(relays.version_lines, relays.versions)).items()}
    return [texts[line] for line in relays.version_lines]


def operator_id(contact: str | None) -> str | None:
    """A short stable key for a normalised contact line (first 12 hex of sha256)."""
    return operator_key(contact) if contact else None


def _platform_name(platform) -> str:
    """The operating system of a descriptor's platform line (``unknown`` without a descriptor)."""
    if platform is _ABSENT:
        return NO_DESCRIPTOR
    text = platform.decode("utf-8", "replace") if isinstance(platform, bytes) else (platform or "")
    system = text.partition(" on ")[2]
    for name in OS_NAMES:
        if system.startswith(name):
            return name
    return OTHER


#: The largest bandwidth a descriptor can give: tor reads them as int (routerparse.c). The parser refuses larger
#: ones; a descriptor made otherwise (stem's, in tests) has any larger value read as unknown, never overflowing.
MAX_DESCRIPTOR_BANDWIDTH = 2 ** 31 - 1


def _rate(value) -> float:
    """A descriptor's bandwidth value in bytes/s, NaN when absent or outside 0-MAX_DESCRIPTOR_BANDWIDTH."""
    return float(value) if value is not None and 0 <= value <= MAX_DESCRIPTOR_BANDWIDTH else np.nan


def _advertised(descriptors: list) -> np.ndarray:
    """Advertised bandwidth as Tor Metrics defines it: min(rate, burst, observed), bytes/s (NaN: none)."""
    if not any(descriptors):
        return np.full(len(descriptors), np.nan)
    rates = np.array([[_rate(value) for value in (d.average_bandwidth, d.burst_bandwidth, d.observed_bandwidth)]
                      if d is not None else [np.nan] * 3 for d in descriptors], float).reshape(len(descriptors), 3)
    advertised = np.full(len(descriptors), np.nan)
    known = ~np.isnan(rates).all(axis=1)
    advertised[known] = np.nanmin(rates[known], axis=1)
    return advertised


def _ipv6_exit(policy) -> bool:
    return bool(policy is not None and policy.is_exiting_allowed())


def _families(descriptors: list, now: int | None = None) -> list[str | None]:
    """Effective family of each relay: relays that list each other or share a family ID valid at ``now`` (tor
    0.4.9 family-certs, ``agent.model.family``), joined transitively.

    Only ``$FINGERPRINT`` entries count (nicknames are ambiguous); the family
    key is the smallest fingerprint of the group. Relays alone get None.
    """
    declared, ids = {}, {}
    for descriptor in descriptors:
        if descriptor is None:
            continue
        members = {entry.lstrip("$").split("=")[0].split("~")[0].upper()
                   for entry in (descriptor.family or ()) if entry.startswith("$")}
        declared[descriptor.fingerprint] = members
        ids[descriptor.fingerprint] = family_ids(descriptor, now)
    family_of = effective_families(declared, ids)
    groups = Counter(family_of.values())
    result = []
    for descriptor in descriptors:
        if descriptor is None:
            result.append(None)
            continue
        key = family_of[descriptor.fingerprint]
        result.append(key if groups[key] > 1 else None)
    return result
