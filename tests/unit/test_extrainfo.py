"""Extra-info descriptors: the parser and digest on real documents, the incremental choice of digests, the 24/72 h
rules, the metrics, the state's memory, the fetch job against a DirPort of our own, and the subscription alert.

No real extra-info we have carries an overload line (the documents in ../shared/tordata were published in
2012-2016, tor writes the lines since 0.4.6, 2021): the lines are put into real documents before their
``router-signature``, which changes the digest as it would for tor (the signature is not checked here).
"""

from __future__ import annotations

import hashlib
import io
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import stem.descriptor

from agent.fetch.http import Deadline, new_session
from agent.loop.extrainfo import BATCH, ExtraInfoJob
from agent.metrics.catalogue import problems
from agent.metrics.geoip import GeoIP
from agent.metrics.overload import overload_fields, overload_network_points, overload_of
from agent.metrics.relays import build_table
from agent.model.authorities import Authority
from agent.model.errors import DocumentError
from agent.model.extrainfo import (
    FD_EXHAUSTED_KEPT_SECONDS,
    FORGET_SECONDS,
    RATELIMITS_KEPT_SECONDS,
    ExtraInfo,
    RateLimitOverload,
    newest_per_relay,
    reported,
    wanted_digests,
)
from agent.model.points import PointColumns
from agent.model.snapshot import DocKind, Outcome, Snapshot
from agent.model.time import unix
from agent.parse.extrainfo import named_digests, parse_extra_info, parse_extra_infos
from agent.pipeline.extrainfos import remembered_extra_infos, save_extra_infos
from agent.pipeline.state import State
from agent.subscriptions.events import conditions, relay_status
from tests.conftest import DATA, SHARED_TORDATA, read_data
from tests.unit.test_overload import START, A, descriptor, period
from tests.unit.test_subscriptions import SETTINGS

REAL = SHARED_TORDATA / "extra-infos" / "2016-10-02-08-05-00-extra-infos"  # 9 real relays' extra-infos
GEOIP = GeoIP.load(DATA / "geoip-excerpt")
HOUR10 = datetime(2020, 2, 29, 10)
TIME = unix(HOUR10)


def documents() -> list[bytes]:
    """The real file's documents, each from its extra-info line (the @type annotations dropped)."""
    return [part for part in REAL.read_bytes().split(b"@type extra-info 1.0\n") if part]


def with_lines(document: bytes, lines: bytes) -> bytes:
    return document.replace(b"\nrouter-signature\n", b"\n" + lines + b"\nrouter-signature\n", 1)


def signed_sha1(document: bytes) -> str:
    end = document.index(b"\nrouter-signature\n") + len(b"\nrouter-signature\n")
    return hashlib.sha1(document[:end]).hexdigest().upper()


# --- the parser and the digest, on real documents ----------------------------------------------------------------


def test_real_documents_are_read_with_stems_digest_and_no_overload():
    ours, bad = parse_extra_infos(REAL.read_bytes())
    theirs = list(stem.descriptor.parse_file(str(REAL), "extra-info 1.0"))
    assert bad == [] and len(ours) == len(theirs) == 9
    for mine, stems in zip(ours, theirs):
        assert (mine.nickname, mine.fingerprint, mine.published) == (stems.nickname, stems.fingerprint,
                                                                     stems.published)
        assert mine.digest == stems.digest() == signed_sha1(documents()[ours.index(mine)])
        assert (mine.ratelimits, mine.fd_exhausted, mine.ignored) == (None, None, ())
    for name in ("stem-extrainfo_descriptor_with_ed25519", "stem-extrainfo_relay_descriptor"):
        [one], [] = parse_extra_infos((SHARED_TORDATA / "extra-infos" / name).read_bytes())
        [stems] = stem.descriptor.parse_file(str(SHARED_TORDATA / "extra-infos" / name), "extra-info 1.0")
        assert one.digest == stems.digest()


