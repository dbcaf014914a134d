"""Learners (agent/pipeline/learners.py): each live period is learned, saved, and a failing one costs only itself."""

import pytest

from agent.forecast.model import Forecaster
from agent.loop.backfill import newest_snapshot
from agent.pipeline.judge import Memory, judge
from agent.pipeline.learners import LEARNERS, load_learners, save_learners
from tests.unit.test_pipeline import GEOIP, _config


class Broken:
    def learn(self, result):
        raise RuntimeError("learner bug")


@pytest.fixture(scope="module")
def period(tmp_path_factory):
    from tests.conftest import read_data

    folder = tmp_path_factory.mktemp("hour")
    (folder / "2020-02-29-10-00-00-consensus").write_bytes(read_data("2020-02-29-10-00-00-consensus.xz"))
    config = _config(tmp_path_factory.mktemp("state"), "state")
    return newest_snapshot([folder], config)[0], config


def test_every_learner_takes_the_period_in_and_a_broken_one_costs_only_itself(period, caplog):
    snapshot, config = period
    forecaster = Forecaster()
    result = judge(snapshot, Memory(learners={"broken": Broken(), "forecast": forecaster}), config, GEOIP)
    assert result.learned == ["forecast"] and forecaster.last_time == result.time
    assert "broken failed this period" in caplog.text and "learner bug" in caplog.text
    assert any(p.measurement == "tor_network" for p in result.points)  # the period's own points are all there
    again = judge(snapshot, Memory(learners={"forecast": forecaster}), config, GEOIP)
    assert again.learned == ["forecast"] and forecaster.last_time == result.time  # a rerun teaches nothing


def test_learners_are_saved_after_a_live_period_and_a_damaged_state_is_set_aside(tmp_path, period):
    snapshot, config = period
    learners = load_learners(tmp_path, config)
    assert set(learners) == {kind.name for kind in LEARNERS} == {"forecast", "reliability", "atrisk", "health"}
    result = judge(snapshot, Memory(learners=learners), config, GEOIP)
    assert result.learned == ["forecast", "reliability", "atrisk", "health"]
    assert {p.measurement for p in result.points} >= {"tor_health_score", "tor_health_component"}
    relays = [p for p in result.points if p.measurement == "tor_relay" and p.fields.get("in_consensus") == 1]
    assert len(relays) == len(result.table) and all("presence_7d" in p.fields for p in relays)  # one point each
    save_learners(tmp_path, learners, result.learned)
    loaded = load_learners(tmp_path, config)
    assert loaded["forecast"].last_time == result.time and loaded["health"].last_time == result.time
    assert loaded["reliability"].top_n == config.metrics.operators_top_n
    (tmp_path / "forecast.pickle").write_bytes(b"damaged")
    assert load_learners(tmp_path, config)["forecast"].last_time is None  # starts afresh
    assert list(tmp_path.glob("forecast.unreadable-*"))


def test_loading_the_learners_imports_no_river(tmp_path, period):
    """A period that closes no day must not pay River's and SciPy's import (seconds) just to unpickle the state."""
    import subprocess
    import sys

    from agent.forecast.model import DAY_SECONDS

    snapshot, config = period
    learners = load_learners(tmp_path, config)
    forecaster = learners["forecast"]
    for day in range(3):  # days close: the model is made and learns
        forecaster.update(day * DAY_SECONDS + 1, {("guard", "advertised"): 1e9 + day})
    assert forecaster.tracks[("guard", "advertised")]._model is not None
    save_learners(tmp_path, learners, ["forecast"])
    script = ("import sys\nfrom agent.config.loader import load_config\nfrom agent.pipeline.learners import "
              f"load_learners\nload_learners({str(tmp_path)!r}, load_config(None, environ={{}}))\n"
              "print(sorted(m for m in sys.modules if m.split('.')[0] in ('river', 'scipy')))")
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip() == "[]"
