"""Reliability scores (agent/metrics/reliability.py, docs/reliability.md): the formulas against hand-computed
values on small sequences (stem-built consensuses and plain tables), gaps, sub-hour periods, the memory's bounds
and pickling, operator weighting, real consensuses, and properties under Hypothesis."""

from __future__ import annotations

import base64
import math
import pickle
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stem.descriptor.networkstatus import NetworkStatusDocumentV3
from stem.descriptor.router_status_entry import RouterStatusEntryV3

from agent.metrics.catalogue import problems
from agent.metrics.geoip import GeoIP
from agent.metrics.operator import operator_points
from agent.metrics.relays import KNOWN_FLAGS, RelayTable, build_table
from agent.metrics.reliability import (
    MAX_RELAYS,
    RELAY_FIELDS,
    WEEK,
    ReliabilityMemory,
    leaderboard,
    measured_share,
    relay_columns,
    reliability_points,
    standings,
)
from tests.conftest import DATA, parse_data

GEOIP = GeoIP.load(DATA / "geoip-excerpt")
START = 1_700_000_000 - 1_700_000_000 % 3600  # a UTC hour, as a consensus valid-after
HOUR = 3600
OK = "Fast Running Stable Valid"

# -- building tables ----------------------------------------------------------------------------------------------

def fingerprint(index: int) -> str:
    return f"{index:040X}"


def stem_entry(index: int, flags: str = OK, bandwidth: int = 1000) -> RouterStatusEntryV3:
    identity = base64.b64encode(index.to_bytes(20, "big")).decode().rstrip("=")
    return RouterStatusEntryV3.create({"r": f"relay{index} {identity} {'B' * 27} 2023-11-14 21:00:00 "
                                            f"10.0.0.{index % 250 + 1} 9001 0", "s": flags,
                                       "w": f"Bandwidth={bandwidth}"})


def stem_table(entries: list) -> RelayTable:
    """The metrics' relay table of a consensus stem builds from ``entries``."""
    return build_table(NetworkStatusDocumentV3.create({"vote-status": "consensus"}, routers=entries), [], GEOIP)


def plain_table(relays: dict[int, tuple[bool, float]], operators: dict[int, str] | None = None,
                measured: dict[int, int] | None = None) -> RelayTable:
    """A table without stem: relay index -> (Running, weight); ``operators``: index -> contact key."""
    indices = list(relays)
    count = len(indices)
    operators = operators or {}
    flags = {flag: np.zeros(count, bool) for flag in KNOWN_FLAGS}
    flags["Running"] = np.array([relays[index][0] for index in indices], bool)
    flags["Valid"][:] = True
    keys = [operators.get(index) for index in indices]
    return RelayTable(
        fingerprints=[fingerprint(index) for index in indices], flags=flags,
        weight=np.array([relays[index][1] for index in indices], float), ipv6_orport=np.zeros(count, bool),
        version=["0.4.8.9"] * count, version_status=["recommended"] * count, version_series=["0.4.8"] * count,
        country=["de"] * count, platform=["Linux"] * count, operator_id=keys,
        operator_label=[f"contact {key}" if key else None for key in keys], family_id=[None] * count,
        advertised_bytes=np.full(count, np.nan), ipv6_exit=np.zeros(count, bool), listed_by=np.full(count, 9),
        measured_count=np.array([(measured or {}).get(index, 0) for index in indices]),
        measured_median=np.full(count, np.nan))


def scores_of(memory: ReliabilityMemory, table: RelayTable, bwauths: int | None = None) -> dict[str, dict]:
    """{fingerprint: {field: value}} of the table's relays (unknown fields left out)."""
    columns = relay_columns(memory, table, bwauths)
    return {fp: {name: float(column[index]) for name, column in columns.items() if not math.isnan(column[index])}
            for index, fp in enumerate(table.fingerprints)}


# -- the formulas on small sequences ------------------------------------------------------------------------------

