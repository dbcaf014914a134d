"""Metrics on real consensuses, held against values computed here directly from stem's objects."""

import re
import statistics
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from agent.metrics.catalogue import catalogue, problems
from agent.metrics.geoip import GeoIP
from agent.metrics.network import role_weight_fractions
from agent.metrics.period import relays_of, snapshot_points
from agent.metrics.relays import KNOWN_FLAGS, build_table
from agent.model.authorities import default_authorities
from agent.model.snapshot import (
    AuthorityView,
    DocKind,
    FetchRecord,
    OrPortProbe,
    Outcome,
    SignatureCheck,
    SignatureReport,
    Snapshot,
    VoteHolding,
)
from agent.parse.documents import parse_document
from tests.conftest import DATA, full_consensuses, parse_data, read_data

GEOIP = GeoIP.load(DATA / "geoip-excerpt")


def by(points, measurement, tag=None):
    """{tag value: fields} (or the fields of the one point) for one measurement."""
    chosen = [p for p in points if p.measurement == measurement]
    if tag is None:
        assert len(chosen) == 1
        return chosen[0].fields
    return {p.tags[tag]: p.fields for p in chosen}


def snapshot_of(consensus, votes=(), descriptors=(), records=()):
    """A Snapshot whose accepted consensus is ``consensus`` (signatures taken as valid)."""
    authorities = list(default_authorities())
    views = {a.nickname: AuthorityView(a) for a in authorities}
    first = views[authorities[0].nickname]
    first.consensus = consensus
    first.consensus_signatures = SignatureReport(tuple(SignatureCheck(a.v3ident, "sha1", True) for a in authorities))
    for authority, vote in zip(authorities, votes):
        views[authority.nickname].vote = vote
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return Snapshot("test", now, now, authorities, views, list(records), server_descriptors=list(descriptors))


@pytest.mark.parametrize("path", full_consensuses(), ids=lambda p: p.name)
def test_every_full_real_consensus(path: Path):
    consensus = parse_document(DocKind.CONSENSUS, path.read_bytes(), str(path))
    points = snapshot_points(snapshot_of(consensus), None, GEOIP)
    assert problems(points) == []
    routers = list(consensus.routers.values())
    network = by(points, "tor_network")
    assert network["relays"] == len(routers)
    assert network["weight_total"] == sum(r.bandwidth or 0 for r in routers)
    flags = by(points, "tor_network_flag", "flag")
    for flag in set(KNOWN_FLAGS) | set(consensus.known_flags):
        expected = sum(1 for r in routers if flag in r.flags)
        assert flags[flag]["relays"] == expected, flag
        weight = sum(r.bandwidth or 0 for r in routers if flag in r.flags)
        assert flags[flag]["weight_fraction"] == pytest.approx(weight / network["weight_total"])
    assert sum(f["relays"] for f in by(points, "tor_network_version", "status").values()) == len(routers)
    assert sum(f["relays"] for f in by(points, "tor_network_country", "country").values()) == len(routers)
    relay_points = [p for p in points if p.measurement == "tor_relay"]
    assert len(relay_points) == len(routers)


def test_churn_between_two_consecutive_real_consensuses(hour10, hour11):
    points = snapshot_points(snapshot_of(hour11), relays_of(hour10), GEOIP)
    assert problems(points) == []
    before, after = set(hour10.routers), set(hour11.routers)
    network = by(points, "tor_network")
    assert network["joined_relays"] == len(after - before) > 0
    assert network["left_relays"] == len(after ^ before) - len(after - before) > 0
    flags = by(points, "tor_network_flag", "flag")
    for flag in ("Guard", "Exit", "Running", "Stable", "HSDir", "Fast"):
        had = {fp for fp, r in hour10.routers.items() if flag in r.flags}
        has = {fp for fp, r in hour11.routers.items() if flag in r.flags}
        assert (flags[flag]["joined"], flags[flag]["left"]) == (len(has - had), len(had - has)), flag
    left = [p for p in points if p.measurement == "tor_relay" and p.fields == {"in_consensus": 0.0}]
    assert {p.tags["fingerprint"] for p in left} == before - after
    assert {p.time for p in points} == {int(datetime(2020, 2, 29, 11, tzinfo=timezone.utc).timestamp())}


