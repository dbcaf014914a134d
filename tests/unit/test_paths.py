"""Path-selection probabilities (agent.metrics.paths) on real consensuses, on edge cases and on random ones.

Every expected value comes from ``spec_probabilities`` below: one relay at a
time, over stem's own parse of the document, written from the spec text
(dir-spec 3.4.1 "bandwidth-weights", path-spec "Weighting node selection",
tor's node_select.c where the spec is silent; docs/paths.md) without
anything from agent.metrics.paths.
"""

from __future__ import annotations

import base64
import csv
import io
import math
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stem.descriptor.networkstatus import NetworkStatusDocumentV3
from stem.descriptor.router_status_entry import RouterStatusEntryV3

import agent.metrics.catalogue as catalogue_module
from agent.metrics.catalogue import Metric, catalogue, problems
from agent.metrics.geoip import GeoIP
from agent.metrics.operator import operator_points
from agent.metrics.paths import (
    POSITIONS,
    path_points,
    path_probabilities,
    probabilities,
)
from agent.metrics.relays import build_table
from agent.model.entries import ABSENT
from agent.model.snapshot import DocKind
from agent.parse.documents import parse_document
from tests.conftest import DATA, full_consensuses, parse_data, read_data

#: The catalogue rows these fields need (agent/metrics/catalogue.csv's columns), until they are added there.
PROPOSED_ROWS = [
    ("tor_relay", "guard_probability", "fingerprint", "gauge", "ratio",
     "Probability that a client picks the relay as its guard: its consensus weight times Wgg (Guard only) or Wgd "
     "(Guard and Exit, not BadExit) over that sum for all Running Valid Guard relays (Onionoo's guard_probability; "
     "docs/paths.md). 0 without the Guard flag."),
    ("tor_relay", "middle_probability", "fingerprint", "gauge", "ratio",
     "Probability that a client picks the relay as a middle: its consensus weight times Wmg, Wmm, Wme or Wmd (by its "
     "Guard and exit flags) over that sum for all Running Valid relays (Onionoo's middle_probability; docs/paths.md)."),
    ("tor_relay", "exit_probability", "fingerprint", "gauge", "ratio",
     "Probability that a client picks the relay as its exit: its consensus weight times Wee (Exit only) or Wed (Guard "
     "and Exit) over that sum for all Running Valid relays with Exit and not BadExit (Onionoo's exit_probability; "
     "docs/paths.md). 0 without Exit or with BadExit."),
    ("tor_operator", "guard_probability", "group operator operator_id", "gauge", "ratio",
     "Sum of its relays' guard probabilities: the chance that a client's guard is one of this operator's. Written for "
     "the top operators by weight and by each probability."),
    ("tor_operator", "middle_probability", "group operator operator_id", "gauge", "ratio",
     "Sum of its relays' middle probabilities."),
    ("tor_operator", "exit_probability", "group operator operator_id", "gauge", "ratio",
     "Sum of its relays' exit probabilities: the chance that a client's exit is one of this operator's."),
    ("tor_network_country", "guard_probability", "country", "gauge", "ratio",
     "Sum of the guard probabilities of the relays in the country."),
    ("tor_network_country", "middle_probability", "country", "gauge", "ratio",
     "Sum of the middle probabilities of the relays in the country."),
    ("tor_network_country", "exit_probability", "country", "gauge", "ratio",
     "Sum of the exit probabilities of the relays in the country."),
]

GEOIP = GeoIP.load(DATA / "geoip-excerpt")
NEEDED = ("Wed", "Wee", "Wgd", "Wgg", "Wmd", "Wme", "Wmg", "Wmm")
INT32_MAX = 2 ** 31 - 1


# -- the independent implementation ---------------------------------------------------------------------------