def test_present_five_of_seven_hourly_periods():
    """Relay 2 is missing in two of seven hours and has Running in three; its flags change three times; its
    weight moves between 1000 and 3000."""
    memory = ReliabilityMemory()
    second = [(OK, 1000), None, (OK, 2000), ("Fast Valid", 3000), None, (OK, 3000), ("Fast Stable Valid", 1000)]
    for hour, state in enumerate(second):
        entries = [stem_entry(1)] + ([stem_entry(2, *state)] if state else [])
        assert memory.learn(stem_table(entries), START + hour * HOUR, HOUR)
    table = stem_table([stem_entry(1), stem_entry(2, "Fast Stable Valid", 1000)])
    scores = scores_of(memory, table)
    one, two = scores[fingerprint(1)], scores[fingerprint(2)]
    assert one["presence_7d"] == one["presence_30d"] == one["running_7d"] == 1.0
    assert one["flag_changes_per_week"] == 0.0 and one["weight_cv_7d"] == 0.0
    assert two["presence_7d"] == pytest.approx(5 / 7) and two["presence_30d"] == pytest.approx(5 / 7)
    assert two["running_7d"] == pytest.approx(3 / 7) and two["running_30d"] == pytest.approx(3 / 7)
    # changes at hours 3 (Running lost), 5 (regained) and 6 (Running lost, Stable kept): 3 in 5 hours present
    assert two["flag_changes_per_week"] == pytest.approx(3 * WEEK / (5 * HOUR))
    weights = np.array([1000, 2000, 3000, 3000, 1000], float)
    assert two["weight_cv_7d"] == pytest.approx(weights.std() / weights.mean(), abs=2e-4)
    assert "measured_share" not in two  # no votes, no bandwidth authorities known


def test_a_gap_in_the_agents_record_is_unknown_not_absent():
    """Hours 0-2 and 6 recorded, 3-5 not (the agent was down): they count on neither side of a share."""
    memory = ReliabilityMemory()
    for hour, relays in ((0, {1: (True, 10), 2: (True, 10)}), (1, {1: (True, 10), 2: (True, 10)}),
                         (2, {1: (True, 10), 2: (False, 10)}), (6, {1: (True, 10)})):
        memory.learn(plain_table(relays), START + hour * HOUR, HOUR)
    scores = scores_of(memory, plain_table({1: (True, 10), 2: (True, 10)}))
    assert scores[fingerprint(1)]["presence_7d"] == 1.0  # not 4/7
    assert scores[fingerprint(2)]["presence_7d"] == pytest.approx(3 / 4)
    assert scores[fingerprint(2)]["running_7d"] == pytest.approx(2 / 4)


def test_shares_weigh_periods_by_their_length():
    """Periods shorter than a slot (the private network votes every 10 s): a 30 s period present and three 10 s
    periods absent make 1/2, not 1/4 (the open slot is exact)."""
    memory = ReliabilityMemory(slot_seconds=60)
    memory.learn(plain_table({1: (True, 5), 2: (True, 5)}), START, 30)
    for second in (30, 40, 50):
        memory.learn(plain_table({1: (True, 5)}), START + second, 10)
    assert scores_of(memory, plain_table({2: (True, 5)}))[fingerprint(2)]["presence_7d"] == pytest.approx(0.5)


def test_closed_slots_stay_time_weighted():
    """An hour of 10 s periods in minute slots; relay 2 is in one period of three, with Running in one of
    two of those: a bit per slot and relay still gives 1/3 and 1/6 to within a slot (1/60), where a
    majority per slot would say 0."""
    memory = ReliabilityMemory(slot_seconds=60)
    for period in range(360):
        relays = {1: (True, 5.0), 2: (period % 6 == 0, 5.0)} if period % 3 == 0 else {1: (True, 5.0)}
        memory.learn(plain_table(relays), START + 10 * period, 10)
    scores = scores_of(memory, plain_table({1: (True, 5), 2: (True, 5)}))[fingerprint(2)]
    assert abs(scores["presence_7d"] - 1 / 3) <= 1 / 60 and abs(scores["running_7d"] - 1 / 6) <= 1 / 60
    assert scores["running_7d"] <= scores["presence_7d"]


