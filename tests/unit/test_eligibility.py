"""Flag eligibility (agent.metrics.eligibility) and the ``relay`` command, on real votes checked by hand.

Each real case names the vote's own lines: the ``flag-thresholds`` literal
and the relay's ``s`` and ``w`` lines, so the expected numbers can be
checked against the files with grep. The real votes are maatuska's of
2016-09-20 13:00 (tests/data), our private network's of 2026-11-24 (tests/data,
the only ones with ``stats`` lines), and from ../shared/tordata dannenberg's of
2016-10-01 16:00 with server descriptors published the next day, and four
authorities' cropped votes of 2018-10-15 00:00.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stem.descriptor.networkstatus import NetworkStatusDocumentV3
from stem.descriptor.router_status_entry import RouterStatusEntryV3
from stem.descriptor.server_descriptor import RelayDescriptor

from agent.metrics import eligibility as E
from agent.metrics import thresholds as T
from agent.model.entries import entries_of
from agent.model.errors import DocumentError
from agent.model.snapshot import DocKind
from agent.parse.documents import parse_document
from tests.conftest import DATA, SHARED_TORDATA, read_data

MAATUSKA = "2016-09-20-13-00-00-vote-maatuska.xz"
DANNENBERG = SHARED_TORDATA / "votes" / ("2016-10-01-16-00-00-vote-0232AF901C31A04EE9848595AF9BB7620D4C5B2E-"
                                         "FEE63B4AB7CE5A6BDD09E9A5C4F01BD61EB7E4F1")
DESCRIPTORS = SHARED_TORDATA / "server-descriptors" / "2016-10-02-16-05-00-server-descriptors"
VOTES_2018 = SHARED_TORDATA / "partial" / "metrics-web-totalcw-2018-10-15"
TESTNET = DATA / "testnet-shared-random"
PDRELAY1, SEELE, DEFAULT = ("000149E6EF7102AACA9690D6E8DD2932124B94AB", "000A10D43011EA4928A35F610405F92B4433B4DC",
                            "000D4FC8213BF805753E2E5FC82FBDA3D40A3FFA")
RELAY1, RELAY3 = "8499E9F410962F1C9F6B3577592624E1677F1931", "3B4439D82FC91FB5202C54E48D26B33071F187EF"
needs_shared = pytest.mark.skipif(not DANNENBERG.exists(), reason="needs ../shared/tordata")


@pytest.fixture(scope="module")
def maatuska():
    return parse_document(DocKind.VOTE, read_data(MAATUSKA), MAATUSKA)


@pytest.fixture(scope="module")
def testnet():
    raw = (TESTNET / "074550-auth1.vote").read_bytes()
    return parse_document(DocKind.VOTE, raw, "auth1"), raw


def decision(verdict, flag):
    return next(d for d in verdict.decisions if d.flag == flag)


def check(verdict, flag, quantity):
    return next(c for c in decision(verdict, flag).checks if c.quantity == quantity)


# -- real votes, by hand ------------------------------------------------------------------------------------------

def test_thresholds_are_the_votes_line(maatuska):
    # flag-thresholds stable-uptime=1471801 stable-mtbf=2892124 fast-speed=102000 guard-wfu=98.000% guard-tk=691200
    #   guard-bw-inc-exits=6010000 guard-bw-exc-exits=5070000 enough-mtbf=1 ignoring-advertised-bws=1
    thresholds = E.thresholds_of(maatuska)
    assert thresholds.values == {"stable-uptime": 1471801, "stable-mtbf": 2892124, "fast-speed": 102000,
                                 "guard-wfu": 0.98, "guard-tk": 691200, "guard-bw-inc-exits": 6010000,
                                 "guard-bw-exc-exits": 5070000, "enough-mtbf": 1, "ignoring-advertised-bws": 1}
    assert thresholds.problems == () and thresholds.present


def test_a_guard_is_judged_by_its_measured_bandwidth(maatuska):
    # r PDrelay1 ... / s Fast Guard HSDir Running Stable V2Dir Valid / w Bandwidth=2992 Measured=8890
    verdict = E.explain(maatuska, PDRELAY1)
    assert verdict.authority == "maatuska" and verdict.nickname == "PDrelay1" and verdict.withheld == ()
    bandwidth = check(verdict, "Guard", "bandwidth")
    # Measured=8890 kB/s against the lowest of guard-bw-inc-exits 6,010,000, guard-bw-exc-exits 5,070,000 and
    # tor's 2 MB guarantee (2,097 kB as tor counts): the guarantee decides.
    assert (bandwidth.value, bandwidth.threshold) == (8_890_000, 2_097_000) and bandwidth.status == E.PASS
    assert bandwidth.margin == pytest.approx(8890 / 2097)
    assert bandwidth.threshold_source == "AuthDirGuardBWGuarantee 2 MB, tor's default, below guard-bw-exc-exits"
    assert check(verdict, "Fast", "bandwidth").margin == pytest.approx(8_890_000 / 102_000)
    # no stats line in a 2016 vote: WFU and time known are unknown, so the Guard rule cannot be settled
    guard = decision(verdict, "Guard")
    assert guard.rule == E.UNKNOWN and guard.agrees is None and "WFU unknown" in guard.reason()


def test_the_2_mb_guarantee_is_the_guard_boundary_in_2016(maatuska):
    # Mozilla1: s Fast Guard HSDir Running Stable V2Dir Valid / w Bandwidth=7544 Measured=2210
    # Phantasmagoria1: s Fast HSDir Running Stable V2Dir Valid / w Bandwidth=3059 Measured=2020
    has = check(E.explain(maatuska, "0063D0DE32C80691A0AC1A968A8CCF5ABA420E29"), "Guard", "bandwidth")
    lacks = E.explain(maatuska, "0315D2847B23D9D120CB1767B55096D88D5A9211")
    assert has.status == E.PASS and has.value == 2_210_000 < 5_070_000  # below guard-bw-exc-exits, above 2 MB
    guard = decision(lacks, "Guard")
    assert not guard.voted and guard.rule == E.FAIL and guard.agrees
    assert [c.quantity for c in guard.deciding] == ["bandwidth"]
    assert guard.reason().startswith("bandwidth 2,020 kB/s < 2,097 kB/s")


def test_withheld_fast_slow_and_unmeasured_relays(maatuska):
    # seele: s Running Stable V2Dir Valid / w Bandwidth=102 Measured=13
    seele = E.explain(maatuska, SEELE)
    assert seele.withheld == ("Fast", "Guard", "HSDir")
    fast = decision(seele, "Fast")
    assert fast.rule == E.FAIL and fast.agrees and fast.reason() == "bandwidth 13 kB/s < 102 kB/s (fast-speed)"
    assert check(seele, "Fast", "bandwidth").margin == pytest.approx(13 / 102)
    assert "no Fast in this vote" in decision(seele, "HSDir").reason()
    # default: s V2Dir Valid / w Bandwidth=97 (no Measured=), and ignoring-advertised-bws=1: counted as 0
    unmeasured = check(E.explain(maatuska, DEFAULT), "Fast", "bandwidth")
    assert unmeasured.value == 0 and "ignoring-advertised-bws=1" in unmeasured.source


def test_stats_lines_decide_guard_on_our_network(testnet):
    vote, raw = testnet
    stats = T.vote_stats(raw)
    # relay1: w Bandwidth=0 Measured=1300 / stats wfu=1.000000 tk=54 mtbf=54; guard-bw-inc-exits=1400000
    assert stats[RELAY1] == E.RelayStats(1.0, 54, 54)
    relay1 = E.explain(vote, RELAY1, stats=stats[RELAY1], hsdir_uptime=0)
    guard = decision(relay1, "Guard")
    assert relay1.withheld == ("Guard",) and guard.rule == E.FAIL and guard.agrees
    assert [c.text() for c in guard.deciding] == ["bandwidth 1,300 kB/s < 1,400 kB/s (guard-bw-inc-exits)"]
    assert check(relay1, "Guard", "WFU").status == E.PASS and check(relay1, "Guard", "time known").margin is None
    # relay3: s Fast Guard HSDir Running Stable V2Dir Valid / w Bandwidth=1 Measured=1500
    relay3 = decision(E.explain(vote, RELAY3, stats=stats[RELAY3]), "Guard")
    assert relay3.voted and relay3.rule == E.PASS and relay3.agrees
    # auth1 in its own vote: MeasuredButAuthority=1000, stats wfu=0.000000 tk=0 mtbf=0
    auth1_fingerprint = "49ABAE9C2BB358A3D94D66B60FA8FDE7070F6484"
    auth1 = E.explain(vote, auth1_fingerprint, stats=stats[auth1_fingerprint])
    assert check(auth1, "Guard", "bandwidth").value == 1_000_000
    assert check(auth1, "Guard", "WFU").status == E.FAIL


@needs_shared
def test_uptime_is_derived_from_a_later_descriptor():
    vote = parse_document(DocKind.VOTE, DANNENBERG.read_bytes(), "dannenberg")
    descriptors = parse_document(DocKind.SERVER_DESCRIPTORS, DESCRIPTORS.read_bytes(), "descriptors")
    by_fingerprint = {d.fingerprint: d for d in descriptors}
    # hwds: s Fast Guard Running Stable V2Dir Valid (no HSDir). Its descriptor: published 2016-10-02 15:01:40,
    # uptime 389101; the vote was published 2016-10-01 15:50:01, 83,499 s earlier: up 305,602 s (84.9 h) then.
    fingerprint = "4ABD55F68300EAD7762A73D15531FB17A0C52997"
    hwds = E.explain(vote, fingerprint, by_fingerprint[fingerprint])
    uptime = check(hwds, "HSDir", "uptime")
    assert uptime.value == 389101 - 83499 and uptime.derived and uptime.status == E.FAIL
    assert decision(hwds, "HSDir").agrees and "84.9 h < 96.0 h" in decision(hwds, "HSDir").reason()
    # dannenberg counts advertised bandwidths (ignoring-advertised-bws=0): w Bandwidth= is judged
    assert "advertised" in check(hwds, "Fast", "bandwidth").source
    # OneMan: uptime 0 in a descriptor published after the vote: it restarted since, the uptime then is unknown
    oneman = check(E.explain(vote, "6B2CCF07A10FC6998C739659C9BC149AC3E2098E",
                             by_fingerprint["6B2CCF07A10FC6998C739659C9BC149AC3E2098E"]), "HSDir", "uptime")
    assert oneman.value is None and "restart" in oneman.note


@needs_shared
def test_four_authorities_margins_by_hand():
    votes = [parse_document(DocKind.VOTE, path.read_bytes(), path.name) for path in sorted(VOTES_2018.glob("*vote*"))]
    # PutoElQueLee293884, w line per vote: dannenberg Bandwidth=4950 (no bandwidth authority, counts advertised);
    # bastet Measured=5620, gabelmoo Measured=4380, Faravahar Measured=5550; fast-speed 102000, 90000, 53000, 96000
    fingerprint = "000C1F7CD2FEA073B911DC94A1600EC2F117DF0B"
    fast = {v.directory_authorities[0].nickname: check(E.explain(v, fingerprint), "Fast", "bandwidth").margin
            for v in votes}
    expected = {"dannenberg": 4_950_000 / 102_000, "bastet": 5_620_000 / 90_000, "gabelmoo": 4_380_000 / 53_000,
                "Faravahar": 5_550_000 / 96_000}
    assert fast == pytest.approx(expected)
    relays = entries_of(votes[0])
    columns = E.margin_columns(relays, votes)
    row = relays.fingerprints.index(fingerprint)
    assert columns["fast_margin"][row] == pytest.approx(np.median(list(expected.values())))
    # Guard: every bandwidth is at least the 2 MB guarantee, the lowest threshold of every vote
    assert columns["guard_bw_margin"][row] == pytest.approx(np.median([4950, 5620, 4380, 5550]) / 2097)
    assert np.isnan(columns["guard_wfu_margin"]).all()  # no stats lines in 2018


def test_margin_points_on_a_real_period(maatuska):
    consensus = parse_document(DocKind.CONSENSUS, read_data("2016-09-20-13-00-00-consensus.xz"), "consensus")
    relays = entries_of(consensus)
    points = E.eligibility_points(relays, [maatuska], [], 1474376400)
    assert 7000 < len(points) <= len(relays)
    fields = {name for point in points for name in point.fields}
    assert fields == {"fast_margin", "guard_bw_margin"} and fields <= set(E.MARGIN_FIELDS)
    assert all(point.tags.keys() == {"fingerprint"} and point.measurement == "tor_relay" for point in points)
    assert all(math.isfinite(value) for point in points for value in point.fields.values())
    pdrelay1 = next(point for point in points if point.tags["fingerprint"] == PDRELAY1)
    assert pdrelay1.fields["fast_margin"] == pytest.approx(8_890_000 / 102_000)
    from agent.metrics.catalogue import catalogue, problems

    assert all(("tor_relay", name) in catalogue() for name in E.MARGIN_FIELDS)
    assert problems(points) == []


# -- the votes' own stats lines, as the vote parser keeps them ----------------------------------------------------

def period_of_testnet(name: str = "074550", change=lambda raw: raw) -> tuple[list, list[bytes]]:
    """Our network's three votes of one period (parsed, and their bytes), each changed by ``change`` first."""
    raws = [change((TESTNET / f"{name}-auth{number}.vote").read_bytes()) for number in (1, 2, 3)]
    return [parse_document(DocKind.VOTE, raw, f"auth{number}") for number, raw in zip((1, 2, 3), raws)], raws


