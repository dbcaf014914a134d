"""Learned baselines for network series: a seasonal forecast, and River's GaussianScorer on what it misses.

Each series (relays with a flag, relays joining, an authority's measured
count, ...) is forecast from its last value plus the change it made one day
earlier ("seasonal naive": the network's daily rhythm cancels out). River's
``GaussianScorer`` over a rolling week of residuals says how unusual the
miss is. Two details keep it from crying wolf:

- a floor under the spread (an absolute and a relative one): a series that
  barely moves, like one authority's vote size, would otherwise call a
  change of three relays impossible;
- a period judged anomalous is scored but not learned from: neither its
  residual, nor its change as next day's seasonal step, nor its value as the
  level the next forecast starts from. So an incident does not widen the
  band it is judged by, a one-period dip alerts once (not again when it
  recovers), and only after ``adapt_after`` anomalous periods in a row does
  the model accept a new level.

River is imported when the first model is made (or a saved one loaded), so
the detectors' modules, and the settings they declare, load without it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

LEVEL, FLOW = "level", "flow"  # a level is forecast from its last value; a flow (a count per period) is not
BOTH, UP, DOWN = "both", "up", "down"  # which departures matter


@dataclass(frozen=True)
class SeriesSpec:
    """How one family of series is modelled (see NETWORK_SERIES in ``series``)."""

    kind: str
    direction: str = BOTH
    floor_absolute: float = 1.0  # the spread is never taken smaller than this (in the series' unit)
    floor_relative: float = 0.0  # ... nor than this fraction of the forecast


@dataclass(frozen=True)
class Verdict:
    """One series in one period: what was seen, what was expected, how unusual it is."""

    series: str
    observed: float
    expected: float
    low: float
    high: float
    score: float  # 0..1: 2·|Φ(z) − 0.5|, River's GaussianScorer score with the floored spread
    anomalous: bool
    warming: bool


class SeriesModel:
    """Forecast + residual scorer for one series; plain Python and River objects, so it pickles."""

    def __init__(self, spec: SeriesSpec, season: int, window: int, warmup: int, adapt_after: int = 3):
        from river import anomaly  # about a second to import: only where a model is made

        self.spec, self.season, self.warmup, self.adapt_after = spec, season, warmup, adapt_after
        self.scorer = anomaly.GaussianScorer(window_size=window, grace_period=0)
        self.periods_learned = 0  # the rolling window's count stops at its size; warm-up needs the total
        self.last: float | None = None
        self.last_time: int | None = None
        self.steps: deque[float] = deque(maxlen=season) if season else deque(maxlen=1)
        self.anomalous_run = 0

    @property
    def learned(self) -> int:
        """Residuals in the scorer's window (at most the window size)."""
        return int(self.scorer.gaussian.n_samples)

    def configure(self, warmup: int, adapt_after: int) -> None:
        """Follows the config after a restart; the window is fixed once the scorer exists."""
        self.warmup, self.adapt_after = warmup, adapt_after

    def forecast(self) -> float:
        if self.spec.kind == FLOW or self.last is None:
            return 0.0
        seasonal = self.steps[0] if self.season and len(self.steps) == self.season else 0.0
        return self.last + seasonal

    def resume(self, time: int, period: int) -> None:
        """After a gap of more than three periods the old level means nothing: re-anchor on the next value."""
        if self.last_time is not None and time - self.last_time > 3 * period:
            self.last = None
            self.steps.clear()

    def judge(self, name: str, value: float, z_threshold: float) -> Verdict:
        """Scores ``value`` against the model as it stands (it does not learn here)."""
        forecast = self.forecast()
        gaussian = self.scorer.gaussian
        mean = gaussian.mu if self.learned else 0.0
        sigma = gaussian.sigma if self.learned > 1 else 0.0
        if isinstance(sigma, complex):  # a rolling variance of near-constant values can dip below zero
            sigma = 0.0
        spread = max(sigma, self.spec.floor_absolute, self.spec.floor_relative * abs(forecast + mean))
        expected = forecast + mean
        z = (value - expected) / spread
        warming = self.periods_learned < self.warmup or (self.spec.kind == LEVEL and self.last is None)
        beyond = {BOTH: abs(z), UP: z, DOWN: -z}[self.spec.direction] >= z_threshold
        return Verdict(name, value, expected, expected - z_threshold * spread, expected + z_threshold * spread,
                       math.erf(abs(z) / math.sqrt(2)), beyond and not warming, warming)

    def learn(self, value: float, verdict: Verdict, time: int, period: int) -> None:
        """Takes the period in; an anomalous one is kept out, unless anomalies persist (then: a new normal).

        Only normal periods teach the residual spread and the seasonal steps.
        A level that stays off for more than ``adapt_after`` periods is
        re-anchored on (its jump is not learned as a residual, nor repeated a
        day later as a seasonal step); a flow that stays high is learned from,
        so its distribution moves.
        """
        self.anomalous_run = self.anomalous_run + 1 if verdict.anomalous else 0
        adapt = self.anomalous_run > self.adapt_after
        forecast = self.forecast()
        if self.spec.kind == FLOW:
            if not verdict.anomalous or adapt:
                self.scorer.learn_one(None, value)
                self.periods_learned += 1
        elif self.last is None:
            self.last = value  # the first value anchors the level
        elif not verdict.anomalous:
            self.scorer.learn_one(None, value - forecast)
            self.periods_learned += 1
            self.steps.append(value - self.last)
            self.last = value
        else:
            self.steps.append(forecast - self.last)
            self.last = value if adapt else forecast
            if adapt:
                self.anomalous_run = 0
        self.last_time = time
