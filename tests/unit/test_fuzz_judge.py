"""Fuzzing judge with hostile periods made of real documents: a PeriodResult every time, never a traceback.

Hypothesis builds periods from real documents of tests/data (cropped: a period is judged in milliseconds) and
stem-built votes, and mutates them: views dropped, served twice or by a stranger; consensuses empty, unsigned,
from another year or dated impossibly; entries with absurd bandwidths, Measured= values and flag sets; headers
with absurd flags, methods, parameters, weights and times; documents edited as text and parsed again (whatever
the parsers accept); missing, duplicated or absurd descriptors, bandwidth files and certificates; fetch records
and probes with absurd figures; archived periods too. ``judge`` must return a PeriodResult (what breaks judging
is rejected by name, the rest judged) under a hang guard and a memory bound, with points the store can encode.

CI runs a bounded, reproducible slice (derandomized, ``EXAMPLES``); ``ALLIUM_FUZZ_EXAMPLES=2000`` runs a long one.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import tracemalloc
from datetime import datetime, timedelta, timezone
from functools import cache

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from stem.descriptor.networkstatus import NetworkStatusDocumentV3
from stem.descriptor.router_status_entry import RouterStatusEntryV3

from agent.checks.consensus import time_problem
from agent.config.loader import load_config
from agent.metrics.geoip import GeoIP
from agent.metrics.period import relays_of
from agent.model.authorities import Authority, from_consensus
from agent.model.entries import ABSENT, entries_of
from agent.model.errors import DocumentError
from agent.model.points import ColumnPoint, Point
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
from agent.model.time import unix
from agent.parse import fastparse
from agent.parse.documents import parse_document
from agent.pipeline.isolation import VIEW_DOCUMENTS
from agent.pipeline.judge import Memory, PeriodResult, judge
from agent.store.store import encode_points
from tests.conftest import DATA, read_data

EXAMPLES = int(os.environ.get("ALLIUM_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HANG_GUARD_SECONDS = 120  # a cropped period is judged in well under a second, even isolated; only a hang gets here
PEAK_BYTES = 256 << 20  # what judging one cropped period (every isolation attempt included) may allocate at its peak
CONFIG = load_config(None, environ={})
GEOIP = GeoIP.load(DATA / "geoip-excerpt")
UINT32_MAX, INT32_MIN, INT32_MAX = 2 ** 32 - 1, -2 ** 31, 2 ** 31 - 1
FLAGS = ("Authority", "BadExit", "Exit", "Fast", "Guard", "HSDir", "MiddleOnly", "NoEdConsensus", "Running",
         "Stable", "StaleDesc", "Sybil", "V2Dir", "Valid", "Named", "Unnamed", "X", "Z" * 40)


# -- seeds: real documents, cropped -----------------------------------------------------------------------------------

def _cropped(name: str, entries: int) -> bytes:
    """A network status document with its first ``entries`` router entries (header and footer whole)."""
    raw = read_data(name)
    header, body, footer = fastparse.split_network_status(raw)
    kept = body.split(b"\nr ")[:entries]
    return header + b"\nr ".join(kept) + (b"\n" if not kept[-1].endswith(b"\n") else b"") + footer


def _created_vote(flags: str, measured: int | None, count: int = 4):
    """A vote stem builds (``.create()``): its few entries share the fingerprint prefix of nothing real."""
    routers = [RouterStatusEntryV3.create({
        "r": f"relay{i} {chr(65 + i) * 27} {'B' * 27} 2022-11-19 09:00:00 10.0.0.{i} 9001 0", "s": flags,
        "w": "Bandwidth=10" + (f" Measured={measured}" if measured is not None else "")}) for i in range(count)]
    return NetworkStatusDocumentV3.create({"vote-status": "vote"}, routers=routers)


def _seed(kind: DocKind, raw: bytes):
    return parse_document(kind, raw, "fuzz seed")


@cache
def seeds() -> dict:
    """Parsed real documents by role (each parsed once: mutations copy them)."""
    raw = {
        "consensus": (_cropped("2022-11-19-10-00-00-consensus.xz", 60),
                      _cropped("2016-09-20-13-00-00-consensus.xz", 60)),
        "microdesc": (_cropped("2022-11-19-10-00-00-consensus-microdesc.xz", 60),),
        "vote": (_cropped("2016-09-20-13-00-00-vote-maatuska.xz", 60), read_data("2017-07-17-17-00-00-vote-cropped"),
                 read_data("testnet-shared-random/074550-auth1.vote"),
                 read_data("testnet-shared-random/074610-auth2.vote")),
    }
    descriptors = read_data("2020-02-29-10-05-00-server-descriptors.xz")
    starts = [match.start() for match in re.finditer(rb"(?m)^router ", descriptors)]
    return {
        "raw": raw,
        "consensus": [_seed(DocKind.CONSENSUS, text) for text in raw["consensus"]],
        "microdesc": [_seed(DocKind.MICRODESC_CONSENSUS, text) for text in raw["microdesc"]],
        "vote": [_seed(DocKind.VOTE, text) for text in raw["vote"]]
        + [_created_vote("Fast Running Valid", 5), _created_vote("", None), _created_vote(" ".join(FLAGS), UINT32_MAX)],
        "certificates": _seed(DocKind.KEY_CERTIFICATES, read_data("2022-11-certs")),
        "bandwidth_file": _seed(DocKind.BANDWIDTH_FILE, read_data("bandwidth-file-v1.4")),
        "descriptors": [_seed(DocKind.SERVER_DESCRIPTORS, read_data("server-descriptors-2")),
                        _seed(DocKind.SERVER_DESCRIPTORS, descriptors[:starts[40]])],
    }


#: Parsed before Hypothesis runs (stem's .create() draws from the random module); the relays votes, descriptors
#: and bandwidth files are made to be about.
CONSENSUS_FINGERPRINTS = list(entries_of(seeds()["consensus"][0]).fingerprints)


# -- mutations ----------------------------------------------------------------------------------------------------

flag_lists = st.lists(st.sampled_from(FLAGS), max_size=len(FLAGS) + 3)
times = st.one_of(st.sampled_from([timedelta(0), timedelta(minutes=20), -timedelta(hours=1), timedelta(days=400),
                                   -timedelta(days=4), timedelta(days=365 * 50)]),
                  st.integers(-10 ** 9, 10 ** 9).map(lambda seconds: timedelta(seconds=seconds)))


@st.composite
def mutated_entries(draw, entries):
    """The entries with some rows kept (none, some, all) and absurd bandwidths, Measured= values and flags."""
    count = len(entries)
    rows = np.array(draw(st.one_of(st.just(list(range(count))), st.just([]),
                                   st.lists(st.integers(0, max(count - 1, 0)), max_size=count, unique=True)
                                   if count else st.just([]))), np.int64)
    picked = type(entries).picked(entries, entries, rows)
    size = len(picked)
    numbers = st.lists(st.one_of(st.just(ABSENT), st.integers(0, UINT32_MAX)), min_size=size, max_size=size)
    if draw(st.booleans()):
        picked.bandwidth = np.array(draw(numbers), np.int64)
    if draw(st.booleans()):
        picked.measured = np.array(draw(numbers), np.int64)
    if draw(st.booleans()):
        picked.flag_lines = draw(st.lists(flag_lists, min_size=1, max_size=6))
        picked.flag_code = np.array(draw(st.lists(st.integers(0, len(picked.flag_lines) - 1), min_size=size,
                                                  max_size=size)), np.int32)
    if draw(st.booleans()):
        picked.unmeasured = np.array(draw(st.lists(st.booleans(), min_size=size, max_size=size)), bool)
    if draw(st.booleans()) and size <= len(CONSENSUS_FINGERPRINTS):  # relays of the consensus (a vote about them)
        picked.fingerprints = draw(st.permutations(CONSENSUS_FINGERPRINTS))[:size]
    return picked


HEADER_FIELDS = {
    "known_flags": st.one_of(flag_lists, st.just([f"Flag{i}" for i in range(80)])),
    "consensus_method": st.one_of(st.none(), st.integers(0, INT32_MAX)),
    "consensus_methods": st.lists(st.integers(0, INT32_MAX), max_size=4),
    "params": st.dictionaries(st.sampled_from(["bwweightscale", "circwindow", "x", "CircuitPriorityHalflifeMsec"]),
                              st.integers(INT32_MIN, INT32_MAX), max_size=4),
    "bandwidth_weights": st.dictionaries(st.sampled_from(["Wbd", "Wgg", "Wee", "Wmm", "Wxx"]),
                                         st.integers(INT32_MIN, INT32_MAX), max_size=5),
    **dict.fromkeys(["shared_randomness_current_value", "shared_randomness_previous_value"], st.none()),
    **dict.fromkeys(["signatures", "client_versions", "server_versions"], st.just([])),
    "flag_thresholds": st.dictionaries(st.sampled_from(["stable-uptime", "fast-speed", "guard-wfu", "x"]),
                                       st.one_of(st.integers(0, UINT32_MAX), st.floats(0, 1e12)), max_size=4),
    "recommended_client_protocols": st.dictionaries(st.sampled_from(["Link", "Relay", "X"]),
                                                    st.lists(st.integers(0, 63), max_size=3), max_size=3),
}


@st.composite
def mutated(draw, document, role: str):
    """``document``, or a copy with absurd header fields, times and entries, or its text edited and parsed again."""
    how = draw(st.sampled_from(["as is", "object", "object", "text"]))
    if how == "as is":
        return document
    if how == "text" and role in seeds()["raw"]:
        return draw(edited(role))
    changed = copy.copy(document)
    for name in draw(st.lists(st.sampled_from(sorted(HEADER_FIELDS)), max_size=4, unique=True)):
        setattr(changed, name, draw(HEADER_FIELDS[name]))
    if draw(st.booleans()):
        valid_after = document.valid_after + draw(times)
        changed.valid_after, changed.fresh_until, changed.valid_until = \
            valid_after, valid_after + draw(times), valid_after + draw(times)
    if draw(st.booleans()):
        changed.directory_authorities = draw(st.sampled_from([[], list(document.directory_authorities) * 2]))
    if draw(st.booleans()):
        changed.entries = draw(mutated_entries(entries_of(document)))
    return changed


LINE_EDITS = [  # (the lines, what one of them becomes: a function of draw and the line)
    (rb"(?m)^s .*$", lambda draw, line: b"s " + " ".join(draw(flag_lists)).encode()),
    (rb"(?m)^w .*$", lambda draw, line: b"w Bandwidth=%d Measured=%d" % (draw(st.integers(0, UINT32_MAX)),
                                                                         draw(st.integers(0, UINT32_MAX)))),
    (rb"(?m)^known-flags .*$", lambda draw, line: b"known-flags " + " ".join(sorted(set(draw(flag_lists)))).encode()),
    (rb"(?m)^params .*$", lambda draw, line: b"params " + b" ".join(
        b"%s=%d" % (name, draw(st.integers(INT32_MIN, INT32_MAX))) for name in (b"circwindow", b"zz"))),
    (rb"(?m)^consensus-methods? .*$",
     lambda draw, line: line.split(b" ")[0] + b" %d" % draw(st.integers(1, INT32_MAX))),
    (rb"(?m)^v .*$", lambda draw, line: b"v Tor 999.999.999.999"),
    (rb"(?m)^r .*\n", lambda draw, line: b""),
    (rb"(?m)^shared-rand-(?:commit|reveal|participate).*$", lambda draw, line: draw(st.sampled_from(
        [line + b"\n" + line, b"", line.replace(b"sha3-256", b"sha3-512")]))),
    (rb"(?m)^dir-key-expires .*$", lambda draw, line: draw(st.sampled_from(
        [b"dir-key-expires 1999-01-01 00:00:00", b"dir-key-expires 2099-01-01 00:00:00"]))),
]


@st.composite
def edited(draw, role: str):
    """A seed's text with a few lines edited (flags, weights, known flags, parameters, methods, versions, entries
    dropped), parsed again; what the parser refuses leaves the seed as it was."""
    index = draw(st.integers(0, len(seeds()["raw"][role]) - 1))
    raw = seeds()["raw"][role][index]
    for pattern, replacement in draw(st.lists(st.sampled_from(LINE_EDITS), min_size=1, max_size=3)):
        matches = list(re.finditer(pattern, raw))
        if matches:
            match = matches[draw(st.integers(0, len(matches) - 1))]
            raw = raw[:match.start()] + replacement(draw, match.group()) + raw[match.end():]
    kind = {"consensus": DocKind.CONSENSUS, "microdesc": DocKind.MICRODESC_CONSENSUS, "vote": DocKind.VOTE}[role]
    try:
        return parse_document(kind, raw, "fuzz")
    except DocumentError:
        return seeds()[role][index]


@st.composite
def descriptors(draw):
    """Server descriptors: none, real ones, or copies matched to the consensus's relays with absurd fields."""
    base = draw(st.sampled_from([[], *seeds()["descriptors"]]))
    if not base or draw(st.booleans()):
        return list(base)
    family = st.lists(st.sampled_from([f"${fp}" for fp in CONSENSUS_FINGERPRINTS[:8]] + ["nick", "$", "$~x", "$=y"]))
    changed = []
    for descriptor in base[:draw(st.integers(0, len(base)))] * draw(st.integers(1, 2)):
        descriptor = copy.copy(descriptor)
        descriptor.fingerprint = draw(st.sampled_from([descriptor.fingerprint, *CONSENSUS_FINGERPRINTS]))
        rates = st.one_of(st.none(), st.integers(0, 2 ** 63 - 1))
        descriptor.average_bandwidth, descriptor.burst_bandwidth, descriptor.observed_bandwidth = \
            draw(rates), draw(rates), draw(rates)
        descriptor.platform = draw(st.sampled_from([descriptor.platform, None, "", "Tor 0.4.8.9 on Linux",
                                                    b"\xff on Windows", "x" * 1000]))
        descriptor.contact = draw(st.sampled_from([descriptor.contact, None, b"", b"\xff\xfe", b"a" * 2000]))
        descriptor.family = frozenset(draw(family))
        descriptor.published = descriptor.published + draw(times)
        descriptor.uptime = draw(st.one_of(st.none(), st.integers(0, 2 ** 63 - 1)))
        changed.append(descriptor)
    return changed