def tk_and_mtbf_decide(raw: bytes) -> bytes:
    """The vote with a time-known threshold (its guard-tk=0 gives no margin) and Stable judged by MTBF."""
    changed = raw.replace(b" guard-tk=0 ", b" guard-tk=40 ").replace(b" enough-mtbf=0 ", b" enough-mtbf=1 ")
    assert changed.count(b"guard-tk=40") == changed.count(b"enough-mtbf=1") == 1
    return changed


@pytest.mark.parametrize("change", [lambda raw: raw, tk_and_mtbf_decide], ids=["as voted", "tk and mtbf decide"])
def test_margins_from_parsed_votes_are_those_from_their_bytes(change):
    votes, raws = period_of_testnet(change=change)
    relays = entries_of(votes[0])
    parsed = E.margin_columns(relays, votes, stats=[E.VoteStats(vote) for vote in votes])
    from_bytes = E.margin_columns(relays, votes, stats=[T.vote_stats(raw) for raw in raws])
    for name in E.MARGIN_FIELDS:
        np.testing.assert_array_equal(parsed[name], from_bytes[name], err_msg=name)  # NaN where both are
    assert all(dict(E.VoteStats(vote)) == T.vote_stats(raw) for vote, raw in zip(votes, raws))
    assert np.isnan(E.margin_columns(relays, votes)["guard_wfu_margin"]).all()  # the figures come from the lines
    # relay1: stats wfu=1.000000 tk=54 mtbf=54 in all three votes; guard-wfu=98.000%. auth1: stats wfu=0.000000
    # tk=0 mtbf=0 in its own vote, the others as relay1's: the median of three is theirs.
    row, auth1 = relays.rows[RELAY1], relays.rows["49ABAE9C2BB358A3D94D66B60FA8FDE7070F6484"]
    assert parsed["guard_wfu_margin"][[row, auth1]] == pytest.approx([1 / 0.98, 1 / 0.98])
    if change is tk_and_mtbf_decide:  # guard-tk=40; stable-mtbf=54, under tor's 5-day guarantee
        assert parsed["guard_tk_margin"][[row, auth1]] == pytest.approx([54 / 40, 54 / 40])
        assert parsed["stable_margin"][row] == pytest.approx(54 / 54)
    else:  # guard-tk=0: everyone passes, no margin; enough-mtbf=0: Stable by uptime (no descriptors here)
        assert np.isnan(parsed["guard_tk_margin"]).all() and np.isnan(parsed["stable_margin"]).all()


