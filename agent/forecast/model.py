"""Capacity forecast per role: daily means, a River SNARIMAX and a seasonal-naive baseline, the better one published.

What: for each role (guard, middle, exit) and quantity (``advertised``
bandwidth, ``consensus`` weight of the position), the daily mean of the
period values, forecast 7 and 30 days ahead. Why: capacity planning needs
the trend, not the hourly noise, so the periods (one hour live, 10 s on the
private test network) are averaged per UTC day (``day_seconds``) first.

How: each closed day is learned (in log space) by a SNARIMAX and becomes a
rolling origin: the model and two naive baselines forecast from it (the
seasonal naive repeats the value of the target's weekday in the latest
week, ``SEASON`` days; the last value repeats the last day), and each
forecast is scored when its target day closes. The published forecast is
the model's only where it beats both baselines on that evidence (MAPE over
the last ``WINDOW`` scored origins, once ``MIN_SCORED`` exist; before that
the historical backtest's verdict in ``PRIOR``), else the better
baseline's, labelled by the ``model`` tag. The band is the 10 % and 90 %
quantiles of the published method's log residuals on the same evidence,
widened where needed to hold the published value. Docs: docs/forecast.md.

Days without any period are imputed log-linearly for learning only, never
scored; a silence longer than ``MAX_GAP_DAYS`` restarts the series. All
state is bounded deques, so ``Forecaster`` pickles small (``forecast_state``).
"""

from __future__ import annotations

import logging
import math
import pickle
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.model.files import PickledState
from agent.model.points import Point, point

log = logging.getLogger(__name__)

ROLES = ("guard", "middle", "exit")
QUANTITIES = ("advertised", "consensus")
HORIZONS = (7, 30)
MODEL, SEASONAL, LAST = "snarimax", "seasonal_naive", "last_value"
#: In order of preference on equal errors (at 7 days the two baselines are the same forecast): a baseline first.
METHODS = (SEASONAL, LAST, MODEL)
BASELINES = (SEASONAL, LAST)
MEASUREMENT = "tor_forecast"
SEASON = 7  # days: the baseline repeats the latest week
DAY_SECONDS = 86_400
HISTORY = 35  # daily values kept: the baseline's lags (up to 5 for 30 days) and a restarted model's replay
WINDOW = 90  # scored origins kept per series and horizon: the live evidence
MIN_SCORED = 14  # scored origins before the live evidence replaces the prior
MIN_MODEL_DAYS = 28  # days a model has learned before it may be published
MAX_GAP_DAYS = 45  # a longer silence restarts the series: what was learned is too old
MAX_LOG_STEP = math.log(10)  # a model forecast is clamped to within a factor 10 of the last day
BAND = (0.1, 0.9)
#: SNARIMAX orders (p, d, q, m, sp, sd, sq), SGD learning rate, intercept rate, error clip: chosen on the
#: 2011-2014 origins of the real history (docs/forecast.md); the seasonal terms did not help there.
ORDERS = (2, 1, 1, SEASON, 0, 0, 0)
LEARNING_RATE, INTERCEPT_RATE, CLIP = 0.03, 0.0003, 1.0

