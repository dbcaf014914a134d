"""Sybil groups: never-seen relays that arrive together sharing traits the network rarely has, as one cluster.

A lone new relay is normal, and so is an operator's block going offline
for an hour and coming back; a batch of relays *never seen before*, all
arriving in one period and alike in ways the rest of the network is not,
is how floods looked (LizardNSA 2014, the 2020 exit groups, the 2025
floods of hundreds of fresh cloud addresses on ORPort 9001). Replayed
over real hourly history (issue 21) the previous design, which grouped
every arrival and counted a shared uptime pattern, warned in about 76 of
1,000 ordinary hours, nearly all for relays coming back. The choices:

- **Never-seen only.** Only relays the relay memory has not seen within
  its horizon (``period.changes.new``) can form a Sybil group. Returning
  relays (absent last period, seen before) are an outage ending, a
  restart, an Onionoo hiccup: never a warning. A group of them is an info
  only when it has ``group_warning_relays`` members away for more than
  ``DORMANT_DAYS`` (relays kept dormant and switched on together); relays
  back after hours or days are no finding.
- **Rarity is the evidence.** A trait's value is weighed by the share of
  the network (the period's relays other than the never-seen arrivals)
  that has it: a value most relays share (ORPort 9001, a current version,
  "no contact" where nobody declares one) is little or no evidence; an
  empty value (no nickname, no version, no country) is never a trait. The
  *surprise* of ``k`` of the period's ``n`` never-seen arrivals sharing a
  value that a share ``p`` of the network has is the Chernoff bound
  ``n·D(k/n ‖ p)`` in bits. A group is gathered by the most surprising
  value (relays declaring an operator by that operator first); then every
  trait ``SHARE`` of its members have is collected, and the group is
  judged by the network's share of relays having *all* of them at once (so
  nested traits, /24 within /16 within country, count once) and its
  surprise taken again with that joint share.
- **Blocks, not only one /24.** A flood bought from a cloud provider is
  one relay per address over many /24s of a few /16s: when no single /24
  (/16) holds most of a group, the /24s (/16s) holding two or more of its
  members are its shared trait if together they hold most of it. A flood
  gathered /16 by /16 is merged back into one group when its parts share
  the same setup (ports, version, nickname pattern).
- **Traits compared**: /24, /16 and their blocks, country, operator
  (contact, else family), "no contact or family" (a trait only when most
  of the network declares one), nickname pattern (digits folded), version
  and platform, ports, the Exit flag. The uptime pattern is gone: relays
  that missed the same hours are no group.
- **Severity.** A group counts when it has ``group_min_relays`` members,
  a surprise of at least ``SURPRISE_BITS`` and a joint share of at most
  ``JOINT_SHARE_AT_MOST``. Then:

  * **warning**, the Sybil shape: undeclared, not a known operator's, and
    either a flood (``group_warning_relays`` members or more) or sharing
    two or more *strong* traits (a value at most ``STRONG_SHARE`` of the
    network has; location counts once; "no contact or family" always
    counts when it is a trait). Both are shapes attackers leave and
    operators do not: operators declare a family and add relays a few at
    a time;
  * **info**, from ``group_warning_relays`` members only: a known
    operator's relays restarting with new keys (the contact or family of
    relays already present, or most members on /24s whose relays were
    present for a day or more within ``KNOWN_BLOCK_DAYS``, as an operator
    block coming back re-keyed), or a new operator declaring its relays;
  * nothing otherwise: one strong trait (one fresh /24, one rare port) is
    what any operator's new relays share.

``SybilGroups`` is the detector the engine runs; it reads each relay's last
/24 from the shared relay memory (which blocks hosted relays recently) and
keeps nothing of its own.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from agent.detect.facts import FLAG_BITS, RelayFacts
from agent.detect.protocol import BaseDetector, Period, Scores
from agent.detect.relays import block24
from agent.detect.settings import setting
from agent.model.findings import Finding, Severity
from agent.model.points import point

LIST_AT_MOST = 10  # relays named in one finding

#: The traits compared, in the order a finding lists what a group shares.
TRAITS = ("/24", "/16", "operator", "nickname pattern", "version+platform", "ports", "undeclared", "exit", "country")
#: Nested location traits: however many of them a group shares, they are one strong trait.
LOCATION = frozenset({"/24", "/16", "country"})
BLOCK_LEVELS = ("/24", "/16")  # levels whose blocks (several values) may be a group's shared trait
#: The traits a group may be gathered by, in the order that breaks a tie between two equally surprising values
#: (the Exit flag and a country alone gather too much to mean much).
GATHERING = ("/24", "/16", "operator", "nickname pattern", "version+platform", "ports", "undeclared")
#: What a relay's own setup says (not where it runs): groups alike in these, in other blocks, are one flood.
SETUP = ("nickname pattern", "version+platform", "ports")

SHARE = 0.8  # a trait is the group's when this share of its members has it
STRONG_SHARE = 0.02  # a value at most this share of the network has says "one operator"
JOINT_SHARE_AT_MOST = 0.2  # a group's traits together must be this rare in the network
SURPRISE_BITS = 40.0  # and this unlikely among the period's arrivals (about 1 in 10^12)
DECLARING_SHARE = 0.5  # "no contact or family" is a trait only when at least this share of the network declares
KNOWN_BLOCK_DAYS = 7  # a /24 with relays present within this many days ...
ESTABLISHED_PERIODS = 24  # ... seen at least this many periods is a known operator's block
DORMANT_DAYS = 7  # returning relays away longer than this, switched on together, are worth an info
UNDECLARED = "no contact or family"

#: tor's default nickname: thousands of unrelated relays carry it.
DEFAULT_NICKNAMES = frozenset({"unnamed"})
UNKNOWN_COUNTRIES = frozenset({"", "??"})


@dataclass(frozen=True)
class Cluster:
    found_by: tuple[str, str]  # the trait and value that gathered the group (its identity as an alert)
    size: int
    shared: dict[str, str]  # trait -> the value (or blocks) most members share
    fingerprints: tuple[str, ...]
    nicknames: tuple[str, ...]
    rows: tuple[int, ...] = ()  # the members' rows in the period's relays
    never_seen: bool = True  # a group of never-seen relays (else of relays returning after DORMANT_DAYS)
    surprise: float = 0.0  # bits: how unlikely so many of the period's arrivals share these traits
    joint_share: float = 1.0  # the share of the network having all the shared traits
    strong: tuple[str, ...] = ()  # the shared traits that are strong evidence (location counts once)
    known: str = ""  # why it is a known operator's relays ("" if it is not)
    severity: str | None = None  # None: not significant, no finding


@lru_cache(maxsize=1 << 16)
def nickname_pattern(nickname: str) -> str:
    """The nickname with digits and hex-like runs folded: "relay0423" and "relay17" share "relay#"."""
    folded = re.sub(r"[0-9]+", "#", nickname.lower())
    return folded if len(folded.replace("#", "")) >= 3 else ""


@lru_cache(maxsize=1 << 17)
def blocks_of(address: str) -> tuple[str, str]:
    """The IPv4 address's /24 and /16; empty for anything else."""
    parts = address.split(".")
    if len(parts) != 4 or not all(part.isascii() and part.isdigit() and int(part) < 256 for part in parts):
        return "", ""
    a, b, c = (int(part) for part in parts[:3])
    return f"{a}.{b}.{c}.0/24", f"{a}.{b}.0.0/16"


