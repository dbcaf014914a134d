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
  itself; what is learned is the change per period;
- an anomalous period is not learned (an incident does not widen its own
  band), unless ``adapt_after`` come in a row: then the new normal is.
  A level re-anchors on every value it sees, so a step alerts once, and a
  return to the last normal value is a recovery, not a second alert.

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


class SeriesModel:
    """The judged change's rolling tail for one series; River objects and plain Python, so it pickles."""

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
        self.elapsed = max(1.0, (time - self.last_time) / period) if self.last_time is not None else 1.0
        if self.elapsed > MAX_GAP_PERIODS:
            self.last = None

    def limit(self, base: float, tail_multiple: float) -> float:
        """How far the series may move in the periods elapsed, ``base`` being the population (or the level)."""
        tail = (self.tail.get() or 0.0) if self.periods_learned else 0.0
        one = max(self.spec.floor_absolute, self.spec.floor_relative * abs(base), tail_multiple * tail)
        typical = (self.typical.get() or 0.0) if self.periods_learned else 0.0
        return one + (self.elapsed - 1.0) * max(typical, self.spec.floor_absolute)

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
        return Verdict(name, value, expected, low, high, score, score > 1.0 and not warming, warming)

    def learn(self, value: float, verdict: Verdict, time: int, period: int) -> None:
        """Takes the period in; an anomalous one is kept out, unless anomalies persist (then: a new normal)."""
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
