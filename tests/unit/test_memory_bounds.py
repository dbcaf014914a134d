"""What a long-running agent keeps from one period to the next stays bounded, however many relays, series,
periods or documents pass through (sizes and counts, never timings); and the bounds change no conclusion."""

import gc
import random
import sys
import types
from collections import Counter

import numpy as np
import pytest

from agent.detect.baseline import FLOW, SeriesModel, SeriesSpec
from agent.detect.facts import RelayFacts
from agent.detect.relays import MAX_RELAYS, RelayMemory
from agent.detect.rules import RuleWindows
from agent.detect.series import MAX_SERIES, NetworkBaselines

START = 1_700_000_000
HOUR = 3600


def relay_facts(fingerprints: list[str], versions: list[str] | None = None) -> RelayFacts:
    """Plain relays with the given fingerprints (and versions), nothing else remarkable."""
    count = len(fingerprints)
    return RelayFacts(fingerprint=fingerprints, nickname=["relay"] * count, address=["192.0.2.1"] * count,
                      or_port=np.full(count, 9001, np.int32), dir_port=np.zeros(count, np.int32),
                      flags=np.full(count, 1 << 8, np.uint32), weight=np.full(count, 1000.0),
                      advertised=np.full(count, 1e6), listed_by=np.full(count, 9, np.int16), country=["de"] * count,
                      operator=[None] * count, version=versions or ["Tor 0.4.8.9"] * count,
                      platform=["Tor on Linux"] * count)


def deep_size(root) -> int:
    """Bytes of ``root`` and of everything it reaches (classes, modules and functions are shared: left out)."""
    seen, stack, total = set(), [root], 0
    while stack:
        each = stack.pop()
        if id(each) in seen or isinstance(each, (type, types.ModuleType, types.FunctionType)):
            continue
        seen.add(id(each))
        total += sys.getsizeof(each)
        stack.extend(gc.get_referents(each))
    return total


def test_the_relay_memory_forgets_the_longest_gone_past_its_limit():
    """A flood of fresh fingerprints within the memory's horizon: 120,000 relays pass, at most MAX_RELAYS stay
    (the code as it was kept every one for the whole horizon), the period's own relays always among them."""
    memory, per_period = RelayMemory(), 2_500
    memory.column("own")  # a detector's column is compacted with the rest
    for period in range(48):
        relays = relay_facts([f"{period:08X}{index:032X}" for index in range(per_period)])
        rows, _ = memory.rows_of(relays)
        memory.learn(relays, rows, START + period * HOUR)
        assert len(memory) <= MAX_RELAYS
    assert len(memory.rows) == len(memory.last_seen) == len(memory.column("own")) == len(memory) == MAX_RELAYS
    assert all(fingerprint in memory.rows for fingerprint in relays.fingerprint)
    assert memory.last_seen.min() == START + (48 - MAX_RELAYS // per_period) * HOUR  # the oldest went first


def test_the_relay_limit_keeps_a_period_larger_than_itself():
    memory = RelayMemory(limit=100)
    for period in range(3):
        relays = relay_facts([f"{period:08X}{index:032X}" for index in range(150)])
        memory.learn(relays, memory.rows_of(relays)[0], START + period * HOUR)
    assert sorted(memory.fingerprints) == sorted(relays.fingerprint)


def test_a_memory_saved_without_a_limit_gets_one():
    memory = RelayMemory()
    state = dict(memory.__dict__)
    del state["limit"]
    loaded = RelayMemory.__new__(RelayMemory)
    loaded.__setstate__(state)
    assert loaded.limit == MAX_RELAYS


def test_the_churn_window_holds_the_day_its_rule_averages():
    """10,000 hourly periods: the churn shares kept are the 24 the rule reads (2,000 before), and the rule
    concludes what it concluded over the whole history."""
    windows, history, rng = RuleWindows(), [], random.Random(5)
    empty = {source: Counter() for source in ("country", "operator", "block", "new", "flag")}
    for _ in range(10_000):
        churn = (rng.random() * 0.025, rng.random() * 0.025)
        windows.learn(empty, churn, HOUR)
        history.append(churn)
        assert len(windows.churn) <= 24
    for latest in ((0.0, 0.0), (0.5, 0.5)):
        assert (RuleWindows._churn(list(windows.churn) + [latest], HOUR, 0.012)
                == RuleWindows._churn(history + [latest], HOUR, 0.012))
    assert all(len(window) <= 24 for window in windows.counts.values())


def test_a_series_model_holds_its_window_and_no_more():
    """10,000 periods learned into a four-week window: the model holds 672 values per rolling quantile and
    its size stops growing once the window is full; a pickled copy judges alike."""
    import pickle

    model, rng = SeriesModel(SeriesSpec(FLOW), window=672, warmup=48), random.Random(3)
    sizes = []
    for index in range(10_000):
        value = rng.gauss(100, 5) if index % 11 else rng.random() * 1e6
        model.learn(value, model.judge("joined", value, 2.0), index * 3600, 3600)
        if index in (1_000, 9_999):
            sizes.append(deep_size(model))
    assert model.learned == 672
    assert sizes[1] <= sizes[0] * 1.05 and sizes[1] < 200_000
    loaded = pickle.loads(pickle.dumps(model))
    assert loaded.judge("joined", 5e6, 2.0) == model.judge("joined", 5e6, 2.0)


@pytest.fixture(scope="module")
def settings():
    from agent.config.loader import load_config

    return load_config(None, environ={}).detect.settings


def test_the_baselines_keep_at_most_max_series(settings):
    """Ten made-up versions each hour, 150 hours (well inside the 30 days a series is kept unseen): 1,500
    version series pass, at most MAX_SERIES stay (the code as it was kept all), this period's among them."""
    from agent.detect.engine import Detector

    detector = Detector(settings, detectors=(NetworkBaselines,))
    for period in range(150):
        versions = [f"Tor 0.{period}.{index}" for index in range(10)]
        detector.update(_facts(relay_facts([f"{index:040X}" for index in range(30)], versions * 3),
                               START + period * HOUR))
        assert len(detector.series) <= MAX_SERIES
    assert all(f'relays_version{{version="{version}"}}' in detector.series for version in versions)
    assert "joined" in detector.series and len(detector.series) == MAX_SERIES


def _facts(relays: RelayFacts, time: int):
    from agent.detect.facts import PeriodFacts

    return PeriodFacts(time, HOUR, relays)