def trait_values(relays: RelayFacts, undeclared: bool) -> dict[str, list[str]]:
    """Each trait's value per relay ("" when the relay has none worth comparing); ``undeclared``: whether
    "no contact or family" is a trait (most of the network declares one)."""
    blocks = [blocks_of(address) for address in relays.address]
    exit_flag = (relays.flags & FLAG_BITS["Exit"]) != 0
    return {
        "/24": [block[0] for block in blocks],
        "/16": [block[1] for block in blocks],
        "operator": [operator or "" for operator in relays.operator],
        "nickname pattern": [pattern if pattern not in DEFAULT_NICKNAMES else ""
                             for pattern in map(nickname_pattern, relays.nickname)],
        "version+platform": [f"{version} on {platform}" if version else ""
                             for version, platform in zip(relays.version, relays.platform)],
        "ports": [(f"OR {or_port}" + (f" / Dir {dir_port}" if dir_port else "")) if or_port else ""
                  for or_port, dir_port in zip(relays.or_port.tolist(), relays.dir_port.tolist())],
        "undeclared": [UNDECLARED if undeclared and not operator else "" for operator in relays.operator],
        "exit": ["Exit flag" if flag else "" for flag in exit_flag.tolist()],
        "country": [country if country not in UNKNOWN_COUNTRIES else "" for country in relays.country],
    }


