"""Sybil groups: relays that arrive together and share traits, reported as one cluster with what they share.

A lone new relay is normal; a batch of new relays behind one /24, with one
contact, the same version and platform, the same ports and nicknames that
differ only in digits is how floods looked (LizardNSA 2014, the 2020 exit
groups). For each trait, relays of the period's arrivals with the same value
form a candidate; the largest candidate is reported with every other trait
its members share (most of them, ``share``), then its members are removed
and the next is looked for. Arrivals include returning relays, so the
"identical uptime pattern" trait (sybilhunter's) catches groups that go
offline and come back in step. ``SybilGroups`` is the detector the engine runs.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from agent.detect.facts import RelayFacts
from agent.detect.protocol import BaseDetector, Period, Scores
from agent.detect.settings import setting
from agent.model.findings import Severity
from agent.model.points import point

LIST_AT_MOST = 10  # relays named in one finding

TRAITS = ("/24", "/16", "operator", "version+platform", "ports", "nickname pattern", "uptime pattern", "country")
#: Traits that alone say little: half the network runs the newest version on Linux in a few countries,
#: and most relays keep the default ports (9001/9030, or 443/80).
WEAK_TRAITS = frozenset({"version+platform", "country", "/16", "ports"})


@dataclass(frozen=True)
class Cluster:
    found_by: tuple[str, str]  # the trait and value that gathered the group (its identity as an alert)
    size: int
    shared: dict[str, str]  # trait -> the value most members share
    fingerprints: tuple[str, ...]
    nicknames: tuple[str, ...]

    @property
    def strong(self) -> bool:
        """Shares at least one trait that says "one operator" (/24, contact, naming, uptime); ``find_clusters``
        gathers groups by such a trait, so every cluster it returns is strong."""
        return any(trait not in WEAK_TRAITS for trait in self.shared)


#: tor's default nickname: thousands of unrelated relays carry it.
DEFAULT_NICKNAMES = frozenset({"unnamed"})
UPTIME_BITS = 24


def _uptime_pattern(bits: int) -> str:
    """The last 24 periods' presence, when it says something: seen at least twice and missing at least twice.

    A relay that missed a single consensus (a restart) or is new has a
    pattern shared by many unrelated relays.
    """
    window = bits & ((1 << UPTIME_BITS) - 1)
    present = bin(window).count("1")
    return format(window, f"0{UPTIME_BITS}b") if present >= 2 and UPTIME_BITS - present >= 2 else ""


def nickname_pattern(nickname: str) -> str:
    """The nickname with digits and hex-like runs folded: "relay0423" and "relay17" share "relay#"."""
    folded = re.sub(r"[0-9]+", "#", nickname.lower())
    return folded if len(folded.replace("#", "")) >= 3 else ""


def traits_of(arrivals: RelayFacts, presence: np.ndarray) -> dict[str, list[str]]:
    """Each trait's value per arriving relay ("" when the relay has none worth comparing)."""
    octets = [address.split(".") if ":" not in address else [] for address in arrivals.address]
    history = [_uptime_pattern(int(bits)) for bits in presence]
    return {
        "/24": [".".join(parts[:3]) + ".0/24" if len(parts) == 4 else "" for parts in octets],
        "/16": [".".join(parts[:2]) + ".0.0/16" if len(parts) == 4 else "" for parts in octets],
        "operator": [operator or "" for operator in arrivals.operator],
        "version+platform": [f"{version} on {platform}" if version else ""
                             for version, platform in zip(arrivals.version, arrivals.platform)],
        "ports": [f"OR {or_port} / Dir {dir_port}" for or_port, dir_port in zip(arrivals.or_port, arrivals.dir_port)],
        "nickname pattern": [pattern if pattern not in DEFAULT_NICKNAMES else ""
                             for pattern in map(nickname_pattern, arrivals.nickname)],
        "uptime pattern": history,
        "country": list(arrivals.country),
    }


def find_clusters(arrivals: RelayFacts, presence: np.ndarray, min_size: int, share: float = 0.8) -> list[Cluster]:
    """Clusters of at least ``min_size`` arrivals, largest first, each with its shared traits."""
    traits = traits_of(arrivals, presence)
    remaining = np.ones(len(arrivals), bool)
    clusters = []
    while remaining.sum() >= min_size:
        best: tuple[int, str, str] | None = None
        for trait in TRAITS:
            if trait in WEAK_TRAITS:
                continue
            counts = Counter(value for value, left in zip(traits[trait], remaining) if left and value)
            if counts:
                value, size = counts.most_common(1)[0]
                if size >= min_size and (best is None or size > best[0]):
                    best = (size, trait, value)
        if best is None:
            break
        _, trait, value = best
        members = np.array([left and own == value for own, left in zip(traits[trait], remaining)])
        shared = {}
        for other in TRAITS:
            counts = Counter(traits[other][index] for index in np.flatnonzero(members) if traits[other][index])
            if counts:
                common, size = counts.most_common(1)[0]
                if size >= share * members.sum():
                    shared[other] = common
        rows = np.flatnonzero(members)
        fingerprints = tuple(arrivals.fingerprint[i] for i in rows)
        clusters.append(Cluster((trait, value), int(members.sum()), shared, fingerprints,
                                tuple(arrivals.nickname[i] for i in rows)))
        remaining &= ~members
    return clusters


@dataclass(frozen=True)
class GroupSettings:
    """``detect.group_*``: the smallest group reported, and the size from which it is a warning."""

    min_relays: int = setting("detect.group_min_relays", 10, "positive_int")
    warning_relays: int = setting("detect.group_warning_relays", 50, "positive_int")


class SybilGroups(BaseDetector):
    """The period's arrivals gathered into groups, one ``TorRelayGroupArrived`` finding per group.

    Stateless: the arrivals and their uptime pattern come from the shared relay memory.
    """

    name = "groups"
    checks = {"TorRelayGroupArrived": "Relays arrived together sharing traits (possible Sybil group)"}
    Settings = GroupSettings

    def score_one(self, period: Period) -> Scores:
        joined = period.changes.joined
        clusters = find_clusters(period.facts.relays.take(joined), period.memory.presence[period.rows[joined]],
                                 self.settings.min_relays)
        findings = []
        for cluster in clusters:
            # find_clusters gathers groups by strong traits only; without a shared contact it is undeclared.
            severity = (Severity.WARNING if cluster.size >= self.settings.warning_relays
                        or "operator" not in cluster.shared else Severity.INFO)
            shared = ", ".join(f"{trait} {value}" for trait, value in cluster.shared.items())
            examples = ", ".join(f"{nick} ({fp})" for nick, fp in
                                 list(zip(cluster.nicknames, cluster.fingerprints))[:LIST_AT_MOST])
            findings.append(self.finding("TorRelayGroupArrived", severity, {"group": " ".join(cluster.found_by)},
                                         f"{cluster.size} relays arrived this period sharing {shared}; "
                                         f"e.g. {examples}", {"relays": cluster.size}))
        largest = max((cluster.size for cluster in clusters), default=0)
        points = [point("tor_anomaly", {"detector": self.name, "series": "largest_arrival_group"},
                        {"observed": largest, "anomalous": len(clusters)}, period.facts.time)]
        return Scores(findings, points, clusters)

    @classmethod
    def label(cls, finding) -> str:
        return "groups (Sybil)"

    @classmethod
    def labels(cls) -> list[str]:
        return ["groups (Sybil)"]
