"""AROI checks (agent.checks.aroi) on real relays whose contact lines are rewritten to CIISS claims.

Named test_checks_*.py so the check registry's tests and docs/checks.md find the checks it fires.
Real data: the 2020-02-29 10:00 consensus and the server descriptors CollecTor archived at 10:05 (tests/conftest.py);
the relays below were picked by hand from them (all in the consensus unless said otherwise).
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

import pytest

from agent.checks.registry import Context
from agent.checks.run import run_checks
from agent.model.aroi import EMPTY, DomainProof, ProofBook
from agent.model.authorities import Authority
from agent.model.snapshot import Snapshot
from agent.parse.fastdesc import ServerDescriptor
from tests.unit.test_checks import THRESHOLDS

NOW = datetime(2020, 2, 29, 11)
IMPERSONATES, STALE, FAMILY = "TorRelayImpersonatesOperator", "TorOperatorProofStale", "TorOperatorFamilyInconsistent"
AROI_CHECKS = (IMPERSONATES, STALE, FAMILY)
# Five relays named "king", one mutual family (root 03DF...), up ~6 days; published 09:48-09:50.
KING = ("03DFD895720D49FE2388D79AE334FED3E914551B", "095B1C3E3540733A4C2A4DB028088A9191558BCB",
        "1802A9AB44F67F0C1E73EA30F3A221A9A253FD5F", "E386C276BF84460F1571B6479636B7FBD2DE1ACB",
        "F190441775DA60E15DB30C72C5C764366AABBD8C")
PANOPTICON = "03997A0A8F34B1904B6F8F42E075A8689C4B0C51"  # no family line; published 09:02:23, up ~12 days
CA0AKATALA = "D111CA928084A907D8BE9B3F1E1D05227A5FBBE0"  # published 09:06:43, up 62 s: a relay just started
NODEVINE = ("315F0BF355D96D678267D7B708127ACBC87BA7E9", "9A3876D36DE68C111289536D5466621632A601A7",
            "EC5ED2968962E6E44F412214B72D73EA32AC45E1")  # nodvrelay10/22/31: one mutual family
SAVANNA, UNNAMED = "30D457317789E20449CBC12E02F5658FA23E0BEE", "5DC945CE8FB2A37E6E2795ECD2709BB21F8714B0"  # no family
NIFTY = ("0B3C8C2B2B1A1CA4429B9649F533BEB4D7470AEA", "34F5D33DD46D7FBD380B11567132A18773BC4F57",
         "56850752096EE63711F99B2FA5A812477561697D", "A14F90953AE9462CF3A862C4CA95F73BF94A6F8B")  # one family
SNAP = "3406B08E8B5ACB9AA86B38F14725240C948F16C8"  # snap277, no family line
DONATE = "0F45FCAC70DA935F5367A9B94264D1C46707E947"  # donateDonationbased: a descriptor, but not in the consensus


def unix(moment: datetime) -> int:
    return calendar.timegm(moment.timetuple())


CHECKED = unix(datetime(2020, 2, 29, 9, 55))  # after every relay above started


def claim(domain: str, method: str = "uri-rsa") -> bytes:
    return f"email:tor[]{domain} url:https://{domain} proof:{method} ciissversion:2 hoster:example".encode()


def rewritten(descriptor: ServerDescriptor, **changes) -> ServerDescriptor:
    """A copy of a parsed descriptor with some fields replaced (fastdesc's descriptors have slots, no dataclass)."""
    copy = ServerDescriptor()
    for name in ServerDescriptor.__slots__:
        setattr(copy, name, changes.get(name, getattr(descriptor, name)))
    return copy


def claiming(descriptors, claims: dict[str, bytes]) -> list:
    """The real descriptors, those of ``claims``' fingerprints with that contact line instead of theirs."""
    assert set(claims) <= {d.fingerprint for d in descriptors}
    return [rewritten(d, contact=claims[d.fingerprint]) if d.fingerprint in claims else d for d in descriptors]


def proof(domain: str, listed=(), method: str = "uri-rsa", checked_at: int = CHECKED, **fields) -> DomainProof:
    return DomainProof(domain, method, checked_at, frozenset(listed), **fields)


def book(*proofs: DomainProof, absent_since: dict[str, int] | None = None) -> ProofBook:
    return ProofBook({(p.domain, p.method): p for p in proofs}, absent_since or {})


def findings(descriptors, proofs: ProofBook, check_id: str, consensus=None, **thresholds):
    import dataclasses

    snapshot = Snapshot("test", NOW, NOW, [Authority("auth0", "0" * 40, "127.0.0.1", 1)], {}, [],
                        server_descriptors=list(descriptors), archived_consensus=consensus)
    context = Context(snapshot, NOW, dataclasses.replace(THRESHOLDS, **thresholds), proofs=proofs)
    return [f for f in run_checks(context) if f.check == check_id]


def quiet(descriptors, proofs: ProofBook, consensus) -> dict[str, list]:
    """Every AROI check's findings, by check: {} when all three stay silent."""
    found = {check_id: findings(descriptors, proofs, check_id, consensus) for check_id in AROI_CHECKS}
    return {check_id: hits for check_id, hits in found.items() if hits}


@pytest.fixture(scope="module")
def by_fingerprint(descriptors):
    return {d.fingerprint: d for d in descriptors}


def test_the_hand_picked_relays_are_what_the_tests_say(descriptors, hour10, by_fingerprint):
    from agent.model.entries import entries_of
    from agent.model.family import declared, effective_families

    entries = entries_of(hour10)
    picked = (*KING, PANOPTICON, CA0AKATALA, *NODEVINE, SAVANNA, UNNAMED, *NIFTY, SNAP)
    assert all(fp in entries and fp in by_fingerprint for fp in picked)
    assert DONATE in by_fingerprint and DONATE not in entries
    family = effective_families({d.fingerprint: declared(d) for d in descriptors})
    assert {family[fp] for fp in KING} == {KING[0]} and {family[fp] for fp in NODEVINE} == {NODEVINE[0]}
    assert {family[fp] for fp in NIFTY} == {NIFTY[0]}
    assert not any(declared(by_fingerprint[fp]) for fp in (PANOPTICON, SAVANNA, UNNAMED, SNAP))
    assert by_fingerprint[CA0AKATALA].uptime < 120


# --- TorRelayImpersonatesOperator ---------------------------------------------------------------------

def king_and(descriptors, extra: dict[str, bytes]) -> list:
    return claiming(descriptors, {**{fp: claim("king.example") for fp in KING}, **extra})


def test_a_relay_claiming_a_verified_operator_that_does_not_list_it(descriptors, hour10):
    relays = king_and(descriptors, {PANOPTICON: claim("king.example")})
    proofs = book(proof("king.example", KING))
    [found] = findings(relays, proofs, "TorRelayImpersonatesOperator", hour10)
    assert found.subjects == {"relay": PANOPTICON, "domain": "king.example"}
    assert str(found.severity) == "warning" and found.values == {"listed": len(KING), "checked_at": CHECKED}
    assert found.description.startswith(f"panopticon (${PANOPTICON}) claims operator king.example")
    assert "uri-rsa proof, checked 2020-02-29 09:55 UTC, does not list it (its proofs list 5 other relays)" \
        in found.description
    assert "https://king.example/.well-known/tor-relay/rsa-fingerprint.txt" in found.description
    # The listed relays are verified and one family: nothing else to say.
    assert findings(relays, proofs, FAMILY, hour10) == [] and findings(relays, proofs, STALE, hour10) == []


def test_each_impersonating_relay_is_told_once(descriptors, hour10):
    relays = king_and(descriptors, {PANOPTICON: claim("king.example"), SAVANNA: claim("king.example"),
                                    UNNAMED: claim("other.example")})
    proofs = book(proof("king.example", KING), proof("other.example", (SNAP,)))
    found = findings(relays, proofs, IMPERSONATES, hour10)
    assert sorted(tuple(f.subjects.values()) for f in found) == sorted(
        [(PANOPTICON, "king.example"), (SAVANNA, "king.example"), (UNNAMED, "other.example")])


def test_a_dns_rsa_claim_is_told_only_once_its_lookup_answered(descriptors, hour10):
    relays = king_and(descriptors, {PANOPTICON: claim("king.example", "dns-rsa")})
    looked_up = book(proof("king.example", KING),
                     proof("king.example", method="dns-rsa", refuted=frozenset({PANOPTICON})))
    [found] = findings(relays, looked_up, IMPERSONATES, hour10)
    assert found.subjects == {"relay": PANOPTICON, "domain": "king.example"}
    assert f"a TXT record at {PANOPTICON}.king.example" in found.description
    not_yet = book(proof("king.example", KING), proof("king.example", method="dns-rsa"))
    assert findings(relays, not_yet, IMPERSONATES, hour10) == []


def test_no_impersonation_without_a_readable_proof_of_a_verified_operator(descriptors, hour10):
    relays = king_and(descriptors, {PANOPTICON: claim("king.example")})
    assert quiet(relays, EMPTY, hour10) == {}  # proofs not checked (backfill)
    # The proof could not be read, or was refused: unknown, not impersonation.
    for failure in ({"error": "HTTP 503"}, {"error": "redirected off the domain", "refused": True}):
        assert quiet(relays, book(proof("king.example", **failure)), hour10) == {}
    # The relay's own proof type could not be read, though the domain verifies relays by another.
    dns = king_and(descriptors, {PANOPTICON: claim("king.example", "dns-rsa")})
    unreadable = book(proof("king.example", KING), proof("king.example", method="dns-rsa", error="SERVFAIL"))
    assert findings(dns, unreadable, IMPERSONATES, hour10) == []
    # A domain that verifies nobody: every claim on it is merely unverified.
    assert quiet(relays, book(proof("king.example")), hour10) == {}


def test_only_relays_in_the_consensus_are_judged(descriptors, hour10):
    relays = king_and(descriptors, {DONATE: claim("king.example")})
    proofs = book(proof("king.example", KING))
    assert findings(relays, proofs, IMPERSONATES, hour10) == []
    assert quiet(relays, proofs, None) == {}  # no accepted consensus this period: no relay to judge


def test_a_proof_checked_before_the_relay_started_may_predate_it(descriptors, hour10, by_fingerprint):
    fresh = by_fingerprint[CA0AKATALA]
    started = unix(fresh.published) - fresh.uptime
    relays = king_and(descriptors, {CA0AKATALA: claim("king.example")})
    before = book(proof("king.example", KING, checked_at=started - 60))
    assert findings(relays, before, IMPERSONATES, hour10) == []  # a genuine new relay, awaiting the refresh
    after = book(proof("king.example", KING, checked_at=started + 60))
    assert [f.subjects["relay"] for f in findings(relays, after, IMPERSONATES, hour10)] == [CA0AKATALA]


def test_a_republished_descriptor_does_not_quiet_a_running_impersonator(descriptors, hour10, by_fingerprint):
    # tor republishes every 18 hours: a proof checked before this descriptor but while the relay ran still counts,
    # else the finding would resolve and fire again with each republication.
    relay = by_fingerprint[PANOPTICON]
    checked = unix(relay.published) - 3600
    assert checked > unix(relay.published) - relay.uptime
    relays = king_and(descriptors, {PANOPTICON: claim("king.example")})
    found = findings(relays, book(proof("king.example", KING, checked_at=checked)), IMPERSONATES, hour10)
    assert [f.subjects["relay"] for f in found] == [PANOPTICON]


# --- TorOperatorProofStale ----------------------------------------------------------------------------

def test_a_proof_listing_relays_long_absent(descriptors, hour10):
    relays = king_and(descriptors, {})
    gone, recent = "E" * 40, "F" * 40
    absent = {DONATE: unix(NOW - timedelta(days=40)), recent: unix(NOW - timedelta(days=10)),
              KING[0]: unix(NOW - timedelta(days=60))}  # KING[0] is back in the consensus: not stale
    proofs = book(proof("king.example", (*KING, DONATE, recent, gone)), absent_since=absent)
    [found] = findings(relays, proofs, "TorOperatorProofStale", hour10)
    assert found.subjects == {"domain": "king.example"} and str(found.severity) == "info"
    assert found.values == {"absent": 1, "listed": len(KING) + 3}
    assert f"${DONATE}" in found.description and recent not in found.description and KING[0] not in found.description
    assert "for over 30 days (the longest since 2020-01-20 11:00 UTC)" in found.description
    [shorter] = findings(relays, proofs, STALE, hour10, operator_proof_absent_days=5)
    assert shorter.values == {"absent": 2, "listed": len(KING) + 3}
    # The fingerprint never noticed absent (gone) is the verifier's to date, not the check's.
    assert gone not in shorter.description


def test_a_stale_proof_names_at_most_ten_relays(descriptors, hour10):
    gone = [f"{i:X}" * 40 for i in range(12)]
    proofs = book(proof("king.example", (*KING, *gone)),
                  absent_since={fp: unix(NOW - timedelta(days=31)) for fp in gone})
    [found] = findings(king_and(descriptors, {}), proofs, STALE, hour10)
    assert found.values["absent"] == 12 and "and 2 more" in found.description
    assert sum(f"${fp}" in found.description for fp in gone) == 10


def test_no_stale_proof_without_a_readable_proof(descriptors, hour10):
    relays = king_and(descriptors, {})
    long_ago = {DONATE: unix(NOW - timedelta(days=90))}
    assert findings(relays, EMPTY, STALE, hour10) == []
    unreadable = book(proof("king.example", (*KING, DONATE), error="TLS: certificate expired"), absent_since=long_ago)
    assert findings(relays, unreadable, STALE, hour10) == []


# --- TorOperatorFamilyInconsistent --------------------------------------------------------------------

def test_an_operator_split_across_families(descriptors, hour10):
    members = (*NODEVINE, SAVANNA, UNNAMED)
    relays = claiming(descriptors, {fp: claim("split.example") for fp in members})
    [found] = findings(relays, book(proof("split.example", members)), "TorOperatorFamilyInconsistent", hour10)
    assert found.subjects == {"domain": "split.example"} and str(found.severity) == "info"
    assert found.values == {"relays": 5, "families": 3, "undeclared": 2}
    assert "2 declare no family at all; the largest holds 3 of them" in found.description
    assert f"savanna (${SAVANNA})" in found.description and NODEVINE[0] not in found.description


def test_two_relays_of_one_operator_without_a_family_line(descriptors, hour10):
    # tor asks an operator of more than one relay to declare MyFamily: two bare relays are two families.
    relays = claiming(descriptors, {fp: claim("bare.example") for fp in (SAVANNA, UNNAMED)})
    [found] = findings(relays, book(proof("bare.example", (SAVANNA, UNNAMED))), FAMILY, hour10)
    assert found.values == {"relays": 2, "families": 2, "undeclared": 2}


def test_one_family_holding_two_verified_operators(descriptors, hour10):
    claims = {**{fp: claim("a.example") for fp in NIFTY[:2]}, **{fp: claim("b.example") for fp in NIFTY[2:]}}
    relays = claiming(descriptors, claims)
    proofs = book(proof("a.example", NIFTY[:2]), proof("b.example", NIFTY[2:]))
    [found] = findings(relays, proofs, FAMILY, hour10)  # each operator's own relays are one family
    assert found.subjects == {"family": NIFTY[0]} and found.values == {"domains": 2, "relays": 4}
    assert found.description.startswith(f"the family of ${NIFTY[0]} (4 relays) holds verified relays of 2 operators")


def test_consistent_families_and_small_operators_stay_quiet(descriptors, hour10):
    consistent = king_and(descriptors, {})
    assert findings(consistent, book(proof("king.example", KING)), FAMILY, hour10) == []
    single = claiming(descriptors, {SNAP: claim("solo.example")})
    assert quiet(single, book(proof("solo.example", (SNAP,))), hour10) == {}
    members = (*NODEVINE, SAVANNA, UNNAMED)
    split = claiming(descriptors, {fp: claim("split.example") for fp in members})
    proofs = book(proof("split.example", members))
    assert findings(split, proofs, FAMILY, hour10, operator_family_min_relays=6) == []
    assert findings(split, EMPTY, FAMILY, hour10) == []
    # Only verified relays count: the bare relays claim split.example, but its proof lists the family alone.
    assert findings(split, book(proof("split.example", NODEVINE)), FAMILY, hour10) == []