class Traits:
    """The period's relays' trait values as codes (0: none), and how many relays of the network have each.

    The network (``reference``) is the period's relays other than the never-seen arrivals: what the
    arrivals are compared with.
    """

    def __init__(self, relays: RelayFacts, reference: np.ndarray):
        declared = [bool(operator) for operator, counted in zip(relays.operator, reference) if counted]
        undeclared = bool(declared) and sum(declared) >= DECLARING_SHARE * len(declared)
        self.values = trait_values(relays, undeclared)
        self.reference = reference
        self.size = int(np.count_nonzero(reference))
        self.codes: dict[str, np.ndarray] = {}
        self.names: dict[str, list[str]] = {}
        self.counts: dict[str, np.ndarray] = {}
        for trait, values in self.values.items():
            index: dict[str, int] = {"": 0}
            codes = np.fromiter((index.setdefault(value, len(index)) for value in values), np.int64, len(values))
            self.codes[trait], self.names[trait] = codes, list(index)
            self.counts[trait] = np.bincount(codes[reference], minlength=len(index))

    def share(self, trait: str, codes) -> float:
        """The share of the network having one of these values of the trait (never 0: one relay is added)."""
        counted = int(self.counts[trait][list(codes)].sum())
        return (counted + 1) / (self.size + 1)

    def having(self, shared: dict[str, frozenset[int]], rows: np.ndarray) -> np.ndarray:
        """Which of ``rows`` (indices, or a mask of the relays) have every shared trait."""
        mask = np.ones(len(rows) if rows.dtype != bool else int(np.count_nonzero(rows)), bool)
        for trait, codes in shared.items():
            mask &= np.isin(self.codes[trait][rows], list(codes))
        return mask

    def joint_share(self, shared: dict[str, frozenset[int]]) -> float:
        """The share of the network having every shared trait at once (one relay added, as ``share``)."""
        return (int(np.count_nonzero(self.having(shared, self.reference))) + 1) / (self.size + 1)


def surprise_bits(k: int, n: int, p: float) -> float:
    """-log2 of the Chernoff bound on P(at least k of n share a value a share p has): n·D(k/n ‖ p) in bits."""
    if n <= 0 or k <= 0:
        return 0.0
    q = min(k / n, 1.0)
    if q <= p:
        return 0.0
    divergence = q * math.log(q / p) + ((1 - q) * math.log((1 - q) / (1 - p)) if q < 1 else 0.0)
    return n * divergence / math.log(2)


def _shared(traits: Traits, members: np.ndarray) -> dict[str, frozenset[int]]:
    """Each trait at least SHARE of the members have: one value, or for /24 and /16 the blocks holding two or
    more members each, if those hold SHARE of the members between them and are at most half as many."""
    shared = {}
    need = SHARE * len(members)
    for trait in TRAITS:
        counts = Counter(code for code in traits.codes[trait][members].tolist() if code)
        if not counts:
            continue
        code, size = counts.most_common(1)[0]
        if size >= need:
            shared[trait] = frozenset({code})
        elif trait in BLOCK_LEVELS:
            blocks = {code for code, size in counts.items() if size >= 2}
            if sum(counts[code] for code in blocks) >= need and len(blocks) * 2 <= len(members):
                shared[trait] = frozenset(blocks)
    return shared