@st.composite
def bandwidth_files(draw):
    """No bandwidth file, the real one, or a copy with an absurd timestamp and measurements."""
    real = seeds()["bandwidth_file"]
    how = draw(st.sampled_from(["none", "real", "changed"]))
    if how != "changed":
        return None if how == "none" else real
    changed = copy.copy(real)
    changed.timestamp = draw(st.sampled_from([None, real.timestamp, real.timestamp + timedelta(days=4000),
                                              datetime(1970, 1, 1)]))
    measured = draw(st.lists(st.sampled_from(CONSENSUS_FINGERPRINTS), max_size=10))
    changed.measurements = draw(st.sampled_from([{}, {fp: {"bw": str(UINT32_MAX)} for fp in measured},
                                                 real.measurements]))
    return changed


@st.composite
def certificates(draw):
    """Key certificates: none, all, one, duplicated, or expiring at absurd times."""
    real = seeds()["certificates"]
    chosen = list(draw(st.sampled_from([[], real, real[:1], real + real])))
    if chosen and draw(st.booleans()):
        chosen[0] = copy.copy(chosen[0])
        chosen[0].expires = draw(st.sampled_from([datetime(1999, 1, 1), datetime(2099, 1, 1)]))
    return chosen


# -- periods ----------------------------------------------------------------------------------------------------

