"""Family hygiene (agent.checks.family and the TorRelayFamilyBroken subscription alert).

Named test_checks_*.py so the check registry's tests and docs/checks.md find the checks it fires.
Real data: tests/data/2020-02-29-10-05-00-server-descriptors.xz, the 587 descriptors (576 relays) CollecTor
archived in five minutes; most relays their family lines name did not publish then, so few pairs can be judged.
"""

from __future__ import annotations

import io
from datetime import datetime
from functools import cache
from types import SimpleNamespace

import pytest
import stem.descriptor
from hypothesis import given, settings
from hypothesis import strategies as st
from stem.descriptor.server_descriptor import RelayDescriptor

from agent.alerts.engine import AlertBook, SuppressionPolicy
from agent.checks.registry import Context
from agent.checks.run import run_checks
from agent.model.authorities import Authority
from agent.model.family import (
    broken_pairs,
    declared,
    distinctive,
    normalised_contact,
    operator_families,
    operator_key,
)
from agent.model.snapshot import Snapshot
from agent.pipeline.state import State
from agent.subscriptions.events import conditions, relay_status
from agent.subscriptions.store import SubscriptionStore
from agent.subscriptions.watch import RelayWatch
from tests.conftest import parse_data, read_data
from tests.unit.test_checks import THRESHOLDS
from tests.unit.test_subscriptions import SETTINGS, consensus_of, entry, snapshot_of

REAL = "2020-02-29-10-05-00-server-descriptors.xz"
NOW = datetime(2020, 2, 29, 11)
A, B, C, D = "A" * 40, "B" * 40, "C" * 40, "D" * 40
# Hand-checked in the file: each lister's family line names the relay; the listed relay's line does not name it
# back (anonduke and Netwerxexitlux0 have no family line; JollyJumper lists 825116AC... and itself only).
DEXTER, ANONDUKE = "3BADB3EFFB87534736BFAC9A2024AB78401BDBC3", "FAD823A2AA7400D4A8107D7CD83050EEBB7A51FE"
NETWERX_USA, NETWERX_LUX = "8D0144F44618C8D627090CEDF0C91FB0B98DFA26", "486981565B6631A5ED35703DA7E44C217B4D5715"
RANTANPLAN, JOLLYJUMPER = "E71256707BF898C2AAE658C212A2F68E714B6AB6", "D2AD675448BFA074BA8F0137511AB306A3271FA6"
CADORY = ("53E711E01004A1C167F6BDF40C6D281B0C87760B", "DD19B82DB0D4BF41D68B2EC0D838D5D691B66185")


@cache
def real() -> tuple:
    return tuple(parse_data("server-descriptors", REAL))


def snapshot(descriptors) -> Snapshot:
    return Snapshot("test", NOW, NOW, [Authority("auth0", "0" * 40, "127.0.0.1", 1)], {}, [],
                    server_descriptors=list(descriptors))


def findings(descriptors, check_id: str):
    return [f for f in run_checks(Context(snapshot(descriptors), NOW, THRESHOLDS)) if f.check == check_id]


def made(fingerprint: str, family: str | None = None, contact: str | None = "op@example.org",
         nickname: str | None = None, published: str = "2020-02-29 10:00:00"):
    """A stem descriptor (unsigned) with a raw family line, as a relay could publish it."""
    fields = {"router": f"{nickname or 'relay' + fingerprint[0]} 10.0.0.1 9001 0 0", "published": published,
              "fingerprint": " ".join(fingerprint[i:i + 4] for i in range(0, 40, 4))}
    if contact is not None:
        fields["contact"] = contact
    if family is not None:
        fields["family"] = family
    return RelayDescriptor.create(fields, validate=False)


# --- real descriptors ---------------------------------------------------------------------------------

def test_real_descriptors_have_three_one_sided_declarations():
    assert len(real()) == 587 and len({d.fingerprint for d in real()}) == 576
    assert sum(1 for d in real() if d.family) == 126
    assert broken_pairs(real()) == {(DEXTER, ANONDUKE), (NETWERX_USA, NETWERX_LUX), (RANTANPLAN, JOLLYJUMPER)}


def test_stem_reads_the_same_pairs_as_our_parser():
    parsed = list(stem.descriptor.parse_file(io.BytesIO(read_data(REAL)), "server-descriptor 1.0"))
    assert len(parsed) == 587 and broken_pairs(parsed) == broken_pairs(real())