def _describe(traits: Traits, trait: str, codes: frozenset[int], members: np.ndarray) -> str:
    """A shared trait as a finding says it: the value, or the number of blocks and the largest three."""
    names = traits.names[trait]
    if len(codes) == 1:
        value = names[next(iter(codes))]
        return value if trait in ("undeclared", "exit") else f"{trait} {value}"
    held = Counter(code for code in traits.codes[trait][members].tolist() if code in codes)
    largest = ", ".join(f"{names[code]} ({size})" for code, size in held.most_common(3))
    return f"{len(codes)} {trait} blocks (most in {largest})"


def gather(traits: Traits, pool: np.ndarray, min_size: int) -> list[tuple[str, int, np.ndarray]]:
    """The pool's groups as (trait, value code, member rows), the most surprising first.

    Each step takes the value (of a GATHERING trait) whose holders among the
    pool are the least likely, by ``surprise_bits`` against the network's
    share of it, takes them out of the pool and looks again. Relays that
    declare an operator are gathered by it first: by their own word they
    are that operator's, whatever else they share with others.
    """
    remaining = np.ones(len(pool), bool)
    groups = []
    for gathering in (("operator",), GATHERING):  # relays declaring an operator go with it first
        while np.count_nonzero(remaining) >= min_size:
            best: tuple[float, str, int] | None = None
            for trait in gathering:
                counts = np.bincount(traits.codes[trait][pool[remaining]], minlength=len(traits.names[trait]))
                counts[0] = 0
                for code in np.flatnonzero(counts >= min_size).tolist():
                    bits = surprise_bits(int(counts[code]), len(pool), traits.share(trait, (code,)))
                    if bits > 0 and (best is None or bits > best[0]):  # a tie keeps the earlier trait
                        best = (bits, trait, code)
            if best is None:
                break
            _, trait, code = best
            chosen = remaining & (traits.codes[trait][pool] == code)
            groups.append((trait, code, pool[chosen]))
            remaining &= ~chosen
    return groups


def _cluster(traits: Traits, relays: RelayFacts, trait: str, code: int, members: np.ndarray, pool_size: int,
             never_seen: bool) -> Cluster:
    """The group with what its members share, how surprising that is and which shared traits are strong."""
    shared = _shared(traits, members)
    joint = traits.joint_share(shared) if shared else 1.0
    bits = surprise_bits(int(np.count_nonzero(traits.having(shared, members))), pool_size, joint)
    strong = []
    location = [name for name in shared if name in LOCATION]
    if location and min(traits.share(name, shared[name]) for name in location) <= STRONG_SHARE:
        strong.append(location[0])
    strong += [name for name, codes in shared.items() if name not in LOCATION and name != "operator"
               and (name == "undeclared" or traits.share(name, codes) <= STRONG_SHARE)]
    nested = "/24" in shared and len(shared["/24"]) == 1  # its /16 goes without saying
    return Cluster((trait, traits.names[trait][code]), len(members),
                   {name: _describe(traits, name, codes, members) for name, codes in shared.items()
                    if not (nested and name == "/16")},
                   tuple(relays.fingerprint[i] for i in members), tuple(relays.nickname[i] for i in members),
                   tuple(members.tolist()), never_seen, bits, joint, tuple(strong))


def significant(cluster: Cluster, min_size: int) -> bool:
    """Large, surprising and rare enough to be worth a finding (whether it is one is ``SybilGroups``' call)."""
    return (cluster.size >= min_size and cluster.surprise >= SURPRISE_BITS
            and cluster.joint_share <= JOINT_SHARE_AT_MOST)


