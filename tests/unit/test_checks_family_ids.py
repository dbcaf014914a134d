"""tor 0.4.9 family IDs in the family hygiene: the model, the checks, the tor_operator series, subscriptions.

Named test_checks_*.py so docs/checks.md finds the checks it fires. Real data: the two relays of
tests/data/server-descriptors-family-cert-tor-0.4.9 share one FamilyId and have no MyFamily line; other
descriptors carry FamilyCert values as agent.parse.familycert gives them (its own tests are
test_familycert.py and test_fuzz_familycert.py).
"""

from __future__ import annotations

from datetime import datetime, timezone
from types import SimpleNamespace

from stem.descriptor.networkstatus import NetworkStatusDocumentV3

from agent.alerts.engine import AlertBook, SuppressionPolicy
from agent.checks.registry import Context
from agent.checks.run import run_checks
from agent.metrics.period import family_points
from agent.metrics.relays import _families
from agent.model.authorities import Authority
from agent.model.family import (
    BAD_SIGNATURE,
    OTHER_IDENTITY,
    FamilyCert,
    broken_pairs,
    effective_families,
    operator_families,
    operator_key,
)
from agent.model.points import point
from agent.model.snapshot import Snapshot
from agent.parse.fastdesc import parse_server_descriptors
from agent.pipeline.state import State
from agent.subscriptions.events import conditions, effective_family, relay_status
from agent.subscriptions.store import SubscriptionStore
from agent.subscriptions.watch import RelayWatch
from tests.unit.familycerts import REAL, REAL_RELAY1, REAL_RELAY2
from tests.unit.test_checks import THRESHOLDS
from tests.unit.test_subscriptions import SETTINGS, consensus_of, entry, snapshot_of

CONTACT = "op@example.org"
BEFORE = datetime(2026, 12, 6, 18)  # the real certs are valid (until 2027-01-05 18:00)
AFTER = datetime(2027, 1, 5, 19)  # ... and expired
A, B, C, D = "A" * 40, "B" * 40, "C" * 40, "D" * 40
ID1, ID2 = "I" * 43, "J" * 43
FAR = 2 ** 32  # unix seconds: certs that never expire in these tests


def unix(moment: datetime) -> int:
    return int(moment.replace(tzinfo=timezone.utc).timestamp())


def real(contact: str = CONTACT, relay1_family: set | None = None) -> list:
    """The real pair, with one contact line (as one operator's) and optionally a MyFamily line for relay1."""
    relays = parse_server_descriptors(REAL.read_bytes())
    for relay in relays:
        relay.contact = contact.encode()
    if relay1_family is not None:
        relays[0].family = relay1_family
    return relays


def fake(fingerprint: str, *certs: FamilyCert, family: tuple = (), contact: str = CONTACT):
    return SimpleNamespace(fingerprint=fingerprint, nickname="n" + fingerprint[0], family={f"${m}" for m in family},
                           contact=contact.encode(), published=datetime(2026, 12, 1), family_certs=certs)


def consensus_at(hour: int):
    """A consensus of relays A and B valid from ``hour``:00 on 2026-11-24."""
    return NetworkStatusDocumentV3.create({"valid-after": f"2026-11-24 {hour:02}:00:00",
                                           "fresh-until": f"2026-11-24 {hour:02}:59:59",
                                           "valid-until": f"2026-11-25 {hour:02}:00:00",
                                           "server-versions": "0.4.8.12"}, routers=[entry(A), entry(B)])


def findings(descriptors, check_id: str, now: datetime):
    snapshot = Snapshot("test", now, now, [Authority("auth0", "0" * 40, "127.0.0.1", 1)], {}, [],
                        server_descriptors=list(descriptors))
    return [f for f in run_checks(Context(snapshot, now, THRESHOLDS)) if f.check == check_id]


# --- the model ----------------------------------------------------------------------------------------

def test_a_shared_family_id_makes_one_family_until_the_certs_expire():
    relays = real(relay1_family={f"${REAL_RELAY2}"})  # one-sided MyFamily besides the shared ID
    [group] = operator_families(relays, unix(BEFORE))
    assert (group.relays, group.undeclared, group.not_mutual) == (tuple(sorted((REAL_RELAY1, REAL_RELAY2))), (), ())
    assert group.certified == group.relays and group.cert_problems == ()
    assert broken_pairs(relays, unix(BEFORE)) == set()
    assert broken_pairs(relays, unix(AFTER)) == {(REAL_RELAY1, REAL_RELAY2)}
    [expired] = operator_families(relays, unix(AFTER))
    assert expired.undeclared == expired.relays and expired.certified == ()
    assert expired.cert_problems == (("expired", expired.relays),)