def document(role: str):
    return st.sampled_from(seeds()[role]).flatmap(lambda seed: mutated(seed, role))


def reports(authorities: list[Authority]):
    """Signature reports: all valid, none, or some of the watched authorities' (and a stranger's)."""
    idents = [authority.v3ident for authority in authorities] + ["F" * 40]
    return st.lists(st.sampled_from(idents), unique=True).map(
        lambda valid: SignatureReport(tuple(SignatureCheck(ident, "sha1", ident in valid) for ident in idents)))


@st.composite
def records(draw, nicknames: list[str], started_at: datetime):
    kinds = st.sampled_from(list(DocKind))
    return [FetchRecord(draw(st.sampled_from(nicknames)), draw(kinds), "http://fuzz/", started_at,
                        draw(st.sampled_from(list(Outcome))), draw(st.sampled_from([None, 200, 404, 503, 999])),
                        draw(st.one_of(st.none(), st.floats(0, 1e6))), draw(st.integers(0, 2 ** 40)),
                        draw(st.integers(0, 2 ** 40)), draw(st.one_of(st.none(), st.floats(-1e9, 1e9))),
                        error=draw(st.one_of(st.none(), st.text(max_size=30))), rejected=draw(st.booleans()))
            for _ in range(draw(st.integers(0, 12)))]