def test_overload_lines_are_read_and_change_the_digest_as_stem_computes_it():
    real = documents()[1]  # grepular1, published 2016-10-02 07:01:21
    changed = with_lines(real, b"overload-ratelimits 1 2016-10-02 05:00:00 1073741824 2147483648 3 17\n"
                               b"opt overload-fd-exhausted 1 2016-10-01 22:00:00 a later version's argument")
    extra = parse_extra_info(changed)
    assert extra.ratelimits == RateLimitOverload(datetime(2016, 10, 2, 5), 1073741824, 2147483648, 3, 17)
    assert extra.fd_exhausted == datetime(2016, 10, 1, 22) and extra.ignored == ()
    [stems] = stem.descriptor.parse_file(io.BytesIO(changed), "extra-info 1.0", validate=False)
    assert extra.digest == stems.digest() == signed_sha1(changed) != parse_extra_info(real).digest
    # What lies after the signature (and before the first line) is no part of the digest.
    assert parse_extra_info(changed + b"trailing\n").digest == extra.digest


@pytest.mark.parametrize("lines, reason", [
    (b"overload-ratelimits 1 2016-10-02 05:00:00 1 2 3", "does not have the line's fields"),
    (b"overload-ratelimits 0 2016-10-02 05:00:00 1 2 3 4", "version 0 is not from 1"),
    (b"overload-ratelimits 1 2016-10-02 05:00:00 1 2 3 18446744073709551616", "is not a number from 0"),
    (b"overload-ratelimits 1 2016-10-02 05:00:00 -1 2 3 4", "does not have the line's fields"),
    (b"overload-ratelimits 1 2016-02-30 05:00:00 1 2 3 4", "is not a time"),
    (b"overload-ratelimits 1 2016-10-02 08:00:00 1 2 3 4", "is after the document's published"),
    (b"overload-fd-exhausted 1", "does not have the line's fields"),
    (b"overload-fd-exhausted", "does not have the line's fields"),
    (b"overload-fd-exhausted 1 1969-12-31 23:00:00", "is not a time from 1970"),
    (b"overload-fd-exhausted 1 2016-10-02 06:00:00\noverload-fd-exhausted 1 2016-10-02 06:00:00", "a second"),
    (b"overload-fd-exhausted 1\t2016-10-02 06:00:00", "does not have the line's fields"),
])
def test_a_hostile_overload_line_is_ignored_with_its_reason_and_the_document_kept(lines, reason):
    extra = parse_extra_info(with_lines(documents()[1], lines))
    assert extra.nickname == "grepular1" and (extra.ratelimits, extra.fd_exhausted) == (None, None)
    assert len(extra.ignored) == 1 and reason in extra.ignored[0]


@pytest.mark.parametrize("mangle, reason", [
    (lambda d: d.replace(b"\nrouter-signature\n", b"\nrouter-sig\n"), "no router-signature"),
    (lambda d: d.replace(b"\npublished ", b"\nxpublished "), "no published line"),
    (lambda d: with_lines(d, b"published 2016-10-02 07:01:21"), "more than one published line"),
    (lambda d: d.replace(b"published 2016-10-02", b"published 2016-13-02"), "published '2016-13-02"),
    (lambda d: d.replace(b"grepular1", b"grepular1-bad-name", 1), "is not 'extra-info NICKNAME FINGERPRINT'"),
    (lambda d: d.replace(b"0F408EA9", b"0F408EZ9", 1), "is not 'extra-info NICKNAME FINGERPRINT'"),
    (lambda d: with_lines(d, b"contact \xff"), "not UTF-8"),
    (lambda d: with_lines(d, b"x \x00"), "a NUL byte"),
])
def test_a_bad_document_costs_only_itself_with_its_reason(mangle, reason):
    parts = documents()
    raw = b"@type extra-info 1.0\n" + b"".join([parts[0], mangle(parts[1]), parts[2]])
    read, bad = parse_extra_infos(raw)
    assert [extra.nickname for extra in read] == ["HarryHasASpareVPS", "DeepBlueOcean"]
    assert len(bad) == 1 and reason in bad[0]


def test_a_reply_that_is_no_extra_info_at_all_is_refused():
    with pytest.raises(DocumentError, match="not extra-info documents"):
        parse_extra_infos(b"<html>busy</html>")
    assert parse_extra_infos(b"") == ([], []) and parse_extra_infos(b"\n\n") == ([], [])


