"""At-risk warnings: which relays will lose a flag, or drop out of the consensus, within the next day.

What: pure functions from per-relay history (a boolean matrix of relays x
periods for "listed" and one for "has the flag", oldest period first) to
per-relay features, a risk score and a warning with a reason string; plus the
live-only signals the history series cannot show (flag margins, a shrinking
number of authorities listing the relay, an ageing descriptor).

Why this shape: the score is the rate at which relays in the same history
cell (recent losses x losses over a week x age of the current state x time
since first seen) had the event within ``HORIZON`` periods, counted on the
tuning part of a real series (``agent.evaluation.atrisk`` fits and measures
it on the alireza-tor-nodes hourly Onionoo lists; docs/relays.md "At-risk
warnings"). A rate is a probability an operator can read, and a threshold on
it is a precision the evaluation checks on held-out hours. Features are
causal: column t uses columns <= t only, so the same functions compute the
evaluation's every hour and the live period's last column.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from agent.model.points import Point, PointColumns

HORIZON = 24  # periods ahead a warning speaks for (a day of hourly periods)
WINDOW, LONG_WINDOW = 24, 168  # "recent" and "over a week", in periods
TARGETS = ("dropout", "guard")  # measured on real history; Stable/HSDir/Fast only live (see margin_warnings)
#: Every flag target the evaluation (``agent.evaluation.atrisk --consensuses``) can measure on consecutive
#: consensuses, target -> consensus flag. Only TARGETS have FITTED rates and are scored live; stable, hsdir and
#: fast have no real measurement here, so they are never scored live nor offered (OFFERED).
FLAG_TARGETS = {"guard": "Guard", "stable": "Stable", "hsdir": "HSDir", "fast": "Fast"}
#: Cell edges: a value v falls in bin sum(v >= edge) over the edges after the first.
RECENT_EDGES, LONG_EDGES = (0, 1, 2, 3), (0, 1, 3, 7)
STATE_AGE_EDGES, AGE_EDGES = (0, 6, 24), (0, 24, LONG_WINDOW)
CELLS = len(RECENT_EDGES) * len(LONG_EDGES) * len(STATE_AGE_EDGES) * len(AGE_EDGES)
#: The precision a warning kind must reach on held-out history before anyone may subscribe to it.
MIN_PRECISION = 0.5
#: A live margin below 1 + MARGIN_BAND is "close to the boundary" (margins are quantity / threshold).
MARGIN_BAND = 0.1
MARGIN_FLAGS = {"fast_margin": "Fast", "guard_bw_margin": "Guard", "guard_wfu_margin": "Guard",
                "guard_tk_margin": "Guard", "stable_margin": "Stable", "hsdir_uptime_margin": "HSDir"}


def trailing(events: np.ndarray, window: int) -> np.ndarray:
    """Per column t, how many of columns (t - window, t] are true (fewer at the start). Rows are relays."""
    counts = np.cumsum(events, axis=1, dtype=np.int32)
    shifted = np.zeros_like(counts)
    if window < counts.shape[1]:
        shifted[:, window:] = counts[:, :-window]
    return counts - shifted


def _since(marks: np.ndarray) -> np.ndarray:
    """Per column, columns since the last true one at or before it (a large number where there is none)."""
    index = np.arange(marks.shape[1], dtype=np.int32)
    last = np.maximum.accumulate(np.where(marks, index, -(1 << 30)), axis=1)
    return index - last


def history_features(present: np.ndarray, flagged: np.ndarray | None = None, window: int = WINDOW,
                     long_window: int = LONG_WINDOW, seen_before: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per relay and period (same shape as ``present``): the history features, each capped at ``long_window``.

    ``drops_*``: listed -> not listed transitions in the last ``window`` / ``long_window`` periods;
    ``losses_*``: flag lost while listed (listed with the flag -> listed without);
    ``flaps_24``: any change of listed or flag in the last ``window`` (the trivial baseline's input);
    ``state_age``: periods since the relay last changed (or first appeared); ``age``: since first seen.
    Columns before a relay's first sighting count nothing. ``seen_before`` (per relay): seen before the
    first column, so not "new" when it first appears here. The first column's state is taken as
    a change (nothing is known before it): give ``long_window`` columns of history for exact ages.
    """
    present = np.asarray(present, bool)
    flagged = np.zeros_like(present) if flagged is None else np.asarray(flagged, bool) & present
    before = np.zeros((present.shape[0], 1), bool)
    was_present = np.concatenate([before, present[:, :-1]], axis=1)
    was_flagged = np.concatenate([before, flagged[:, :-1]], axis=1)
    drops = was_present & ~present
    losses = was_flagged & present & ~flagged
    known = np.zeros(present.shape[0], bool) if seen_before is None else np.asarray(seen_before, bool)
    seen = np.logical_or.accumulate(present, axis=1) | known[:, None]
    seen_earlier = np.concatenate([known[:, None], seen[:, :-1]], axis=1)
    first = present & ~seen_earlier
    changes = seen_earlier & ((was_present != present) | (was_flagged != flagged))  # a first sighting is none
    cap = np.int32(long_window)
    return {"drops_24": trailing(drops, window), "drops_168": trailing(drops, long_window),
            "losses_24": trailing(losses, window), "losses_168": trailing(losses, long_window),
            "flaps_24": trailing(changes, window),
            "state_age": np.minimum(_since(changes | first), cap), "age": np.minimum(_since(first), cap)}