@st.composite
def views(draw, authorities: list[Authority], consensus):
    """Each authority's view (some dropped), documents mutated; some served twice or by a stranger."""
    found = {}
    served = [consensus] + [draw(document("consensus")) for _ in range(2)]
    for authority in authorities:
        if draw(st.integers(0, 7)) == 0:
            continue
        view = AuthorityView(authority)
        view.consensus = draw(st.one_of(st.none(), st.sampled_from(served)))
        view.consensus_signatures = draw(st.one_of(st.none(), reports(authorities)))
        view.microdesc_consensus = draw(st.one_of(st.none(), document("microdesc")))
        view.microdesc_signatures = draw(st.one_of(st.none(), reports(authorities)))
        view.vote = draw(st.one_of(st.none(), document("vote")))
        view.key_certificates = draw(certificates())
        view.bandwidth_file = draw(bandwidth_files())
        found[authority.nickname] = view
    if found and draw(st.booleans()):  # a stranger serves what a watched authority serves
        stranger = Authority("stranger", "E" * 40, "192.0.2.9", 80, 443)
        found["stranger"] = copy.copy(draw(st.sampled_from(list(found.values()))))
        found["stranger"].authority = stranger
    return found


@st.composite
def periods(draw) -> tuple[Snapshot, Memory]:
    consensus = draw(document("consensus"))
    authorities = from_consensus(draw(st.sampled_from(seeds()["consensus"])))
    authorities = draw(st.lists(st.sampled_from(authorities), unique_by=lambda a: a.nickname,
                                max_size=len(authorities)))
    base = seeds()["consensus"][0].valid_after
    started_at = (base + draw(times)).replace(tzinfo=timezone.utc)
    nicknames = [a.nickname for a in authorities] + ["stranger"]
    probes = [OrPortProbe(draw(st.sampled_from(nicknames)), "192.0.2.1:443", draw(st.one_of(st.none(),
                          st.floats(0, 1e6)))) for _ in range(draw(st.integers(0, 3)))]
    holdings = [VoteHolding(draw(st.sampled_from(nicknames)), draw(st.sampled_from(nicknames)), "D" * 40,
                            draw(st.sampled_from([None, True, False]))) for _ in range(draw(st.integers(0, 3)))]
    snapshot = Snapshot("fuzz", started_at, started_at, authorities, draw(views(authorities, consensus)),
                        draw(records(nicknames, started_at)),
                        server_descriptors=draw(descriptors()),
                        orport_probes=probes, vote_holdings=holdings)
    if draw(st.integers(0, 3)) == 0:  # a period from the archive (backfill)
        snapshot.archived_consensus = consensus
        snapshot.archived_signatures = draw(st.one_of(st.none(), reports(authorities)))
    previous = draw(st.sampled_from([None, {}, relays_of(seeds()["consensus"][1])]))
    remembered = draw(st.dictionaries(st.sampled_from(nicknames), st.floats(-1e12, 1e12), max_size=3))
    return snapshot, Memory(previous, remembered)