def spec_probabilities(document) -> dict[str, dict[str, float]]:
    """fingerprint -> {position: probability}, straight from the spec text, one relay at a time.

    * bandwidth-weights: a relay in the guard position is weighted Wgg if
      Guard-flagged, Wgd if Guard+Exit-flagged; in the middle position Wmg,
      Wmm (non-flagged), Wme (Exit-flagged), Wmd (Guard+Exit); in the exit
      position Wee (Exit-flagged), Wed (Guard+Exit). A BadExit relay is not
      an exit (dir-spec: "doesn't count", path-spec: never chosen as exit).
    * "If any of those weights is malformed or not present in a consensus,
      clients proceed ... setting the weights to the default value of 10000."
      (node_select.c also falls back on a negative weight.)
    * Only Running and Valid relays are chosen; guards must have Guard, exits
      Exit and not BadExit.
    * No w line: 30,000 bytes; weights above INT32_MAX bytes are capped
      (node_select.c). All candidates weighing 0: any of them, uniformly.
    """
    given_weights = document.bandwidth_weights or {}
    weights = {}
    for name in NEEDED:
        value = given_weights.get(name)
        if value is None or value < 0 or value > INT32_MAX:
            weights = dict.fromkeys(NEEDED, 10000)
            break
        weights[name] = value
    chosen: dict[str, dict[str, float]] = {"guard": {}, "middle": {}, "exit": {}}
    for fingerprint, router in document.routers.items():
        flags = set(router.flags)
        if "Running" not in flags or "Valid" not in flags:
            continue
        if router.bandwidth is None:
            bandwidth_bytes = 30000
        elif router.bandwidth > INT32_MAX // 1000:
            bandwidth_bytes = INT32_MAX
        else:
            bandwidth_bytes = router.bandwidth * 1000
        is_guard = "Guard" in flags
        is_exit = "Exit" in flags and "BadExit" not in flags
        if is_guard and is_exit:
            chosen["guard"][fingerprint] = bandwidth_bytes * weights["Wgd"]
            chosen["middle"][fingerprint] = bandwidth_bytes * weights["Wmd"]
            chosen["exit"][fingerprint] = bandwidth_bytes * weights["Wed"]
        elif is_guard:
            chosen["guard"][fingerprint] = bandwidth_bytes * weights["Wgg"]
            chosen["middle"][fingerprint] = bandwidth_bytes * weights["Wmg"]
        elif is_exit:
            chosen["middle"][fingerprint] = bandwidth_bytes * weights["Wme"]
            chosen["exit"][fingerprint] = bandwidth_bytes * weights["Wee"]
        else:
            chosen["middle"][fingerprint] = bandwidth_bytes * weights["Wmm"]
    result = {fingerprint: dict.fromkeys(POSITIONS, 0.0) for fingerprint in document.routers}
    for position, weighted in chosen.items():
        total = sum(weighted.values())
        for fingerprint, value in weighted.items():
            result[fingerprint][position] = value / total if total > 0 else 1 / len(weighted)
    return result


def assert_agree(document, expected: dict[str, dict[str, float]]) -> None:
    chances = path_probabilities(document)
    fingerprints = list(document.routers)
    for position in POSITIONS:
        want = np.array([expected[fingerprint][position] for fingerprint in fingerprints])
        np.testing.assert_allclose(chances.of(position), want, rtol=1e-9, atol=1e-15, err_msg=position)


# -- real consensuses ---------------------------------------------------------------------------------------------

LOCAL = {"2016-09-20-13-00-00-consensus.xz": DocKind.CONSENSUS, "2020-02-29-10-00-00-consensus.xz": DocKind.CONSENSUS,
         "2020-02-29-11-00-00-consensus.xz": DocKind.CONSENSUS, "2022-11-19-10-00-00-consensus.xz": DocKind.CONSENSUS,
         "2022-11-19-10-00-00-consensus-microdesc.xz": DocKind.MICRODESC_CONSENSUS}
REAL = [DATA / name for name in LOCAL] + [path for path in full_consensuses() if f"{path.name}.xz" not in LOCAL]


def _raw(path: Path) -> bytes:
    return read_data(path.name) if path.parent == DATA else path.read_bytes()


@cache
def parsed(path: Path):
    """The agent's parse (what metrics receive)."""
    return parse_document(LOCAL.get(path.name, DocKind.CONSENSUS), _raw(path), str(path))


@cache
def stem_parsed(path: Path) -> NetworkStatusDocumentV3:
    """stem's own parse of the same bytes (CollecTor's @type line dropped), for the independent loop."""
    lines = _raw(path).split(b"\n")
    return NetworkStatusDocumentV3(b"\n".join(line for line in lines if not line.startswith(b"@type")), validate=False)


@pytest.mark.parametrize("path", REAL, ids=lambda path: path.name)
def test_each_position_sums_to_one_over_selectable_relays(path: Path):
    document = parsed(path)
    chances = path_probabilities(document)
    assert chances.weighted and len(chances) == len(document.routers) > 1000
    selectable = np.array([{"Running", "Valid"} <= set(entry.flags) for entry in document.routers.values()])
    for position in POSITIONS:
        column = chances.of(position)
        assert column.sum() == pytest.approx(1.0, abs=1e-9), position
        assert ((column >= 0) & (column <= 1)).all() and not column[~selectable].any()