def test_a_period_writes_the_margins_its_votes_stats_lines_give():
    from agent.metrics.geoip import GeoIP
    from agent.metrics.period import snapshot_points
    from agent.model.authorities import default_authorities
    from agent.model.snapshot import AuthorityView, SignatureCheck, SignatureReport, Snapshot

    votes, _ = period_of_testnet("074610")  # no consensus of our network is kept: auth1's vote stands for it
    authorities = list(default_authorities())
    views = {authority.nickname: AuthorityView(authority) for authority in authorities}
    for authority, vote in zip(authorities, votes):
        views[authority.nickname].vote = vote
    views[authorities[0].nickname].consensus = votes[0]
    views[authorities[0].nickname].consensus_signatures = SignatureReport(
        tuple(SignatureCheck(authority.v3ident, "sha1", True) for authority in authorities))
    now = datetime(2026, 11, 24, 7, 47)
    snapshot = Snapshot("test", now, now, authorities, views, [])
    points = snapshot_points(snapshot, None, GeoIP.load(DATA / "geoip-excerpt"))
    relays = {p.tags["fingerprint"]: p.fields for p in points if p.measurement == "tor_relay"}
    # relay1 at 07:46: stats wfu=1.000000 tk=74 mtbf=74 in all three votes; guard-wfu=98.000%
    assert relays[RELAY1]["guard_wfu_margin"] == pytest.approx(1 / 0.98)
    assert all("guard_wfu_margin" in fields for fields in relays.values()) and len(relays) == 6


