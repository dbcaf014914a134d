"""Learned baselines for network series: each period's change judged against the series' own tail.

Real networks move in bursts: most hours 20-30 relays join, some hours a
hundred, and a few hundred when a large operator restarts. A Gaussian over
the residuals (the first design) read every such hour as a six-sigma event
(about one alarm in six hours on real 2024-2025 history). So a series is
judged by how far it moves *in one period* compared with how far it moved
in the periods it remembers (``window_periods``, four weeks of hours):

- what is judged: a flow (relays joining, leaving, gaining a flag) its
  value; a level (an authority's vote size, the total weight) its change
  since the last period, in the direction that matters;
- the limit: ``tail_multiple`` times the window's 99.5th percentile of
  that (River's ``RollingQuantile``), never below an absolute floor nor a
  share of the population the series counts from (``SeriesSpec``): a
  flow of 1 % of the relays, or 5 % of a flag's holders, is what the network
  does on its own. The share is the only tuned number per family, and it is
  a fraction of the population, not a count of one series;
- per elapsed period: after a gap of ``g`` periods the change is judged
  against the limit plus ``g - 1`` ordinary periods (the window's 90th
  percentile each), so a gap never blinds the baseline and never alarms by
  itself; what is learned is the change per period. A flow seen after less
  than a period (an irregular series: 6 h after an 8-hourly snapshot) has
  the missing part of an ordinary period taken off its limit the same way;
- an anomalous period is not learned (an incident does not widen its own
  band), unless ``adapt_after`` come in a row: then the new normal is.
  A level re-anchors on every value it sees, so a step alerts once, and a
  return to the last normal value is a recovery, not a second alert;
- a reversal: a flow undoing an anomaly of its counterpart within
  ``REVERSAL_PERIODS`` (the Guard flags lost an hour ago regained, a /24
  that left coming back, a flood leaving) is judged as usual but marked a
  reversal (info at most, see ``series``) and never learned: learning it
  widened the band until the next such flap passed unseen (2026-08-17,
  Guard +347 and +339 an hour after each loss). One that undoes at least
  ``REVERSAL_SHARE`` of what is owed is told even inside the band (at half
  the limit or more): the anomaly's alert said something went; this one
  says it came back.

The score is the judged change over the limit (1 = at the limit); from
``warning_ratio`` times the limit a series' anomaly is a warning.
River is imported when the first model is made, so the detectors' modules,
and the settings they declare, load without it.
"""

from __future__ import annotations

from dataclasses import dataclass

LEVEL, FLOW = "level", "flow"  # a level is judged by its change since the last period; a flow by its value
BOTH, UP, DOWN = "both", "up", "down"  # which departures matter
TAIL_QUANTILE = 0.995  # the window's ordinary extreme (about one period in 200)
TYPICAL_QUANTILE = 0.9  # what a busy ordinary period does: the allowance per extra period of a gap
MAX_GAP_PERIODS = 48  # a level older than this is no anchor: the next value re-anchors it
#: How long an anomalous flow's counterpart may undo it as a reversal. The real reversals labelled in the
#: 2024-2026 hourly history come 1-14 h later (dips return within the hour, Guard flaps within 1-6 h, a
#: wave of new relays leaves after 14 h, a flood after 23 h): a day covers them, a longer debt would hide
#: a second, unrelated event of the same size.
REVERSAL_PERIODS = 24
#: A reversal undoing at least this share of what is still owed, and at least half its limit, is told (info)
#: even inside the band: the loss's alert said something broke; this says it came back.
REVERSAL_SHARE = 0.5
#: The shortest interval judged, in periods: two snapshots minutes apart are not a period with no churn.
MIN_ELAPSED = 0.25


@dataclass(frozen=True)
class SeriesSpec:
    """How one family of series is modelled (see SPECS in ``series``)."""

    kind: str
    direction: str = BOTH
    floor_absolute: float = 1.0  # the limit is never below this (in the series' unit) ...
    floor_relative: float = 0.0  # ... nor below this share of the population (or, for a level, of its value)


@dataclass(frozen=True)
class Verdict:
    """One series in one period: what was seen, what was expected, how unusual it is."""

    series: str
    observed: float
    expected: float
    low: float
    high: float
    score: float  # the judged change over the limit: >= 1 is anomalous
    anomalous: bool
    warming: bool
    reversal: bool = False  # it undoes a recent anomaly of the counterpart flow (judged, never learned)


