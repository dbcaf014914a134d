"""Reliability scores per relay and per operator, from a bounded memory of the last 30 days (docs/reliability.md).

Per relay: the share of the time the agent observed that the relay was in the
consensus (``presence_*``) and had Running (``running_*``) over 7 and 30 days,
its flag changes per week, the coefficient of variation of its consensus
weight over 7 days and the share of bandwidth authorities measuring it. Per
operator (contact line or family, as ``agent.metrics.operator`` groups them)
the weight-weighted mean of its relays', those that left within 30 days
included: an operator whose relays die must not look reliable because the
dead ones are gone from the consensus.

Shares are time-weighted, so they mean the same with hourly periods (live)
and 10 s ones (the private test network): the memory is a ring of fixed time
slots (an hour by default) holding the seconds the agent observed in each,
and per relay one bit per slot for presence, Running and a flag change, bit
packed (90 bytes per relay and plane over 30 days), plus the relay's mean
weight per slot over the last 7 days (log-coded uint16). Time no period was
recorded for is unknown, not absent: it is in neither side of a share. About
660 bytes per relay; at most ``limit`` relays, those not seen for 30 days
forgotten. Pure and picklable: the caller keeps it between periods, calls
``learn`` once per period and then reads scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.metrics.relays import KNOWN_FLAGS, NO_DESCRIPTOR, RelayTable
from agent.model.aroi import ProofBook
from agent.model.points import Point, PointColumns, point

DAY, WEEK = 86400, 7 * 86400
HORIZON_SECONDS = 30 * DAY
WINDOWS = {"7d": 7 * DAY, "30d": 30 * DAY}
#: Relays remembered at most (~660 bytes each, 26 MB): the live network lists ~10,000 and fewer than 20,000
#: pass through in 30 days; past the cap, those seen longest ago are forgotten first, never the period's own.
MAX_RELAYS = 40_000
FLAG_BITS = {flag: np.uint32(1 << index) for index, flag in enumerate(KNOWN_FLAGS)}
WEIGHT_STEPS = 2048  # log2 steps per doubling of the weight code: 0.017 % resolution
#: The per-relay fields, in the order the catalogue lists them.
RELAY_FIELDS = ("presence_7d", "presence_30d", "running_7d", "running_30d", "flag_changes_per_week",
                "weight_cv_7d", "measured_share")
PLANES = ("present", "running", "changed")
COLUMNS = ("last_seen", "flags", "last_weight", *PLANES, "weight", "open_present", "open_running",
           "open_weight", "open_changed", "carry_present", "carry_running")
_BITS = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(float)  # row v: the 8 bits of byte value v


class ReliabilityMemory:
    """A row per relay seen within the horizon; per row a bit per time slot, as ring columns (see module doc)."""

    def __init__(self, slot_seconds: int = 3600, limit: int = MAX_RELAYS):
        if WEEK % slot_seconds:
            raise ValueError("a week must be whole slots")
        self.version = 1
        self.slot_seconds, self.horizon, self.limit = slot_seconds, HORIZON_SECONDS, limit
        self.slots, self.week_slots = HORIZON_SECONDS // slot_seconds, WEEK // slot_seconds
        self.slot_id = np.full(self.slots, -1, np.int64)  # the absolute slot (time // slot_seconds) a column holds
        self.observed = np.zeros(self.slots)  # seconds of recorded periods in that slot
        self.open_slot: int | None = None  # the newest slot: its per-relay sums are exact floats, not bits yet
        self.last_time: int | None = None
        self.covered_until = 0.0  # end of the newest recorded period
        self.rows: dict[str, int] = {}
        self.fingerprints: list[str] = []
        self.operator_id: list[str | None] = []  # last known keys (from the last period with a descriptor)
        self.family_id: list[str | None] = []
        self.last_seen = np.zeros(0, np.int64)  # 0: never
        self.flags = np.zeros(0, np.uint32)  # FLAG_BITS at the last sighting
        self.last_weight = np.zeros(0)
        self.present, self.running, self.changed = (np.zeros((0, -(-self.slots // 8)), np.uint8) for _ in PLANES)
        self.weight = np.zeros((0, self.week_slots), np.uint16)  # 0: not present in the slot, see _encode
        self.open_present, self.open_running = np.zeros(0), np.zeros(0)  # seconds in the open slot
        self.open_weight = np.zeros(0)  # sum of weight x seconds present
        self.open_changed = np.zeros(0, bool)
        # rounding left over when slots closed (see _rounded)
        self.carry_present, self.carry_running = np.zeros(0, np.float32), np.zeros(0, np.float32)

    def __len__(self) -> int:
        return len(self.fingerprints)

    def nbytes(self) -> int:
        """Bytes of the numpy columns (the bulk of the memory and of its pickle)."""
        return sum(getattr(self, name).nbytes for name in COLUMNS) + self.slot_id.nbytes + self.observed.nbytes

    def learn(self, table: RelayTable, time: int, period_seconds: float) -> bool:
        """Takes a period in: the consensus valid-after ``time``, lasting ``period_seconds`` (fresh-until minus
        valid-after). A period not newer than the last one learned is ignored (a rerun): returns False.

        The period covers [time, time + period_seconds), less any part an
        earlier period already covered; a flag change counts in its first slot.
        """
        if self.last_time is not None and time <= self.last_time:
            return False
        rows = self._rows_of(table)
        masks = flag_masks(table)
        changed = (self.last_seen[rows] > 0) & (self.flags[rows] != masks)  # a first sighting is no change
        running = table.flags["Running"] if "Running" in table.flags else np.zeros(len(table), bool)
        weight = np.nan_to_num(table.weight.astype(float))
        start, end = max(float(time), self.covered_until), time + min(max(float(period_seconds), 0.0), self.horizon)
        if self.open_slot is None:  # (a period of no length first: its changes still count)
            self._enter(int(time // self.slot_seconds))
        while start < end:
            slot = int(start // self.slot_seconds)
            stop = min(end, (slot + 1) * self.slot_seconds)
            self._enter(slot)
            seconds = stop - start
            self.observed[slot % self.slots] += seconds
            self.open_present[rows] += seconds
            self.open_running[rows] += seconds * running
            self.open_weight[rows] += seconds * weight
            self.open_changed[rows] |= changed
            changed = np.zeros_like(changed)
            start = stop
        self.open_changed[rows] |= changed
        self.flags[rows], self.last_seen[rows], self.last_weight[rows] = masks, time, weight
        for index in (index for index, platform in enumerate(table.platform) if platform != NO_DESCRIPTOR):
            row = rows[index]  # without a descriptor this period the relay keeps the keys it had
            self.operator_id[row], self.family_id[row] = table.operator_id[index], table.family_id[index]
        self.last_time, self.covered_until = time, max(self.covered_until, end)
        self._forget(time)
        return True

    def scores(self) -> dict[str, np.ndarray]:
        """Every relay field but ``measured_share``, per memory row (NaN: unknown). See docs/reliability.md."""
        scores: dict[str, np.ndarray] = {}
        open_observed = self.observed[self.open_slot % self.slots] if self.open_slot is not None else 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            for name, seconds in WINDOWS.items():
                closed = self._closed(seconds // self.slot_seconds)
                observed = closed.sum() + open_observed
                present = _weighted_bits(self.present, closed) + self.open_present
                running = _weighted_bits(self.running, closed) + self.open_running
                unknown = np.full(len(self), np.nan)
                scores[f"presence_{name}"] = present / observed if observed > 0 else unknown
                scores[f"running_{name}"] = running / observed if observed > 0 else unknown
                if name == "30d":
                    changes = _weighted_bits(self.changed, (closed > 0).astype(float)) + self.open_changed
                    scores["flag_changes_per_week"] = np.where(present > 0, changes * WEEK / present, np.nan)
            scores["weight_cv_7d"] = self._weight_cv()
        return scores

    def _closed(self, span: int) -> np.ndarray:
        """Per ring column: the observed seconds of each closed slot of the last ``span`` (0 for any other)."""
        weights = np.zeros(self.slots)
        if self.open_slot is None:
            return weights
        slots = self.open_slot - np.arange(1, min(span, self.slots))
        columns = slots % self.slots
        valid = self.slot_id[columns] == slots  # a column of a skipped slot still holds an older one
        weights[columns[valid]] = self.observed[columns[valid]]
        return weights

    def _weight_cv(self, chunk: int = 4096) -> np.ndarray:
        """Coefficient of variation of each relay's slot-mean weights over 7 days, weighted by time present
        (``chunk`` relays at a time: 168 slots of 20,000 relays as floats would be 27 MB an array)."""
        cv = np.full(len(self), np.nan)
        if self.open_slot is None:
            return cv
        slots = self.open_slot - np.arange(1, self.week_slots)
        slots = slots[self.slot_id[slots % self.slots] == slots]
        columns = slots % self.slots
        for first in range(0, len(self), chunk):
            part = slice(first, first + chunk)
            bits = (self.present[part, columns // 8] >> (columns % 8).astype(np.uint8)) & 1
            seconds = np.column_stack([bits * self.observed[columns], self.open_present[part]])
            open_mean = self.open_weight[part] / np.maximum(self.open_present[part], 1e-9)
            weights = _DECODED[np.column_stack([self.weight[part, slots % self.week_slots], _encode(open_mean)])]
            total = seconds.sum(axis=1)
            mean = (seconds * weights).sum(axis=1) / total
            spread = np.sqrt((seconds * (weights - mean[:, None]) ** 2).sum(axis=1) / total)
            enough = np.count_nonzero(seconds, axis=1) >= 2  # one slot says nothing of stability
            # rounded to 1e-6: weights are kept to 0.017 %, and equal weights must give exactly 0
            cv[part] = np.where(enough, np.round(np.where(mean > 0, spread / mean, 0.0), 6), np.nan)
        return cv

    def _enter(self, slot: int) -> None:
        """Makes ``slot`` the open one, closing the one before into bits (skipped slots stay unobserved)."""
        if self.open_slot is not None and slot <= self.open_slot:
            return
        if self.open_slot is not None:
            column, observed = self.open_slot % self.slots, self.observed[self.open_slot % self.slots]
            present = self._rounded(self.open_present, self.carry_present, observed)
            _set_column(self.present, column, present)
            _set_column(self.running, column, self._rounded(self.open_running, self.carry_running, observed, present))
            _set_column(self.changed, column, self.open_changed)
            mean = self.open_weight / np.maximum(self.open_present, 1e-9)
            self.weight[:, self.open_slot % self.week_slots] = np.where(present, _encode(mean), 0)
        self.open_slot = slot
        self.slot_id[slot % self.slots], self.observed[slot % self.slots] = slot, 0.0
        for name in ("open_present", "open_running", "open_weight", "open_changed"):
            getattr(self, name)[:] = 0

    @staticmethod
    def _rounded(seconds: np.ndarray, carry: np.ndarray, observed: float, allowed: np.ndarray | None = None):
        """A closing slot's bits: the share of its observed time plus what rounding left over from earlier slots
        (error diffusion), at least one half. Exact with periods of a slot or more (shares 0 or 1); shorter
        ones keep each relay's sum of bits within a slot of its sum of shares, so windows stay time-weighted."""
        if observed <= 0:
            return np.zeros(len(seconds), bool)  # no time recorded in the slot: no one, no carry
        value = seconds / observed + carry
        bits = value >= 0.5
        if allowed is not None:
            bits &= allowed  # Running only while present
        carry[:] = np.clip(value - bits, -1.0, 1.0)  # Running held back by absence is owed, up to a slot
        return bits

    def _rows_of(self, table: RelayTable) -> np.ndarray:
        fresh = [fingerprint for fingerprint in table.fingerprints if fingerprint not in self.rows]
        for fingerprint in fresh:
            self.rows[fingerprint] = len(self.fingerprints)
            self.fingerprints.append(fingerprint)
        for keys in (self.operator_id, self.family_id):
            keys.extend([None] * len(fresh))
        for name in COLUMNS:
            column = getattr(self, name)
            setattr(self, name, np.concatenate([column, np.zeros((len(fresh), *column.shape[1:]), column.dtype)]))
        return np.fromiter((self.rows[fingerprint] for fingerprint in table.fingerprints), np.int64, len(table))

    def _forget(self, time: int) -> None:
        """Drops relays not seen within the horizon, then (past ``limit``) those seen longest ago."""
        keep = self.last_seen > time - self.horizon
        if np.count_nonzero(keep) > self.limit:
            newest = np.zeros(len(self), bool)
            newest[np.argsort(-self.last_seen, kind="stable")[:max(self.limit, np.count_nonzero(
                self.last_seen == time))]] = True
            keep &= newest
        if keep.all():
            return
        for name in ("fingerprints", "operator_id", "family_id"):
            setattr(self, name, [value for value, kept in zip(getattr(self, name), keep) if kept])
        for name in COLUMNS:
            setattr(self, name, getattr(self, name)[keep])
        self.rows = {fingerprint: row for row, fingerprint in enumerate(self.fingerprints)}