# -- the property ---------------------------------------------------------------------------------------------------

def judged(snapshot: Snapshot, memory: Memory) -> tuple[PeriodResult, int]:
    """The period judged under an alarm (the hang guard), and the peak memory judging it took."""

    def hang(signum, frame):
        raise TimeoutError(f"judging one fuzzed period took over {HANG_GUARD_SECONDS} s: a hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(HANG_GUARD_SECONDS)
    tracemalloc.start()
    try:
        return judge(snapshot, memory, CONFIG, GEOIP), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_sane(result: PeriodResult, snapshot: Snapshot) -> None:
    """A result the pipeline can record, without any document it rejected, with a period that could be now."""
    assert isinstance(result, PeriodResult) and isinstance(result.time, int)
    assert all(isinstance(point, (Point, ColumnPoint)) for point in result.points)
    encode_points(result.points)  # the store can take them
    judged_snapshot = result.snapshot
    assert judged_snapshot is not None
    for record in result.rejected:
        assert record.rejected and record.error and record.authority
        view = judged_snapshot.views.get(record.authority)
        if view is not None and record.kind in VIEW_DOCUMENTS:
            assert getattr(view, VIEW_DOCUMENTS[record.kind][0]) in (None, [])
    consensus = judged_snapshot.latest_consensus() if result.has_consensus else None
    if consensus is not None:
        assert result.time == unix(consensus.valid_after)
        if not snapshot.archived:
            now = snapshot.started_at.replace(tzinfo=None)
            assert time_problem(consensus, now, CONFIG.checks.thresholds.consensus_ahead_seconds) is None


@FUZZ
@given(periods())
def test_judge_returns_a_result_for_any_period(period):
    snapshot, memory = period
    result, peak = judged(snapshot, memory)
    assert_sane(result, snapshot)
    assert peak < PEAK_BYTES, f"judging one cropped period peaked at {peak >> 20} MiB"