def test_server_descriptors_name_their_extra_info_as_stem_reads_it():
    raw = read_data("2020-02-29-10-05-00-server-descriptors.xz")
    named = named_digests(raw)
    newest: dict[str, tuple] = {}
    for d in stem.descriptor.parse_file(io.BytesIO(raw), "server-descriptor 1.0", validate=False):
        if d.extra_info_digest and (d.fingerprint not in newest or d.published > newest[d.fingerprint][0]):
            newest[d.fingerprint] = (d.published, d.extra_info_digest)
    assert named == {fingerprint: digest for fingerprint, (_, digest) in newest.items()}
    assert len(named) == 576  # relays in the file; each names one
    assert named_digests(b"router x\nextra-info-digest nothex\n") == {} and named_digests(b"\xff" * 50) == {}


# --- which digests to fetch, which document is newest, the 24 / 72 h rules ---------------------------------------


def extra(fingerprint: str, digest: str, published: datetime = HOUR10, **lines) -> ExtraInfo:
    return ExtraInfo("relay", fingerprint, published, digest, **lines)


def test_only_digests_not_read_are_wanted():
    held = {"A" * 40: extra("A" * 40, "1" * 40), "B" * 40: extra("B" * 40, "2" * 40)}
    named = {"A" * 40: "1" * 40, "B" * 40: "3" * 40, "C" * 40: "4" * 40}
    assert wanted_digests(named, held) == ["3" * 40, "4" * 40]  # B republished, C new; A already read
    assert wanted_digests(named, {}) == sorted(named.values())  # the first period: all of them
    assert wanted_digests({}, held) == []  # no server descriptors this period: nothing to ask for


def test_the_newest_published_extra_info_of_a_relay_is_kept():
    old, new = extra("A" * 40, "1" * 40, HOUR10), extra("A" * 40, "2" * 40, HOUR10 + timedelta(hours=18))
    assert newest_per_relay({"A" * 40: old}, [new]) == {"A" * 40: new}
    assert newest_per_relay({"A" * 40: new}, [old]) == {"A" * 40: new}  # a stale answer does not go back
    assert newest_per_relay({}, [old, new])["A" * 40] is new


def test_each_line_counts_for_tors_own_window_before_the_valid_after():
    at = HOUR10 - timedelta(hours=1)
    for kept in (RATELIMITS_KEPT_SECONDS, FD_EXHAUSTED_KEPT_SECONDS):
        assert reported(at, TIME, kept) and reported(at, unix(at) + kept - 1, kept)  # tor: time > now - kept
        assert not reported(at, unix(at) + kept, kept)
        assert not reported(at, unix(at) - 1, kept)  # after the valid-after: not reported yet
    assert not reported(None, TIME, FD_EXHAUSTED_KEPT_SECONDS)
    assert (RATELIMITS_KEPT_SECONDS, FD_EXHAUSTED_KEPT_SECONDS) == (24 * 3600, 72 * 3600)


# --- metrics ---------------------------------------------------------------------------------------------------


def test_metrics_per_relay_and_for_the_network(hour10):
    table = build_table(hour10, [], GEOIP)
    fps = table.fingerprints
    limits = RateLimitOverload(HOUR10 - timedelta(hours=23), 1, 2, 3, 4)
    held = {fps[0]: extra(fps[0], "0" * 40, ratelimits=limits),
            fps[1]: extra(fps[1], "1" * 40, fd_exhausted=HOUR10 - timedelta(hours=71)),
            fps[2]: extra(fps[2], "2" * 40, ratelimits=RateLimitOverload(HOUR10 - timedelta(hours=24), 1, 2, 3, 4),
                          fd_exhausted=HOUR10 - timedelta(hours=72)),  # both outlived
            fps[3]: extra(fps[3], "3" * 40, ignored=("a second overload-fd-exhausted line",)),
            "F" * 40: extra("F" * 40, "4" * 40, fd_exhausted=HOUR10)}  # not in the consensus
    overload = overload_of(table, [], TIME, held)
    fields = overload_fields(overload)
    assert [fields["overload_ratelimits"][i] for i in range(4)] == [1, 0, 0, 0]
    assert [fields["overload_fd_exhausted"][i] for i in range(4)] == [0, 1, 0, 0]
    assert np.isnan(fields["overload_ratelimits"][4:]).all()  # no extra-info held: unknown, not 0
    [network] = overload_network_points(table, overload, TIME)  # no server descriptors: only the extra-info part
    assert network.fields == {"extra_info_relays": 4.0, "overload_ratelimits_relays": 1.0,
                              "overload_fd_exhausted_relays": 1.0, "extra_info_overload_lines_ignored": 1.0}
    relays = PointColumns("tor_relay", "fingerprint", fps, fields, TIME).points()
    assert problems([network, *relays]) == []  # every field is catalogued
    assert "overload_ratelimits" not in overload_fields(overload_of(table, [], TIME))  # none held: left out
    assert overload_network_points(table, overload_of(table, [], TIME, {}), TIME) == []