def flag_masks(table: RelayTable) -> np.ndarray:
    """Each relay's flags (of KNOWN_FLAGS; a flag tor adds later is not compared) as bits."""
    masks = np.zeros(len(table), np.uint32)
    for flag, bit in FLAG_BITS.items():
        if flag in table.flags:
            masks |= table.flags[flag].astype(np.uint32) * bit
    return masks


def _set_column(plane: np.ndarray, column: int, bits: np.ndarray) -> None:
    byte, bit = divmod(column, 8)
    plane[:, byte] = (plane[:, byte] & np.uint8(0xFF ^ (1 << bit))) | (bits.astype(np.uint8) << np.uint8(bit))


def _weighted_bits(plane: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per row: the sum of ``weights`` over the columns whose bit is set, a byte (8 slots) at a time."""
    per_byte = np.zeros(plane.shape[1] * 8)
    per_byte[:len(weights)] = weights
    per_byte = per_byte.reshape(plane.shape[1], 8)
    total = np.zeros(len(plane))
    for byte in np.flatnonzero(per_byte.any(axis=1)):
        total += (_BITS @ per_byte[byte])[plane[:, byte]]
    return total


def _encode(weight: np.ndarray) -> np.ndarray:
    """A weight as 1 + log2(weight + 1) in 1/WEIGHT_STEPS steps (0 stays free for "not present")."""
    return np.clip(1 + np.rint(np.log2(np.maximum(weight, 0) + 1) * WEIGHT_STEPS), 1, 65535).astype(np.uint16)


_DECODED = np.exp2((np.arange(65536) - 1.0) / WEIGHT_STEPS) - 1  # code -> weight (code 0 is never read)


def measured_share(table: RelayTable, bwauths: int | None = None) -> np.ndarray:
    """Share of the bandwidth authorities with a Measured= value for each relay (NaN: none known).

    ``bwauths``: how many authorities measure bandwidth (the pipeline's
    ``bandwidth_authorities``); without it, the most any relay of the period has.
    """
    count = bwauths if bwauths is not None else int(table.measured_count.max(initial=0))
    if count <= 0:
        return np.full(len(table), np.nan)
    return np.minimum(table.measured_count / count, 1.0)


def relay_columns(memory: ReliabilityMemory, table: RelayTable, bwauths: int | None = None,
                  scores: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The tor_relay reliability fields in the table's order (NaN: unknown, left out of the point).

    Call after ``memory.learn`` of the same period: relays it has not learned are unknown.
    """
    scores = scores if scores is not None else memory.scores()
    rows = np.fromiter((memory.rows.get(fingerprint, -1) for fingerprint in table.fingerprints), np.int64,
                       len(table))
    columns = {name: np.append(values, np.nan)[rows] for name, values in scores.items()}  # row -1: NaN
    return {**columns, "measured_share": measured_share(table, bwauths)}


@dataclass(frozen=True)
class Standing:
    """One operator's reliability (a leaderboard row and a tor_operator point's fields)."""

    group: str  # contact | family
    operator_id: str
    operator: str
    relays: int  # in the consensus now
    relays_30d: int  # seen within 30 days (those aggregated)
    weight_fraction: float  # of the consensus now
    scores: dict[str, float]  # RELAY_FIELDS -> weight-weighted mean over its relays (missing: unknown)


def standings(memory: ReliabilityMemory, table: RelayTable, group: str, bwauths: int | None = None,
              scores: dict[str, np.ndarray] | None = None, limit: int | None = None) -> list[Standing]:
    """The operators of ``group`` with relays in the consensus (the first ``limit``), ranked by weight as
    ``operator_points`` ranks them (ties in the consensus's order).

    An operator's score is the mean of its relays' known scores, each relay
    weighted by its consensus weight (now, or when last seen for a relay
    that left); a plain mean where those weights are all 0. ``scores``:
    ``memory.scores()`` if the caller has them already.
    """
    number: dict[str | None, int] = {}  # the group's key (contact key, or whole family) -> operator code
    now_codes = np.fromiter((number.setdefault(key, len(number)) if key is not None else -1
                             for key in _identities(table, group)), np.int64, len(table))
    count, now = len(number), now_codes >= 0
    weights = np.bincount(now_codes[now], table.weight[now], count)
    ranked = np.argsort(-weights, kind="stable")[:limit]
    # every relay of the memory by its last known key (those that left included), and the relays now
    codes = np.fromiter((number.get(key, -1) for key in _identities(memory, group)), np.int64, len(memory))
    rows = np.fromiter((memory.rows.get(fp, -1) for fp in table.fingerprints), np.int64, len(table))
    codes[rows[rows >= 0]] = now_codes[rows >= 0]
    scores = dict(scores if scores is not None else memory.scores())
    scores["measured_share"] = np.full(len(memory), np.nan)
    scores["measured_share"][rows[rows >= 0]] = measured_share(table, bwauths)[rows >= 0]
    counted = np.bincount(codes[codes >= 0], minlength=count).tolist()
    means = {name: weighted_means(codes, scores[name], memory.last_weight, count).tolist() for name in RELAY_FIELDS}
    relays, total = np.bincount(now_codes[now], minlength=count).tolist(), float(table.weight.sum()) or 1.0
    first = np.unique(now_codes[now], return_index=True)[1]  # where each operator first appears in the table
    tags = [(table.operator_id[index], table.operator_label[index]) if group == "contact"
            else (table.family_id[index][:12], table.family_id[index]) for index in np.flatnonzero(now)[first]]
    return [Standing(group, tags[code][0], tags[code][1], relays[code], counted[code], float(weights[code]) / total,
                     {name: means[name][code] for name in RELAY_FIELDS if not math.isnan(means[name][code])})
            for code in ranked.tolist()]


def _identities(relays: RelayTable | ReliabilityMemory, group: str) -> list[str | None]:
    """Each relay's operator as ``operator_points`` groups them: its contact key, or its whole family's."""
    return relays.operator_id if group == "contact" else relays.family_id


def weighted_means(codes: np.ndarray, values: np.ndarray, weights: np.ndarray, count: int) -> np.ndarray:
    """Per operator code: sum(w x) / sum(w) over its relays with a known x (plain mean if sum(w) is 0)."""
    known = (codes >= 0) & ~np.isnan(values)
    group, x, w = codes[known], values[known], np.maximum(weights[known], 0)
    weighted, total = np.bincount(group, w * x, count), np.bincount(group, w, count)
    plain, number = np.bincount(group, x, count), np.bincount(group, minlength=count)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, weighted / total, np.where(number > 0, plain / number, np.nan))