def test_explain_reads_the_votes_own_stats_line(testnet):
    vote, _ = testnet
    wfu = check(E.explain(vote, RELAY1), "Guard", "WFU")  # no stats given: the vote's own, "stats wfu=1.000000"
    assert wfu.value == 1.0 and wfu.source == "the vote's stats line" and wfu.status == E.PASS
    assert check(E.explain(vote, RELAY1, stats=E.RelayStats(0.5)), "Guard", "WFU").value == 0.5  # given ones win


STATS_LINES = [b"stats wfu=1.000000 tk=54 mtbf=54", b"stats wfu=0.250000 tk=7 mtbf=8", b"stats wfu=1.5 tk=1 mtbf=1",
               b"stats tk=3", b"stats", b"stats wfu=1 wfu=1", b"stats x", "stats tk=\u0665".encode(),
               b"stats wfu=0.5 tk=1 mtbf=2 later=9", b"tats wfu=1", b"stats\twfu=1", b"opt stats wfu=1", b"s Fast",
               b"stats  wfu=0.1  tk=2", b"stats wfu=0.1\r", b"r", b"w Bandwidth=1"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.sampled_from(STATS_LINES)), max_size=8))
def test_the_parsed_and_the_byte_readings_of_stats_lines_agree(insertions):
    raw = (TESTNET / "074550-auth1.vote").read_bytes()
    lines = raw.split(b"\n")
    first = next(number for number, line in enumerate(lines) if line.startswith(b"r "))
    footer = lines.index(b"directory-footer")
    for at, line in insertions:  # anywhere among the entries' lines, after the first r line
        lines.insert(first + 1 + at % (footer - first), line)
        footer += 1
    changed = b"\n".join(lines)
    try:
        vote = parse_document(DocKind.VOTE, changed, "auth1")
    except DocumentError:
        return  # refused (a malformed s, r or w line): no figures at all
    assert dict(E.VoteStats(vote)) == T.vote_stats(changed)