@pytest.mark.parametrize("path", REAL, ids=lambda path: path.name)
def test_equal_to_a_relay_by_relay_loop_over_stems_parse(path: Path):
    document, independent = parsed(path), stem_parsed(path)
    assert list(document.routers) == list(independent.routers)
    assert_agree(document, spec_probabilities(independent))


def test_the_two_flavours_of_one_hour_agree():
    """The microdesc consensus carries the same flags, weights and w lines: the same relays get the same numbers."""
    ns = parsed(DATA / "2022-11-19-10-00-00-consensus.xz")
    md = parsed(DATA / "2022-11-19-10-00-00-consensus-microdesc.xz")
    assert set(ns.routers) == set(md.routers)
    order = [list(md.routers).index(fingerprint) for fingerprint in ns.routers]
    for position in POSITIONS:
        np.testing.assert_allclose(path_probabilities(md).of(position)[order], path_probabilities(ns).of(position))


def test_guard_and_exit_relays_share_the_scarce_position():
    """When exits are scarce (Wgd = Wmd = 0, 2020), Guard+Exit relays are used only as exits; as Wgd grows (2023),
    some of their weight moves to the guard position (the flips the Onionoo mirror series shows)."""
    scarce = parsed(DATA / "2020-02-29-10-00-00-consensus.xz")
    chances = path_probabilities(scarce)
    both = np.array([{"Guard", "Exit"} <= set(r.flags) and "BadExit" not in r.flags for r in scarce.routers.values()])
    assert both.sum() > 100 and not chances.guard[both].any() and not chances.middle[both].any()
    assert (chances.exit[both] > 0).sum() > 100


# -- edge cases on documents stem builds --------------------------------------------------------------------------

def relay(index: int, flags: str, bandwidth: int | None) -> RouterStatusEntryV3:
    identity = base64.b64encode(index.to_bytes(20, "big")).decode().rstrip("=")
    fields = {"r": f"relay{index} {identity} {'B' * 27} 2020-02-29 09:00:00 10.0.{index // 250}.{index % 250 + 1} "
                   f"9001 0", "s": flags}
    if bandwidth is not None:
        fields["w"] = f"Bandwidth={bandwidth}"
    return RouterStatusEntryV3.create(fields)


def consensus(relays: list, weights: dict[str, int] | None) -> NetworkStatusDocumentV3:
    attributes = {"vote-status": "consensus"}
    if weights is not None:
        attributes["bandwidth-weights"] = " ".join(f"{name}={value}" for name, value in sorted(weights.items()))
    return NetworkStatusDocumentV3.create(attributes, routers=relays)


LIVE = {"Wbd": 0, "Wbe": 0, "Wbg": 4317, "Wbm": 10000, "Wdb": 10000, "Web": 10000, "Wed": 10000, "Wee": 10000,
        "Weg": 10000, "Wem": 10000, "Wgb": 10000, "Wgd": 0, "Wgg": 5683, "Wgm": 5683, "Wmb": 10000, "Wmd": 0,
        "Wme": 0, "Wmg": 4317, "Wmm": 10000}  # the 2020-02-29 10:00 consensus's
OK = "Fast Running Stable Valid"
G, D, E, M = f"Guard {OK}", f"Exit Guard {OK}", f"Exit {OK}", OK


def numbers(document) -> dict[str, list[float]]:
    chances = path_probabilities(document)
    return {position: chances.of(position).tolist() for position in POSITIONS}


def test_without_bandwidth_weights_every_weight_is_one():
    document = consensus([relay(1, G, 100), relay(2, D, 300), relay(3, E, 200), relay(4, M, 400)], None)
    assert not path_probabilities(document).weighted
    assert numbers(document) == {"guard": [0.25, 0.75, 0, 0], "middle": [0.1, 0.3, 0.2, 0.4],
                                 "exit": [0, 0.6, 0.4, 0]}
    assert_agree(document, spec_probabilities(document))


@pytest.mark.parametrize("change", [{"Wgg": None}, {"Wmd": -1}], ids=["missing", "negative"])
def test_a_missing_or_negative_weight_means_no_weights(change):
    weights = {name: value for name, value in {**LIVE, **change}.items() if value is not None}
    relays = [relay(1, G, 100), relay(2, D, 300), relay(3, E, 200), relay(4, M, 400)]
    assert numbers(consensus(relays, weights)) == numbers(consensus(relays, None))


