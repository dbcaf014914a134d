"""Subscriptions: double opt-in, relay conditions, family resolution, the HTTP endpoints."""

import re
from dataclasses import replace
from datetime import datetime

import pytest
from stem.descriptor.networkstatus import NetworkStatusDocumentV3
from stem.descriptor.router_status_entry import RouterStatusEntryV3
from stem.descriptor.server_descriptor import RelayDescriptor

from agent.config.loader import load_config
from agent.model.authorities import Authority
from agent.model.errors import SubscriptionError
from agent.model.snapshot import AuthorityView, Snapshot
from agent.pipeline.state import State
from agent.subscriptions.events import bandwidth_votes, conditions, effective_family, relay_status
from agent.subscriptions.store import SubscriptionStore
from agent.subscriptions.watch import RelayWatch
from tests.unit.test_checks import _b64

SETTINGS = load_config(None, environ={}).subscriptions
A, B, C = "A" * 40, "B" * 40, "C" * 40
NOW = datetime(2026, 11, 24, 12)


def descriptor(fingerprint, family=(), contact="op@example.org", hibernating=False, nickname=None, uptime=None,
               observed=None):
    fields = {"router": f"{nickname or 'relay' + fingerprint[0]} 10.0.0.1 9001 0 0",
              "fingerprint": " ".join(fingerprint[i:i + 4] for i in range(0, 40, 4)), "contact": contact}
    if family:
        fields["family"] = " ".join(f"${fp}" for fp in family)
    if hibernating:
        fields["hibernating"] = "1"
    if uptime is not None:
        fields["uptime"] = str(uptime)
    if observed is not None:  # average and burst well above it: only the observed value is low
        fields["bandwidth"] = f"1000000 2000000 {observed}"
    return RelayDescriptor.create(fields, validate=False)  # not signed by that fingerprint's key


def entry(fingerprint, flags="Fast Guard Running Stable Valid", weight=1000, version="0.4.8.12", nickname=None):
    return RouterStatusEntryV3.create({
        "r": f"{nickname or 'relay' + fingerprint[0]} {_b64(fingerprint)} {'B' * 27} "
             "2026-11-24 11:00:00 10.0.0.1 9001 0",
        "s": flags, "w": f"Bandwidth={weight}", "v": f"Tor {version}"})


def consensus_of(*entries, versions="0.4.8.12,0.4.9.3-alpha"):
    return NetworkStatusDocumentV3.create({"valid-after": NOW.strftime("%Y-%m-%d %H:%M:%S"),
                                           "fresh-until": "2026-11-24 13:00:00", "valid-until": "2026-11-24 15:00:00",
                                           "server-versions": versions}, routers=entries)


def snapshot_of(consensus, descriptors=(), votes=()):
    authorities = [Authority(f"auth{i}", f"{i}" * 40, "127.0.0.1", 1) for i in range(len(votes))]
    views = {a.nickname: AuthorityView(a, vote=vote) for a, vote in zip(authorities, votes)}
    return Snapshot("test", NOW, NOW, authorities, views, [], server_descriptors=list(descriptors),
                    archived_consensus=consensus)


# --- double opt-in ------------------------------------------------------------------------------------

def test_confirmation_is_single_use_and_expires(tmp_path):
    store = SubscriptionStore(State(tmp_path).db)
    subscription, token = store.request("op@example.org", "relay", A.lower(), 1000, 3600)
    assert (subscription.status, subscription.target) == ("pending", A)
    assert store.active() == []
    assert store.confirm("wrong", 1001) is None
    assert store.confirm(token, 1001).status == "active"
    assert store.confirm(token, 1002) is None  # used
    again, none = store.request("op@example.org", "relay", A, 1003, 3600)
    assert none is None and again.status == "active"

    late, late_token = store.request("other@example.org", "relay", A, 1000, 3600)
    assert store.confirm(late_token, 4600) is None  # expired
    assert store.expire(4600) == 1 and [s.email for s in store.everything()] == ["op@example.org"]
    assert store.unsubscribe(subscription.unsubscribe_token).id == subscription.id and store.everything() == []


def test_asking_again_replaces_a_pending_token_and_leaves_an_active_subscription_as_it_is(tmp_path):
    store = SubscriptionStore(State(tmp_path).db)
    _, first = store.request("op@example.org", "relay", A, 1000, 3600)
    pending, second = store.request("op@example.org", "relay", A, 2000, 3600)
    assert pending.expires == 5600 and store.confirm(first, 2001) is None
    active = store.confirm(second, 2002)
    again, none = store.request("op@example.org", "relay", A, 3000, 3600)
    assert none is None and again == active  # same unsubscribe token, no expiry, still active