class SeriesModel:
    """The judged change's rolling tail for one series; River objects and plain Python, so it pickles."""

    owed = 0.0  # how much of the counterpart's anomaly may still come back as a reversal (class defaults:
    owed_until: int | None = None  # models pickled before reversals existed read as owing nothing)
    interval = 1.0  # periods since the last value, unclamped (a flow's limit shrinks below one period)

    def __init__(self, spec: SeriesSpec, window: int, warmup: int, adapt_after: int = 3):
        from river import stats  # about a second to import: only where a model is made

        self.spec, self.warmup, self.adapt_after = spec, warmup, adapt_after
        self.tail = stats.RollingQuantile(TAIL_QUANTILE, window_size=window)
        self.typical = stats.RollingQuantile(TYPICAL_QUANTILE, window_size=window)
        self.periods_learned = 0
        self.last: float | None = None  # a level's last value
        self.normal: float | None = None  # ... and its last value not judged anomalous (a recovery returns to it)
        self.last_time: int | None = None
        self.elapsed = 1.0  # periods since the last value (set by ``resume``)
        self.anomalous_run = 0

    @property
    def learned(self) -> int:
        """Periods in the window (at most its size)."""
        return min(self.periods_learned, self.tail.window_size)

    def configure(self, warmup: int, adapt_after: int) -> None:
        """Follows the config after a restart; the window is fixed once the model exists."""
        self.warmup, self.adapt_after = warmup, adapt_after

    def resume(self, time: int, period: int) -> None:
        """Notes how many periods passed since the last value; a level too old to anchor on is dropped."""
        self.interval = max(MIN_ELAPSED, (time - self.last_time) / period) if self.last_time is not None else 1.0
        self.elapsed = max(1.0, self.interval)
        if self.elapsed > MAX_GAP_PERIODS:
            self.last = None
        if self.owed_until is not None and time > self.owed_until:
            self.owed, self.owed_until = 0.0, None

    def expect_reversal(self, amount: float, until: int) -> None:
        """The counterpart flow was anomalous by ``amount``: up to that may come back until ``until``."""
        self.owed, self.owed_until = self.owed + max(amount, 0.0), until

    def limit(self, base: float, tail_multiple: float) -> float:
        """How far the series may move in the periods elapsed, ``base`` being the population (or the level)."""
        tail = (self.tail.get() or 0.0) if self.periods_learned else 0.0
        one = max(self.spec.floor_absolute, self.spec.floor_relative * abs(base), tail_multiple * tail)
        typical = (self.typical.get() or 0.0) if self.periods_learned else 0.0
        spanned = self.elapsed if self.spec.kind == LEVEL else self.interval
        return max(one + (spanned - 1.0) * max(typical, self.spec.floor_absolute), self.spec.floor_absolute)

    def judge(self, name: str, value: float, tail_multiple: float, population: float | None = None) -> Verdict:
        """Scores ``value`` against the model as it stands (it does not learn here)."""
        level = self.spec.kind == LEVEL
        anchor = self.last if level and self.last is not None else 0.0  # what the change is measured from
        if level:
            expected = anchor
        else:
            expected = (self.typical.get() or 0.0) * self.elapsed if self.periods_learned else 0.0
        base = population if population is not None else (self.last if self.last is not None else value)
        limit = self.limit(base, tail_multiple)
        change = value - anchor
        judged = {BOTH: abs(change), UP: change, DOWN: -change}[self.spec.direction]
        warming = self.periods_learned < self.warmup or (level and self.last is None)
        low = 0.0 if not level else anchor - limit if self.spec.direction != UP else float("-inf")
        high = anchor + limit if self.spec.direction != DOWN else float("inf")
        score = judged / limit if limit > 0 else 0.0
        if score > 1.0 and level and self.normal is not None and self.normal != self.last:
            # back to where it was before the anomaly: a recovery, which the anomaly's alert already covered
            score = min(score, abs(value - self.normal) / limit)
        ordinary = (self.typical.get() or 0.0) if self.periods_learned else 0.0
        reversal = not level and self.owed > 0 and value > ordinary and value - ordinary <= self.owed
        told = score > 1.0 or (reversal and score >= 0.5 and value - ordinary >= REVERSAL_SHARE * self.owed)
        return Verdict(name, value, expected, low, high, score, told and not warming, warming, reversal)

    def learn(self, value: float, verdict: Verdict, time: int, period: int) -> None:
        """Takes the period in; an anomalous one is kept out, unless anomalies persist (then: a new normal);
        a reversal is always kept out (it belongs to the counterpart's incident)."""
        if verdict.reversal:
            self.owed = max(0.0, self.owed - value)
            self.last_time = time
            return
        self.anomalous_run = self.anomalous_run + 1 if verdict.anomalous else 0
        adapt = self.anomalous_run > self.adapt_after
        if self.spec.kind == LEVEL and self.last is None:
            self.last = self.normal = value  # the first value (or the first after a long gap) anchors
            self.last_time = time
            return
        change = value
        if self.spec.kind == LEVEL and self.last is not None:
            # after an anomaly the level either recovers or stays: neither teaches the anomaly's jump
            change = min(abs(value - self.last), abs(value - (self.normal if self.normal is not None else self.last)))
        if not verdict.anomalous or adapt:
            per_period = max(change, 0.0) / self.elapsed
            self.tail.update(per_period)
            self.typical.update(per_period)
            self.periods_learned += 1
            if adapt:
                self.anomalous_run = 0
        if self.spec.kind == LEVEL:
            self.last = value
            self.normal = value if not verdict.anomalous or adapt else self.normal
        self.last_time = time
