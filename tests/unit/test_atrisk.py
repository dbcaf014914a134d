"""At-risk warnings (agent/metrics/atrisk.py, agent/evaluation/atrisk.py; docs/relays.md "At-risk warnings"):
features on hand-built histories, the threshold rule, precision / recall / lead time on a constructed case,
the evaluation on a slice of the real alireza-tor-nodes series, and properties of the features under Hypothesis."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.evaluation import atrisk as evaluation
from agent.metrics import atrisk


def rows(*texts: str) -> np.ndarray:
    return np.array([[c == "1" for c in text] for text in texts], bool)


def test_features_on_a_hand_built_history():
    present = rows("110111", "000011", "111111")
    guard = rows("110101", "000011", "111111")
    f = atrisk.history_features(present, guard, window=3, long_window=5)
    last = {name: values[:, -1].tolist() for name, values in f.items()}
    # relay 0: left at 2, back at 3, lost Guard at 4 (listed), regained at 5
    assert f["drops_24"][0].tolist() == [0, 0, 1, 1, 1, 0]
    assert last["drops_168"] == [1, 0, 0]
    assert f["losses_24"][0].tolist() == [0, 0, 0, 0, 1, 1]
    assert last["flaps_24"] == [3, 0, 0]  # changes at 3, 4, 5 (within 3 columns), not the first sighting
    assert last["state_age"] == [0, 1, 5]  # relay 2 never changed: capped at long_window
    assert last["age"] == [5, 1, 5]
    assert f["age"][1].tolist()[4:] == [0, 1]


def test_seen_before_makes_a_return_not_a_newcomer():
    present = rows("0011")
    assert atrisk.history_features(present)["age"][0, -1] == 1
    assert atrisk.history_features(present, seen_before=np.array([True]))["age"][0, -1] == atrisk.LONG_WINDOW


def test_cell_codes_separate_histories_and_stay_in_range():
    present = rows("1" * 10, "1010101010")
    f = atrisk.history_features(present)
    codes = atrisk.cell_codes(f, "dropout")
    assert codes.min() >= 0 and codes.max() < atrisk.CELLS
    assert codes[0, -1] != codes[1, -1]


def test_rates_and_the_confident_threshold():
    counts = np.zeros(atrisk.CELLS)
    positives = np.zeros(atrisk.CELLS)
    counts[[1, 2, 3]] = [1000, 1000, 10000]
    positives[[1, 2, 3]] = [900, 400, 100]
    rates = atrisk.rates_of(counts, positives)
    assert rates[1] > rates[2] > rates[3]
    # cell 1 alone: 0.9; cells 1+2: 0.65; all three: 0.117 -> the lowest threshold keeping 0.5 takes 1 and 2
    assert atrisk.choose_threshold(rates, counts, positives, 0.5) == pytest.approx(rates[2])
    assert atrisk.choose_threshold(rates, counts, positives, 0.95) is None
    assert atrisk.choose_threshold(rates, counts, np.zeros(atrisk.CELLS)) is None


def test_history_warnings_say_why():
    present = rows("1" * 30, "10" * 15, "1" * 30)
    guard = rows("1" * 30, "10" * 15, "0" * 30)
    rates = np.full(atrisk.CELLS, 0.9)
    risk, warnings = atrisk.history_warnings(["A" * 40, "B" * 40, "C" * 40], present, guard, "dropout", rates, 0.5)
    assert np.isnan(risk[1])  # not listed now
    assert [w.fingerprint[0] for w in warnings] == ["A", "C"]
    assert "dropped out 0x" in warnings[0].reason and "90%" in warnings[0].reason
    _, flag = atrisk.history_warnings(["A" * 40, "B" * 40, "C" * 40], present, guard, "guard", rates, 0.5)
    assert [w.kind for w in flag] == ["Guard"]  # C has no Guard to lose


def test_live_only_signals():
    margins = {"guard_wfu_margin": np.array([1.05, 1.5, np.nan, 0.9]), "stable_margin": np.array([1.0, 2, 2, 2])}
    found = atrisk.margin_warnings(["A", "B", "C", "D"], margins)
    assert [(w.fingerprint, w.kind) for w in found] == [("A", "Guard_margin"), ("A", "Stable_margin")]
    found = atrisk.consensus_warnings(["A", "B", "C"], np.array([5, 9, 9]), np.array([6, 9, 9]), 9,
                                      np.array([2.0, 30.0, np.nan]))
    assert [w.fingerprint for w in found] == ["A", "B"]
    assert "listed by 5 of 9" in found[0].reason and "30 h old" in found[1].reason


def series_of(states: list[str], guards: list[str]) -> evaluation.Series:
    """A hand-built series: one string per relay, "1" = listed at that snapshot."""
    runs = []
    for relay, (text, flags) in enumerate(zip(states, guards)):
        for index, (c, g) in enumerate(zip(text, flags)):
            if c == "1":
                runs.append((relay, index, index, int(g == "1")))
    runs_array = np.array(runs, np.int64)
    width = len(states[0])
    return evaluation.Series(np.arange(width, dtype=float), np.ones(width, int), runs_array[:, 0],
                             runs_array[:, 1], runs_array[:, 2], {"guard": runs_array[:, 3].astype(bool)},
                             len(states))


def test_precision_recall_and_lead_on_a_constructed_case():
    series = series_of(["1111110111", "1111111111"], ["0" * 10, "0" * 10])
    (block,) = evaluation.blocks(series, horizon=3, span=100)
    assert block.onset["dropout"][0].tolist() == [False] * 6 + [True] + [False] * 3
    warn = np.zeros((2, 10), bool)
    warn[0, 2] = True  # 4 ahead of the drop at 6: outside the horizon of 3, wrong
    warn[0, 4] = True  # 2 ahead: right, lead 2 h
    warn[1, 5] = True  # relay 1 never drops: wrong
    score = evaluation.Score()
    evaluation._score(score, warn & block.eligible["dropout"], block, "dropout", np.ones(10, bool), series.hours, 3)
    row = score.row()
    assert row["precision"] == pytest.approx(1 / 3)
    assert row["recall"] == 1.0 and row["median_lead_h"] == 2.0
    assert row["warnings_per_1000"] == pytest.approx(1000 * 3 / 19)


def test_guard_onset_is_losing_it_while_listed():
    series = series_of(["1111011", "1111111"], ["1111001", "1111011"])
    (block,) = evaluation.blocks(series, horizon=2, span=100)
    assert np.flatnonzero(block.onset["guard"][0]).tolist() == [5]  # back without Guard after the gap
    assert np.flatnonzero(block.onset["guard"][1]).tolist() == [4]
    assert np.flatnonzero(block.fresh["guard"][1]).tolist() == [4]


@pytest.mark.skipif(not (evaluation.SERIES / "relay_runs.csv.gz").exists(), reason="no alireza-tor-nodes series")
def test_the_evaluation_on_a_slice_of_the_real_series_gives_finite_figures():
    table = evaluation.evaluate(evaluation.load(evaluation.SERIES, 600), split=380)
    assert {row["target"] for row in table} == {"dropout", "guard"}
    for row in table:
        if row["part"] == "held-out" and row["operating_point"] == "best_f1":
            for key in ("precision", "recall", "baseline_precision", "baseline_recall", "warnings_per_1000"):
                assert math.isfinite(row[key]) and 0 <= row[key] <= (1 if "per_1000" not in key else 1000), key
    assert "precision" in evaluation.render(table)


#: evaluate(load(SERIES, 600), split=380) before the harness took consensuses (the Series generalised to any
#: flags): (target, part, point) -> (warnings, onsets, precision, threshold); the alireza path must not move.
#: One deliberate change: a point without a threshold now reports the part's onsets (608, 762), not 0.
ALIREZA_600 = {
    ("dropout", "tune", "best_f1"): (48423, 8515, 0.595812, 0.211477),
    ("dropout", "tune", "confident"): (51256, 8515, 0.572557, 0.16725),
    ("dropout", "held-out", "best_f1"): (36401, 8225, 0.743908, 0.211477),
    ("dropout", "held-out", "confident"): (38001, 8225, 0.720376, 0.16725),
    ("guard", "tune", "best_f1"): (16794, 608, 0.125759, 0.098806),
    ("guard", "tune", "confident"): (0, 608, None, None),
    ("guard", "held-out", "best_f1"): (19583, 762, 0.174999, 0.098806),
    ("guard", "held-out", "confident"): (0, 762, None, None),
}


@pytest.mark.skipif(not (evaluation.SERIES / "relay_runs.csv.gz").exists(), reason="no alireza-tor-nodes series")
def test_the_alireza_slice_gives_the_same_numbers_as_before_the_consensus_input():
    table = evaluation.evaluate(evaluation.load(evaluation.SERIES, 600), split=380)
    found = {(row["target"], row["part"], row["operating_point"]): row for row in table}
    assert set(found) == set(ALIREZA_600)
    for key, (warnings, onsets, precision, threshold) in ALIREZA_600.items():
        row = found[key]
        assert (row["warnings"], row["onsets"]) == (warnings, onsets), key
        assert (math.isnan(row["precision"]) if precision is None else row["precision"] == pytest.approx(
            precision, abs=1e-6)), key
        assert (row["threshold"] is None if threshold is None else row["threshold"] == pytest.approx(
            threshold, abs=1e-6)), key


# -- consecutive consensuses: the loader, onsets per flag, gaps ---------------------------------------------------

HOUR_10, HOUR_11 = "2020-02-29-10-00-00-consensus.xz", "2020-02-29-11-00-00-consensus.xz"


def _entries(raw: bytes) -> dict[str, set[str]]:
    """Fingerprint -> flags of a consensus, read with a regex (independently of the agent's parser)."""
    import base64
    import re

    out = {}
    for identity, flags in re.findall(rb"^r \S+ (\S+) .*\n(?:(?!r ).*\n)*?s ?(.*)$", raw, re.MULTILINE):
        fingerprint = base64.b64decode(identity + b"=" * (-len(identity) % 4)).hex().upper()
        out[fingerprint] = set(flags.decode().split())
    return out


def _redated(raw: bytes, hour: str) -> bytes:
    """The consensus with its valid-after moved to 2020-02-29 ``hour``:00 (fresh 1 h, valid 3 h later); its
    signatures no longer match, and with no certificate in the input it is taken as unverified, as archived."""
    from datetime import datetime, timedelta

    moment = datetime(2020, 2, 29, int(hour))
    lines = {b"valid-after": moment, b"fresh-until": moment + timedelta(hours=1),
             b"valid-until": moment + timedelta(hours=3)}
    out = []
    for line in raw.split(b"\n"):
        key = line.split(b" ", 1)[0]
        out.append(key + b" " + lines[key].strftime("%Y-%m-%d %H:%M:%S").encode() if key in lines else line)
    return b"\n".join(out)


def _onsets(series: evaluation.Series, horizon: int = 1) -> dict[str, set[tuple[str, int]]]:
    """Target -> (fingerprint, snapshot) of every onset in the series."""
    found: dict[str, set[tuple[str, int]]] = {target: set() for target in series.targets}
    names = series.fingerprints
    assert names is not None
    for block in evaluation.blocks(series, horizon=horizon, span=100):
        assert block.relays is not None
        for target, onset in block.onset.items():
            rows, cols = np.nonzero(onset & block.core)
            found[target] |= {(names[block.relays[r]], int(block.columns[c])) for r, c in zip(rows, cols)}
    return found


def test_consecutive_real_consensuses_give_dropout_and_flag_onsets(tmp_path):
    from tests.conftest import read_data

    raw = {name: read_data(name) for name in (HOUR_10, HOUR_11)}
    for name, data in raw.items():
        (tmp_path / name.removesuffix(".xz")).write_bytes(data)
    series = evaluation.load_consensuses([tmp_path])
    assert series.targets == ("dropout", "guard", "stable", "hsdir", "fast")
    assert series.hours.tolist() == [18321 * 24 + 10, 18321 * 24 + 11] and series.segment.tolist() == [1, 1]
    first, second = _entries(raw[HOUR_10]), _entries(raw[HOUR_11])
    assert len(first) == 6433 and len(second) == 6463 and series.relays == len(first.keys() | second.keys())
    found = _onsets(series)
    dropped = first.keys() - second.keys()
    assert found["dropout"] == {(fingerprint, 1) for fingerprint in dropped} and len(dropped) > 10
    for target, flag in atrisk.FLAG_TARGETS.items():
        lost = {f for f in first.keys() & second.keys() if flag in first[f] and flag not in second[f]}
        assert found[target] == {(fingerprint, 1) for fingerprint in lost}, target
    assert found["stable"]  # relays that really lost Stable between the two hours


def test_a_gap_in_the_archive_is_not_an_onset(tmp_path):
    """10:00, (11:00 missing), 12:00 with the same relays: nothing happened; 13:00 with the 11:00 relays: the
    relays missing from it dropped then. A gap longer than ``max_gap`` periods starts a new segment."""
    from tests.conftest import read_data

    ten, eleven = read_data(HOUR_10), read_data(HOUR_11)
    (tmp_path / "10").write_bytes(ten)
    (tmp_path / "12").write_bytes(_redated(ten, "12"))
    (tmp_path / "13").write_bytes(_redated(eleven, "13"))
    series = evaluation.load_consensuses([tmp_path / "10", tmp_path / "12", tmp_path / "13"])
    assert (series.hours - series.hours[0]).tolist() == [0, 2, 3] and series.segment.tolist() == [1, 1, 1]
    found = _onsets(series)
    assert {column for events in found.values() for _, column in events} == {2}  # none at the gap
    assert len(found["dropout"]) == len(_entries(ten).keys() - _entries(eleven).keys())
    split = evaluation.load_consensuses([tmp_path / "10", tmp_path / "12"], max_gap=0)
    assert split.segment.tolist() == [1, 2]
    assert not any(_onsets(split).values())


def test_runs_merge_consecutive_periods_and_end_at_changes():
    from agent.evaluation.atrisk_input import runs_of, segments_of

    segment = segments_of(np.array([0.0, 1, 2, 3, 30]), np.ones(5))
    assert segment.tolist() == [1, 1, 1, 1, 2]
    relay = np.array([0, 0, 0, 0, 0, 1, 1])
    column = np.array([0, 1, 2, 3, 4, 0, 2])
    bits = np.array([1, 1, 3, 3, 3, 0, 0], np.uint8)
    runs = [tuple(map(int, run)) for run in zip(*runs_of(relay, column, bits, segment))]
    assert runs == [(0, 0, 1, 1), (0, 2, 3, 3), (0, 4, 4, 3), (1, 0, 0, 0), (1, 2, 2, 0)]


def test_the_command_measures_every_target_on_consensuses(tmp_path, capsys):
    """Six hourly consensuses (the two real hours alternating, re-dated): the table has rows for every target;
    tuned on 10:00-12:00 (split at half the time span, 12:30), held out from 13:00."""
    from tests.conftest import read_data

    ten, eleven = read_data(HOUR_10), read_data(HOUR_11)
    for hour, raw in (("10", ten), ("11", eleven), ("12", ten), ("13", eleven), ("14", ten), ("15", eleven)):
        (tmp_path / f"2020-02-29-{hour}").write_bytes(_redated(raw, hour))
    assert evaluation.main(["--consensuses", str(tmp_path), "--horizon", "1", "--warmup", "0", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert {row["target"] for row in table} == {"dropout", "guard", "stable", "hsdir", "fast"}
    assert {row["part"] for row in table} == {"tune", "held-out"}
    onsets = {(row["target"], row["part"]): row["onsets"] for row in table}
    assert onsets[("dropout", "tune")] > 10 and onsets[("dropout", "held-out")] > 10
    assert evaluation.main(["--consensuses", str(tmp_path / "2020-02-29-10")]) == 2  # too short: said so


histories = st.integers(1, 40).flatmap(lambda width: st.tuples(
    st.lists(st.lists(st.booleans(), min_size=width, max_size=width), min_size=1, max_size=5),
    st.lists(st.lists(st.booleans(), min_size=width, max_size=width), min_size=1, max_size=5)))


@settings(max_examples=150, deadline=None)
@given(histories, st.integers(1, 10), st.integers(1, 30))
def test_feature_properties(pair, window, extra):
    present_rows, flag_rows = pair
    count = min(len(present_rows), len(flag_rows))
    present, flagged = np.array(present_rows[:count]), np.array(flag_rows[:count])
    long_window = window + extra
    f = atrisk.history_features(present, flagged, window, long_window)
    for values in f.values():
        assert values.shape == present.shape and values.min() >= 0 and values.max() <= long_window
    assert (f["drops_24"] <= f["drops_168"]).all() and (f["losses_24"] <= f["losses_168"]).all()
    assert (f["drops_24"] + f["losses_24"] <= f["flaps_24"]).all()
    assert (f["state_age"] <= f["age"]).all()
    # causal: the features of a prefix are those of the whole history at the same columns
    cut = present.shape[1] // 2 + 1
    prefix = atrisk.history_features(present[:, :cut], flagged[:, :cut], window, long_window)
    for name, values in prefix.items():
        assert (values == f[name][:, :cut]).all(), name
    codes = atrisk.cell_codes(f, "guard")
    assert codes.min() >= 0 and codes.max() < atrisk.CELLS


def period(time: int, fingerprints: list[str], guard: list[bool], listed_by: list[int], points=()):
    from types import SimpleNamespace

    table = SimpleNamespace(fingerprints=fingerprints, flags={"Guard": np.array(guard, bool)},
                            listed_by=np.array(listed_by))
    return SimpleNamespace(table=table, time=time, points=list(points),
                           snapshot=SimpleNamespace(votes=lambda: [object()] * 9))


def test_the_live_learner_warms_up_then_scores_and_warns(monkeypatch):
    from agent.model.points import point

    monkeypatch.setattr(atrisk, "FITTED", {"dropout": ((0.9,) * atrisk.CELLS, 0.5),
                                           "guard": ((0.6,) * atrisk.CELLS, 0.5)})
    monkeypatch.setattr(atrisk, "OFFERED", frozenset({"dropout"}))
    learner = atrisk.AtRiskLearner()
    names = ["A" * 40, "B" * 40]
    for hour in range(atrisk.LONG_WINDOW):
        assert learner.learn(period(hour * 3600, names, [True, False], [9, 9])) == []
    assert learner.learn(period(0, names, [True, False], [9, 9])) == []  # a rerun
    margin = point("tor_relay", {"fingerprint": names[1]}, {"fast_margin": 1.02}, 0)
    points = learner.learn(period(atrisk.LONG_WINDOW * 3600, names, [True, False], [9, 5], [margin]))
    fields = {p.tags["fingerprint"]: p.fields for p in points}
    assert fields[names[0]]["dropout_risk"] == pytest.approx(0.9)
    assert fields[names[0]]["guard_loss_risk"] == pytest.approx(0.6) and "guard_loss_risk" not in fields[names[1]]
    from agent.metrics.catalogue import problems

    assert problems(points) == []  # every field is catalogued
    kinds = sorted((w.fingerprint[0], w.kind, w.offered) for w in learner.warnings)
    assert kinds == [("A", "Guard", False), ("A", "dropout", True), ("B", "Fast_margin", False),
                     ("B", "consensus", False), ("B", "dropout", True)]


def test_the_memory_forgets_relays_gone_for_a_week():
    memory = atrisk.AtRiskMemory(width=3)
    memory.learn(["A", "B"], {}, np.array([9, 9]), 0)
    for time in range(1, 4):
        memory.learn(["B"], {}, np.array([9]), time)
    assert list(memory.rows) == ["B"]
    present, _ = memory.history(np.array([memory.rows["B"]]))
    assert present.tolist() == [[True, True, True]]


def test_the_fitted_constants_fit_the_cells_and_offer_only_measured_kinds():
    for target in atrisk.TARGETS:
        rates, threshold = atrisk.FITTED[target]
        assert len(rates) == atrisk.CELLS and all(0 <= rate <= 1 for rate in rates)
        assert threshold is None or 0 < threshold <= 1
    assert atrisk.OFFERED <= set(atrisk.TARGETS)


def test_only_offered_dropout_warnings_become_subscription_alerts():
    """A subscriber hears of a warning whose kind reached the measured precision bar, never of the others."""
    from agent.subscriptions.events import RelayStatus, _at_risk

    fingerprint = "A" * 40
    warnings = (atrisk.RiskWarning(fingerprint, "dropout", 0.7, "dropped twice in the last day", offered=True),
                atrisk.RiskWarning(fingerprint, "Guard", 0.6, "lost Guard twice this week", offered=False),
                atrisk.RiskWarning(fingerprint, "Fast_margin", None, "fast margin 1.02", offered=False))
    status = RelayStatus(fingerprint, "relay", True, frozenset({"Running"}), 100, "0.4.9.3", False, 9, 9, 5, 5,
                         risk_warnings=warnings)
    [condition] = _at_risk(status, "relay")
    assert condition.id == "TorRelayAtRisk" and "dropped twice in the last day" in condition.description
    assert _at_risk(RelayStatus(fingerprint, "relay", True, frozenset(), 100, None, False, 9, 9, 5, 5,
                                risk_warnings=warnings[1:]), "relay") == []