def _bin(values: np.ndarray, edges: tuple[int, ...]) -> np.ndarray:
    code = np.zeros(values.shape, np.int16)
    for edge in edges[1:]:
        code += values >= edge
    return code


def cell_codes(features: Mapping[str, np.ndarray], target: str) -> np.ndarray:
    """The history cell (0 .. CELLS-1) of each relay and period for ``target`` ("dropout" or a flag)."""
    kind = "drops" if target == "dropout" else "losses"
    code = _bin(features[f"{kind}_24"], RECENT_EDGES)
    for name, edges in ((f"{kind}_168", LONG_EDGES), ("state_age", STATE_AGE_EDGES), ("age", AGE_EDGES)):
        code = code * np.int16(len(edges)) + _bin(features[name], edges)
    return code.astype(np.intp)


def fit_rates(codes: np.ndarray, outcomes: np.ndarray, smoothing: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Per cell: the smoothed event rate and how many examples it had (flat arrays of codes and outcomes).

    Rates shrink towards the overall rate by ``smoothing`` pseudo-examples, so a cell seen a few times
    cannot claim certainty; a cell never seen gets the overall rate.
    """
    counts = np.bincount(codes, minlength=CELLS).astype(float)
    positives = np.bincount(codes, weights=outcomes.astype(float), minlength=CELLS)
    return rates_of(counts, positives, smoothing), counts


def rates_of(counts: np.ndarray, positives: np.ndarray, smoothing: float = 20.0) -> np.ndarray:
    """Per cell: (positives + smoothing x overall rate) / (examples + smoothing); see ``fit_rates``."""
    total = float(counts.sum())
    prior = float(positives.sum()) / total if total else 0.0
    return (positives + smoothing * prior) / (counts + smoothing)


def choose_threshold(rates: np.ndarray, counts: np.ndarray, positives: np.ndarray,
                     min_precision: float | None = None, min_warnings: int = 100) -> float | None:
    """The lowest rate threshold whose warnings (cells at or above it) reach ``min_precision`` on the tuning
    counts; with ``min_precision`` None, the one maximising F1 of that precision and the share of positive
    examples warned. None: no threshold qualifies (the kind is not offered)."""
    order = np.argsort(-rates, kind="stable")
    warned, hits = np.cumsum(counts[order]), np.cumsum(positives[order])
    total = positives.sum()
    if not total:
        return None
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(warned > 0, hits / warned, 0.0)
        recall = hits / total
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    valid = (warned >= min_warnings) & (np.append(rates[order][1:], -1.0) < rates[order])  # whole ties only
    valid &= counts[order] > 0  # a threshold at a cell seen in tuning, not at the prior of the unseen ones
    if min_precision is not None:
        valid &= precision >= min_precision
        return float(rates[order][np.flatnonzero(valid)[-1]]) if valid.any() else None
    return float(rates[order][np.argmax(np.where(valid, f1, -1.0))]) if valid.any() else None


def reason(features: Mapping[str, np.ndarray], target: str, row: int, column: int = -1,
           rate: float | None = None) -> str:
    """A sentence for the operator: what in the relay's history made it at risk."""
    def value(name: str) -> int:
        return int(features[name][row, column])

    kind = "dropped out" if target == "dropout" else f"lost {target}"
    prefix = "drops" if target == "dropout" else "losses"
    text = (f"{kind} {value(f'{prefix}_24')}x in the last {WINDOW} periods and {value(f'{prefix}_168')}x in "
            f"{LONG_WINDOW}; current state {value('state_age')} periods old")
    return text + (f"; {rate:.0%} of relays with this history did so within {HORIZON}" if rate is not None else "")


@dataclass(frozen=True)
class RiskWarning:
    """One relay's warning of one kind."""

    fingerprint: str
    kind: str  # "dropout", a flag ("Guard"), or "consensus" / "<flag>_margin" for live-only signals
    risk: float | None  # the tuned event rate; None for the unmeasured live signals
    reason: str
    offered: bool = False  # operators may subscribe to it: its kind is in OFFERED (measured precision)


def history_warnings(fingerprints: list[str], present: np.ndarray, flagged: np.ndarray, target: str,
                     rates: np.ndarray, threshold: float) -> tuple[np.ndarray, list[RiskWarning]]:
    """Risk of every relay now (the last column) and the warnings of those at or above ``threshold``.

    Relays not listed now (or, for a flag, without it now) have no risk (NaN): they cannot lose it.
    """
    features = {name: values[:, -1:] for name, values in history_features(present, flagged).items()}
    eligible = present[:, -1] & (flagged[:, -1] if target != "dropout" else True)
    risk = np.where(eligible, rates[cell_codes(features, target)[:, 0]], np.nan)
    warned = np.flatnonzero(risk >= threshold)
    label = "dropout" if target == "dropout" else FLAG_TARGETS.get(target, target.capitalize())
    return risk, [RiskWarning(fingerprints[row], label, float(risk[row]),
                          reason(features, label if target != "dropout" else target, int(row), 0, float(risk[row])))
                  for row in warned]


def margin_warnings(fingerprints: list[str], margins: Mapping[str, np.ndarray],
                    band: float = MARGIN_BAND) -> list[RiskWarning]:
    """Live only (not measured on real data): relays holding a flag's margin within ``band`` above 1.

    ``margins`` are ``agent.metrics.eligibility.margin_columns``; NaN (unknown) never warns. A relay
    below 1 is past the boundary already: the authorities withhold the flag, the condition is "lost".
    """
    out = []
    for name, values in margins.items():
        flag = MARGIN_FLAGS.get(name)
        if flag is None:
            continue
        with np.errstate(invalid="ignore"):
            close = (values >= 1.0) & (values < 1.0 + band)
        out += [RiskWarning(fingerprints[row], f"{flag}_margin", None,
                        f"{name} {values[row]:.2f}: within {band:.0%} of the {flag} boundary")
                for row in np.flatnonzero(close)]
    return out


def consensus_warnings(fingerprints: list[str], listed_by: np.ndarray, listed_by_before: np.ndarray,
                       votes: int, descriptor_age_hours: np.ndarray, max_age_hours: float = 18.0) -> list[RiskWarning]:
    """Live only (not measured on real data): a relay listed by fewer authorities than last period and
    by at most one above the majority, or whose newest descriptor is older than ``max_age_hours``
    (relays republish every 18 h at most; authorities drop a descriptor after 5 days).
    """
    majority = votes // 2 + 1
    shrinking = (listed_by < listed_by_before) & (listed_by <= majority + 1) & (listed_by > 0)
    with np.errstate(invalid="ignore"):
        stale = descriptor_age_hours > max_age_hours
    out = []
    for row in np.flatnonzero(shrinking | stale):
        parts = []
        if shrinking[row]:
            parts.append(f"listed by {listed_by[row]} of {votes} authorities (was {listed_by_before[row]}; "
                         f"{majority} needed)")
        if stale[row]:
            parts.append(f"newest descriptor {descriptor_age_hours[row]:.0f} h old")
        out.append(RiskWarning(fingerprints[row], "consensus", None, "; ".join(parts)))
    return out


# -- live: a week of per-period history per relay, scored every period ------------------------------------------

#: Bits of a relay's byte per period in ``AtRiskMemory``: listed, then the flags whose history is kept.
HISTORY_FLAGS = ("Guard", "Stable", "HSDir", "Fast")
RISK_FIELDS = ("dropout_risk", "guard_loss_risk")  # the per-relay tor_relay fields (catalogue rows: docs/relays.md)
#: Warning kinds operators may subscribe to: precision >= MIN_PRECISION on every held-out part (docs/relays.md's
#: table). Guard reached 0.56 on held-out segment 1 but 0.07 on segment 2: not offered. The live-only kinds
#: ("consensus", "<flag>_margin") are unmeasured: never offered until consecutive real votes measure them.
OFFERED: frozenset[str] = frozenset({"dropout"})
# Per target: the cell rates fitted on the tuning part of alireza-tor-nodes (segment 1 before 2025-01-01) and the
# threshold, the stricter of the tuning part's max-F1 and lowest precision >= 0.5 ones
# (python -m agent.evaluation.atrisk --fitted; rates to 3 significant digits).
FITTED: dict[str, tuple[tuple[float, ...], float | None]] = {
    "dropout": ((
        0.149, 0.0495, 0.0532, 0.0865, 0.0305, 0.0409, 0.0418, 0.06, 0.0186, 0.0418, 0.39, 0.166,
        0.0418, 0.23, 0.114, 0.0418, 0.125, 0.0772, 0.0418, 0.651, 0.471, 0.0418, 0.464, 0.358,
        0.0418, 0.257, 0.197, 0.0418, 0.655, 0.796, 0.0418, 0.424, 0.625, 0.0418, 0.222, 0.28,
        0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.509, 0.359, 0.159,
        0.361, 0.311, 0.105, 0.0418, 0.0418, 0.0418, 0.0418, 0.691, 0.503, 0.0418, 0.59, 0.425,
        0.0418, 0.0418, 0.0418, 0.0418, 0.891, 0.932, 0.0418, 0.696, 0.822, 0.0418, 0.0418, 0.0418,
        0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.747, 0.583, 0.374,
        0.467, 0.444, 0.168, 0.0418, 0.0418, 0.0418, 0.0418, 0.75, 0.525, 0.0418, 0.625, 0.314,
        0.0418, 0.0418, 0.0418, 0.0418, 0.904, 0.886, 0.0418, 0.713, 0.736, 0.0418, 0.0418, 0.0418,
        0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418,
        0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.0418, 0.781, 0.902, 0.628, 0.0545, 0.667, 0.273,
        0.0418, 0.0418, 0.0418, 0.382, 0.976, 0.964, 0.0418, 0.74, 0.769, 0.0418, 0.0418, 0.0418,
    ), 0.222),
    "guard": ((
        0.0094, 0.114, 0.139, 0.00643, 0.0247, 0.076, 0.0122, 0.00715, 0.00638, 0.0122, 0.0122, 0.311,
        0.0122, 0.102, 0.22, 0.0122, 0.0122, 0.102, 0.0122, 0.0122, 0.358, 0.0122, 0.0122, 0.244,
        0.0122, 0.0122, 0.127, 0.0122, 0.0122, 0.267, 0.0122, 0.0122, 0.324, 0.0122, 0.0122, 0.0453,
        0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.307,
        0.0122, 0.0122, 0.227, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.378, 0.0122, 0.0122, 0.257,
        0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.722, 0.0122, 0.0122, 0.584, 0.0122, 0.0122, 0.0122,
        0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.57,
        0.0122, 0.0122, 0.212, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.572, 0.0122, 0.0122, 0.169,
        0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.489, 0.0122, 0.0122, 0.0976, 0.0122, 0.0122, 0.0122,
        0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122,
        0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.22, 0.0122, 0.0122, 0.0942,
        0.0122, 0.0122, 0.0122, 0.0122, 0.0122, 0.337, 0.0122, 0.0122, 0.105, 0.0122, 0.0122, 0.0122,
    ), 0.489),
}


class AtRiskMemory:
    """Per relay seen in the last ``LONG_WINDOW + 1`` learned periods, one byte per period (bit 0: listed,
    bit 1 + i: ``HISTORY_FLAGS[i]``): 169 bytes a relay. Columns are learned periods, not wall-clock hours:
    an hour the agent was down is skipped, not "absent"."""

    def __init__(self, width: int = LONG_WINDOW + 1):
        self.width = width
        self.rows: dict[str, int] = {}
        self.bits = np.zeros((0, width), np.uint8)
        self.listed_by = np.zeros(0, np.int32)  # authorities listing it in the last period it was listed
        self.last_period = np.zeros(0, np.int64)  # the period count when last listed
        self.periods = 0
        self.last_time: int | None = None

    def learn(self, fingerprints: list[str], flags: Mapping[str, np.ndarray], listed_by: np.ndarray,
              time: int) -> np.ndarray:
        """Takes a period in; returns the memory rows of ``fingerprints`` (the previous listed_by still unread)."""
        for fingerprint in fingerprints:
            if fingerprint not in self.rows:
                self.rows[fingerprint] = len(self.rows)
        grow = len(self.rows) - len(self.bits)
        if grow:
            self.bits = np.vstack([self.bits, np.zeros((grow, self.width), np.uint8)])
            self.listed_by = np.append(self.listed_by, np.zeros(grow, np.int32))
            self.last_period = np.append(self.last_period, np.zeros(grow, np.int64))
        rows = np.fromiter((self.rows[f] for f in fingerprints), np.int64, len(fingerprints))
        self.bits = np.roll(self.bits, -1, axis=1)
        self.bits[:, -1] = 0
        column = np.ones(len(rows), np.uint8)
        for index, flag in enumerate(HISTORY_FLAGS):
            if flag in flags:
                column |= (np.asarray(flags[flag], bool).astype(np.uint8) << (index + 1)).astype(np.uint8)
        self.bits[rows, -1] = column
        self.periods += 1
        self.last_period[rows] = self.periods
        self.last_time = time
        self._forget()
        return np.fromiter((self.rows[f] for f in fingerprints), np.int64, len(fingerprints))

    def _forget(self) -> None:
        keep = np.flatnonzero(self.periods - self.last_period < self.width)
        if len(keep) == len(self.bits):
            return
        names = list(self.rows)
        self.rows = {names[row]: index for index, row in enumerate(keep)}
        self.bits, self.listed_by, self.last_period = self.bits[keep], self.listed_by[keep], self.last_period[keep]

    def history(self, rows: np.ndarray, flag: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(listed, has ``flag``) matrices of ``rows`` x periods, oldest first."""
        bits = self.bits[rows]
        flagged = (bits >> (HISTORY_FLAGS.index(flag) + 1)) & 1 if flag else np.zeros_like(bits)
        return (bits & 1).astype(bool), flagged.astype(bool)


class AtRiskLearner:
    """The warnings in the live period flow (``agent.pipeline.learners``): each new period learned, then scored
    with the rates fitted on the tuning part (``FITTED``). ``warnings`` holds the period's warnings, every
    kind (reasons to show); only those marked ``offered`` may go to subscribers."""

    def __init__(self) -> None:
        self.memory = AtRiskMemory()
        self.warnings: list[RiskWarning] = []

    def learn(self, result: Any) -> list[Point]:
        table = result.table
        if table is None or (self.memory.last_time is not None and result.time <= self.memory.last_time):
            return []
        fingerprints = list(table.fingerprints)
        rows = self.memory.learn(fingerprints, table.flags, table.listed_by, result.time)
        columns, self.warnings = {}, []
        if self.memory.periods < self.memory.width:  # a week of warm-up: before it, everyone looks new
            self.memory.listed_by[rows] = np.asarray(table.listed_by)
            return []
        for target, field in (("dropout", "dropout_risk"), ("guard", "guard_loss_risk")):
            present, flagged = self.memory.history(rows, "Guard" if target == "guard" else None)
            rates, threshold = FITTED[target]
            risk, found = history_warnings(fingerprints, present, flagged, target, np.asarray(rates),
                                           threshold if threshold is not None else np.inf)
            columns[field] = risk
            self.warnings += [replace(each, offered=target in OFFERED) for each in found]
        votes = len(result.snapshot.votes()) if result.snapshot is not None else 0
        before = self.memory.listed_by[rows]
        if votes:
            self.warnings += consensus_warnings(fingerprints, np.asarray(table.listed_by), np.where(
                before > 0, before, np.asarray(table.listed_by)), votes, np.full(len(rows), np.nan))
        self.memory.listed_by[rows] = np.asarray(table.listed_by)
        self.warnings += margin_warnings(fingerprints, _margins(result.points, fingerprints))
        points: list = PointColumns("tor_relay", "fingerprint", fingerprints, columns, result.time).points()
        return points


def _margins(points: Any, fingerprints: list[str]) -> dict[str, np.ndarray]:
    """The period's margin fields (``agent.metrics.eligibility``) as columns in ``fingerprints`` order."""
    index = {fingerprint: row for row, fingerprint in enumerate(fingerprints)}
    columns = {name: np.full(len(fingerprints), np.nan) for name in MARGIN_FLAGS}
    for each in points if isinstance(points, list) else []:
        if getattr(each, "measurement", None) != "tor_relay":
            continue
        row = index.get(each.tags.get("fingerprint", ""))
        if row is None:
            continue
        for name in MARGIN_FLAGS.keys() & each.fields.keys():
            columns[name][row] = each.fields[name]
    return columns