def test_real_contact_groups():
    groups = operator_families(real())
    assert len(groups) == 229 and sum(len(g.relays) > 1 for g in groups) == 25
    undeclared = {g.contact: g.undeclared for g in groups if g.undeclared}
    assert undeclared == {"0x07eed401 rainer gens <rainer at gensonline dot eu>": (JOLLYJUMPER, RANTANPLAN),
                          "dexteradmin <dexter@prj.hu>": (DEXTER, ANONDUKE),
                          "nadletha5@gmail.com": CADORY}  # two relays named cadory, no family line at all
    not_mutual = {g.operator_id: g.not_mutual for g in groups if g.not_mutual}
    # The two netwerx relays have different contact lines: the pair is its lister's operator's only.
    assert not_mutual == {operator_key("dexteradmin <dexter@prj.hu>"): ((DEXTER, ANONDUKE),),
                          operator_key("0x07eed401 rainer gens <rainer at gensonline dot eu>"):
                              ((RANTANPLAN, JOLLYJUMPER),),
                          operator_key(normalised_contact(next(d.contact for d in real()
                                                               if d.fingerprint == NETWERX_USA))):
                              ((NETWERX_USA, NETWERX_LUX),)}
    # Counted for every distinctive contact, zero included (the series); the empty contact is no operator.
    assert all(g.family_not_mutual == len(g.not_mutual) for g in groups) and "" not in {g.contact for g in groups}
    assert sum(g.family_undeclared for g in groups) == 6 and sum(g.family_not_mutual for g in groups) == 3


def test_the_checks_fire_on_real_descriptors_per_operator():
    not_mutual = findings(real(), "TorFamilyNotMutual")
    assert len(not_mutual) == 3 and {str(f.severity) for f in not_mutual} == {"info"}
    dexter = next(f for f in not_mutual if f.subjects == {"operator": operator_key("dexteradmin <dexter@prj.hu>")})
    assert dexter.description == (f"operator 'dexteradmin <dexter@prj.hu>': 1 family entries are one-sided, so tor "
                                  f"ignores them; dexter (${DEXTER}) list relays that do not list them back: "
                                  f"anonduke (${ANONDUKE})")
    undeclared = findings(real(), "TorFamilyUndeclared")
    assert len(undeclared) == 3
    cadory = next(f for f in undeclared if f.subjects == {"operator": operator_key("nadletha5@gmail.com")})
    assert "has 2 relays; 2 of them share no mutual family" in cadory.description
    assert cadory.values == {"relays": 2, "undeclared": 2}


# --- edge cases ---------------------------------------------------------------------------------------

def test_self_listing_nicknames_case_and_suffixes():
    descriptor = made(A, f"${A} relayB ${B.lower()} ${C}=relayC ${D}~relayD $ABC {'E' * 40}")
    assert declared(descriptor) == {B, C, D}  # itself, nicknames, short hex and "$"-less hex are no entries
    assert broken_pairs([made(A, f"${A}")]) == set()  # a relay listing only itself: nothing to pair
    mutual = [made(A, f"${B.lower()}"), made(B, f"${A}~relayA")]
    assert broken_pairs(mutual) == set() and findings(mutual, "TorFamilyNotMutual") == []
    by_nickname = [made(A, "relayB", nickname="relayA"), made(B, "relayA", nickname="relayB")]
    assert broken_pairs(by_nickname) == set()  # ignored, not judged ...
    [group] = operator_families(by_nickname)
    assert group.undeclared == (A, B)  # ... so tor's view is: no family


def test_a_listed_relay_without_a_descriptor_is_not_judged():
    assert broken_pairs([made(A, f"${B} ${C}"), made(B, f"${A}")]) == set()
    assert broken_pairs([made(A, f"${B} ${C}"), made(B, f"${A}"), made(C, contact="other")]) == {(A, C)}


def test_the_newest_descriptor_of_a_relay_counts():
    old = made(B, None, published="2020-02-29 09:00:00")
    new = made(B, f"${A}", published="2020-02-29 10:00:00")
    assert broken_pairs([made(A, f"${B}"), new, old]) == broken_pairs([made(A, f"${B}"), old, new]) == set()


def test_a_hostile_family_line_is_bounded_in_the_description():
    many = [f"{i:040X}" for i in range(1, 2001)]
    line = " ".join(f"${fp}" for fp in many) + " $" + "G" * 40 + " $" + "A" * 41 + " " + "x" * 5000
    others = [made(fp, contact=f"stranger {i}") for i, fp in enumerate(many[:50])]
    [finding] = findings([made(A, line)] + others, "TorFamilyNotMutual")
    assert finding.values == {"not_mutual": 50, "relays": 1}
    assert "and 45 more" in finding.description and len(finding.description) < 2000
    [group] = [g for g in operator_families([made(A, line)] + others) if g.contact == "op@example.org"]
    assert group.family_not_mutual == 50 and finding.subjects == {"operator": group.operator_id}


@pytest.mark.parametrize("contact, distinct", [
    ("", False), ("   ", False), ("none", False), ("N/A", False), ("a@b", False),
    ("0xFFFFFFFF Random Person <nobody AT example dot com>", False), ("op@example.org", True),
    ("0x07EED401 Rainer Gens <rainer AT gensonline dot eu>", True)])
def test_generic_contacts_are_no_operator(contact, distinct):
    assert distinctive(normalised_contact(contact)) is distinct
    relays = [made(A, contact=contact), made(B, contact=contact)]
    assert bool(findings(relays, "TorFamilyUndeclared")) is distinct


def test_undeclared_counts_relays_alone_within_the_operator():
    family_and_one = [made(A, f"${B}"), made(B, f"${A}"), made(C)]
    [group] = operator_families(family_and_one)
    assert group.undeclared == (C,) and group.not_mutual == ()
    whole = [made(A, f"${B} ${C}"), made(B, f"${A}"), made(C, f"${A}")]  # one family, joined through A
    assert operator_families(whole)[0].undeclared == () and findings(whole, "TorFamilyUndeclared") == []
    assert operator_families([made(A)])[0].undeclared == ()  # one relay alone is no family problem