def test_role_weights_follow_the_bandwidth_weights(hour10):
    table = build_table(hour10, [], GEOIP)
    fractions = role_weight_fractions(hour10, table)
    w = hour10.bandwidth_weights
    guard = middle = exit_ = 0.0
    for router in hour10.routers.values():
        is_guard = "Guard" in router.flags
        is_exit = "Exit" in router.flags and "BadExit" not in router.flags
        weight = router.bandwidth or 0
        if is_guard and is_exit:
            guard, middle, exit_ = guard + weight * w["Wgd"], middle + weight * w["Wmd"], exit_ + weight * w["Wed"]
        elif is_guard:
            guard, middle = guard + weight * w["Wgg"], middle + weight * w["Wmg"]
        elif is_exit:
            middle, exit_ = middle + weight * w["Wme"], exit_ + weight * w["Wee"]
        else:
            middle += weight * w["Wmm"]
    total = guard + middle + exit_
    assert fractions == pytest.approx({"guard": guard / total, "middle": middle / total, "exit": exit_ / total})
    assert sum(fractions.values()) == pytest.approx(1.0)


def test_descriptors_give_platform_advertised_bandwidth_and_families(hour10, descriptors):
    table = build_table(hour10, descriptors, GEOIP)
    newest = {}
    for d in descriptors:
        if d.fingerprint in hour10.routers and (d.fingerprint not in newest
                                                or d.published > newest[d.fingerprint].published):
            newest[d.fingerprint] = d
    in_consensus = list(newest.values())
    assert len(in_consensus) < len([d for d in descriptors if d.fingerprint in hour10.routers])  # duplicates exist
    assert int(np.count_nonzero(~np.isnan(table.advertised_bytes))) == len(in_consensus)
    one = in_consensus[0]
    index = table.fingerprints.index(one.fingerprint)
    assert table.advertised_bytes[index] == min(one.average_bandwidth, one.burst_bandwidth, one.observed_bandwidth)
    platforms = Counter(table.platform)
    assert platforms["Linux"] > platforms["FreeBSD"] > 0 and platforms["unknown"] == len(table) - len(in_consensus)
    families = Counter(f for f in table.family_id if f)
    assert families and all(size >= 2 for size in families.values())


def test_concentration_of_a_known_split():
    from agent.metrics.network import concentration_points

    table = build_table(parse_data("consensus", "2020-02-29-10-00-00-consensus.xz"), [], GEOIP)
    table.weight = np.zeros(len(table))
    table.weight[:4] = [50, 30, 10, 10]
    table.country = ["US", "US", "DE", "FR"] + ["??"] * (len(table) - 4)
    concentration = {p.tags["by"]: p.fields for p in concentration_points(table, 1)}
    assert concentration["country"]["hhi"] == pytest.approx(0.8 ** 2 + 0.1 ** 2 + 0.1 ** 2)
    assert concentration["country"]["top1_fraction"] == pytest.approx(0.8)
    assert concentration["operator"]["top5_fraction"] == pytest.approx(1.0)  # no contacts: each relay alone
    assert concentration["operator"]["groups"] == concentration["family"]["groups"] == len(table)
    assert concentration["country"]["groups"] == 4
    table.operator_id = ["a", None, "a", None] + [None] * (len(table) - 4)  # two relays of one operator
    operator = {p.tags["by"]: p.fields for p in concentration_points(table, 1)}["operator"]
    assert operator["groups"] == len(table) - 1
    assert operator["hhi"] == pytest.approx(0.6 ** 2 + 0.3 ** 2 + 0.1 ** 2)
    assert operator["top1_fraction"] == pytest.approx(0.6) and operator["top5_fraction"] == pytest.approx(1.0)