# -- edge cases built with stem ------------------------------------------------------------------------------------

ENTRY = {"r": "caerSidi p1aag7VwarGxqctS7/fS0y5FU+s oQZFLYe9e4A7bOkWKR7TaNxb0JE 2015-06-12 02:00:00 "
              "71.35.150.29 9001 0", "s": "Fast Running Stable V2Dir Valid", "w": "Bandwidth=5000 Measured=3000"}
CAERSIDI = "A7569A83B5706AB1B1A9CB52EFF7D2D32E4553EB"


def vote(thresholds: str | None, **entry: str):
    header = {"vote-status": "vote", "published": "2015-06-12 03:50:00"}
    if thresholds is not None:
        header["flag-thresholds"] = thresholds
    return NetworkStatusDocumentV3.create(header, routers=[RouterStatusEntryV3.create({**ENTRY, **entry})])


def test_a_vote_without_flag_thresholds_says_threshold_unknown():
    verdict = E.explain(vote(None), CAERSIDI)
    assert not verdict.thresholds.present
    fast = check(verdict, "Fast", "bandwidth")
    assert fast.value == 3_000_000 and fast.threshold is None and fast.status == E.UNKNOWN and fast.margin is None
    assert fast.text() == "bandwidth 3,000 kB/s, threshold unknown (the vote has no flag-thresholds line)"
    assert decision(verdict, "Guard").rule == E.UNKNOWN
    assert decision(verdict, "Stable").reason() == \
        "uptime unknown (no server descriptor; the vote has no flag-thresholds line)"
    assert "WFU unknown (no stats line in this vote, no history given; the vote has no flag-thresholds line)" in \
        decision(verdict, "Guard").reason()