def test_bad_exit_is_never_an_exit_and_counts_as_a_non_exit_elsewhere():
    relays = [relay(1, f"BadExit {E}", 100), relay(2, E, 300), relay(3, f"BadExit {D}", 200), relay(4, M, 100)]
    result = numbers(consensus(relays, LIVE))
    assert result["exit"] == [0, 1, 0, 0]
    assert result["guard"] == [0, 0, 1, 0]  # Guard+Exit+BadExit is weighted Wgg, not Wgd (= 0 here)
    middle = [100 * 10000, 300 * 0, 200 * 4317, 100 * 10000]  # Wmm, Wme, Wmg, Wmm
    assert result["middle"] == pytest.approx([value / sum(middle) for value in middle])
    assert_agree(consensus(relays, LIVE), spec_probabilities(consensus(relays, LIVE)))


def test_zero_weights_and_zero_positions():
    relays = [relay(1, G, 100), relay(2, D, 300), relay(3, E, 200), relay(4, E, 0)]
    result = numbers(consensus(relays, {**LIVE, "Wee": 0, "Wed": 0}))
    assert result["guard"] == [1, 0, 0, 0]  # Wgd = 0
    assert result["exit"] == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3])  # all exits weigh 0: tor picks any, uniformly
    nothing = numbers(consensus(relays, dict.fromkeys(LIVE, 0)))
    assert nothing == {"guard": [0.5, 0.5, 0, 0], "middle": [0.25] * 4, "exit": [0, 1 / 3, 1 / 3, 1 / 3]}
    no_exit = numbers(consensus([relay(1, G, 100), relay(2, M, 100)], LIVE))
    assert no_exit["exit"] == [0, 0]  # no candidate: nobody, and the position sums to 0


def test_relays_not_running_or_not_valid_are_never_chosen():
    relays = [relay(1, "Fast Guard Valid", 500), relay(2, "Exit Fast Running", 500), relay(3, G, 100),
              relay(4, E, 100), relay(5, M, 100)]
    result = numbers(consensus(relays, LIVE))
    assert [row[:2] for row in result.values()] == [[0, 0]] * 3
    assert result["guard"][2] == result["exit"][3] == 1


