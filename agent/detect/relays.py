"""Per-relay memory and detectors, as numpy columns: every relay updated every period in a few vector ops.

A River object per relay and statistic would be ~20,000 Python objects to
update and pickle each hour; the same exponentially weighted mean and
variance (River's ``stats.EWMean``/``EWVar`` formulas) over numpy columns
costs milliseconds. The memory is shared by every detector (the engine
learns it after them): who joined, who is new, who left, each relay's
recent presence and flag history (one bit per period), and per-relay
columns a detector keeps for itself (``column``). ``RelayAnomalies`` is the
per-relay detector the engine runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from agent.detect.baseline import MAX_GAP_PERIODS
from agent.detect.facts import RelayFacts
from agent.detect.protocol import BaseDetector, Period, Scores
from agent.detect.settings import setting
from agent.model.findings import Finding, Severity
from agent.model.points import point

EW_ALPHA = 0.1  # about the last ten periods
LIST_AT_MOST = 10  # relays named in one finding
HISTORY_BITS = 24  # presence and flag-change bits looked at (one day of hourly periods)
#: Relays seen within this horizon are "returning", not new: an operator's relays back after weeks away are
#: no newcomers (with 30 days, a group back after a month counted as never seen).
HORIZON_SECONDS = 180 * 86400
NEW_AFTER_SECONDS = 3 * 86400  # how long a fresh memory must have watched before a relay it lacks is "new"
#: A relay back after at most this many periods away "returned soon" (a dip and its return: an operator's
#: block restarting, an outage of an hour or two); one present at most YOUNG_PERIODS when it left was young
#: (a wave of fresh relays going away again).
RETURN_PERIODS = 3
YOUNG_PERIODS = 48
#: Relays remembered at most (about 250 bytes each). The live network lists 8,000-10,000 relays and 16,000-
#: 20,000 pass through in 180 days (2024-2025 history); only a flood of fresh fingerprints could reach this,
#: and then those seen longest ago are forgotten first, never those of the period at hand.
MAX_RELAYS = 100_000


@dataclass(frozen=True)
class RelayAnomaly:
    kind: str  # weight_jump | flag_flapping | fewer_authorities
    fingerprint: str
    nickname: str
    detail: str
    score: float


@dataclass
class RelayChanges:
    """Who came and went this period (row indices into the period's RelayFacts, fingerprints for the gone)."""

    joined: np.ndarray  # absent in the previous period (new or returning)
    new: np.ndarray  # not seen within the memory horizon at all
    left: list[str] = field(default_factory=list)
    left_country: list[str] = field(default_factory=list)
    left_blocks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))  # their IPv4 /24s, see block24
    left_flags: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))
    previous_known: bool = False
    previous_size: int = 0
    elapsed_periods: float = 1.0  # periods since the previous recorded one (more than 1 after a gap)
    returned_soon: int = 0  # joined relays that were present within the RETURN_PERIODS before the last one
    left_young: int = 0  # left relays that had been present at most YOUNG_PERIODS


COLUMNS = ("last_seen", "flags", "presence", "flips", "seen", "logw_mean", "logw_var", "listed_mean", "block24")


def block24(addresses: list[str]) -> np.ndarray:
    """Each IPv4 address's /24 as a number (the first three octets; 0 for IPv6 or anything else)."""
    return np.fromiter((_block24(address) for address in addresses), np.uint32, len(addresses))


@lru_cache(maxsize=1 << 16)
def _block24(address: str) -> int:
    parts = address.split(".")
    if len(parts) == 4 and all(part.isascii() and part.isdigit() and int(part) < 256 for part in parts[:3]):
        return (int(parts[0]) << 16) | (int(parts[1]) << 8) | int(parts[2])
    return 0