@pytest.mark.parametrize("email, kind, target, problem", [
    ("not-an-address", "relay", A, "email:"),
    ("a@b.org\r\nBcc: x@y.org", "relay", A, "email:"),
    ("a@b.org", "everything", A, "kind:"),
    ("a@b.org", "relay", "ABC", "target: a relay fingerprint"),
    ("a@b.org", "contact", "x\ny", "target: a contact string"),
])
def test_bad_requests_are_refused_naming_the_field(tmp_path, email, kind, target, problem):
    with pytest.raises(SubscriptionError, match=problem):
        SubscriptionStore(State(tmp_path).db).request(email, kind, target, 0, 60)


# --- relay conditions ---------------------------------------------------------------------------------

def test_effective_family_needs_both_sides():
    descriptors = {A: descriptor(A, family=[B, C]), B: descriptor(B, family=[A]), C: descriptor(C)}
    assert effective_family(A, descriptors) == {A, B}
    descriptors[C] = descriptor(C, family=[A])  # C joins later
    assert effective_family(A, descriptors) == {A, B, C}


def test_down_but_not_while_hibernating():
    consensus = consensus_of(entry(B))
    status = relay_status(A, consensus, {A: descriptor(A)}, [], [])
    [down] = conditions(status, [], consensus, SETTINGS, 0)
    assert (down.id, down.wait_seconds) == ("TorRelayDown", 3600) and "is not in the consensus" in down.description
    sleeping = relay_status(A, consensus, {A: descriptor(A, hibernating=True)}, [], [])
    assert conditions(sleeping, [], consensus, SETTINGS, 0) == []


def test_flag_lost_version_weight_and_votes():
    consensus = consensus_of(entry(A, flags="Fast Running Valid", weight=400, version="0.4.7.1"))
    votes = [consensus_of(entry(A)), consensus_of(entry(B)), consensus_of(entry(B))]
    status = relay_status(A, consensus, {}, votes, bandwidth_votes(votes))
    history = [(0, 1000, frozenset({"Fast", "Guard", "Running", "Stable", "Valid"})), (3600, 1000, frozenset())]
    found = {(c.id, c.flag): c.description for c in conditions(status, history, consensus, SETTINGS, 24 * 3600)}
    assert set(found) == {("TorRelayFlagLost", "Guard"), ("TorRelayFlagLost", "Stable"),
                          ("TorRelayVersionObsolete", None), ("TorRelayWeightDropped", None),
                          ("TorRelayFewAuthorities", None)}
    assert found[("TorRelayWeightDropped", None)].endswith("has consensus weight 400, down 60 % from 1000 24 h ago")
    assert "listed by 1 of 3 authorities' votes (wanted 2)" in found[("TorRelayFewAuthorities", None)]
    few = [c for c in conditions(status, history, consensus, SETTINGS, 24 * 3600, 600)
           if c.id == "TorRelayFewAuthorities"]
    assert few[0].wait_seconds == 1200  # two periods in a row
    restarted = relay_status(A, consensus, {A: descriptor(A, uptime=600)}, votes, bandwidth_votes(votes))
    assert {c.flag for c in conditions(restarted, history, consensus, SETTINGS, 24 * 3600)} == {None}  # no Guard/Stable
    newer = consensus_of(entry(A, version="0.4.9.9"))
    assert [c.id for c in conditions(relay_status(A, newer, {}, [], []), [], newer, SETTINGS, 0)] == [
        "TorRelayVersionNotRecommended"]


def test_low_observed_bandwidth_is_told_once_the_relay_has_been_up_a_day():
    consensus = consensus_of(entry(A))

    def low(observed, uptime, hibernating=False, settings=SETTINGS):
        status = relay_status(A, consensus, {A: descriptor(A, uptime=uptime, observed=observed,
                                                           hibernating=hibernating)}, [], [])
        return [c for c in conditions(status, [], consensus, settings, 0) if c.id == "TorRelayLowBandwidth"]

    [found] = low(15_500, 2 * 86400)
    assert (found.severity, found.wait_seconds) == ("info", 0)  # Tor Weather: no grace period
    assert found.description == f"relayA ({A}) observed 15.5 kB/s at most in the past day, under the 20 kB/s threshold"
    assert low(20_000, 2 * 86400) == []  # at the threshold is not under it
    assert len(low(15_500, 86400)) == 1  # a day of observing is enough
    assert low(15_500, 86400 - 1) == [] and low(15_500, None) == []  # not a day of observing yet (or unknown)
    assert low(15_500, 2 * 86400, hibernating=True) == []  # it limits itself on purpose
    assert low(15_500, 2 * 86400, settings=replace(SETTINGS, low_bandwidth_kbytes=0)) == []  # turned off
    assert len(low(99_000, 2 * 86400, settings=replace(SETTINGS, low_bandwidth_kbytes=100))) == 1