Key = tuple[str, str]  # (role, quantity)
Band = tuple[float, float]  # log-residual quantiles BAND
#: (role, quantity, horizon) -> method -> (MAPE, band): the historical backtest's 2015-2019 window
#: (``python -m agent.forecast.backtest --prior``; ``consensus`` is backtested on bwhist, see there).
PRIOR: dict[tuple[str, str, int], dict[str, tuple[float, Band]]] = {
    ("guard", "advertised", 7): {MODEL: (0.02124, (-0.0300, 0.0277)), SEASONAL: (0.02176, (-0.0215, 0.0359)),
        LAST: (0.02176, (-0.0215, 0.0359))},
    ("guard", "advertised", 30): {MODEL: (0.04641, (-0.0628, 0.0525)), SEASONAL: (0.05664, (-0.0294, 0.0986)),
        LAST: (0.05085, (-0.0260, 0.0885))},
    ("guard", "consensus", 7): {MODEL: (0.03080, (-0.0479, 0.0448)), SEASONAL: (0.03129, (-0.0400, 0.0529)),
        LAST: (0.03129, (-0.0400, 0.0529))},
    ("guard", "consensus", 30): {MODEL: (0.05192, (-0.0848, 0.0694)), SEASONAL: (0.05725, (-0.0474, 0.1079)),
        LAST: (0.05460, (-0.0513, 0.1018))},
    ("middle", "advertised", 7): {MODEL: (0.06095, (-0.0875, 0.0958)), SEASONAL: (0.05950, (-0.0805, 0.1024)),
        LAST: (0.05950, (-0.0805, 0.1024))},
    ("middle", "advertised", 30): {MODEL: (0.07983, (-0.1186, 0.0962)), SEASONAL: (0.08682, (-0.1111, 0.1502)),
        LAST: (0.07642, (-0.0877, 0.1285))},
    ("middle", "consensus", 7): {MODEL: (0.08409, (-0.1301, 0.1317)), SEASONAL: (0.08280, (-0.1222, 0.1386)),
        LAST: (0.08280, (-0.1222, 0.1386))},
    ("middle", "consensus", 30): {MODEL: (0.12109, (-0.1790, 0.1764)), SEASONAL: (0.13029, (-0.1656, 0.2368)),
        LAST: (0.11783, (-0.1494, 0.2078))},
    ("exit", "advertised", 7): {MODEL: (0.03185, (-0.0467, 0.0412)), SEASONAL: (0.03192, (-0.0401, 0.0480)),
        LAST: (0.03192, (-0.0401, 0.0480))},
    ("exit", "advertised", 30): {MODEL: (0.05232, (-0.0837, 0.0721)), SEASONAL: (0.05533, (-0.0535, 0.1009)),
        LAST: (0.05263, (-0.0556, 0.0998))},
    ("exit", "consensus", 7): {MODEL: (0.02951, (-0.0441, 0.0444)), SEASONAL: (0.02961, (-0.0377, 0.0506)),
        LAST: (0.02961, (-0.0377, 0.0506))},
    ("exit", "consensus", 30): {MODEL: (0.04906, (-0.0784, 0.0678)), SEASONAL: (0.05175, (-0.0541, 0.0964)),
        LAST: (0.05032, (-0.0526, 0.0936))},
}


@dataclass(frozen=True)
class Scored:
    """One origin's forecasts scored: log(actual / forecast) per method, in METHODS order."""

    key: Key
    horizon: int
    origin: int  # day index (time // day_seconds) forecast from
    residuals: tuple[float, ...]


@dataclass(frozen=True)
class Choice:
    """What is published for a series and horizon, and on what evidence."""

    method: str  # one of METHODS
    mapes: dict[str, float]  # method -> MAPE on the evidence (empty: no evidence yet, the seasonal naive)
    scored: int  # live scored origins behind the choice; below MIN_SCORED the prior decided
    band: Band | None


def new_model() -> Any:
    """A fresh SNARIMAX on log daily values (river imported here: only a forecasting agent pays for it)."""
    from river import linear_model, optim, time_series

    p, d, q, m, sp, sd, sq = ORDERS
    regressor = linear_model.LinearRegression(optimizer=optim.SGD(LEARNING_RATE), intercept_lr=INTERCEPT_RATE,
                                              clip_gradient=CLIP)
    return time_series.SNARIMAX(p=p, d=d, q=q, m=m, sp=sp, sd=sd, sq=sq, regressor=regressor)


def seasonal_lag(horizon: int) -> int:
    """Days before the origin whose value the baseline repeats: same weekday as the target (0 for 7, 5 for 30)."""
    return SEASON * math.ceil(horizon / SEASON) - horizon


def mape(residuals: Iterable[float]) -> float:
    """Mean |forecast - actual| / actual of log residuals log(actual / forecast)."""
    errors = [abs(math.expm1(min(-r, 700.0))) for r in residuals]  # capped: no overflow
    return sum(errors) / len(errors) if errors else math.nan