class RelayMemory:
    """Columns indexed by a row per fingerprint seen within ``horizon_seconds`` (at most ``limit`` rows)."""

    def __init__(self, horizon_seconds: int = HORIZON_SECONDS, limit: int = MAX_RELAYS):
        self.horizon, self.limit = horizon_seconds, limit
        self.rows: dict[str, int] = {}
        self.fingerprints: list[str] = []
        self.country: list[str] = []
        self.last_time: int | None = None
        self.first_time: int | None = None
        size = 0
        self.last_seen = np.zeros(size, np.int64)
        self.flags = np.zeros(size, np.uint32)
        self.presence = np.zeros(size, np.uint32)  # bit 0 = this period
        self.flips = np.zeros(size, np.uint32)  # bit 0 = flags changed this period
        self.seen = np.zeros(size, np.int32)  # periods present
        self.logw_mean = np.zeros(size)
        self.logw_var = np.zeros(size)
        self.listed_mean = np.zeros(size)
        self.block24 = np.zeros(size, np.uint32)  # the IPv4 /24 it was last seen in (0: none)
        self.columns: dict[str, np.ndarray] = {}  # detectors' own per-relay columns

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("columns", {})  # a state saved before detectors kept columns here
        self.__dict__.setdefault("limit", MAX_RELAYS)  # ... or before the memory had a size bound
        self.__dict__.setdefault("first_time", self.__dict__.get("last_time"))  # ... or kept its first time
        self.__dict__.setdefault("block24", np.zeros(len(self.__dict__["last_seen"]), np.uint32))

    def __len__(self) -> int:
        return len(self.fingerprints)

    def column(self, name: str, dtype=float) -> np.ndarray:
        """A per-relay column a detector keeps here (zero for rows it has not set), aligned with the rows:
        grown for new relays, compacted when relays are forgotten. Ask for it again each period."""
        if name not in self.columns:
            self.columns[name] = np.zeros(len(self.last_seen), dtype)
        return self.columns[name]

    def rows_of(self, relays: RelayFacts) -> tuple[np.ndarray, np.ndarray]:
        """Row of each relay, adding unknown ones; and which relays were unknown."""
        unknown = np.fromiter((fp not in self.rows for fp in relays.fingerprint), bool, len(relays))
        for index in np.flatnonzero(unknown):
            self.rows[relays.fingerprint[index]] = len(self.fingerprints)
            self.fingerprints.append(relays.fingerprint[index])
            self.country.append(relays.country[index])
        self._grow(len(self.fingerprints))
        return np.fromiter((self.rows[fp] for fp in relays.fingerprint), np.int64, len(relays)), unknown

    def changes(self, relays: RelayFacts, rows: np.ndarray, unknown: np.ndarray, time: int,
                period_seconds: int) -> RelayChanges:
        """Joined, new and left relays, judged against the memory before this period is learned.

        After a gap (the agent was down, a snapshot missed) the period is
        compared with the last one recorded, whatever came and went between:
        the baselines judge the change per elapsed period. Only after more
        than MAX_GAP_PERIODS is the memory too old to say: no churn then.
        """
        was_present = (self.presence[rows] & 1) != 0
        previous = np.flatnonzero(self.presence & 1)
        present_now = np.zeros(len(self), bool)
        present_now[rows] = True
        gone = previous[~present_now[previous]]
        known = self.last_time is not None and time - self.last_time <= MAX_GAP_PERIODS * period_seconds
        # "Never seen" needs a memory that has seen something: in its first days, every relay that was away
        # when it started would be new (on real history, a fresh memory called 50+ returning relays new).
        spans = self.first_time is not None and time - self.first_time >= NEW_AFTER_SECONDS
        joined = np.flatnonzero(~was_present) if known else np.zeros(0, np.int64)
        recently = np.uint32(((1 << RETURN_PERIODS) - 1) << 1)  # the periods before the last one
        return RelayChanges(
            joined=joined,
            returned_soon=int(np.count_nonzero(self.presence[rows[joined]] & recently)) if known else 0,
            left_young=int(np.count_nonzero(self.seen[gone] <= YOUNG_PERIODS)) if known else 0,
            new=np.flatnonzero(unknown) if known and spans else np.zeros(0, np.int64),
            left=[self.fingerprints[row] for row in gone], left_country=[self.country[row] for row in gone],
            left_blocks=self.block24[gone],
            left_flags=self.flags[gone], previous_known=known, previous_size=len(previous),
            elapsed_periods=max(1.0, (time - self.last_time) / period_seconds) if known and self.last_time else 1.0)

    def anomalies(self, relays: RelayFacts, rows: np.ndarray, thresholds: dict) -> list[RelayAnomaly]:
        """Weight jumps, flag flapping and relays listed by fewer authorities than usual."""
        found = []
        settled = self.seen[rows] >= thresholds["relay_min_periods"]
        logw = np.log2(relays.weight + 1.0)
        deviation = logw - self.logw_mean[rows]
        spread = np.sqrt(self.logw_var[rows])
        total = float(relays.weight.sum()) or 1.0
        before = np.exp2(self.logw_mean[rows]) - 1.0
        matters = np.maximum(relays.weight, before) >= thresholds["relay_min_weight_fraction"] * total
        jump = settled & matters & (np.abs(deviation) >= np.maximum(thresholds["relay_weight_jump_log2"],
                                                                    4 * spread))
        for index in np.flatnonzero(jump):
            found.append(RelayAnomaly("weight_jump", relays.fingerprint[index], relays.nickname[index],
                                      f"weight {relays.weight[index]:.0f}, usually about {before[index]:.0f}",
                                      float(abs(deviation[index]))))
        changed = self.flags[rows] != relays.flags
        flips = ((self.flips[rows] << 1) | changed) & np.uint32((1 << HISTORY_BITS) - 1)
        # reported when a relay starts flapping (its count reaches the limit), not every period it goes on
        was_flapping = np.bitwise_count(self.flips[rows] & np.uint32((1 << HISTORY_BITS) - 1)) >= \
            thresholds["relay_flap_changes"]
        flapping = settled & changed & ~was_flapping & (np.bitwise_count(flips) >= thresholds["relay_flap_changes"])
        for index in np.flatnonzero(flapping):
            found.append(RelayAnomaly("flag_flapping", relays.fingerprint[index], relays.nickname[index],
                                      f"flags changed in {int(np.bitwise_count(flips[index]))} of the last "
                                      f"{HISTORY_BITS} periods", float(np.bitwise_count(flips[index]))))
        usual_listing = self.listed_mean[rows]
        drop = usual_listing - relays.listed_by
        # An authority that did not vote lowers every relay's count: judge each against the typical drop.
        typical = float(np.median(drop[settled])) if settled.any() else 0.0
        fewer = settled & (drop - typical >= thresholds["relay_listing_drop"])
        for index in np.flatnonzero(fewer):
            found.append(RelayAnomaly("fewer_authorities", relays.fingerprint[index], relays.nickname[index],
                                      f"listed by {int(relays.listed_by[index])} votes, usually "
                                      f"{usual_listing[index]:.1f}", float(drop[index] - typical)))
        return found

    def learn(self, relays: RelayFacts, rows: np.ndarray, time: int) -> None:
        """Takes the period in: presence and flag bits shift, running means move, old relays are forgotten."""
        present = np.zeros(len(self), bool)
        present[rows] = True
        self.presence = (self.presence << 1) | present  # one bit per recorded period, whatever the gap
        changed = np.zeros(len(self), bool)
        changed[rows] = self.flags[rows] != relays.flags
        changed[rows[self.seen[rows] == 0]] = False  # a first sighting is not a change
        self.flips = (self.flips << 1) | changed
        self.flags[rows] = relays.flags
        self.block24[rows] = block24(relays.address)
        logw = np.log2(relays.weight + 1.0)
        first = self.seen[rows] == 0
        delta = logw - self.logw_mean[rows]
        self.logw_mean[rows] = np.where(first, logw, self.logw_mean[rows] + EW_ALPHA * delta)
        self.logw_var[rows] = np.where(first, 0.0, (1 - EW_ALPHA) * (self.logw_var[rows] + EW_ALPHA * delta ** 2))
        self.listed_mean[rows] = np.where(first, relays.listed_by,
                                          self.listed_mean[rows] + EW_ALPHA * (relays.listed_by
                                                                               - self.listed_mean[rows]))
        self.seen[rows] += 1
        self.last_seen[rows] = time
        self.last_time = time
        self.first_time = time if self.first_time is None else self.first_time
        self._forget(time)

    def _grow(self, size: int) -> None:
        grow = size - len(self.last_seen)
        if grow <= 0:
            return
        for name in COLUMNS:
            column = getattr(self, name)
            setattr(self, name, np.concatenate([column, np.zeros(grow, column.dtype)]))
        for name, column in self.columns.items():
            self.columns[name] = np.concatenate([column, np.zeros(grow, column.dtype)])

    def _forget(self, time: int) -> None:
        """Drops relays not seen within the horizon, then (past ``limit``) those seen longest ago."""
        keep = self.last_seen >= time - self.horizon
        if np.count_nonzero(keep) > self.limit:
            keep &= self._most_recent(max(self.limit, int(np.count_nonzero(self.last_seen == time))))
        if keep.all():
            return
        self.fingerprints = [fp for fp, kept in zip(self.fingerprints, keep) if kept]
        self.country = [code for code, kept in zip(self.country, keep) if kept]
        self.rows = {fp: row for row, fp in enumerate(self.fingerprints)}
        for name in COLUMNS:
            setattr(self, name, getattr(self, name)[keep])
        self.columns = {name: column[keep] for name, column in self.columns.items()}

    def _most_recent(self, count: int) -> np.ndarray:
        """A mask of the ``count`` rows seen most recently (the period just learned first)."""
        mask = np.zeros(len(self), bool)
        mask[np.argsort(-self.last_seen, kind="stable")[:count]] = True
        return mask