def test_a_low_bandwidth_alert_reaches_the_subscriber_lasts_through_a_period_without_descriptors_and_ends(
        tmp_path):
    state = State(tmp_path)
    subscription = SubscriptionStore(state.db).add_active("op@example.org", "relay", A, 0)
    watch = RelayWatch(state.db, SETTINGS)
    slow = snapshot_of(consensus_of(entry(A)), [descriptor(A, uptime=3 * 86400, observed=8_000)])
    [alert] = watch.alerts(slow, 1000)
    assert (alert.id, alert.subjects, alert.recipient) == ("TorRelayLowBandwidth", {"relay": A}, "op@example.org")
    assert alert.unsubscribe_token == subscription.unsubscribe_token
    without_descriptors = snapshot_of(consensus_of(entry(A)), [])  # their fetch failed: judged as last known
    assert [a.id for a in watch.alerts(without_descriptors, 2000)] == ["TorRelayLowBandwidth"]
    recovered = snapshot_of(consensus_of(entry(A)), [descriptor(A, uptime=3 * 86400, observed=80_000)])
    assert watch.alerts(recovered, 3000) == []
    assert watch.alerts(without_descriptors, 4000) == []


def test_family_subscription_covers_a_relay_that_joins_later_and_remembers_one_that_vanished(tmp_path):
    state = State(tmp_path)
    store = SubscriptionStore(state.db)
    family = store.add_active("op@example.org", "family", A, 0)
    store.request("lurker@example.org", "relay", A, 0, 10**9)  # never confirmed
    watch = RelayWatch(state.db, SETTINGS)
    first = snapshot_of(consensus_of(entry(A), entry(B), entry(C)),
                        [descriptor(A, family=[B, C]), descriptor(B, family=[A]), descriptor(C)])
    # A lists C, C does not list A back: a broken family, told to A's family subscriber
    assert [a.id for a in watch.alerts(first, 1000)] == ["TorRelayFamilyBroken"]
    joined = snapshot_of(consensus_of(entry(A), entry(B)),  # C joined the family, and is down
                         [descriptor(A, family=[B, C]), descriptor(B, family=[A]), descriptor(C, family=[A])])
    alerts = watch.alerts(joined, 2000)
    assert [(a.id, a.subjects["relay"], a.recipient) for a in alerts] == [("TorRelayDown", C, "op@example.org")]
    assert alerts[0].unsubscribe_token == family.unsubscribe_token
    vanished = snapshot_of(consensus_of(entry(A)), [descriptor(A, family=[B, C])])
    assert sorted(a.subjects["relay"] for a in watch.alerts(vanished, 3000)) == [B, C]


def test_contact_subscription_follows_the_contact_line(tmp_path):
    state = State(tmp_path)
    SubscriptionStore(state.db).add_active("op@example.org", "contact", "op@example.org", 0)
    snap = snapshot_of(consensus_of(entry(A)), [descriptor(A), descriptor(B), descriptor(C, contact="someone else")])
    assert [(a.id, a.subjects["relay"]) for a in RelayWatch(state.db, SETTINGS).alerts(snap, 1000)] == [
        ("TorRelayDown", B)]


# --- the HTTP endpoints -------------------------------------------------------------------------------

@pytest.fixture
def app(tmp_path):
    from agent.web.subscriptions import create_app

    path = tmp_path / "agent.yaml"
    path.write_text("state_dir: state\nsubscriptions:\n  rate_limit: 5 per minute\n"
                    "alerts:\n  public_url: https://agent.example.org\n")
    config = load_config(path, environ={})
    State(config.state_dir).save_relays(1000, {A: frozenset({"Running"})})
    return create_app(config, environ={}), config


def test_subscribe_confirm_unsubscribe_over_http(app):
    flask_app, config = app
    client = flask_app.test_client()
    answer = client.post("/subscribe", data={"email": "op@example.org", "kind": "relay", "target": A})
    assert answer.status_code == 202
    assert client.post("/subscribe", data={"email": "op@example.org", "kind": "relay", "target": B}).status_code == 400
    [(_, target, subject, _, _)] = _outbox(config).waiting()  # no SMTP configured: it waits in the outbox
    assert target == "op@example.org" and subject.startswith("Confirm your Allium Agent subscription")
    token = re.search(r"confirm\?token=([\w-]+)", _outbox(config).db.execute(
        "SELECT message FROM deliveries").fetchone()[0]).group(1)
    page = client.get(f"/confirm?token={token}")
    assert page.status_code == 200 and b"<form method=post" in page.data
    assert SubscriptionStore(State(config.state_dir).db).active() == []  # GET changes nothing
    assert client.post("/confirm", data={"token": token}).json["status"] == "active"
    assert client.post("/confirm", data={"token": token}).status_code == 404
    [active] = SubscriptionStore(State(config.state_dir).db).active()
    one_click = client.post(f"/unsubscribe?token={active.unsubscribe_token}", data={"List-Unsubscribe": "One-Click"})
    assert one_click.json["status"] == "removed"


def test_requests_are_rate_limited_per_client(app):
    client = app[0].test_client()
    answers = [client.post("/subscriptions", data={"email": "x@example.org"}).status_code for _ in range(7)]
    assert answers == [202] * 5 + [429] * 2


def _outbox(config):
    from agent.alerts.deliveries import DeliveryOutbox

    return DeliveryOutbox(State(config.state_dir).db, config.alerts.retry)