def quantile(values: Iterable[float], share: float) -> float:
    """Linear-interpolation quantile (numpy's default)."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = share * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class Track:
    """One series (role, quantity): its open day, the days learned, the model, pending and scored forecasts."""

    def __init__(self) -> None:
        self.restart()
        self.open_day: int | None = None
        self.total, self.count = 0.0, 0

    def restart(self) -> None:
        self.model = None  # made on first use: unpickling a River model imports River and SciPy (seconds)
        self.learned = 0
        self.days: deque[float] = deque(maxlen=HISTORY)  # log daily means, newest last (imputed days included)
        self.last_day: int | None = None
        self.pending = {h: deque[tuple[int, tuple[float, ...]]](maxlen=h + 1) for h in HORIZONS}  # target, METHODS
        self.residuals = {h: deque[tuple[float, ...]](maxlen=WINDOW) for h in HORIZONS}  # per METHODS
        self.latest: dict[int, dict[str, float]] = {}  # horizon -> method -> log forecast from last_day
        self.chosen: dict[tuple[int, bool], Choice] = {}  # (horizon, use_prior) -> choice: changes when a day closes

    @property
    def model(self) -> Any:
        """The River model, rebuilt from its pickled bytes on first use (a day closing), not every period."""
        if self._model is None:
            self._model = pickle.loads(self._model_bytes) if self._model_bytes is not None else new_model()
            self._model_bytes = None
        return self._model

    @model.setter
    def model(self, value: Any) -> None:
        self._model, self._model_bytes = value, None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if state.get("_model") is not None:  # the model as bytes: loading the state imports nothing of River
            state["_model"], state["_model_bytes"] = None, pickle.dumps(state["_model"], pickle.HIGHEST_PROTOCOL)
        return state

    def add(self, day: int, value: float) -> None:
        """One period's value into its day (a day already closed is not reopened)."""
        if self.open_day is None:
            if self.last_day is not None and day <= self.last_day:
                return
            self.open_day = day
        if day == self.open_day:
            self.total, self.count = self.total + value, self.count + 1

    def roll(self, day: int, key: Key) -> list[Scored]:
        """Closes the open day when ``day`` is later: learns its mean, scores and forecasts from it."""
        if self.open_day is None or day <= self.open_day or self.count == 0:
            return []
        closed, mean = self.open_day, self.total / self.count
        self.open_day, self.total, self.count = None, 0.0, 0
        return self.close(closed, math.log(mean), key)

    def close(self, day: int, y: float, key: Key) -> list[Scored]:
        if self.last_day is not None and day - self.last_day > MAX_GAP_DAYS:
            log.info("forecast %s/%s: %d days without data, the series starts again", *key, day - self.last_day)
            self.restart()
        if self.last_day is not None and self.days:
            start, gap = self.days[-1], day - self.last_day
            for step in range(1, gap):
                self.learn(start + (y - start) * step / gap)
        scored = self.score(day, y, key)
        self.learn(y)
        self.last_day = day
        self.forecast(day)
        self.chosen = {}
        return scored

    def learn(self, y: float) -> None:
        self.model.learn_one(y)
        self.days.append(y)
        self.learned += 1

    def score(self, day: int, y: float, key: Key) -> list[Scored]:
        scored = []
        for horizon, queue in self.pending.items():
            while queue and queue[0][0] < day:  # its target day was imputed or never came
                queue.popleft()
            if queue and queue[0][0] == day:
                residuals = tuple(y - forecast for forecast in queue.popleft()[1])
                self.residuals[horizon].append(residuals)
                scored.append(Scored(key, horizon, day - horizon, residuals))
        return scored

    def forecast(self, day: int) -> None:
        """Every method's log forecasts from ``day``; kept for scoring where all exist (a diverged model: none)."""
        path = self.model_path()
        self.latest = {}
        for horizon in HORIZONS:
            lag = seasonal_lag(horizon)
            if len(self.days) <= lag:
                continue
            methods = {SEASONAL: self.days[-1 - lag], LAST: self.days[-1]}
            if path is not None:
                methods[MODEL] = path[horizon - 1]
                self.pending[horizon].append((day + horizon, tuple(methods[method] for method in METHODS)))
            self.latest[horizon] = methods

    def model_path(self) -> list[float] | None:
        """The model's log forecasts 1..max(HORIZONS) days on, clamped near the last day; None if it diverged."""
        last = self.days[-1]
        try:
            path = [float(value) for value in self.model.forecast(horizon=max(HORIZONS))]
        except (ArithmeticError, ValueError):
            path = [math.nan]
        if all(math.isfinite(value) for value in path):
            return [min(max(value, last - MAX_LOG_STEP), last + MAX_LOG_STEP) for value in path]
        log.warning("forecast model diverged; it learns again from the last %d days", len(self.days))
        self.model, self.learned = new_model(), 0
        for value in self.days:
            self.model.learn_one(value)
            self.learned += 1
        return None

    def choice(self, key: Key, horizon: int, use_prior: bool) -> Choice:
        """``decide``, once per closed day."""
        if (horizon, use_prior) not in self.chosen:
            self.chosen[(horizon, use_prior)] = self.decide(key, horizon, use_prior)
        return self.chosen[(horizon, use_prior)]

    def decide(self, key: Key, horizon: int, use_prior: bool) -> Choice:
        """The method with the lowest MAPE on the evidence (live, else the prior); the model only once usable."""
        evidence = self.residuals[horizon]
        usable = MODEL in self.latest.get(horizon, {}) and self.learned >= MIN_MODEL_DAYS
        candidates = METHODS if usable else BASELINES
        if len(evidence) >= MIN_SCORED:
            columns = {method: [row[index] for row in evidence] for index, method in enumerate(METHODS)}
            mapes = {method: mape(column) for method, column in columns.items()}
            method = min(candidates, key=lambda name: (mapes[name], METHODS.index(name)))
            band = (quantile(columns[method], BAND[0]), quantile(columns[method], BAND[1]))
            return Choice(method, mapes, len(evidence), band)
        prior = PRIOR.get((*key, horizon)) if use_prior else None
        if prior is None:
            return Choice(SEASONAL, {}, len(evidence), None)
        method = min(candidates, key=lambda name: (prior[name][0], METHODS.index(name)))
        return Choice(method, {name: value for name, (value, _) in prior.items()}, len(evidence), prior[method][1])