def test_effective_families_join_relays_by_id_transitively():
    families = {A: {B}, B: {A}, C: set(), D: set()}
    assert effective_families(families) == {A: A, B: A, C: C, D: D}
    assert effective_families(families, {B: {ID1}, C: {ID1, ID2}, D: {ID2}}) == {A: A, B: A, C: A, D: A}
    assert _families([fake(A, FamilyCert(ID1, FAR)), fake(B), fake(C, FamilyCert(ID1, FAR))]) == [A, None, A]


# --- the checks ---------------------------------------------------------------------------------------

def test_expired_certs_are_one_warning_per_operator():
    [finding] = findings(real(), "TorFamilyCertInvalid", AFTER)
    assert str(finding.severity) == "warning"
    assert finding.subjects == {"operator": operator_key(CONTACT), "problem": "expired"}
    assert finding.values == {"relays": 2}
    assert finding.description.startswith(f"operator '{CONTACT}': relay2 (${REAL_RELAY2}), relay1 (${REAL_RELAY1}): "
                                          "family-cert: expired 2027-01-05T18Z, so tor does not count")


def test_relays_sharing_a_family_id_are_neither_one_sided_nor_undeclared():
    relays = real(relay1_family={f"${REAL_RELAY2}"})
    assert findings(relays, "TorFamilyNotMutual", BEFORE) == []
    assert findings(relays, "TorFamilyUndeclared", BEFORE) == []
    assert findings(relays, "TorFamilyCertInvalid", BEFORE) == []
    assert len(findings(relays, "TorFamilyNotMutual", AFTER)) == 1  # once expired, only the MyFamily line is left
    assert len(findings(relays, "TorFamilyUndeclared", AFTER)) == 1


def test_invalid_certs_are_one_finding_per_problem_kind_and_operator():
    relays = [fake(A, FamilyCert(ID1, FAR, BAD_SIGNATURE)), fake(B, FamilyCert(ID1, FAR, BAD_SIGNATURE)),
              fake(C, FamilyCert(ID1, FAR, OTHER_IDENTITY, "ed25519 identity x")), fake(D, FamilyCert(ID1, FAR)),
              fake("E" * 40, FamilyCert(ID1, FAR, BAD_SIGNATURE), contact="none")]  # no distinctive contact
    found = {tuple(sorted(f.subjects.items())): f for f in findings(relays, "TorFamilyCertInvalid", BEFORE)}
    operator = operator_key(CONTACT)
    assert set(found) == {(("operator", operator), ("problem", BAD_SIGNATURE)),
                          (("operator", operator), ("problem", OTHER_IDENTITY)),
                          (("problem", BAD_SIGNATURE), ("relay", "E" * 40))}
    assert found[(("operator", operator), ("problem", BAD_SIGNATURE))].values == {"relays": 2}
    assert "family-cert: certifies another identity (ed25519 identity x)" in \
        found[(("operator", operator), ("problem", OTHER_IDENTITY))].description
    [group] = [g for g in operator_families(relays, unix(BEFORE)) if g.contact == CONTACT.lower()]
    assert group.certified == (D,) and group.undeclared == (A, B, C, D)  # D holds the ID alone


def test_a_cert_expiring_within_seven_days_is_told_as_info():
    now = unix(BEFORE)
    relays = [fake(A, FamilyCert(ID1, now + 3 * 86400)), fake(B, FamilyCert(ID1, now + 8 * 86400))]
    [finding] = findings(relays, "TorFamilyCertExpiring", BEFORE)
    assert str(finding.severity) == "info" and finding.subjects == {"operator": operator_key(CONTACT)}
    assert finding.values == {"relays": 1} and "family-cert: expires 2026-12-09T18Z" in finding.description
    assert findings(relays, "TorFamilyCertInvalid", BEFORE) == []
    assert findings(real(), "TorFamilyCertExpiring", datetime(2026, 12, 30, 18)) != []
    assert findings(real(), "TorFamilyCertExpiring", datetime(2026, 12, 28, 18)) == []


# --- the tor_operator series --------------------------------------------------------------------------

def test_the_operator_series_count_certified_invalid_and_expiring_relays():
    now = unix(BEFORE)
    relays = [fake(A, FamilyCert(ID1, FAR)), fake(B, FamilyCert(ID1, now + 86400)),
              fake(C, FamilyCert(ID1, FAR, BAD_SIGNATURE), FamilyCert(ID2, now - 1))]
    tags = {"group": "contact", "operator_id": operator_key(CONTACT), "operator": CONTACT}
    [written] = family_points(relays, [point("tor_operator", tags, {"relays": 3}, now)], now)
    assert written.fields == {"family_not_mutual": 0, "family_undeclared": 1, "family_cert_relays": 2,
                              "family_cert_invalid": 1, "family_cert_expiring": 1}


