"""The capacity forecast: backtest on the real history, the chooser, daily means across gaps, state, points.

The real history is ../shared/timeseries (Tor Metrics' bandwidth-flags.csv);
the tests that need it are skipped without it. The whole 2010-2019 backtest
runs once (a few seconds) because it is also what ``PRIOR`` must match.
"""

from __future__ import annotations

import json
import math
import pickle
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.forecast import backtest as bt
from agent.forecast import model as fm
from agent.forecast.model import (
    HORIZONS,
    LAST,
    METHODS,
    MODEL,
    PRIOR,
    QUANTITIES,
    ROLES,
    SEASONAL,
    Forecaster,
    capacity_of,
)
from agent.model.points import Point

DOCS = Path(__file__).resolve().parents[2] / "docs" / "forecast.md"
needs_history = pytest.mark.skipif(not bt.DEFAULT_CSV.is_file(), reason="needs ../shared/timeseries")
DAY = fm.DAY_SECONDS
START = 1_700_006_400  # a UTC midnight (2023-11-15)
KEY = ("guard", "advertised")


def daily(values, key=KEY, periods_per_day=1, forecaster=None, start_day=0):
    """Feeds one value per day (each as ``periods_per_day`` periods), then one period more to close the last day."""
    forecaster = forecaster or Forecaster()
    step = DAY // periods_per_day
    for index, value in enumerate(values):
        for period in range(periods_per_day):
            forecaster.advance(START + (start_day + index) * DAY + period * step, {key: value})
    return forecaster


def close(forecaster, day):
    """The points of a period on ``day`` (after START) with no values: closes the open day."""
    return forecaster.update(START + day * DAY, {})


@pytest.fixture(scope="module")
def history():
    return bt.load_history(bt.DEFAULT_CSV)


@pytest.fixture(scope="module")
def full_backtest(history):
    return bt.backtest(history)


@needs_history
def test_history_is_read_per_role_without_the_artefacts(history):
    assert set(history) == {(role, quantity) for role in ROLES for quantity in QUANTITIES}
    for artefact in bt.ARTEFACTS:
        assert all(bt.day_index(artefact) not in days for days in history.values())
    guard = history[("guard", "advertised")]
    assert guard[bt.day_index(date(2019, 8, 22))] == pytest.approx(246.354620152)
    exits = history[("exit", "advertised")]  # with and without Guard
    assert exits[bt.day_index(date(2019, 8, 22))] == pytest.approx(16.646630472 + 94.89933864)


@needs_history
def test_backtest_reports_finite_mapes_for_model_and_baselines(full_backtest):
    rows = full_backtest
    assert [(row.role, row.quantity, row.horizon, row.window) for row in rows] == [
        (role, quantity, horizon, window) for role in ROLES for quantity in QUANTITIES
        for window in ("2011-2014", "2015-2019") for horizon in HORIZONS]
    for row in rows:
        assert row.origins > 1400
        assert set(row.mapes) == set(METHODS)
        assert all(math.isfinite(value) and 0 < value < 0.5 for value in row.mapes.values()), row
        assert row.mapes[SEASONAL] == row.mapes[LAST] if row.horizon == 7 else True  # the same forecast at 7 d
    text = bt.table(rows)
    assert "snarimax %" in text and len(text.splitlines()) == len(rows) + 1
    header, *body = text.splitlines()
    assert {line.index(" 20") for line in body} == {header.index(" window ")}  # aligned columns


@needs_history
def test_full_backtest_is_what_prior_holds(full_backtest):
    """PRIOR is the 2015-2019 window of the full run: regenerate with ``--prior`` when the model changes."""
    latest = [row for row in full_backtest if row.window == bt.PRIOR_WINDOW]
    assert len(latest) == len(PRIOR) == 12
    for row in latest:
        prior = PRIOR[(row.role, row.quantity, row.horizon)]
        for method in METHODS:
            assert prior[method][0] == pytest.approx(row.mapes[method], abs=1e-5), (row, method)
            assert prior[method][1] == pytest.approx(row.bands[method], abs=1e-4), (row, method)