def test_a_relay_the_vote_does_not_list():
    verdict = E.explain(vote("fast-speed=102000"), "F" * 40)
    assert not verdict.listed and verdict.decisions == () and verdict.withheld == ()


def test_stems_percentage_bug_is_not_ours():
    document = vote("guard-wfu=100.000% fast-speed=102000")
    assert document.flag_thresholds["guard-wfu"] == 0.1  # stem 1.8.2: '0.' + '100000'
    assert E.thresholds_of(document).get("guard-wfu") == 1.0


def test_measured_but_authority_and_missing_keys():
    verdict = E.explain(vote("fast-speed=102000 enough-mtbf=0", s="Authority Fast Running Stable V2Dir Valid",
                             w="Bandwidth=0 MeasuredButAuthority=2500"), CAERSIDI)
    bandwidth = check(verdict, "Guard", "bandwidth")
    assert bandwidth.value == 2_500_000 and bandwidth.threshold is None
    assert "no usable guard-bw-inc-exits or guard-bw-exc-exits" in bandwidth.note


def test_uptime_from_a_stem_descriptor():
    document = vote("fast-speed=102000 stable-uptime=3600 enough-mtbf=0")
    # published 2015-06-12 01:00:00 with uptime 1 d; the vote was published at 03:50:00: up 1 d 2 h 50 min then
    descriptor = RelayDescriptor.create({"published": "2015-06-12 01:00:00", "uptime": "86400"})
    verdict = E.explain(document, CAERSIDI, descriptor)
    assert check(verdict, "Stable", "uptime").value == 86400 + 2 * 3600 + 50 * 60
    assert check(verdict, "Stable", "uptime").status == E.PASS
    assert check(verdict, "HSDir", "uptime").margin == pytest.approx((86400 + 10200) / (96 * 3600))
    restarted = RelayDescriptor.create({"published": "2015-06-12 05:00:00", "uptime": "60"})
    assert check(E.explain(document, CAERSIDI, restarted), "Stable", "uptime").value is None


# -- the flag-thresholds parser on hostile input -------------------------------------------------------------------

KEYS = ("stable-uptime", "stable-mtbf", "fast-speed", "guard-wfu", "guard-tk", "guard-bw-inc-exits",
        "guard-bw-exc-exits", "enough-mtbf", "ignoring-advertised-bws", "hsdir-uptime")
VALUES = st.one_of(
    st.integers(-2**70, 2**70).map(str), st.integers(0, 10).map(lambda n: "9" * 5000 * n),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["NaN", "nan", "inf", "-inf", "1e5", "0x10", "98.000%", "100.000%", "101%", "-1%", "", "%",
                     "1.2.3", "١٢٣", "1_000", " ", "98.000%%"]),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(lambda d: f"{d}%"),
)
WORDS = st.one_of(st.tuples(st.sampled_from(KEYS), VALUES).map("=".join), st.sampled_from(KEYS),
                  st.text(max_size=30))


@settings(max_examples=400, deadline=None)
@given(st.lists(WORDS, max_size=20))
def test_hostile_flag_thresholds_never_crash(words):
    line = " ".join(words)
    thresholds = T.parse_flag_thresholds(line)
    for key, value in thresholds.values.items():
        assert math.isfinite(value) and 0 <= value <= 2**64, (key, value)
        if key == "guard-wfu":
            assert value <= 1
        if key in ("enough-mtbf", "ignoring-advertised-bws"):
            assert value in (0, 1)
    kept = {word.partition("=")[0] for word in line.split() if "=" in word}
    assert thresholds.values.keys() <= kept
    # every word is either taken or reported: a key is missing from the values only with a problem naming it
    for word in line.split():
        key, equals, _ = word.partition("=")
        if key not in thresholds.values:
            assert any(repr((key if equals and key else word)[:40]) in problem for problem in thresholds.problems)