# --- subscriptions ------------------------------------------------------------------------------------

def test_a_family_subscription_covers_relays_sharing_an_id():
    descriptors = {A: fake(A, FamilyCert(ID1, FAR)), B: fake(B, FamilyCert(ID1, FAR)), C: fake(C)}
    assert effective_family(A, descriptors, 0) == {A, B}
    assert effective_family(A, descriptors, FAR + 1) == {A}  # expired: no longer one family


def test_a_relay_whose_cert_stops_verifying_while_siblings_keep_the_id_is_a_broken_family():
    consensus = consensus_of(entry(A), entry(B))
    descriptors = {A: fake(A, FamilyCert(ID1, FAR, BAD_SIGNATURE)), B: fake(B, FamilyCert(ID1, FAR))}
    status = relay_status(A, consensus, descriptors, [], [], now=0)
    assert status.family_ids == (ID1,)
    [condition] = [c for c in conditions(status, [], consensus, SETTINGS, 0) if c.id == "TorRelayFamilyBroken"]
    assert f"is out of its family: family ID {ID1}: its family-cert: signature does not verify, while 1 other " \
           "relays keep it" in condition.description
    assert relay_status(B, consensus, descriptors, [], [], now=0).family_ids_lost == ()
    alone = {A: descriptors[A]}  # no sibling keeps the ID: the family is gone, not broken
    assert relay_status(A, consensus, alone, [], [], now=0).family_ids_lost == ()


def test_a_watched_relay_whose_family_cert_vanishes_is_told_until_it_is_back(tmp_path):
    state = State(tmp_path)
    SubscriptionStore(state.db).add_active(CONTACT, "family", B, 0)
    watch = RelayWatch(state.db, SETTINGS)
    hours = iter(range(12, 24))

    def alerts(*descriptors):
        """One period later each time: what it remembers comes from the periods before."""
        consensus = consensus_at(next(hours))
        return [(a.id, a.subjects["relay"]) for a in watch.alerts(snapshot_of(consensus, descriptors), 0)]

    assert alerts(fake(A, FamilyCert(ID1, FAR)), fake(B, FamilyCert(ID1, FAR))) == []
    assert alerts(fake(A), fake(B, FamilyCert(ID1, FAR))) == [("TorRelayFamilyBroken", A)]  # A's cert vanished
    assert alerts() == [("TorRelayFamilyBroken", A)]  # a period without descriptors keeps it
    assert alerts(fake(A), fake(B, FamilyCert(ID1, FAR))) == [("TorRelayFamilyBroken", A)]  # still remembered
    [alert] = watch.alerts(snapshot_of(consensus_at(next(hours)), [fake(A), fake(B, FamilyCert(ID1, FAR))]), 0)
    assert f"family ID {ID1}: its family-cert for it is gone, while 1 other relays keep it" in alert.description
    assert alerts(fake(A, FamilyCert(ID1, FAR)), fake(B, FamilyCert(ID1, FAR))) == []  # back


def test_the_family_alert_fires_and_resolves_through_the_engine(tmp_path):
    state = State(tmp_path)
    SubscriptionStore(state.db).add_active(CONTACT, "family", B, 0)
    watch, book = RelayWatch(state.db, SETTINGS), AlertBook(state.db)
    policy = SuppressionPolicy({"info": 24, "warning": 4, "critical": 0}, {})
    consensus = consensus_of(entry(A), entry(B))

    def advance(descriptors, now):
        alerts = watch.alerts(snapshot_of(consensus, descriptors), now)
        with state.db:
            return [(n.alert.id, n.status) for n in book.advance(alerts, now, policy,
                                                                  scope=lambda alert: alert.recipient is not None)]

    whole = [fake(A, FamilyCert(ID1, FAR)), fake(B, FamilyCert(ID1, FAR))]
    broken = [fake(A, FamilyCert(ID1, FAR, BAD_SIGNATURE)), fake(B, FamilyCert(ID1, FAR))]
    assert advance(whole, 0) == []
    assert advance(broken, 3600) == [] and advance(broken, 7200) == []
    assert advance(broken, 10800) == [("TorRelayFamilyBroken", "firing")]
    assert advance(whole, 14400) == [("TorRelayFamilyBroken", "resolved")]