def test_authority_metrics_from_a_real_vote():
    consensus = parse_data("consensus", "2016-09-20-13-00-00-consensus.xz")
    vote = parse_data("vote", "2016-09-20-13-00-00-vote-maatuska.xz")
    now = datetime(2016, 9, 20, 13, 1, tzinfo=timezone.utc)
    record = FetchRecord("moria1", DocKind.CONSENSUS, "http://x", now, Outcome.OK, 200, 0.25, 100, 40, -1.5, "d")
    points = snapshot_points(snapshot_of(consensus, votes=[vote], records=[record]), None, GEOIP)
    assert problems(points) == []
    moria1 = by(points, "tor_authority", "authority")["moria1"]  # the first authority carries the vote here
    assert moria1["vote_relays"] == len(vote.routers) == 7903
    measured = [e.measured for e in vote.routers.values() if e.measured is not None]
    assert moria1["measured_relays"] == len(measured)
    assert moria1["total_measured_weight"] == sum(e.measured for e in vote.routers.values()
                                                 if e.measured is not None and "Running" in e.flags)
    flags = {p.tags["flag"]: p.fields for p in points
             if p.measurement == "tor_authority_flag" and p.tags["authority"] == "moria1"}
    common = vote.routers.keys() & consensus.routers.keys()
    guard_vote = {fp for fp in common if "Guard" in vote.routers[fp].flags}
    guard_consensus = {fp for fp in common if "Guard" in consensus.routers[fp].flags}
    assert flags["Guard"]["in_both"] == len(guard_vote & guard_consensus)
    assert flags["Guard"]["only_in_vote"] == len(guard_vote - guard_consensus)
    assert flags["Guard"]["only_in_consensus"] == len(guard_consensus - guard_vote)
    fetch = by(points, "tor_authority_fetch", "authority")["moria1"]
    assert fetch == {"answered": 1.0, "ok": 1.0, "latency_seconds": 0.25, "bytes": 100.0, "wire_bytes": 40.0,
                     "clock_skew_seconds": -1.5}
    relay = next(p.fields for p in points if p.measurement == "tor_relay" and p.tags["fingerprint"] in vote.routers)
    assert relay["authorities_listing"] == 1


RELIABILITY_FIELDS = ("presence_7d", "presence_30d", "running_7d", "running_30d", "flag_changes_per_week",
                      "weight_cv_7d", "measured_share", "relays_30d", "dropout_risk", "guard_loss_risk")


def test_every_catalogue_entry_is_emitted(hour10, hour11, descriptors):
    consensus = parse_data("consensus", "2016-09-20-13-00-00-consensus.xz")
    vote = parse_data("vote", "2016-09-20-13-00-00-vote-maatuska.xz")
    now = datetime(2016, 9, 20, 13, 1, tzinfo=timezone.utc)
    record = FetchRecord("moria1", DocKind.CONSENSUS, "http://x", now, Outcome.OK, 200, 0.25, 100, 40, -1.5, "d")
    probed = snapshot_of(consensus, [vote], records=[record])
    probed.orport_probes = [OrPortProbe("moria1", "128.31.0.34:9101", 0.01)]
    probed.vote_holdings = [VoteHolding("moria1", "tor26", "AB" * 20, True)]
    emitted = {(p.measurement, name) for p in snapshot_points(probed, None, GEOIP) for name in p.fields}
    emitted |= {(p.measurement, name) for p in snapshot_points(snapshot_of(hour11, descriptors=descriptors),
                                                                 relays_of(hour10), GEOIP) for name in p.fields}
    # allium_agent (self-monitoring) comes from the daemon's runner; its
    # integration test holds those points against the catalogue.
    # tor_health comes from the checks (tests/unit/test_checks.py holds it against the catalogue),
    # tor_anomaly from detection (tests/unit/test_detect.py).
    # allium_agent_alert_quality (alert quality) is tested in tests/unit/test_alert_quality.py,
    # tor_forecast (the capacity forecast) in tests/unit/test_forecast.py.
    # The flag margins that need a vote's stats lines or descriptors of the vote's hour are held against the
    # catalogue by tests/unit/test_eligibility.py, on votes that have them.
    needs_more = {("tor_relay", name) for name in ("stable_margin", "hsdir_uptime_margin", "guard_tk_margin",
                                                    "guard_wfu_margin")}
    # No real descriptor here carries overload-general: tests/unit/test_overload.py adds lines and checks the fields.
    needs_more |= {("tor_relay", "overloaded"), ("tor_relay", "overload_age_seconds")}
    # Extra-info overload needs extra-infos held: tests/unit/test_extrainfo.py holds those fields against the catalogue.
    needs_more |= {("tor_relay", "overload_ratelimits"), ("tor_relay", "overload_fd_exhausted")} | {
        ("tor_network", name) for name in ("extra_info_relays", "overload_ratelimits_relays",
                                           "overload_fd_exhausted_relays", "extra_info_overload_lines_ignored")}
    # Learned state makes these: tests/unit/test_reliability.py and test_health.py hold them against the catalogue.
    # The judge's aroi_points writes tor_aroi*: tests/unit/test_metrics_aroi.py holds them against the catalogue.
    learned = {key for key in catalogue() if key[0] in ("tor_health_score", "tor_health_component")
               or key[1] in RELIABILITY_FIELDS or key[0].startswith("tor_aroi")}
    assert {key for key in catalogue() if key[0] not in ("allium_agent", "allium_agent_alert_quality", "tor_health",
                                                         "tor_anomaly", "tor_forecast")} - learned \
        - needs_more - emitted == set()