def test_a_missing_w_line_counts_thirty_and_huge_weights_are_capped():
    result = numbers(consensus([relay(1, M, None), relay(2, M, 30)], LIVE))
    assert result["middle"] == [0.5, 0.5]
    capped = numbers(consensus([relay(1, M, INT32_MAX // 1000 + 1), relay(2, M, 2 ** 62)], LIVE))
    assert capped["middle"] == [0.5, 0.5]  # both INT32_MAX bytes/s


# -- random consensuses -------------------------------------------------------------------------------------------

FLAG_NAMES = ("BadExit", "Exit", "Guard", "Running", "Valid")
RANDOM = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow])


@st.composite
def columns(draw):
    count = draw(st.integers(0, 30))
    flags = {name: np.array(draw(st.lists(st.booleans(), min_size=count, max_size=count)), bool)
             for name in FLAG_NAMES}
    bandwidth = np.array(draw(st.lists(st.one_of(st.just(ABSENT), st.integers(0, 2 ** 62)),
                                       min_size=count, max_size=count)), np.int64)
    weights = draw(st.one_of(st.none(), st.fixed_dictionaries({name: st.integers(0, INT32_MAX) for name in NEEDED})))
    return flags, bandwidth, weights


@RANDOM
@given(columns())
def test_random_columns_give_probabilities_that_sum_to_one(drawn):
    flags, bandwidth, weights = drawn
    chances = probabilities(flags, bandwidth, weights)
    selectable = flags["Running"] & flags["Valid"]
    exits = flags["Exit"] & ~flags["BadExit"]
    candidates = {"guard": selectable & flags["Guard"], "middle": selectable, "exit": selectable & exits}
    for position in POSITIONS:
        column = chances.of(position)
        assert ((column >= 0) & (column <= 1)).all() and not column[~candidates[position]].any()
        assert math.isclose(column.sum(), 1.0 if candidates[position].any() else 0.0, abs_tol=1e-9)


@st.composite
def documents(draw):
    flag_sets = st.lists(st.sampled_from(FLAG_NAMES + ("Fast", "Stable")), unique=True).map(" ".join)
    entries = draw(st.lists(st.tuples(flag_sets, st.one_of(st.none(), st.integers(0, 10 ** 7))), max_size=12))
    weights = draw(st.one_of(st.none(), st.dictionaries(
        st.sampled_from(NEEDED + ("Wgm", "Wbd")), st.integers(-2, 2 * 10 ** 4), min_size=6)))
    return entries, weights


@RANDOM
@given(documents())
def test_random_documents_agree_with_the_loop(drawn):
    entries, weights = drawn  # the document is built here: stem's .create() draws random digests
    document = consensus([relay(index, flags, bandwidth) for index, (flags, bandwidth) in enumerate(entries)], weights)
    assert_agree(document, spec_probabilities(document))


# -- points -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def period():
    document = parsed(DATA / "2020-02-29-10-00-00-consensus.xz")
    descriptors = parse_data("server-descriptors", "2020-02-29-10-05-00-server-descriptors.xz")
    return document, build_table(document, descriptors, GEOIP)


def proposed_csv() -> str:
    """The rows as catalogue.csv lines (what to paste there)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(PROPOSED_ROWS)
    return out.getvalue()


def with_proposed_rows() -> dict:
    header = "measurement,field,tags,type,unit,description\n"
    proposed = {(row["measurement"], row["field"]): Metric(row["measurement"], row["field"], tuple(row["tags"].split()),
                                                            row["type"], row["unit"], row["description"])
                for row in csv.DictReader((header + proposed_csv()).splitlines())}
    assert len(proposed) == len(PROPOSED_ROWS)
    return {**catalogue(), **proposed}


def test_points_fit_the_catalogue_with_the_proposed_rows(period, monkeypatch):
    document, table = period
    points = path_points(document, table, 200, 1582970400)
    entries = with_proposed_rows()
    for (measurement, _), metric in entries.items():  # the existing measurements, with their one tag set
        assert metric.tags == catalogue_module.tags_of(measurement), measurement
    monkeypatch.setattr(catalogue_module, "catalogue", lambda: entries)
    assert problems(points) == []
    if all(key in catalogue() for key in with_proposed_rows()):
        monkeypatch.undo()
        assert problems(points) == []


def test_relay_operator_and_country_points(period):
    document, table = period
    points = path_points(document, table, 20, 1582970400)
    expected = spec_probabilities(stem_parsed(DATA / "2020-02-29-10-00-00-consensus.xz"))
    relays = {p.tags["fingerprint"]: p.fields for p in points if p.measurement == "tor_relay"}
    assert relays.keys() == expected.keys()
    without = path_points(document, table, 20, 1582970400, per_relay=False)
    assert [p for p in points if p.measurement != "tor_relay"] == without
    fingerprint = next(fp for fp, values in expected.items() if values["exit"] > 0)
    assert relays[fingerprint]["exit_probability"] == pytest.approx(expected[fingerprint]["exit"])

    countries = [p.fields for p in points if p.measurement == "tor_network_country"]
    assert len(countries) == len(set(table.country))
    for position in POSITIONS:
        assert sum(fields[f"{position}_probability"] for fields in countries) == pytest.approx(1.0)

    operators = {(p.tags["group"], p.tags["operator_id"], p.tags["operator"]): p.fields
                 for p in points if p.measurement == "tor_operator"}
    written = {(p.tags["group"], p.tags["operator_id"], p.tags["operator"]) for p in operator_points(table, 20, 1)}
    assert written and written <= operators.keys()  # every operator operator_points writes gets its probabilities
    assert len(operators) <= 2 * 4 * 20  # bounded: top 20 by weight and by each position, per grouping
    for (group, key, _), fields in operators.items():
        members = [fp for fp, operator_key, family in zip(table.fingerprints, table.operator_id, table.family_id)
                   if (operator_key if group == "contact" else (family or "")[:12] or None) == key]
        for position in POSITIONS:
            assert fields[f"{position}_probability"] == pytest.approx(sum(expected[fp][position] for fp in members))


def test_operators_ranked_by_probability_are_written_too(period):
    """An operator too light to be among the top by weight, but among the top exits, still gets its series."""
    document, table = period
    points = path_points(document, table, 3, 1582970400)
    contact = [p for p in points if p.measurement == "tor_operator" and p.tags["group"] == "contact"]
    top_weight = {p.tags["operator_id"] for p in operator_points(table, 3, 1) if p.tags["group"] == "contact"}
    by_exit = sorted(contact, key=lambda p: -p.fields["exit_probability"])[:3]
    assert len(contact) > 3 and {p.tags["operator_id"] for p in by_exit} - top_weight