@needs_history
def test_docs_hold_the_backtest_table(full_backtest):
    text = DOCS.read_text()
    assert "python -m agent.forecast.backtest --markdown" in text
    assert bt.markdown(full_backtest) in text, "run: python -m agent.forecast.backtest --markdown"


@needs_history
def test_main_on_a_slice_prints_a_table_and_json(capsys):
    assert bt.main(["--since", "2019-04-01"]) == 0
    assert capsys.readouterr().out.startswith("role")
    assert bt.main(["--since", "2019-04-01", "--until", "2019-07-31", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert len(rows) == 12 and all(row["published"] in METHODS and row["window"] == "2015-2019" for row in rows)
    assert all(math.isfinite(value) for row in rows for value in row["mapes"].values())
    assert bt.main(["--csv", "/nonexistent.csv"]) == 2


def test_the_chooser_publishes_the_baseline_where_seasonal_naive_is_exact():
    """A pure weekly pattern: the seasonal naive forecast is exact, so the model must not be published."""
    pattern = [100.0, 120.0, 90.0, 110.0, 130.0, 80.0, 95.0]
    forecaster = daily([pattern[day % 7] for day in range(150)], forecaster=Forecaster(use_prior=False))
    points = close(forecaster, 150)
    assert {p.tags["horizon_days"] for p in points} == {"7", "30"}
    for item in points:
        assert item.tags["model"] == SEASONAL
        assert item.fields["seasonal_naive_mape_ratio"] == pytest.approx(0.0, abs=1e-9)
        assert item.fields["snarimax_mape_ratio"] > 0.01
        horizon = int(item.tags["horizon_days"])
        assert item.fields["value"] == pytest.approx(pattern[(149 + horizon) % 7])
        assert item.fields["low"] == pytest.approx(item.fields["value"]) == pytest.approx(item.fields["high"])
        assert item.fields["scored"] == fm.WINDOW


def test_the_chooser_publishes_the_model_where_it_beats_both_baselines():
    """Steady growth: the model learns the drift, both naive forecasts lag it."""
    forecaster = daily([100.0 * 1.01 ** day for day in range(200)], forecaster=Forecaster(use_prior=False))
    for item in close(forecaster, 200):
        assert item.tags["model"] == MODEL, item
        assert item.fields["snarimax_mape_ratio"] < item.fields["last_value_mape_ratio"]
        assert item.fields["low"] <= item.fields["value"] <= item.fields["high"]


def test_before_live_evidence_the_prior_decides_and_the_model_waits_until_it_has_learned():
    values = [100.0 * 1.001 ** day for day in range(40)]
    early = close(daily(values[:10]), 10)
    assert early and all(p.tags["model"] != MODEL for p in early)  # learned 10 days < MIN_MODEL_DAYS
    later = close(daily(values), 40)
    by_horizon = {p.tags["horizon_days"]: p for p in later}
    assert by_horizon["30"].fields["scored"] < fm.MIN_SCORED  # the 30-day evidence is not there yet
    prior = PRIOR[("guard", "advertised", 30)]
    assert by_horizon["30"].tags["model"] == min(METHODS, key=lambda name: prior[name][0]) == MODEL
    assert by_horizon["30"].fields["snarimax_mape_ratio"] == prior[MODEL][0]
    assert close(daily(values, forecaster=Forecaster(use_prior=False)), 40)[1].tags["model"] == SEASONAL


def test_daily_means_across_gaps_and_partial_days():
    forecaster = Forecaster()
    for hour in range(24):  # day 0: the mean of 24 hourly values
        forecaster.advance(START + hour * 3600, {KEY: 100.0 + hour})
    forecaster.advance(START + DAY + 7200, {KEY: 400.0})  # day 1: one period only; day 0 closes
    track = forecaster.tracks[KEY]
    assert track.last_day == START // DAY and math.exp(track.days[-1]) == pytest.approx(111.5)
    forecaster.advance(START + 5 * DAY, {KEY: 50.0})  # days 2-4: nothing at all; day 1 closes
    assert math.exp(track.days[-1]) == pytest.approx(400.0)
    forecaster.advance(START + 6 * DAY, {})  # day 5 closes: days 2-4 are imputed log-linearly from 400 to 50
    expected = [111.5, 400.0, *(400.0 * (50.0 / 400.0) ** (step / 4) for step in (1, 2, 3)), 50.0]
    assert [math.exp(value) for value in track.days] == pytest.approx(expected)
    assert track.learned == 6 and track.last_day == START // DAY + 5
    assert not forecaster.advance(START + 4 * DAY, {KEY: 1e9})  # an older period is a rerun, ignored
    assert forecaster.update(START + 3 * DAY, {KEY: 1.0}) == []
    track.add(START // DAY + 5, 1e9)  # a closed day is never reopened
    assert track.open_day is None and track.count == 0 and track.learned == 6


def test_imputed_days_are_never_scored_and_a_long_silence_restarts():
    values = [100.0 + day % 3 for day in range(60)]
    forecaster = daily(values[:30], forecaster=Forecaster(use_prior=False))
    daily(values[40:], forecaster=forecaster, start_day=40)  # days 30-39 missing
    close(forecaster, 60)
    track = forecaster.tracks[KEY]
    assert len(track.residuals[7]) == (29 - 7 + 1) + (59 - 40 + 1) - 7  # no target in 30..39 nor origin 30..32
    daily([100.0], forecaster=forecaster, start_day=60 + fm.MAX_GAP_DAYS + 1)
    close(forecaster, 60 + fm.MAX_GAP_DAYS + 2)
    assert track.learned == 1 and len(track.residuals[7]) == 0


def test_state_pickles_small_and_stays_bounded_over_many_periods(tmp_path):
    """400 'days' of 240 s (the private test network's pace: 10 s periods), every series; bounded from day ~125."""
    forecaster = Forecaster(day_seconds=240)
    keys = [(role, quantity) for role in ROLES for quantity in QUANTITIES]
    sizes = {}
    for period in range(400 * 2):  # two 120 s periods a day
        day = period // 2
        forecaster.update(START + period * 120, {key: 1e9 * (1 + index) * (1.001 ** day) * (1 + 0.01 * (period % 7))
                                                 for index, key in enumerate(keys)})
        if period + 1 in (200 * 2, 400 * 2):
            sizes[day] = len(pickle.dumps(forecaster))
    assert max(sizes.values()) < 64_000
    assert sizes[399] <= sizes[199] * 1.02
    track = forecaster.tracks[KEY]
    assert len(track.days) <= fm.HISTORY and all(len(q) <= fm.WINDOW for q in track.residuals.values())
    assert all(len(queue) <= horizon + 1 for horizon, queue in track.pending.items())
    files = fm.forecast_state(tmp_path, day_seconds=240)
    files.save(forecaster)
    loaded = files.load()
    after = {key: 2e9 for key in keys}
    assert loaded.update(START + 400 * 240, after) == forecaster.update(START + 400 * 240, after)


def test_a_damaged_state_file_is_set_aside(tmp_path):
    (tmp_path / "forecast.pickle").write_bytes(b"not a pickle")
    assert fm.forecast_state(tmp_path).load().tracks == {}
    assert list(tmp_path.glob("forecast.unreadable-*"))


def test_points_have_the_documented_tags_and_fields():
    forecaster = Forecaster()
    keys = [(role, quantity) for role in ROLES for quantity in QUANTITIES]
    for day in range(60):
        forecaster.advance(START + day * DAY, {key: 1e6 * (2 + math.sin(day)) for key in keys})
    points = close(forecaster, 60)
    assert len(points) == len(keys) * len(HORIZONS)
    docs = DOCS.read_text()
    for item in points:
        assert item.measurement == "tor_forecast" and item.time == START + 60 * DAY
        assert set(item.tags) == {"role", "quantity", "horizon_days", "model"}
        assert item.tags["role"] in ROLES and item.tags["quantity"] in QUANTITIES
        assert item.tags["horizon_days"] in {"7", "30"} and item.tags["model"] in METHODS
        assert item.fields["target_seconds"] == START + (59 + int(item.tags["horizon_days"])) * DAY
        for name in [*item.tags, *item.tags.values(), *item.fields]:
            assert f"`{name}`" in docs, name
        assert all(isinstance(value, float) and math.isfinite(value) for value in item.fields.values())


def test_capacity_is_read_from_the_period_metric_points():
    points = [
        Point("tor_network", {}, {"relays": 10.0, "weight_total": 1000.0}, 1),
        Point("tor_network_role", {"role": "guard"}, {"weight_fraction": 0.5, "advertised_bandwidth_bytes": 7e8}, 1),
        Point("tor_network_role", {"role": "exit"}, {"weight_fraction": 0.2, "advertised_bandwidth_bytes": 0.0}, 1),
        Point("tor_network_role", {"role": "middle"}, {"advertised_bandwidth_bytes": 3e8}, 1),
        Point("tor_network_flag", {"flag": "Guard"}, {"relays": 5.0}, 1),
    ]
    assert capacity_of(points) == {("guard", "advertised"): 7e8, ("exit", "advertised"): 0.0,
                                   ("middle", "advertised"): 3e8, ("guard", "consensus"): 500.0,
                                   ("exit", "consensus"): 200.0}
    forecaster = Forecaster()
    forecaster.update_points(START, points)
    assert ("exit", "advertised") not in forecaster.tracks  # no capacity (the test network has no exits): no series
    assert set(forecaster.tracks) == {("guard", "advertised"), ("middle", "advertised"), ("guard", "consensus"),
                                      ("exit", "consensus")}


def test_capacity_from_the_points_of_a_real_consensus():
    """What the period flow will hand over: snapshot_points of a real consensus (relay points as columns)."""
    from agent.metrics.period import snapshot_points
    from tests.conftest import parse_data
    from tests.unit.test_metrics import GEOIP, snapshot_of

    points = snapshot_points(snapshot_of(parse_data("consensus", "2020-02-29-10-00-00-consensus.xz")), None, GEOIP)
    values = capacity_of(points)
    total = next(p for p in points if p.measurement == "tor_network").fields["weight_total"]
    assert sum(values[(role, "consensus")] for role in ROLES) == pytest.approx(total)
    assert all(values[(role, "advertised")] == 0.0 for role in ROLES)  # no descriptors in this snapshot
    forecaster = Forecaster()
    forecaster.update_points(START, points)
    assert set(forecaster.tracks) == {(role, "consensus") for role in ROLES}


def test_points_fit_the_metric_catalogue_once_catalogued():
    """Active once tor_forecast is in agent/metrics/catalogue.csv: every field catalogued, every point fitting."""
    from agent.metrics.catalogue import catalogue, problems

    catalogued = {name for measurement, name in catalogue() if measurement == fm.MEASUREMENT}
    if not catalogued:
        pytest.skip("tor_forecast is not in the metric catalogue yet")
    forecaster = Forecaster(use_prior=False)
    for day in range(80):
        forecaster.advance(START + day * DAY, {key: 1e6 + day for key in [KEY, ("exit", "consensus")]})
    points = close(forecaster, 80)
    assert problems(points) == []
    assert {name for item in points for name in item.fields} == catalogued


POSITIVE = st.floats(min_value=1e-6, max_value=1e15, allow_nan=False, allow_infinity=False)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(POSITIVE, min_size=1, max_size=80), st.integers(min_value=1, max_value=3), st.booleans())
def test_forecasts_of_any_positive_series_are_finite(values, periods_per_day, use_prior):
    forecaster = daily(values, periods_per_day=periods_per_day, forecaster=Forecaster(use_prior=use_prior))
    points = close(forecaster, len(values) + 1)
    assert len(points) == sum(len(values) > fm.seasonal_lag(horizon) for horizon in HORIZONS)
    for item in points:
        assert all(math.isfinite(value) for value in item.fields.values()), item
        assert item.fields["value"] > 0
        if "low" in item.fields:
            assert item.fields["low"] <= item.fields["value"] <= item.fields["high"]