# --- the state's memory ----------------------------------------------------------------------------------------


def snapshot_with(held: dict, named: dict) -> Snapshot:
    return Snapshot("test", HOUR10, HOUR10, [], {}, [], extra_infos=held, extra_info_digests=named)


def test_the_state_remembers_each_relays_newest_and_forgets_relays_gone_a_week(tmp_path):
    state = State(tmp_path)
    limits = RateLimitOverload(HOUR10 - timedelta(hours=2), 10, 20, 1, 0)
    held = {"A" * 40: extra("A" * 40, "1" * 40, ratelimits=limits, ignored=("why",)),
            "B" * 40: extra("B" * 40, "2" * 40, fd_exhausted=HOUR10 - timedelta(hours=5))}
    assert save_extra_infos(state, snapshot_with(held, {"A" * 40: "1" * 40, "B" * 40: "2" * 40}), TIME) == 2
    assert remembered_extra_infos(State(tmp_path)) == held  # across a restart, every field as it was
    assert save_extra_infos(state, snapshot_with(held, {"A" * 40: "1" * 40}), TIME + 3600) == 0  # nothing new
    # B's descriptors stop naming it; a week later it is forgotten, A (still named) is kept.
    save_extra_infos(state, snapshot_with({"A" * 40: held["A" * 40]}, {"A" * 40: "1" * 40}), TIME + FORGET_SECONDS)
    assert set(remembered_extra_infos(state)) == {"A" * 40, "B" * 40}
    save_extra_infos(state, snapshot_with({}, {"A" * 40: "1" * 40}), TIME + FORGET_SECONDS + 3601)
    assert set(remembered_extra_infos(state)) == {"A" * 40}


def test_an_unreadable_row_costs_only_itself(tmp_path):
    state = State(tmp_path)
    save_extra_infos(state, snapshot_with({"A" * 40: extra("A" * 40, "1" * 40), "B" * 40: extra("B" * 40, "2" * 40)},
                                          {}), TIME)
    with state.db:
        state.db.execute("UPDATE extra_infos SET overload = '{\"ratelimits\": [1]}' WHERE fingerprint = ?", ("A" * 40,))
    assert set(remembered_extra_infos(state)) == {"B" * 40}  # A is fetched again next period
    assert state.counters()["rows_quarantined"] == 1 and list((tmp_path / "quarantine").iterdir())


# --- the fetch job, against a DirPort of our own on 127.0.0.1 -----------------------------------------------------


def _relay(document: bytes, fingerprint: str) -> bytes:
    first, rest = document.split(b"\n", 1)
    return b" ".join(first.split(b" ")[:2]) + b" " + fingerprint.encode() + b"\n" + rest