def _merged(traits: Traits, relays: RelayFacts, clusters: list[Cluster], pool_size: int, min_size: int,
            never_seen: bool) -> list[Cluster]:
    """Significant undeclared groups alike but for where they are (the same SETUP traits, in other blocks)
    as one: a flood spread over a provider's /16s is gathered block by block, and is one flood."""
    alike: dict[tuple, list[Cluster]] = {}
    for cluster in clusters:
        signature = tuple((trait, cluster.shared[trait]) for trait in TRAITS
                          if trait in cluster.shared and trait not in LOCATION)
        if (significant(cluster, min_size) and "operator" not in cluster.shared
                and any(trait in SETUP for trait, _ in signature)):
            alike.setdefault(signature, []).append(cluster)
    result = list(clusters)
    for parts in alike.values():
        if len(parts) < 2:
            continue
        members = np.array(sorted(row for part in parts for row in part.rows), np.int64)
        shared = _shared(traits, members)
        found_by = next(((trait, next(iter(shared[trait]))) for trait in SETUP
                         if trait in shared and len(shared[trait]) == 1), None)
        if found_by is None:
            continue
        whole = _cluster(traits, relays, found_by[0], found_by[1], members, pool_size, never_seen)
        if significant(whole, min_size):
            result = [whole] + [cluster for cluster in result if cluster not in parts]
    return sorted(result, key=lambda cluster: -cluster.surprise)


def find_clusters(relays: RelayFacts, pool: np.ndarray, min_size: int = 10, reference: np.ndarray | None = None,
                  never_seen: bool = True) -> list[Cluster]:
    """The groups among ``pool`` (rows of ``relays``: the never-seen arrivals, or the dormant returning ones),
    compared with ``reference`` (a mask of ``relays``; by default every relay not in the pool), the most
    surprising first. Whether a group is reported, and how, is ``SybilGroups``' call."""
    pool = np.asarray(pool, np.int64)
    if reference is None:
        reference = np.ones(len(relays), bool)
        reference[pool] = False
    traits = Traits(relays, reference)
    clusters = [_cluster(traits, relays, trait, code, members, len(pool), never_seen)
                for trait, code, members in gather(traits, pool, min_size)]
    return _merged(traits, relays, clusters, len(pool), min_size, never_seen)


@dataclass(frozen=True)
class GroupSettings:
    """``detect.group_*``: the smallest group reported, and the size from which a flood is a warning."""

    min_relays: int = setting("detect.group_min_relays", 10, "positive_int")
    warning_relays: int = setting("detect.group_warning_relays", 50, "positive_int")