def test_a_period_longer_than_a_slot_covers_each_of_its_slots():
    memory = ReliabilityMemory()
    memory.learn(plain_table({1: (True, 5), 2: (True, 5)}), START, 2 * HOUR)
    memory.learn(plain_table({1: (True, 5)}), START + 2 * HOUR, HOUR)
    assert scores_of(memory, plain_table({2: (True, 5)}))[fingerprint(2)]["presence_7d"] == pytest.approx(2 / 3)
    # a period starting before the one before ended: only the time not yet covered counts (3 h 30 min in all)
    memory.learn(plain_table({2: (True, 5)}), START + 2 * HOUR + HOUR // 2, HOUR)
    assert scores_of(memory, plain_table({2: (True, 5)}))[fingerprint(2)]["presence_7d"] == pytest.approx(
        (2 * HOUR + HOUR / 2) / (3.5 * HOUR))


def test_the_two_windows_and_a_rerun():
    """Ten days of hours; relay 2 joins after three days: all of the last 7 days, 7 of 10 days observed."""
    memory = ReliabilityMemory()
    for hour in range(240):
        relays = {1: (True, 100.0), 2: (True, 100.0 + hour % 2)} if hour >= 72 else {1: (True, 100.0)}
        assert memory.learn(plain_table(relays), START + hour * HOUR, HOUR)
    assert not memory.learn(plain_table({1: (True, 100.0)}), START + 239 * HOUR, HOUR)  # a rerun: ignored
    scores = scores_of(memory, plain_table({1: (True, 100.0), 2: (True, 100.0)}))[fingerprint(2)]
    assert scores["presence_7d"] == scores["running_7d"] == 1.0
    assert scores["presence_30d"] == pytest.approx(7 / 10) and scores["running_30d"] == pytest.approx(7 / 10)
    assert scores["weight_cv_7d"] == pytest.approx(0.5 / 100.5, abs=2e-4)  # 100 and 101 alternating


def test_measured_share():
    table = plain_table({1: (True, 1), 2: (True, 1), 3: (True, 1)}, measured={1: 5, 2: 2})
    assert measured_share(table, 5).tolist() == [1.0, 0.4, 0.0]
    assert measured_share(table, 4).tolist() == [1.0, 0.5, 0.0]  # more than the known count: 1
    assert measured_share(table).tolist() == [1.0, 0.4, 0.0]  # without the count: the most any relay has
    assert np.isnan(measured_share(plain_table({1: (True, 1)}))).all()  # no bandwidth authority known


def test_measured_share_from_a_real_consensus_and_vote():
    consensus = parse_data("consensus", "2016-09-20-13-00-00-consensus.xz")
    vote = parse_data("vote", "2016-09-20-13-00-00-vote-maatuska.xz")
    table = build_table(consensus, [], GEOIP, [vote])
    measured = {fp for fp, router in vote.routers.items() if router.measured is not None}
    share = dict(zip(table.fingerprints, measured_share(table, 1)))
    assert {fp for fp, value in share.items() if value == 1.0} == measured & set(consensus.routers)
    assert set(share.values()) == {0.0, 1.0}


# -- operators ----------------------------------------------------------------------------------------------------

def test_operator_scores_are_weighted_by_consensus_weight_and_keep_relays_that_left():
    """Operator a: relay 1 (weight 100, always there) and relay 2 (weight 300, half the time); relay 3 (weight
    600) was a's too and left after the first of four hours. Operator b: relay 4, weight 0 (a plain mean)."""
    memory = ReliabilityMemory()
    operators = {1: "a", 2: "a", 3: "a", 4: "b"}
    hours = [{1: (True, 100), 2: (True, 300), 3: (True, 600), 4: (True, 0)},
             {1: (True, 100), 4: (True, 0)},
             {1: (True, 100), 2: (True, 300), 4: (False, 0)},
             {1: (True, 100), 4: (False, 0)}]
    for hour, relays in enumerate(hours):
        memory.learn(plain_table(relays, operators, measured={1: 2, 2: 1}), START + hour * HOUR, HOUR)
    table = plain_table(hours[-1], operators)
    a, b = standings(memory, table, "contact")
    assert (a.operator_id, a.relays, a.relays_30d, b.relays_30d) == ("a", 1, 3, 1)
    assert a.scores["presence_7d"] == pytest.approx((100 * 1 + 300 * 0.5 + 600 * 0.25) / 1000)
    assert b.scores["running_7d"] == pytest.approx(0.5)
    assert a.weight_fraction == 1.0 and b.weight_fraction == 0.0
    points = reliability_points(memory, table, 1, START + 3 * HOUR)
    operators_written = [p for p in points if p.measurement == "tor_operator"]
    assert [(p.tags["group"], p.tags["operator_id"]) for p in operators_written] == [("contact", "a")]
    assert operators_written[0].fields["relays_30d"] == 3.0


def test_a_period_without_its_descriptor_keeps_the_relays_operator():
    memory = ReliabilityMemory()
    memory.learn(plain_table({1: (True, 10), 2: (True, 10)}, {1: "a", 2: "a"}), START, HOUR)
    undescribed = plain_table({1: (True, 10), 2: (True, 10)}, {2: "b"})
    undescribed.platform = ["unknown", "Linux"]  # relay 1's descriptor was not fetched; relay 2 changed contact
    memory.learn(undescribed, START + HOUR, HOUR)
    assert memory.operator_id == ["a", "b"]


def test_operators_written_are_those_operator_points_writes(hour10, hour11, descriptors):
    """Real consensuses and descriptors: the same top operators (tags) as agent.metrics.operator, by contact and
    by family, so their fields join the same series."""
    memory = ReliabilityMemory()
    first, second = (build_table(document, descriptors, GEOIP) for document in (hour10, hour11))
    memory.learn(first, START, HOUR)
    memory.learn(second, START + HOUR, HOUR)
    time = START + HOUR
    written = {tuple(sorted(p.tags.items())) for p in reliability_points(memory, second, 50, time)
               if p.measurement == "tor_operator"}
    assert written == {tuple(sorted(p.tags.items())) for p in operator_points(second, 50, time)}
    groups = [dict(tags)["group"] for tags in written]
    assert groups.count("contact") == 50 and groups.count("family") > 10  # 587 descriptors: few whole families


# -- real consensuses ---------------------------------------------------------------------------------------------

def test_two_consecutive_real_consensuses(hour10, hour11, descriptors):
    memory = ReliabilityMemory()
    memory.learn(build_table(hour10, descriptors, GEOIP), START, HOUR)
    table = build_table(hour11, descriptors, GEOIP)
    memory.learn(table, START + HOUR, HOUR)
    scores = scores_of(memory, table)
    before, after = hour10.routers, hour11.routers
    for fp, router in after.items():
        assert scores[fp]["presence_7d"] == (1.0 if fp in before else 0.5)
        running = ("Running" in router.flags) + (fp in before and "Running" in before[fp].flags)
        assert scores[fp]["running_30d"] == running / 2
        changed = fp in before and set(before[fp].flags) & set(KNOWN_FLAGS) != set(router.flags) & set(KNOWN_FLAGS)
        assert scores[fp]["flag_changes_per_week"] == pytest.approx(changed * WEEK / ((1 + (fp in before)) * HOUR))
    assert sum(1 for fp in after if fp in before and set(before[fp].flags) != set(after[fp].flags)) > 10
    points = reliability_points(memory, table, 200, START + HOUR)
    assert problems(points) == []  # every field is catalogued
    assert {name for p in points for name in p.fields} >= {*RELAY_FIELDS[:-1], "relays_30d"}


# -- bounds and pickling ------------------------------------------------------------------------------------------

def test_relays_not_seen_for_30_days_are_forgotten():
    memory = ReliabilityMemory()
    memory.learn(plain_table({1: (True, 1), 2: (True, 1)}), START, HOUR)
    memory.learn(plain_table({1: (True, 1)}), START + 29 * 86400, HOUR)
    assert len(memory) == 2
    memory.learn(plain_table({1: (True, 1)}), START + 30 * 86400, HOUR)
    assert memory.fingerprints == [fingerprint(1)] and len(memory.present) == len(memory.operator_id) == 1


def test_the_memory_is_capped_keeping_the_newest_and_always_the_period_at_hand():
    memory = ReliabilityMemory(limit=200)
    for period in range(3):
        memory.learn(plain_table({period * 1000 + index: (True, 1) for index in range(150)}), START + period * HOUR,
                     HOUR)
        assert len(memory) <= 200
    assert sum(fp >= fingerprint(2000) for fp in memory.fingerprints) == 150  # the newest period's, all
    memory = ReliabilityMemory(limit=100)
    memory.learn(plain_table({index: (True, 1) for index in range(150)}), START, HOUR)
    memory.learn(plain_table({1000 + index: (True, 1) for index in range(150)}), START + HOUR, HOUR)
    assert len(memory) == 150 and all(fp >= fingerprint(1000) for fp in memory.fingerprints)
    assert MAX_RELAYS == 40_000


def test_the_memory_stays_small_per_relay():
    """~660 bytes a relay whatever the period length: 20,000 relays over 30 days of hours take ~13 MB."""
    memory = ReliabilityMemory()
    relays = {index: (True, 1000.0) for index in range(2000)}
    for hour in range(30):
        memory.learn(plain_table(relays), START + hour * HOUR, HOUR)
    assert memory.nbytes() / len(memory) < 680
    assert len(pickle.dumps(memory, protocol=pickle.HIGHEST_PROTOCOL)) < 2000 * 800
    short = ReliabilityMemory()
    for second in range(0, 600, 10):  # 60 periods of 10 s: the same size
        short.learn(plain_table(relays), START + second, 10)
    assert short.nbytes() == memory.nbytes()


def test_a_pickled_memory_goes_on_as_the_original():
    memory = ReliabilityMemory()
    rng = random.Random(7)
    for hour in range(50):
        memory.learn(plain_table({index: (rng.random() < 0.9, rng.choice((10.0, 20.0))) for index in range(30)
                                  if rng.random() < 0.8}), START + hour * HOUR, HOUR)
    copy = pickle.loads(pickle.dumps(memory, protocol=pickle.HIGHEST_PROTOCOL))
    table = plain_table({index: (True, 15.0) for index in range(40)})
    for each in (memory, copy):
        each.learn(table, START + 50 * HOUR, HOUR)
    left, right = scores_of(memory, table), scores_of(copy, table)
    assert left == right and len(left[fingerprint(0)]) == 6


def test_leaderboard_orders_by_running_then_presence_then_stability():
    memory = ReliabilityMemory()
    operators = {1: "steady", 2: "flaky", 3: "flaky", 4: "small", 5: "jumpy"}
    for hour in range(6):
        relays = {1: (True, 100), 2: (hour % 2 == 0, 100), 3: (True, 100), 4: (True, 1),
                  5: (True, 100 + 100 * (hour % 2))}
        memory.learn(plain_table(relays, operators), START + hour * HOUR, HOUR)
    table = plain_table(relays, operators)
    board = leaderboard(memory, table, 10)
    assert [each.operator_id for each in board] == ["steady", "small", "jumpy", "flaky"]
    assert board[2].scores["weight_cv_7d"] > 0 and board[3].scores["running_30d"] == pytest.approx(0.75)
    assert [each.operator_id for each in leaderboard(memory, table, 10, min_relays=2)] == ["flaky"]
    assert [each.operator_id for each in leaderboard(memory, table, 2)] == ["steady", "small"]


# -- properties ---------------------------------------------------------------------------------------------------

sequences = st.lists(  # periods: (gap before it in periods, length in seconds, {relay: (Running, weight)})
    st.tuples(st.integers(0, 30), st.sampled_from((10, 600, 3600, 7200)),
              st.dictionaries(st.integers(0, 12), st.tuples(st.booleans(), st.floats(0, 1e6)), max_size=10)),
    min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences, st.randoms(use_true_random=False))
def test_scores_are_bounded_and_do_not_depend_on_the_order_of_relays(periods, rng):
    memory, shuffled = ReliabilityMemory(), ReliabilityMemory()
    time = START
    for gap, length, relays in periods:
        time += gap * HOUR + length
        order = list(relays.items())
        rng.shuffle(order)
        memory.learn(plain_table(relays, {index: f"op{index % 3}" for index in relays}), time, length)
        shuffled.learn(plain_table(dict(order), {index: f"op{index % 3}" for index in relays}), time, length)
    table = plain_table({index: (True, 1.0) for index in range(13)})
    scores = scores_of(memory, table)
    assert scores == scores_of(shuffled, plain_table(dict(reversed(list({i: (True, 1.0) for i in range(13)}
                                                                          .items())))))
    for values in scores.values():
        for name in ("presence_7d", "presence_30d", "running_7d", "running_30d"):
            assert 0.0 <= values.get(name, 0.0) <= 1.0 + 1e-12
        assert values.get("running_7d", 0.0) <= values.get("presence_7d", 0.0) + 1e-12
        assert values.get("weight_cv_7d", 0.0) >= 0.0 and values.get("flag_changes_per_week", 0.0) >= 0.0
    operators_table = plain_table(periods[-1][2], {index: f"op{index % 3}" for index in periods[-1][2]})
    first = {each.operator_id: each.scores for each in standings(memory, operators_table, "contact")}
    second = {each.operator_id: each.scores for each in standings(shuffled, operators_table, "contact")}
    assert first.keys() == second.keys()
    for key, values in first.items():
        assert values.keys() == second[key].keys()
        assert all(values[name] == pytest.approx(second[key][name]) for name in values)
        assert all(0.0 <= values[name] <= 1.0 + 1e-9 for name in values if name.startswith(("presence", "running")))
