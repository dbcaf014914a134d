"""One row per relay of the consensus, as numpy columns, built in one linear pass.

Network, relay and operator metrics all read this table rather than walking
stem objects again. Votes and descriptors are joined by fingerprint with
dicts, so the cost stays linear in relays times authorities.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

from agent.geoip import GeoIP
from agent.metrics import versions

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
    measured: list[list[int] | None]  # the Measured= values votes gave it

    def __len__(self) -> int:
        return len(self.fingerprints)

    @property
    def exit_role(self) -> np.ndarray:
        """Relays clients use as exits: Exit and not BadExit."""
        return self.flags["Exit"] & ~self.flags["BadExit"]


def table_of(snapshot, consensus, geoip: GeoIP) -> RelayTable:
    """The relay table of a period's ``consensus``, with the period's descriptors and votes."""
    return build_table(consensus, snapshot.server_descriptors, geoip, snapshot.votes())


def vote_tallies(votes: list) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Per fingerprint: how many votes list it, and the Measured= values it got."""
    listed: dict[str, int] = {}
    measured: dict[str, list[int]] = {}
    for vote in votes:
        for fingerprint, entry in vote.routers.items():
            listed[fingerprint] = listed.get(fingerprint, 0) + 1
            if entry.measured is not None:
                measured.setdefault(fingerprint, []).append(entry.measured)
    return listed, measured


def build_table(consensus, descriptors: list, geoip: GeoIP, votes: list = ()) -> RelayTable:
    """The relay table of ``consensus``; ``descriptors`` and ``votes`` are matched by fingerprint."""
    routers = list(consensus.routers.values())
    listed, measured = vote_tallies(votes)
    by_fingerprint = {}
    for descriptor in descriptors:  # a relay may publish several in a period: keep the newest
        known = by_fingerprint.get(descriptor.fingerprint)
        if known is None or descriptor.published > known.published:
            by_fingerprint[descriptor.fingerprint] = descriptor
    matched = [by_fingerprint.get(router.fingerprint) for router in routers]
    recommended = tuple(str(version) for version in consensus.server_versions)
    version_text = [str(router.version) if router.version is not None else None for router in routers]
    contacts = [_contact(descriptor) for descriptor in matched]
    return RelayTable(
        fingerprints=[router.fingerprint for router in routers],
        flags={flag: np.fromiter((flag in router.flags for router in routers), bool, len(routers))
               for flag in sorted(set(KNOWN_FLAGS) | set(consensus.known_flags))},
        weight=np.fromiter((router.bandwidth or 0 for router in routers), float, len(routers)),
        ipv6_orport=np.fromiter((any(is_v6 for _, _, is_v6 in router.or_addresses) for router in routers),
                                bool, len(routers)),
        version=version_text,
        version_status=[versions.classify(text, recommended) for text in version_text],
        version_series=[versions.series(text) for text in version_text],
        country=geoip.countries([router.address for router in routers]),
        platform=[_platform(descriptor) for descriptor in matched],
        operator_id=[operator_id(contact) for contact in contacts],
        operator_label=[contact[:64] if contact else None for contact in contacts],
        family_id=_families(matched),
        advertised_bytes=np.fromiter((_advertised(descriptor) for descriptor in matched), float, len(routers)),
        ipv6_exit=np.fromiter((_ipv6_exit(descriptor) for descriptor in matched), bool, len(routers)),
        listed_by=np.fromiter((listed.get(router.fingerprint, 0) for router in routers), np.int16, len(routers)),
        measured=[measured.get(router.fingerprint) for router in routers],
    )


def _contact(descriptor) -> str | None:
    """The contact line, normalised: printable ASCII, spaces collapsed, lower case."""
    if descriptor is None or not descriptor.contact:
        return None
    raw = descriptor.contact.decode("utf-8", "replace") if isinstance(descriptor.contact, bytes) \
        else str(descriptor.contact)
    text = re.sub(r"\s+", " ", "".join(ch for ch in raw if ch.isprintable())).strip().lower()
    return text or None


def operator_id(contact: str | None) -> str | None:
    """A short stable key for a normalised contact line (first 12 hex of sha256)."""
    return hashlib.sha256(contact.encode()).hexdigest()[:12] if contact else None


def _platform(descriptor) -> str:
    if descriptor is None:
        return NO_DESCRIPTOR
    platform = descriptor.platform.decode("utf-8", "replace") if isinstance(descriptor.platform, bytes) \
        else (descriptor.platform or "")
    system = platform.partition(" on ")[2]
    for name in OS_NAMES:
        if system.startswith(name):
            return name
    return OTHER


def _advertised(descriptor) -> float:
    """Advertised bandwidth as Tor Metrics defines it: min(rate, burst, observed), bytes/s."""
    if descriptor is None:
        return np.nan
    values = [value for value in (descriptor.average_bandwidth, descriptor.burst_bandwidth,
                                  descriptor.observed_bandwidth) if value is not None]
    return float(min(values)) if values else np.nan


def _ipv6_exit(descriptor) -> bool:
    policy = getattr(descriptor, "exit_policy_v6", None) if descriptor is not None else None
    return bool(policy is not None and policy.is_exiting_allowed())


def _families(descriptors: list) -> list[str | None]:
    """Effective family of each relay: relays that list each other, joined transitively.

    Only ``$FINGERPRINT`` entries count (nicknames are ambiguous); the family
    key is the smallest fingerprint of the group. Relays alone get None.
    """
    declared = {}
    for descriptor in descriptors:
        if descriptor is None:
            continue
        members = {entry.lstrip("$").split("=")[0].split("~")[0].upper()
                   for entry in (descriptor.family or ()) if entry.startswith("$")}
        declared[descriptor.fingerprint] = members
    parent = {fingerprint: fingerprint for fingerprint in declared}

    def root(node):
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for fingerprint, members in declared.items():
        for member in members:
            if member in declared and fingerprint in declared[member]:
                low, high = sorted((root(fingerprint), root(member)))
                parent[high] = low
    groups: dict[str, int] = {}
    for fingerprint in declared:
        groups[root(fingerprint)] = groups.get(root(fingerprint), 0) + 1
    result = []
    for descriptor in descriptors:
        if descriptor is None:
            result.append(None)
            continue
        key = root(descriptor.fingerprint)
        result.append(key if groups[key] > 1 else None)
    return result