def test_probe_points_count_reachable_orports_and_held_votes():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    snapshot = Snapshot("vp", now, now, list(default_authorities()), {}, [])
    snapshot.orport_probes = [OrPortProbe("moria1", "128.31.0.39:9201", 0.01),
                              OrPortProbe("moria1", "[2001:db8::1]:9201", None, "connection refused")]
    snapshot.vote_holdings = [VoteHolding("moria1", "tor26", "AB" * 20, True),
                              VoteHolding("moria1", "dizum", "CD" * 20, False),
                              VoteHolding("moria1", "moria1", "EF" * 20, True),  # its own: not counted
                              VoteHolding("moria1", "bastet", "01" * 20, None, "timed out")]
    points = snapshot_points(snapshot, None, GEOIP)
    probe = next(p for p in points if p.measurement == "tor_authority_probe")
    assert (probe.tags, probe.fields) == ({"authority": "moria1", "vantage": "vp"}, {
        "orport_endpoints": 2.0, "orport_reachable": 1.0, "votes_asked": 2.0, "votes_held": 1.0})
    assert problems(points) == []


def test_no_accepted_consensus_still_records_the_fetches():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    record = FetchRecord("moria1", DocKind.CONSENSUS, "http://x", now, error="connection refused")
    snapshot = Snapshot("test", now, now, list(default_authorities()), {}, [record])
    points = snapshot_points(snapshot, None, GEOIP)
    assert [(p.measurement, p.fields["answered"], p.fields["ok"]) for p in points] == [
        ("tor_authority_fetch", 0.0, 0.0)]
    assert problems(points) == []


def test_every_relay_point_against_the_entries_themselves():
    """The per-relay columns (flags, weight, votes listing and measuring, the median) against each entry read whole,
    with maatuska's real vote of that hour and a second one made from it with every Measured= value plus one
    (so a median of two differs from both, and from their minimum)."""
    consensus = parse_data("consensus", "2016-09-20-13-00-00-consensus.xz")
    vote = parse_data("vote", "2016-09-20-13-00-00-vote-maatuska.xz")
    raw = read_data("2016-09-20-13-00-00-vote-maatuska.xz")
    plus_one = parse_document(DocKind.VOTE, re.sub(rb"Measured=(\d+)", lambda m: b"Measured=%d" % (int(m[1]) + 1),
                                                   raw), "test")
    points = snapshot_points(snapshot_of(consensus, votes=[vote, plus_one]), None, GEOIP)
    relays = by(points, "tor_relay", "fingerprint")
    assert len(relays) == len(consensus.routers) == 7213
    total = sum(entry.bandwidth for entry in consensus.routers.values())
    for fingerprint, entry in consensus.routers.items():
        fields = relays[fingerprint]
        in_vote = vote.routers[fingerprint] if fingerprint in vote.routers else None
        measured = [in_vote.measured, in_vote.measured + 1] if in_vote is not None and in_vote.measured is not None \
            else []
        expected = {"in_consensus": 1.0, "weight": entry.bandwidth, "weight_fraction": entry.bandwidth / total,
                    "authorities_listing": 2.0 if in_vote is not None else 0.0, "bwauths_measuring": len(measured)}
        expected.update({f"flag_{flag.lower()}": float(flag in entry.flags) for flag in KNOWN_FLAGS})
        if measured:
            expected["measured_median"] = statistics.median(measured)
        assert {name: fields[name] for name in expected} == expected, fingerprint
        assert ("measured_median" in fields) == bool(measured)


def test_measured_sums_do_not_wrap_around():
    """An authority voting the largest Measured= values tor allows (uint32) must not read as a negative total."""
    consensus = parse_data("consensus", "2016-09-20-13-00-00-consensus.xz")
    raw = re.sub(rb"Measured=\d+", b"Measured=4294967295", read_data("2016-09-20-13-00-00-vote-maatuska.xz"))
    vote = parse_document(DocKind.VOTE, raw, "test")
    points = snapshot_points(snapshot_of(consensus, votes=[vote]), None, GEOIP)
    moria1 = by(points, "tor_authority", "authority")["moria1"]
    running_measured = sum(1 for e in vote.routers.values() if e.measured is not None and "Running" in e.flags)
    assert running_measured > 1000
    assert moria1["total_measured_weight"] == pytest.approx(running_measured * 4294967295.0)
