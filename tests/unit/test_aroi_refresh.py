"""The AROI proof cache (agent/aroi/cache.py) and the refresh rounds (agent/aroi/refresh.py).

The checkers passed to ``Verifier`` here are plain functions that build the
``DomainProof`` a check would find, from a table of what each test domain
serves. They stand for the checking itself (fetching rsa-fingerprint.txt,
looking up TXT records), which is tested against real HTTPS and DNS servers
on 127.0.0.1 by the tests of agent/aroi/uri.py and agent/aroi/dns.py; what is
tested here is what happens around them: which proofs are due, what is kept,
concurrency, failures and the background thread.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest

from agent.aroi.cache import FORGET_SECONDS, VERSION, Due, ProofCache
from agent.aroi.refresh import BackgroundVerifier, RefreshReport, Verifier, claims_of
from agent.aroi.settings import AroiConfig
from agent.model.aroi import DomainProof, Outcome
from agent.model.ciiss import parse_contact
from tests.conftest import read_data

HOUR = 3600
T0 = 1_700_000_000


def settings(**changes) -> AroiConfig:
    values = {key: default for key, default, _ in AroiConfig.SETTINGS}
    values["allowed_networks"] = ()
    return AroiConfig(**{**values, **changes})


def fp(number: int) -> str:
    return f"{number:040X}"


def contact(domain: str, method: str = "uri-rsa", email: str | None = None, version: int = 2):
    line = f"url:https://{domain} proof:{method} ciissversion:{version}"
    return parse_contact(f"email:{email.replace('@', '[]')} {line}" if email else line)


class Served:
    """What each test domain would answer a check with: the fingerprints its proof lists, an unreadable proof's
    error (a str), or an exception the checker raises. Records every check and how many ran at once."""

    def __init__(self, served: dict, delay: float = 0.0, gate: threading.Event | None = None):
        self.served, self.delay, self.gate = served, delay, gate
        self.calls: list[tuple[str, str]] = []
        self.started = threading.Event()
        self.running = self.most_at_once = 0
        self._lock = threading.Lock()

    def fetch_uri(self, domain: str, config: AroiConfig, now: int) -> DomainProof:
        return self._answer(domain, "uri-rsa", None, now)

    def check_dns(self, domain: str, fingerprints, config: AroiConfig, now: int) -> DomainProof:
        return self._answer(domain, "dns-rsa", [fingerprint.upper() for fingerprint in fingerprints], now)

    def _answer(self, domain: str, method: str, asked: list[str] | None, now: int) -> DomainProof:
        with self._lock:
            self.calls.append((domain, method))
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        self.started.set()
        try:
            if self.gate is not None:
                assert self.gate.wait(10), "the test never opened the gate"
            time.sleep(self.delay)
            answer = self.served.get(domain, set())
            if isinstance(answer, Exception):
                raise answer
            if isinstance(answer, str):
                return DomainProof(domain, method, now, error=answer, refused=answer.startswith("refused"))
            if asked is None:
                return DomainProof(domain, method, now, listed=frozenset(answer))
            return DomainProof(domain, method, now, listed=frozenset(set(asked) & answer),
                               refuted=frozenset(set(asked) - answer), dnssec="secure")
        finally:
            with self._lock:
                self.running -= 1


def verifier(tmp_path, served: Served, **changes) -> Verifier:
    return Verifier(settings(**changes), ProofCache(tmp_path / "aroi-proofs.json"), served.fetch_uri,
                    served.check_dns)


def keys(due: list[Due]) -> list[tuple[str, str]]:
    return [(item.domain, item.method) for item in due]


# -- which proofs are due


def test_never_checked_claims_are_due_and_incomplete_ones_never(tmp_path):
    cache = ProofCache(tmp_path / "proofs.json")
    claims = {fp(1): contact("a.example"), fp(2).lower(): contact("a.example"), fp(3): contact("b.example", "dns-rsa"),
              fp(4): contact("c.example", version=1), fp(5): parse_contact("email:x[]c.example url:c.example"),
              fp(6): parse_contact(None)}
    due = cache.due(claims, T0, settings())
    assert sorted(keys(due)) == [("a.example", "uri-rsa"), ("b.example", "dns-rsa")]
    assert {item.domain: item.fingerprints for item in due} == {"a.example": (fp(1), fp(2)), "b.example": (fp(3),)}


def test_fresh_proofs_are_not_due_until_refresh_or_retry_hours(tmp_path):
    config = settings(refresh_hours=12, retry_hours=2)
    cache = ProofCache(tmp_path / "proofs.json")
    claims = {fp(1): contact("readable.example"), fp(2): contact("failed.example"),
              fp(3): contact("refused.example")}
    cache.put(DomainProof("readable.example", "uri-rsa", T0, listed=frozenset({fp(1)})))
    cache.put(DomainProof("failed.example", "uri-rsa", T0, error="HTTP 404"))
    cache.put(DomainProof("refused.example", "uri-rsa", T0, error="refused: redirect off the domain", refused=True))
    assert cache.due(claims, T0, config) == []
    assert cache.due(claims, T0 + 2 * HOUR - 1, config) == []
    assert sorted(keys(cache.due(claims, T0 + 2 * HOUR, config))) == [("failed.example", "uri-rsa"),
                                                                    ("refused.example", "uri-rsa")]
    assert ("readable.example", "uri-rsa") not in keys(cache.due(claims, T0 + 12 * HOUR - 1, config))
    assert ("readable.example", "uri-rsa") in keys(cache.due(claims, T0 + 12 * HOUR, config))
    # a proof dated after now (the clock went back) is checked again rather than trusted for longer
    assert ("readable.example", "uri-rsa") in keys(cache.due(claims, T0 - 1, config))
    assert len(cache.due(claims, T0, config, everything=True)) == 3


def test_a_new_relay_makes_a_dns_proof_due_and_a_refuted_one_does_not(tmp_path):
    cache = ProofCache(tmp_path / "proofs.json")
    cache.put(DomainProof("d.example", "dns-rsa", T0, listed=frozenset({fp(1)}), refuted=frozenset({fp(2)})))
    known = {fp(1): contact("d.example", "dns-rsa"), fp(2): contact("d.example", "dns-rsa")}
    assert cache.due(known, T0 + 60, settings()) == []
    joined = {**known, fp(3): contact("d.example", "dns-rsa")}
    # ... after retry_hours (a name server dropping some lookups must not have its domain checked every round)
    assert cache.due(joined, T0 + 2 * HOUR - 1, settings()) == []
    due = cache.due(joined, T0 + 2 * HOUR, settings())
    assert due == [Due("d.example", "dns-rsa", (fp(1), fp(2), fp(3)))]
    # a uri-rsa proof lists everything the domain serves: a relay it does not list is not listed, not new
    cache.put(DomainProof("u.example", "uri-rsa", T0, listed=frozenset({fp(1)})))
    assert cache.due({fp(7): contact("u.example")}, T0 + 60, settings()) == []
    # an unreadable dns-rsa proof waits for retry_hours whatever relays join
    cache.put(DomainProof("e.example", "dns-rsa", T0, error="SERVFAIL"))
    assert cache.due({fp(8): contact("e.example", "dns-rsa")}, T0 + 60, settings()) == []


def test_never_checked_come_first_then_the_oldest(tmp_path):
    cache = ProofCache(tmp_path / "proofs.json")
    cache.put(DomainProof("new.example", "uri-rsa", T0 - HOUR, error="timeout"))
    cache.put(DomainProof("old.example", "uri-rsa", T0 - 9 * HOUR, error="timeout"))
    claims = {fp(1): contact("new.example"), fp(2): contact("old.example"), fp(3): contact("never.example")}
    assert [item.domain for item in cache.due(claims, T0 + 99 * HOUR, settings())] == \
        ["never.example", "old.example", "new.example"]


# -- what a round keeps


def test_emails_come_only_from_claiming_relays_the_proof_lists(tmp_path):
    served = Served({"op.example": {fp(1), fp(2)}})
    claims = {fp(1): contact("op.example", email="ops@op.example"),
              fp(2): contact("op.example", email="noc@op.example"),
              fp(3): contact("op.example", email="stranger@evil.example"),  # claims it, not listed
              fp(4): contact("other.example", email="other@other.example")}
    report = verifier(tmp_path, served).refresh(claims, T0)
    book = ProofCache(tmp_path / "aroi-proofs.json").book()
    assert book.proofs[("op.example", "uri-rsa")].emails == {"ops@op.example", "noc@op.example"}
    assert book.emails_of("op.example") == {"ops@op.example", "noc@op.example"}
    assert book.proofs[("other.example", "uri-rsa")].emails == frozenset()
    assert [book.verdict(fingerprint, claims[fingerprint]).outcome for fingerprint in (fp(1), fp(3), fp(4))] == \
        [Outcome.VERIFIED, Outcome.NOT_LISTED, Outcome.NOT_LISTED]
    assert (report.checked, report.verified, report.failed, report.refused) == (2, 1, 0, 0)


def test_a_raising_checker_is_a_failed_proof_and_the_round_goes_on(tmp_path, caplog):
    served = Served({"boom.example": RuntimeError("the checker broke"), "ok.example": {fp(2)},
                     "404.example": "HTTP 404", "far.example": "refused: redirected to another host"})
    claims = {fp(1): contact("boom.example"), fp(2): contact("ok.example"), fp(3): contact("404.example"),
              fp(4): contact("far.example"), fp(5): contact("dns.example", "dns-rsa")}
    done: list[tuple[int, int]] = []
    with caplog.at_level(logging.WARNING, logger="agent.aroi.refresh"):
        report = verifier(tmp_path, served).refresh(claims, T0, progress=lambda *pair: done.append(pair))
    book = ProofCache(tmp_path / "aroi-proofs.json").book()
    broken = book.proofs[("boom.example", "uri-rsa")]
    assert broken.error is not None and "the checker broke" in broken.error and not broken.refused
    assert broken.checked_at == T0
    assert book.verdict(fp(1), claims[fp(1)]).outcome is Outcome.FETCH_FAILED
    assert book.verdict(fp(2), claims[fp(2)]).outcome is Outcome.VERIFIED
    assert book.verdict(fp(4), claims[fp(4)]).outcome is Outcome.REFUSED
    assert book.verdict(fp(5), claims[fp(5)]).outcome is Outcome.NOT_LISTED
    assert (report.checked, report.verified, report.failed, report.refused) == (5, 1, 2, 1)
    assert [record for record in caplog.records if "boom.example" in record.getMessage()]
    assert done[0] == (0, 5) and done[-1] == (5, 5) and len(done) == 6


def test_due_checks_run_concurrently(tmp_path):
    served = Served({f"d{number}.example": {fp(number)} for number in range(8)}, delay=0.3)
    claims = {fp(number): contact(f"d{number}.example") for number in range(8)}
    report = verifier(tmp_path, served, concurrency=8).refresh(claims, T0)
    assert report.checked == 8 and report.verified == 8
    assert report.duration_seconds < 1.5  # one after another: 2.4 s
    assert served.most_at_once > 1


def test_concurrency_is_bounded_by_the_setting(tmp_path):
    served = Served({f"d{number}.example": {fp(number)} for number in range(6)}, delay=0.05)
    claims = {fp(number): contact(f"d{number}.example") for number in range(6)}
    verifier(tmp_path, served, concurrency=2).refresh(claims, T0)
    assert served.most_at_once <= 2 and len(served.calls) == 6


def test_a_second_round_checks_only_what_is_due(tmp_path):
    served = Served({"a.example": {fp(1)}, "b.example": "timed out"})
    claims = {fp(1): contact("a.example"), fp(2): contact("b.example")}
    check = verifier(tmp_path, served, refresh_hours=12, retry_hours=2)
    check.refresh(claims, T0)
    assert check.refresh(claims, T0 + HOUR).checked == 0
    assert check.refresh(claims, T0 + 3 * HOUR).checked == 1
    assert len(served.calls) == 3 and served.calls[2] == ("b.example", "uri-rsa")


def test_claims_of_reads_the_newest_descriptor_per_relay():
    @dataclass
    class Descriptor:
        fingerprint: str
        contact: str | bytes | None
        published: datetime

    day = datetime(2024, 5, 1)
    descriptors = [Descriptor(fp(1).lower(), b"url:new.example proof:uri-rsa ciissversion:2", day),
                   Descriptor(fp(1), "url:old.example proof:uri-rsa ciissversion:2", day - timedelta(hours=18)),
                   Descriptor(fp(2), None, day)]
    claims = claims_of(descriptors)
    assert claims.keys() == {fp(1), fp(2)}
    assert claims[fp(1)].claims_domain == "new.example" and claims[fp(2)].status == "no_contact"


def test_claims_of_real_descriptors():
    from agent.parse.fastdesc import parse_server_descriptors

    descriptors = parse_server_descriptors(read_data("2020-02-29-10-05-00-server-descriptors.xz"))
    claims = claims_of(descriptors)
    assert len(claims) == len({descriptor.fingerprint for descriptor in descriptors})
    for descriptor in descriptors[:50]:
        assert claims[descriptor.fingerprint.upper()].raw == parse_contact(descriptor.contact).raw


# -- absences, pruning, the bound


def test_absent_since_keeps_the_first_absence_and_clears_when_back(tmp_path):
    cache = ProofCache(tmp_path / "proofs.json")
    cache.put(DomainProof("op.example", "uri-rsa", T0, listed=frozenset({fp(1), fp(2)})))
    cache.put(DomainProof("bad.example", "uri-rsa", T0, error="HTTP 500"))
    cache.note_consensus({fp(1), fp(9)}, T0 + 100)
    assert dict(cache.book().absent_since) == {fp(2): T0 + 100}
    cache.note_consensus({fp(1).lower()}, T0 + 200)
    assert dict(cache.book().absent_since) == {fp(2): T0 + 100}
    cache.note_consensus({fp(2).lower()}, T0 + 300)
    assert dict(cache.book().absent_since) == {fp(1): T0 + 300}
    cache.note_consensus({fp(1), fp(2)}, T0 + 400)
    assert dict(cache.book().absent_since) == {}


def test_prune_forgets_domains_unclaimed_for_a_week(tmp_path):
    cache = ProofCache(tmp_path / "proofs.json")
    cache.put(DomainProof("gone.example", "uri-rsa", T0, listed=frozenset({fp(1)})))
    cache.put(DomainProof("kept.example", "uri-rsa", T0, listed=frozenset({fp(2)})))
    cache.note_consensus(set(), T0)
    assert cache.book().absent_since.keys() == {fp(1), fp(2)}
    still = {fp(2): contact("kept.example")}
    cache.prune(still, T0 + FORGET_SECONDS - 1)
    assert cache.book().proofs.keys() == {("gone.example", "uri-rsa"), ("kept.example", "uri-rsa")}
    cache.prune(still, T0 + FORGET_SECONDS)
    assert cache.book().proofs.keys() == {("kept.example", "uri-rsa")}
    assert dict(cache.book().absent_since) == {fp(2): T0}
    # kept.example was claimed at the last prune: it stays a week from then, not from its check
    cache.prune({}, T0 + 2 * FORGET_SECONDS - 1)
    assert cache.book().proofs.keys() == {("kept.example", "uri-rsa")}
    cache.prune({}, T0 + 2 * FORGET_SECONDS)
    assert len(cache) == 0 and dict(cache.book().absent_since) == {}


def test_a_flood_of_domains_is_bounded_and_the_least_recently_claimed_go(tmp_path):
    cache = ProofCache(tmp_path / "proofs.json", max_entries=100)
    cache.put(DomainProof("operator.example", "uri-rsa", T0, listed=frozenset({fp(1)})))
    for number in range(1000):
        cache.put(DomainProof(f"flood{number}.example", "uri-rsa", T0 + 1 + number, error="HTTP 404"))
        if number % 10 == 0:  # the real operator keeps claiming its domain
            cache.prune({fp(1): contact("operator.example")}, T0 + 1 + number)
        assert len(cache) <= 100
    kept = cache.book().proofs.keys()
    assert ("operator.example", "uri-rsa") in kept and ("flood999.example", "uri-rsa") in kept
    assert ("flood0.example", "uri-rsa") not in kept and ("flood850.example", "uri-rsa") not in kept
    cache.save()
    assert len(ProofCache(cache.path, max_entries=10)) <= 10


# -- the file


def test_round_trip_through_the_file(tmp_path):
    path = tmp_path / "state" / "aroi-proofs.json"
    cache = ProofCache(path)
    proofs = [DomainProof("a.example", "uri-rsa", T0, listed=frozenset({fp(1), fp(2)}),
                          emails=frozenset({"ops@a.example"})),
              DomainProof("b.example", "dns-rsa", T0 + 5, listed=frozenset({fp(3)}), refuted=frozenset({fp(4)}),
                          dnssec="insecure"),
              DomainProof("c.example", "uri-rsa", T0 + 9, error="certificate verify failed"),
              DomainProof("d.example", "uri-rsa", T0 + 9, error="refused: 2 MiB", refused=True)]
    for proof in proofs:
        cache.put(proof)
    cache.note_consensus({fp(1)}, T0 + 60)
    cache.prune({fp(3): contact("b.example", "dns-rsa")}, T0 + 3 * 86400)
    cache.save()
    assert json.loads(path.read_bytes())["version"] == VERSION
    again = ProofCache(path)
    assert again.book() == cache.book()
    assert dict(again.book().absent_since) == {fp(2): T0 + 60, fp(3): T0 + 60}
    # when each proof was last claimed survives too: b.example outlives the others by the days since
    again.prune({}, T0 + FORGET_SECONDS + 9)
    assert again.book().proofs.keys() == {("b.example", "dns-rsa")}
    assert [path.name for path in path.parent.iterdir()] == ["aroi-proofs.json"]  # no temporary left


@pytest.mark.parametrize("content, problem", [
    (b"{\"version\": 1, \"proofs\": [", "Expecting"),
    (b"\xff\xfe not even UTF-8", "decode"),
    (b"[]", "expected a JSON object"),
    (json.dumps({"version": 99, "proofs": [], "absent_since": {}}).encode(), "layout version 99"),
    (json.dumps({"version": VERSION, "proofs": [{"domain": "a.example", "method": "uri-rsa", "checked_at": "noon",
                                                  "listed": [], "refuted": [], "error": None, "refused": False,
                                                  "dnssec": None, "emails": [], "last_claimed": 1}],
                 "absent_since": {}}).encode(), "proofs[0].checked_at"),
    (json.dumps({"version": VERSION, "proofs": [], "absent_since": {fp(1): True}}).encode(), "absent_since"),
    (b"[" * 100_000, "recursion"),
])
def test_a_damaged_file_is_set_aside_and_the_cache_starts_empty(tmp_path, caplog, content, problem):
    path = tmp_path / "aroi-proofs.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        cache = ProofCache(path)
    assert len(cache) == 0 and cache.book().proofs == {} and cache.book().absent_since == {}
    assert not path.exists()
    aside = list(tmp_path.glob("aroi-proofs.unreadable-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == content
    messages = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(messages) == 1 and str(path) in messages[0] and problem in messages[0]
    cache.put(DomainProof("a.example", "uri-rsa", T0))
    cache.save()
    assert len(ProofCache(path)) == 1


def test_the_book_is_a_snapshot(tmp_path):
    cache = ProofCache(tmp_path / "proofs.json")
    before = cache.book()
    cache.put(DomainProof("a.example", "uri-rsa", T0))
    assert before.proofs == {} and cache.book().proofs.keys() == {("a.example", "uri-rsa")}
    assert pickle.loads(pickle.dumps(cache.book())) == cache.book()  # and it pickles (backfill's processes)


# -- the background thread


def test_background_submit_returns_at_once_while_a_slow_check_runs(tmp_path, caplog):
    gate = threading.Event()
    served = Served({"slow.example": {fp(1)}, "second.example": {fp(2)}, "third.example": {fp(3)}}, gate=gate)
    background = BackgroundVerifier(verifier(tmp_path, served))
    try:
        started = time.monotonic()
        background.submit({fp(1): contact("slow.example")}, T0)
        assert served.started.wait(5)
        background.submit({fp(2): contact("second.example")}, T0 + 1)  # replaced by the next before it starts
        background.submit({fp(3): contact("third.example")}, T0 + 2)
        assert time.monotonic() - started < 0.5  # the check is held at the gate all the while
        assert background.busy and background.book().proofs == {}
        gate.set()
        deadline = time.monotonic() + 10
        while background.busy and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not background.busy
        assert served.calls == [("slow.example", "uri-rsa"), ("third.example", "uri-rsa")]
        assert background.book().proofs.keys() == {("slow.example", "uri-rsa"), ("third.example", "uri-rsa")}
        assert isinstance(background.last_report, RefreshReport) and background.last_report.checked == 1
    finally:
        gate.set()
        assert background.stop(5)
    assert not background._thread.is_alive()


def test_a_failing_round_does_not_end_the_thread(tmp_path, caplog):
    served = Served({"a.example": {fp(1)}})
    background = BackgroundVerifier(verifier(tmp_path, served))
    try:
        with caplog.at_level(logging.ERROR, logger="agent.aroi.refresh"):
            background.submit(None, T0)  # type: ignore[arg-type]  # a round that raises
            deadline = time.monotonic() + 5
            while not caplog.records and time.monotonic() < deadline:
                time.sleep(0.01)
        assert any("round failed" in record.getMessage() for record in caplog.records)
        background.submit({fp(1): contact("a.example")}, T0)
        deadline = time.monotonic() + 5
        while ("a.example", "uri-rsa") not in background.book().proofs and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ("a.example", "uri-rsa") in background.book().proofs
    finally:
        assert background.stop(5)


def test_stop_lets_the_checks_in_flight_finish_and_drops_the_rest(tmp_path):
    gate = threading.Event()
    served = Served({f"d{number}.example": {fp(number)} for number in range(5)}, gate=gate)
    background = BackgroundVerifier(verifier(tmp_path, served, concurrency=1))
    background.submit({fp(number): contact(f"d{number}.example") for number in range(5)}, T0)
    assert served.started.wait(5)
    assert not background.stop(0.05)  # held in flight at the gate
    gate.set()
    assert background.stop(5)
    assert len(served.calls) == 1
    assert background.last_report is not None and background.last_report.cancelled == 4
    assert len(ProofCache(tmp_path / "aroi-proofs.json")) == 1  # the finished check was saved


def test_note_consensus_through_the_background_verifier(tmp_path):
    served = Served({})
    check = verifier(tmp_path, served)
    check.cache.put(DomainProof("a.example", "uri-rsa", T0, listed=frozenset({fp(1)})))
    background = BackgroundVerifier(check)
    try:
        background.note_consensus(set(), T0 + 5)
        assert dict(background.book().absent_since) == {fp(1): T0 + 5}
    finally:
        assert background.stop(5)


def test_a_proof_listing_a_flood_of_fingerprints_keeps_the_claiming_ones_and_a_bounded_rest():
    from agent.aroi.refresh import MAX_UNCLAIMED_LISTED, kept_listed

    flood = frozenset(f"{index:040X}" for index in range(MAX_UNCLAIMED_LISTED + 500))
    claiming = [f"{MAX_UNCLAIMED_LISTED + 499:040X}", "F" * 40]  # the last of the flood, and one not listed
    kept = kept_listed(flood, claiming)
    assert len(kept) == MAX_UNCLAIMED_LISTED + 1 and claiming[0] in kept and "F" * 40 not in kept
    small = frozenset(list(flood)[:10])
    assert kept_listed(small, claiming) is small


def test_a_flood_claimed_this_round_does_not_push_out_an_operator_checked_before(tmp_path):
    cache = ProofCache(tmp_path / "proofs.json", max_entries=50)
    cache.put(DomainProof("operator.example", "uri-rsa", T0, listed=frozenset({fp(1)})))
    for number in range(200):  # all newer and claimed later than the operator, all verifying nobody
        cache.put(DomainProof(f"flood{number}.example", "uri-rsa", T0 + HOUR + number))
    assert ("operator.example", "uri-rsa") in cache.book().proofs and len(cache) <= 50


def test_a_proof_verifying_none_of_its_claimers_keeps_no_fingerprints(tmp_path):
    made_up = {f"{number:040X}" for number in range(100, 600)}
    served = Served({"hostile.example": made_up, "operator.example": {fp(1), fp(9)}})
    claims = {fp(2): contact("hostile.example"), fp(1): contact("operator.example")}
    checker = verifier(tmp_path, served)
    checker.refresh(claims, T0)
    book = checker.cache.book()
    assert book.proofs[("hostile.example", "uri-rsa")].listed == frozenset()
    assert book.domains() == {"operator.example"}
    assert book.listed_by("operator.example") == {fp(1), fp(9)}


@pytest.mark.parametrize("field_name, value", [("checked_at", 10**13), ("checked_at", -1), ("last_claimed", 2**70)])
def test_a_cache_file_with_impossible_times_is_set_aside(tmp_path, field_name, value):
    cache = ProofCache(tmp_path / "proofs.json")
    cache.put(DomainProof("operator.example", "uri-rsa", T0, listed=frozenset({fp(1)})))
    cache.save()
    document = json.loads(cache.path.read_text())
    document["proofs"][0][field_name] = value
    cache.path.write_text(json.dumps(document))
    assert len(ProofCache(cache.path)) == 0
    assert list(tmp_path.glob("proofs.unreadable-*"))  # set aside, not overwritten