def test_flag_thresholds_problems_are_clear():
    thresholds = T.parse_flag_thresholds("fast-speed=-5 guard-tk=NaN stable-uptime=99999999999999999999999 "
                                         "guard-wfu=101.000% enough-mtbf=2 noequals guard-bw-inc-exits=1 "
                                         "guard-bw-inc-exits=2 stable-mtbf=7 stable-mtbf=7 guard-wfu=0.98")
    assert thresholds.values == {"stable-mtbf": 7}
    assert thresholds.problems == (
        "'fast-speed': negative value '-5', ignored", "'guard-tk': 'NaN' is not a number, ignored",
        "'stable-uptime': '99999999999999999999'... is out of range, ignored",
        "'guard-wfu': '101.000%' is more than 100%, ignored", "'enough-mtbf': '2' is not 0 or 1, ignored",
        "'noequals': not key=value, ignored", "'guard-bw-inc-exits': given twice with different values, both ignored",
        "'guard-wfu': not a percentage, ignored")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.lists(st.sampled_from([b"r ", b"stats ", b"\n", b"wfu=", b"tk=", b"mtbf=", b"1.5",
                                                          b"AAoQ1DAR6kkoo19hBAX5K0QztNw ", b"-3", b"nan", b" "]),
                                         max_size=30))
def test_stats_lines_of_any_bytes_never_crash(noise, pieces):
    for fingerprint, stats in T.vote_stats(noise + b"".join(pieces)).items():
        assert len(fingerprint) == 40
        assert stats.wfu is None or 0 <= stats.wfu <= 1
        assert all(value is None or (math.isfinite(value) and value >= 0) for value in (stats.tk, stats.mtbf))


# -- history from the agent's store --------------------------------------------------------------------------------

def test_history_from_running_periods():
    from agent.cli.relay import history_from_running

    now = 1_000_000.0
    always = history_from_running([(now - 3600 * (i + 1), True) for i in range(48)], now)
    assert always.wfu == pytest.approx(1) and always.derived and always.mtbf == pytest.approx(48 * 3600)
    assert always.tk == pytest.approx(sum(3600 * 0.95 ** (i / 12) for i in range(48)))
    half = history_from_running([(now - 3600 * (i + 1), i % 2 == 0) for i in range(48)], now)
    assert 0.45 < half.wfu < 0.55 and half.mtbf == pytest.approx(3600)
    assert history_from_running([], now) is None


def test_history_queries_the_store(monkeypatch):
    import contextlib

    import agent.store.query
    import agent.store.store
    from agent.cli.relay import _history
    from agent.config.loader import load_config
    from agent.store.query import QueryResult

    at = datetime(2026, 1, 2, 12)
    hours = [at.timestamp() - 3600 * i for i in range(10, -1, -1)]
    answers = {"tor_network_relays": [({}, [(t, "7000") for t in hours])],
               f'tor_relay_flag_running{{fingerprint="{SEELE}"}}': [({"fingerprint": SEELE},
                                                                    [(t, "1") for t in hours[3:]])]}
    monkeypatch.setattr(agent.store.store, "query_endpoint",
                        lambda config: contextlib.nullcontext("http://127.0.0.1:1"))
    monkeypatch.setattr(agent.store.query, "run_query",
                        lambda url, promql, *args: QueryResult("matrix", answers[promql], {}))
    problems: list[str] = []
    history = _history(load_config(None, environ={}), SEELE, at, problems)
    assert problems == [] and history.wfu == pytest.approx(1) and history.derived  # known from its first period
    assert "8 periods" in history.source


# -- the command --------------------------------------------------------------------------------------------------

@pytest.fixture
def cli(monkeypatch):
    """agent.cli.main, run in-process, without a config from the environment."""
    from agent.cli import main as cli

    monkeypatch.delenv("ALLIUM_AGENT_CONFIG", raising=False)
    return cli


def test_relay_command_table_on_a_real_vote(cli, capsys):
    code = cli.main(["relay", SEELE.lower(), "--from", str(DATA / MAATUSKA)])
    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"relay {SEELE} (seele): 1 vote of 2016-09-20T13:00:00Z"
    header = next(line for line in lines if line.startswith("authority "))
    assert header.split("  ")[0] == "authority" and "deciding quantity vs threshold" in header and "derived?" in header
    fast = next(line for line in lines if line.startswith("maatuska "))
    assert fast.split() == ["maatuska", "Running", "Stable", "V2Dir", "Valid", "Fast", "bandwidth", "13", "kB/s", "<",
                            "102", "kB/s", "(fast-speed)", "no"]
    columns = header.index("withheld"), header.index("deciding")
    assert [line[columns[0]:columns[1]].strip() for line in lines[3:6]] == ["Fast", "Guard", "HSDir"]
    assert any(line.split()[:3] == ["maatuska", "102", "kB/s"] for line in lines)  # the thresholds table