def operator_reliability_points(memory: ReliabilityMemory, table: RelayTable, top_n: int, time: int,
                                bwauths: int | None = None, scores: dict[str, np.ndarray] | None = None) -> list[Point]:
    """tor_operator reliability fields for the same top operators by weight as ``operator_points`` writes."""
    scores = scores if scores is not None else memory.scores()
    return [point("tor_operator", {"group": each.group, "operator_id": each.operator_id, "operator": each.operator},
                  {"relays_30d": each.relays_30d, **each.scores}, time)
            for group in ("contact", "family") for each in standings(memory, table, group, bwauths, scores, top_n)]


def reliability_points(memory: ReliabilityMemory, table: RelayTable, top_n: int, time: int,
                       bwauths: int | None = None, proofs: ProofBook | None = None) -> list[Point]:
    """The period's reliability points: per relay of the table (tor_relay), per top operator (tor_operator)
    and, with the AROI ``proofs``, per verified operator (``agent.metrics.aroi_reliability``).

    Call after ``memory.learn`` of the same period. ``relay_columns`` gives
    the per-relay fields as columns, to join a period's other tor_relay fields.
    """
    scores = memory.scores()
    columns = relay_columns(memory, table, bwauths, scores)
    relays: list = PointColumns("tor_relay", "fingerprint", table.fingerprints, columns, time).points()
    from agent.metrics.aroi_reliability import aroi_reliability_points  # it reads weighted_means from here

    verified = aroi_reliability_points(table, columns["running_30d"], proofs, time) if "running_30d" in columns \
        else []
    return relays + operator_reliability_points(memory, table, top_n, time, bwauths, scores) + verified