class SybilGroups(BaseDetector):
    """Never-seen arrivals gathered into groups, one ``TorRelayGroupArrived`` finding per group worth one.

    It reads the shared relay memory (who is new, who returns after how
    long, and each relay's last /24, to tell a known operator's block
    restarting with new keys from a new block); it keeps no state.
    """

    name = "groups"
    checks = {"TorRelayGroupArrived": "Relays never seen before arrived together sharing rare traits "
                                      "(possible Sybil group)"}
    Settings = GroupSettings

    def score_one(self, period: Period) -> Scores:
        relays, memory, changes = period.facts.relays, period.memory, period.changes
        settings = self.settings
        new = np.asarray(changes.new, np.int64)
        reference = np.ones(len(relays), bool)
        reference[new] = False
        returning = np.setdiff1d(np.asarray(changes.joined, np.int64), new)
        rows = period.rows[returning]  # a relay the memory has not seen is not returning (a young memory's)
        dormant = returning[(memory.seen[rows] > 0) & (period.facts.time - memory.last_seen[rows]
                                                       > DORMANT_DAYS * 86400)]
        clusters = []
        if len(new) >= settings.min_relays or len(dormant) >= settings.warning_relays:
            established = self._established_blocks(period)
            operators = {operator for operator, counted in zip(relays.operator, reference) if counted and operator}
        if len(new) >= settings.min_relays:
            for cluster in find_clusters(relays, new, settings.min_relays, reference):
                clusters.append(self._classify(cluster, relays, established, operators))
        if len(dormant) >= settings.warning_relays:
            others = reference.copy()
            others[dormant] = False
            present = {operator for operator, counted in zip(relays.operator, others) if counted and operator}
            for cluster in find_clusters(relays, dormant, settings.warning_relays, others, never_seen=False):
                judged = self._classify(cluster, relays, established, present)
                # back after weeks: an info, unless their operator's relays or block are here anyway
                clusters.append(replace(judged, severity=Severity.INFO if judged.severity and not judged.known
                                        else None))
        reported = [cluster for cluster in clusters if cluster.severity is not None]
        findings = [self._finding(cluster) for cluster in reported]
        largest = max((cluster.size for cluster in reported), default=0)
        points = [point("tor_anomaly", {"detector": self.name, "series": "largest_arrival_group"},
                        {"observed": largest, "anomalous": len(reported)}, period.facts.time)]
        return Scores(findings, points, reported)

    def _established_blocks(self, period: Period) -> np.ndarray:
        """The /24s (as numbers) of relays seen for a day or more and present within KNOWN_BLOCK_DAYS."""
        memory = period.memory
        blocks = memory.block24  # each relay's /24 as a number, kept by the memory (0: no IPv4)
        recent = ((memory.seen >= ESTABLISHED_PERIODS)
                  & (memory.last_seen >= period.facts.time - KNOWN_BLOCK_DAYS * 86400) & (blocks != 0))
        return np.unique(blocks[recent])

    def _classify(self, cluster: Cluster, relays: RelayFacts, established: np.ndarray,
                  operators: set[str]) -> Cluster:
        """The group's severity (None: no finding) and, for a known operator's, why it is known."""
        if not significant(cluster, self.settings.min_relays):
            return cluster
        members = list(cluster.rows)
        shared_operator = Counter(relays.operator[i] for i in members if relays.operator[i]).most_common(1)
        known = ""
        if "operator" in cluster.shared and shared_operator and shared_operator[0][0] in operators:
            known = f"the {cluster.shared['operator']} of relays already present"
        elif "/24" in cluster.shared:  # a block (one /24, or /24s holding several members each)
            codes = block24([relays.address[i] for i in members])
            on_known = int(np.count_nonzero(np.isin(codes, established)))
            if on_known * 2 >= len(members):
                known = (f"{on_known} of them on /24s that hosted relays for a day or more within "
                         f"{KNOWN_BLOCK_DAYS} days")
        large = cluster.size >= self.settings.warning_relays
        if known or "operator" in cluster.shared:  # an operator's relays, known or declaring themselves
            severity = Severity.INFO if large else None
        elif large or len(cluster.strong) >= 2:  # a flood, or several traits that say "one hidden operator"
            severity = Severity.WARNING
        else:  # one strong trait (one /24, one rare port) is what any operator's new relays share
            severity = None
        return replace(cluster, known=known, severity=severity)

    def _finding(self, cluster: Cluster) -> Finding:
        shared = ", ".join(cluster.shared.values()) or "nothing most of them have"
        examples = ", ".join(f"{nick} ({fp})" if nick else fp for nick, fp in
                             list(zip(cluster.nicknames, cluster.fingerprints))[:LIST_AT_MOST])
        if not cluster.never_seen:
            what = f"{cluster.size} relays away for more than {DORMANT_DAYS} days returned together"
            verdict = "dormant relays switched on together, not relays never seen before"
        else:
            what = f"{cluster.size} relays never seen before arrived together"
            strong = f" (strong: {', '.join(cluster.strong)})" if cluster.strong else ""
            verdict = (f"a known operator's relays: {cluster.known}" if cluster.known else
                       "a declared operator's new relays" if "operator" in cluster.shared else
                       f"possibly a Sybil group: no contact or family shared, on no known block{strong}")
        return self.finding("TorRelayGroupArrived", cluster.severity or Severity.INFO,
                            {"group": " ".join(cluster.found_by)},
                            f"{what} sharing {shared} ({cluster.joint_share:.2%} of the network has all of "
                            f"these; {cluster.surprise:.0f} bits of surprise): {verdict}; e.g. {examples}",
                            {"relays": cluster.size, "surprise_bits": round(cluster.surprise, 1),
                             "network_share": cluster.joint_share})

    @classmethod
    def label(cls, finding) -> str:
        return "groups (Sybil)"

    @classmethod
    def labels(cls) -> list[str]:
        return ["groups (Sybil)"]