def test_relay_command_json_reads_stats_lines(cli, capsys):
    code = cli.main(["relay", f"${RELAY1}", "--from", str(TESTNET / "074550-auth1.vote"), "--hsdir-hours", "0",
                     "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["fingerprint"] == RELAY1 and report["valid_after"] == "2026-11-24T07:45:50Z"
    auth1 = report["authorities"][0]
    assert auth1["authority"] == "auth1" and auth1["withheld"] == ["Guard"]
    assert auth1["vote_signature"].startswith("verified")
    guard = next(d for d in auth1["decisions"] if d["flag"] == "Guard")
    wfu = next(c for c in guard["checks"] if c["quantity"] == "WFU")
    assert (wfu["value"], wfu["threshold"], wfu["status"]) == (1.0, 0.98, "pass")
    assert wfu["source"] == "the vote's stats line" and not wfu["derived"]


def test_a_vote_given_twice_is_used_once(cli, capsys):
    assert cli.main(["relay", SEELE, "--from", str(DATA / MAATUSKA), str(DATA / MAATUSKA), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [a["authority"] for a in report["authorities"]] == ["maatuska"]
    assert any("another vote by 49015F787433103580E3B66A1707A00E60F2D15B" in p for p in report["problems"])


def test_relay_command_on_a_relay_no_vote_lists(cli, capsys):
    assert cli.main(["relay", "F" * 40, "--from", str(DATA / MAATUSKA)]) == 1
    assert "the vote does not list this relay" in capsys.readouterr().out


def test_relay_command_refuses_what_it_cannot_use(cli, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["relay", "not-a-fingerprint", "--from", str(DATA / MAATUSKA)])
    assert exit_info.value.code == 2 and "40 hex digits" in capsys.readouterr().err
    assert cli.main(["relay", SEELE, "--from", str(DATA / "bandwidth-file-v1.4")]) == 2
    # a cropped vote's signature no longer matches: left out, unless --unverified
    cropped = str(DATA / "2017-07-17-17-00-00-vote-cropped")
    assert cli.main(["relay", SEELE, "--from", cropped]) == 2
    assert "no usable vote" in capsys.readouterr().err
    assert cli.main(["relay", SEELE, "--from", cropped, "--unverified", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["authorities"][0]["vote_signature"].startswith("rejected")


def test_descriptor_for_prefers_the_one_the_authority_had():
    from agent.cli.relay import descriptor_for

    class Descriptor:
        def __init__(self, published):
            self.fingerprint, self.published = SEELE, published

    when = datetime(2016, 9, 20, 12, 50)
    older, newer, after = (Descriptor(when - timedelta(hours=h)) for h in (20, 2, -3))
    assert descriptor_for([older, after, newer], SEELE, when) is newer
    assert descriptor_for([after], SEELE, when) is after and descriptor_for([], SEELE, when) is None


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 9), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_the_fast_median_is_numpys(votes, relays, seed):
    import warnings

    rng = np.random.default_rng(seed)
    values = rng.random((votes, relays)) * 10
    values[rng.random((votes, relays)) < 0.4] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "All-NaN slice" and empty-slice warnings
        expected = np.nanmedian(values, axis=0) if votes else np.full(relays, np.nan)
    assert np.allclose(E._median(values), expected, equal_nan=True)


def test_relay_command_without_files_uses_the_collected_period(cli, capsys, monkeypatch, maatuska):
    from types import SimpleNamespace

    import agent.loop.collect

    snapshot = SimpleNamespace(votes=lambda: [maatuska], server_descriptors=[])
    monkeypatch.setattr(agent.loop.collect, "collect", lambda config: snapshot)  # no network in unit tests
    assert cli.main(["relay", SEELE, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["source"] == "live" and report["authorities"][0]["withheld"] == ["Fast", "Guard", "HSDir"]
    assert not any("stats lines" in problem for problem in report["problems"])  # the parser keeps them now