class _DirPort(BaseHTTPRequestHandler):
    held: dict[str, bytes] = {}
    asked: list[list[str]] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        digests = self.path.removeprefix("/tor/extra/d/").split("+")
        type(self).asked.append(digests)
        body = b"".join(self.held[d] for d in digests if d in self.held)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def dirport():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _DirPort)
    _DirPort.held, _DirPort.asked = {}, []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_job_asks_by_digest_in_batches_and_keeps_only_what_was_asked_for(dirport):
    reals = documents()
    # 200 relays, each naming its document: 9 real ones, the rest real ones of another relay (its fingerprint).
    made = [reals[i] if i < 9 else _relay(reals[i % 9], f"{i:040X}") for i in range(200)]
    extras = [parse_extra_info(document) for document in made]
    _DirPort.held = {e.digest: d for e, d in zip(extras, made)}
    named = {e.fingerprint: e.digest for e in extras}
    named["F" * 40] = "E" * 40  # an authority that does not hold one answers without it
    remembered = {e.fingerprint: e for e in extras[:10]}  # read in an earlier period
    job = ExtraInfoJob(remembered)
    authority = Authority("auth", "0" * 40, "127.0.0.1", dirport.server_address[1])
    with new_session() as session:
        job.run(session, authority, named, Deadline(30), 10)
    held, digests, records = job.collect()
    asked = [d for batch in _DirPort.asked for d in batch]
    assert sorted(asked) == sorted({e.digest for e in extras[10:]} | {"E" * 40})  # none read before
    assert [len(batch) for batch in _DirPort.asked] == [BATCH, 95]
    assert [(r.kind, r.outcome) for r in records] == [(DocKind.EXTRA_INFOS, Outcome.OK)] * 2
    assert all(r.url.startswith(authority.base_url + "/tor/extra/d/") for r in records)
    assert digests == named and {e.digest for e in job.fetched} == {e.digest for e in extras[10:]}
    assert held == {e.fingerprint: e for e in extras}
    # Nothing new: the next period asks for nothing.
    _DirPort.asked = []
    again = ExtraInfoJob(held)
    with new_session() as session:
        again.run(session, authority, {k: v for k, v in named.items() if k != "F" * 40}, Deadline(30), 10)
    assert _DirPort.asked == [] and again.collect()[2] == []


def test_at_the_deadline_the_rest_is_one_skipped_record(dirport):
    named = {f"{i:040X}": f"{i:040X}" for i in range(3 * BATCH)}
    job = ExtraInfoJob({})
    authority = Authority("auth", "0" * 40, "127.0.0.1", dirport.server_address[1])
    with new_session() as session:
        job.run(session, authority, named, Deadline(0), 10)
    _, _, records = job.collect()
    assert _DirPort.asked == []
    assert [r.outcome for r in records] == [Outcome.SKIPPED, Outcome.SKIPPED]
    assert f"({2 * BATCH} extra-infos left for the next period)" in records[-1].error


# --- the subscription alert ------------------------------------------------------------------------------------


def test_fd_exhaustion_alerts_as_overload_and_rate_limits_do_not():
    consensus = period(START).latest_consensus()
    desc = {A: descriptor(None, START - timedelta(minutes=30))}

    def found(now: datetime, **lines):
        info = ExtraInfo("relayA", A, START - timedelta(minutes=30), "1" * 40, **lines)
        status = relay_status(A, consensus, desc, [], [], extra_info=info)
        return [c for c in conditions(status, [], consensus, SETTINGS, unix(now)) if c.id == "TorRelayOverloaded"]

    at = START - timedelta(hours=2)
    [condition] = found(START, fd_exhausted=at)
    assert condition.severity == "info" and condition.overload_since is None
    assert "ran out of file descriptors at 2026-11-24 10:00 UTC" in condition.description
    assert "ends by 2026-11-27 10:00 UTC" in condition.description
    assert found(at + timedelta(hours=72, seconds=-1), fd_exhausted=at)
    assert not found(at + timedelta(hours=72), fd_exhausted=at)
    assert not found(START, ratelimits=RateLimitOverload(at, 1, 2, 3, 4))  # a series only


def test_an_authoritys_extra_info_requests_are_one_fetch_series_point():
    from agent.metrics.authority import fetch_points
    from agent.model.snapshot import FetchRecord

    def request(outcome: Outcome, size: int, status: int | None = 200) -> FetchRecord:
        return FetchRecord("auth1", DocKind.EXTRA_INFOS, "http://x/tor/extra/d/AB", HOUR10, outcome, status, 0.5,
                           size, size // 2, 0.1)

    snapshot = Snapshot("v", HOUR10, HOUR10, [], {}, [request(Outcome.OK, 100), request(Outcome.ABSENT, 0, 404),
                                                      request(Outcome.SKIPPED, 0, None)])
    [one] = [p for p in fetch_points(snapshot, TIME) if p.tags.get("document") == "extra-infos"]
    assert one.tags == {"authority": "auth1", "document": "extra-infos", "vantage": "v"}
    assert one.fields == {"answered": 1.0, "ok": 1.0, "latency_seconds": 1.0, "bytes": 100.0, "wire_bytes": 50.0,
                          "clock_skew_seconds": 0.1}  # the batch the deadline left for later is no failure