# --- property: order never matters --------------------------------------------------------------------

FINGERPRINTS = [f"{i:X}" * 40 for i in range(8)]


def fake(fingerprint: str, members: list[str], contact: str, published: int):
    return SimpleNamespace(fingerprint=fingerprint, family={f"${m}" for m in members}, contact=contact,
                           nickname="n" + fingerprint[0], published=f"2020-02-29 0{published}:00:00")


relays = st.lists(st.tuples(st.sampled_from(FINGERPRINTS), st.lists(st.sampled_from(FINGERPRINTS), max_size=8),
                            st.sampled_from(["op one", "op two", ""]), st.integers(0, 2)), max_size=14)


@settings(max_examples=200, deadline=None)
@given(relays, st.randoms(use_true_random=False))
def test_broken_pairs_and_groups_do_not_depend_on_the_order(specification, random):
    descriptors = [fake(*each) for each in specification]
    shuffled = list(descriptors)
    random.shuffle(shuffled)
    pairs = broken_pairs(descriptors)
    assert broken_pairs(shuffled) == pairs
    assert operator_families(shuffled) == operator_families(descriptors)
    assert not any((listed, lister) in pairs for lister, listed in pairs)  # never broken both ways
    assert all(lister != listed for lister, listed in pairs)


# --- the subscription alert ---------------------------------------------------------------------------

def test_relay_status_sees_both_directions():
    descriptors = {A: made(A, f"${B} ${C}"), B: made(B, f"${A}"), C: made(C), D: made(D, f"${A}")}
    consensus = consensus_of(entry(A))
    status = relay_status(A, consensus, descriptors, [], [])
    assert (status.family_lists_unreturned, status.family_listed_unreturned) == ((C,), (D,))
    [condition] = [c for c in conditions(status, [], consensus, SETTINGS, 0) if c.id == "TorRelayFamilyBroken"]
    assert (condition.severity, condition.wait_seconds) == ("info", 7200)
    assert f"it lists ${C}, which do not list it back; ${D} list it, but it does not list them" in \
        condition.description
    fine = relay_status(B, consensus, descriptors, [], [])
    assert (fine.family_lists_unreturned, fine.family_listed_unreturned) == ((), ())
    assert relay_status("E" * 40, consensus, descriptors, [], []).family_lists_unreturned is None  # unknown


def test_a_subscriber_is_told_when_the_family_breaks_and_when_it_is_fixed(tmp_path):
    state = State(tmp_path)
    subscription = SubscriptionStore(state.db).add_active("op@example.org", "relay", A, 0)
    watch, book = RelayWatch(state.db, SETTINGS), AlertBook(state.db)
    policy = SuppressionPolicy({"info": 24, "warning": 4, "critical": 0}, {})

    def advance(descriptors, now):
        alerts = watch.alerts(snapshot_of(consensus_of(entry(A), entry(B)), descriptors), now)
        with state.db:
            notices = book.advance(alerts, now, policy, scope=lambda alert: alert.recipient is not None)
        return [a.id for a in alerts], [(n.alert.id, n.status) for n in notices]

    broken = [made(A, f"${B}"), made(B, contact="op@example.org")]
    assert advance(broken, 0) == (["TorRelayFamilyBroken"], [])  # waits two periods: lines go out one by one
    assert advance(broken, 3600) == (["TorRelayFamilyBroken"], [])
    assert advance(broken, 7200) == (["TorRelayFamilyBroken"], [("TorRelayFamilyBroken", "firing")])
    [alert] = watch.alerts(snapshot_of(consensus_of(entry(A), entry(B)), broken), 7200)
    assert (alert.subjects, alert.recipient, alert.unsubscribe_token) == (
        {"relay": A}, "op@example.org", subscription.unsubscribe_token)
    fixed = [made(A, f"${B}"), made(B, f"${A}")]
    assert advance(fixed, 10800) == ([], [("TorRelayFamilyBroken", "resolved")])


def test_a_period_without_descriptors_keeps_the_family_alert(tmp_path):
    state = State(tmp_path)
    SubscriptionStore(state.db).add_active("op@example.org", "relay", A, 0)
    watch = RelayWatch(state.db, SETTINGS)
    broken = snapshot_of(consensus_of(entry(A), entry(B)), [made(A, f"${B}"), made(B)])
    assert [a.id for a in watch.alerts(broken, 0)] == ["TorRelayFamilyBroken"]
    assert [a.id for a in watch.alerts(snapshot_of(consensus_of(entry(A), entry(B)), []), 3600)] == [
        "TorRelayFamilyBroken"]
    mended = snapshot_of(consensus_of(entry(A), entry(B)), [made(A, f"${B}"), made(B, f"${A}")])
    assert watch.alerts(mended, 7200) == []
    assert watch.alerts(snapshot_of(consensus_of(entry(A), entry(B)), []), 10800) == []  # remembered as mended