class Forecaster:
    """Every series' track; ``update`` once per period, in time order. Pickles as one small object."""

    def __init__(self, day_seconds: int = DAY_SECONDS, use_prior: bool = True):
        self.version = STATE_VERSION
        self.day_seconds = day_seconds
        self.use_prior = use_prior  # False: the live evidence alone decides (the backtest: no look-ahead)
        self.tracks: dict[Key, Track] = {}
        self.last_time: int | None = None
        self.scored: list[Scored] = []  # what the last update scored (the backtest reads it)

    def update(self, time: int, values: Mapping[Key, float]) -> list[Point]:
        """Learns one period's per-series values; returns the forecast points (none for a rerun or before data)."""
        return self.points(time) if self.advance(time, values) else []

    def advance(self, time: int, values: Mapping[Key, float]) -> bool:
        """``update`` without the points: False for a period not newer than the last (a rerun), ignored."""
        self.scored = []
        if self.last_time is not None and time <= self.last_time:
            return False
        self.last_time, day = time, time // self.day_seconds
        for key, track in self.tracks.items():
            self.scored += track.roll(day, key)
        for key, value in values.items():
            if key[0] in ROLES and key[1] in QUANTITIES and math.isfinite(value) and value > 0:
                if key not in self.tracks:
                    self.tracks[key] = Track()
                self.tracks[key].add(day, float(value))
        return True

    def update_points(self, time: int, points: Iterable[Any]) -> list[Point]:
        """``update`` with the values read from the period's metric points (``capacity_of``)."""
        return self.update(time, capacity_of(points))

    def learn(self, result: Any) -> list[Point]:
        """The period flow's call (``agent.pipeline.learners``): a judged period with a consensus."""
        return self.update_points(result.time, result.points) if result.has_consensus else []

    def points(self, time: int) -> list[Point]:
        """``tor_forecast`` per series and horizon from the newest closed day: value, band and the evidence."""
        points = []
        for key, track in sorted(self.tracks.items()):
            if track.last_day is None:
                continue
            for horizon, methods in sorted(track.latest.items()):
                chosen = track.choice(key, horizon, self.use_prior)
                value = methods[chosen.method]
                if _exp(value) is None:
                    continue
                low, high = (min(chosen.band[0], 0.0), max(chosen.band[1], 0.0)) if chosen.band else (None, None)
                tags = {"role": key[0], "quantity": key[1], "horizon_days": str(horizon), "model": chosen.method}
                points.append(point(MEASUREMENT, tags, {
                    "value": _exp(value),
                    "low": _exp(value + low) if low is not None else None,
                    "high": _exp(value + high) if high is not None else None,
                    "target_seconds": (track.last_day + horizon) * self.day_seconds,
                    **{f"{method}_mape_ratio": _finite(chosen.mapes.get(method)) for method in METHODS},
                    "scored": chosen.scored,
                }, time))
        return points


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _exp(value: float) -> float | None:
    """exp, or None where it overflows (a band of a series near the float range)."""
    try:
        return _finite(math.exp(value))
    except OverflowError:
        return None


def capacity_of(points: Iterable[Any]) -> dict[Key, float]:
    """Per (role, quantity) from a period's metric points.

    ``advertised``: ``tor_network_role`` advertised_bandwidth_bytes (bytes/s);
    ``consensus``: the role's weight_fraction times ``tor_network``
    weight_total, the consensus weight clients give the position.
    """
    total, advertised, fractions = None, {}, {}
    for item in points:
        if item.measurement == "tor_network":
            total = item.fields.get("weight_total", total)
        elif item.measurement == "tor_network_role":
            role, fields = item.tags.get("role"), item.fields
            if "advertised_bandwidth_bytes" in fields:
                advertised[role] = fields["advertised_bandwidth_bytes"]
            if "weight_fraction" in fields:
                fractions[role] = fields["weight_fraction"]
    values = {(role, "advertised"): value for role, value in advertised.items() if role in ROLES}
    if total is not None:
        values.update({(role, "consensus"): share * total for role, share in fractions.items() if role in ROLES})
    return values


STATE_VERSION = 1


def forecast_state(state_dir: Path, day_seconds: int = DAY_SECONDS) -> PickledState[Forecaster]:
    """The pickled Forecaster in ``state_dir/forecast.pickle`` (``agent.model.files``: atomic, damage set aside)."""
    return PickledState(state_dir, "forecast", STATE_VERSION, lambda: Forecaster(day_seconds))