def leaderboard(memory: ReliabilityMemory, table: RelayTable, top: int = 20, *, group: str = "contact",
                min_relays: int = 1, bwauths: int | None = None) -> list[Standing]:
    """The ``top`` most reliable operators with at least ``min_relays`` relays in the consensus.

    Ordered by Running share over 30 days, then presence over 30 days (both
    higher first, to 0.1 %), then flag changes per week (to 0.1) and weight
    CV (to 0.001; both lower first), then weight; an unknown score ranks last.
    """
    def order(each: Standing) -> tuple[float, ...]:
        return (*(round(sign * each.scores.get(name, sign * np.inf), digits) for name, sign, digits in (
            ("running_30d", -1, 3), ("presence_30d", -1, 3), ("flag_changes_per_week", 1, 1),
            ("weight_cv_7d", 1, 3))), -each.weight_fraction)

    eligible = [each for each in standings(memory, table, group, bwauths) if each.relays >= min_relays]
    return sorted(eligible, key=order)[:top]


class ReliabilityLearner:
    """The scores in the live period flow (``agent.pipeline.learners``): each new period learned, then scored."""

    def __init__(self, top_n: int = 200):
        self.memory, self.top_n = ReliabilityMemory(), top_n

    def configure(self, config: Any) -> None:
        self.top_n = config.metrics.operators_top_n  # the operators tor_operator writes, so the series line up

    def learn(self, result: Any) -> list[Point]:
        consensus = result.snapshot.latest_consensus() if result.snapshot is not None else None
        if result.table is None or consensus is None:
            return []
        seconds = (consensus.fresh_until - consensus.valid_after).total_seconds()
        if not self.memory.learn(result.table, result.time, seconds):
            return []  # a rerun
        return reliability_points(self.memory, result.table, self.top_n, result.time,
                                  bwauths=len(result.bandwidth_authorities) or None,
                                  proofs=getattr(result, "proofs", None))