@dataclass(frozen=True)
class RelaySettings:
    """``detect.rules.relay_*`` (field names are the keys ``RelayMemory.anomalies`` reads)."""

    relay_min_periods: int = setting("detect.rules.relay_min_periods", 6, "positive_int")
    relay_min_weight_fraction: float = setting("detect.rules.relay_min_weight_fraction", 0.0005, "ratio")
    relay_weight_jump_log2: float = setting("detect.rules.relay_weight_jump_log2", 2.0, "positive_number")
    relay_flap_changes: int = setting("detect.rules.relay_flap_changes", 8, "positive_int")
    relay_listing_drop: int = setting("detect.rules.relay_listing_drop", 2, "positive_int")
    relay_min_relays: int = setting("detect.rules.relay_min_relays", 10, "positive_int")
    #: The engine's warm-up: a new network's relays settle (weights measured, flags earned) in its first periods.
    warmup_periods: int = setting("detect.warmup_periods", 48, "positive_int")


class RelayAnomalies(BaseDetector):
    """Relays unlike their own history, one ``TorAnomalyRelays`` finding per kind naming the most unusual.

    Its statistics are the shared memory's columns, which the engine learns
    after every detector: nothing of its own to learn. A kind becomes a
    network finding when ``relay_min_relays`` relays show it in one period
    (a relay is counted when it starts flapping, not every period it goes
    on): on real 2025 history, single relays flapping their Guard flag made
    an info alarm in one hour of six. Every anomalous relay stays in the
    period's details and its ``tor_anomaly`` count. Nothing is reported
    during the engine's warm-up (``detect.warmup_periods``): on a new
    network every relay's weight and flags move in its first periods.
    """

    name = "relays"
    checks = {"TorAnomalyRelays": "Relays behave unlike their own history"}
    Settings = RelaySettings
    KINDS = {"weight_jump": "consensus weight jumped", "flag_flapping": "flags keep changing",
             "fewer_authorities": "listed by fewer authorities than usual"}

    def score_one(self, period: Period) -> Scores:
        found = period.memory.anomalies(period.facts.relays, period.rows, asdict(self.settings))
        by_kind: dict[str, list[RelayAnomaly]] = {}
        for anomaly in found:
            by_kind.setdefault(anomaly.kind, []).append(anomaly)
        findings = []
        warming = period.periods_learned < self.settings.warmup_periods
        for kind, anomalies in sorted(by_kind.items()):
            if warming or len(anomalies) < self.settings.relay_min_relays:
                continue  # one relay's oddity is its operator's news (its points and details), not the network's
            anomalies.sort(key=lambda anomaly: -anomaly.score)
            listed = "; ".join(f"{a.nickname} ({a.fingerprint}): {a.detail}" for a in anomalies[:LIST_AT_MOST])
            findings.append(self.finding("TorAnomalyRelays", Severity.INFO, {"kind": kind},
                                         f"{len(anomalies)} relays: {self.KINDS[kind]}: {listed}",
                                         {"relays": len(anomalies)}))
        points = [point("tor_anomaly", {"detector": self.name, "series": kind},
                        {"anomalous": len(by_kind.get(kind, ()))}, period.facts.time) for kind in self.KINDS]
        return Scores(findings, points, found)

    @classmethod
    def label(cls, finding: Finding) -> str:
        return f"relay {finding.subjects['kind']}"

    @classmethod
    def labels(cls) -> list[str]:
        return [f"relay {kind}" for kind in cls.KINDS]
