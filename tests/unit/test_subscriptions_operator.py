"""Operator subscriptions on verified identity (AROI): who may subscribe, and which relays they cover.

The endpoints run as the Flask app itself (its test client); the proofs are
ProofBooks built here, as the verifier would leave them (the verifier's own
tests run it against real HTTPS and DNS servers).
"""

import re

import pytest

from agent.config.loader import load_config
from agent.model.aroi import DomainProof, ProofBook, normalised_domain
from agent.model.errors import SubscriptionError
from agent.pipeline.state import State
from agent.subscriptions.store import SubscriptionStore, normalise
from agent.subscriptions.watch import RelayWatch
from tests.unit.test_subscriptions import SETTINGS, consensus_of, descriptor, entry, snapshot_of

A, B, C = "A" * 40, "B" * 40, "C" * 40
CLAIM = "email:ops[]operator.example url:https://operator.example proof:uri-rsa ciissversion:2"
IMPOSTOR = "email:mallory[]evil.example url:https://operator.example proof:uri-rsa ciissversion:2"


def book(listed=(A, B), emails=("ops@operator.example",), error=None) -> ProofBook:
    proof = DomainProof("operator.example", "uri-rsa", 1000, frozenset(listed), error=error,
                        emails=frozenset(emails))
    return ProofBook({("operator.example", "uri-rsa"): proof})


@pytest.mark.parametrize("text, domain", [
    ("operator.example", "operator.example"), ("https://Operator.Example/", "operator.example"),
    ("operator.example.", "operator.example"), ("localhost", None), ("two words.example", None), ("", None),
    ("http://[::1]/", None), ("10.0.0.1", None)])
def test_operator_targets_are_domains(text, domain):
    assert normalised_domain(text) == domain
    if domain is None:
        with pytest.raises(SubscriptionError, match="target: an operator is a domain"):
            normalise("ops@operator.example", "operator", text)
    else:
        assert normalise("ops@operator.example", "operator", text) == ("ops@operator.example", "operator", domain)


def test_an_operator_subscription_covers_the_verified_relays_only(tmp_path):
    state = State(tmp_path)
    SubscriptionStore(state.db).add_active("ops@operator.example", "operator", "operator.example", 0)
    watch = RelayWatch(state.db, SETTINGS)
    # A listed and up, B listed and down, C claims the domain without being listed (and is down too)
    snapshot = snapshot_of(consensus_of(entry(A)), [descriptor(A, contact=CLAIM), descriptor(B, contact=CLAIM),
                                                    descriptor(C, contact=IMPOSTOR)])
    alerts = watch.alerts(snapshot, 1000, proofs=book())
    assert [(a.id, a.subjects["relay"], a.recipient) for a in alerts] == [
        ("TorRelayDown", B, "ops@operator.example")]
    rows = state.db.execute("SELECT fingerprint FROM subscription_members").fetchall()
    assert sorted(row[0] for row in rows) == [A, B]
    # a period judged without proofs (their file unreadable) still watches the relays covered before
    assert [a.subjects["relay"] for a in watch.alerts(snapshot, 2000)] == [B]


def test_without_proofs_an_operator_subscription_covers_nobody_new(tmp_path):
    state = State(tmp_path)
    SubscriptionStore(state.db).add_active("ops@operator.example", "operator", "operator.example", 0)
    snapshot = snapshot_of(consensus_of(entry(A)), [descriptor(B, contact=CLAIM)])
    assert RelayWatch(state.db, SETTINGS).alerts(snapshot, 1000) == []
    unreadable = book(listed=(), error="https: HTTP 404")
    assert RelayWatch(state.db, SETTINGS).alerts(snapshot, 1000, proofs=unreadable) == []


@pytest.fixture
def app(tmp_path):
    from agent.web.subscriptions import create_app

    path = tmp_path / "agent.yaml"
    path.write_text("state_dir: state\nalerts:\n  public_url: https://agent.example.org\n")
    config = load_config(path, environ={})
    return create_app(config, environ={}, proofs=book).test_client(), config


def test_only_an_address_the_verified_relays_name_may_subscribe_to_the_operator(app):
    client, config = app
    answer = client.post("/subscribe", data={"email": "mallory@evil.example", "kind": "operator",
                                              "target": "operator.example"})
    assert answer.status_code == 400 and answer.json["error"].startswith("email: not an address the CIISS")
    unknown = client.post("/subscribe", data={"email": "ops@operator.example", "kind": "operator",
                                              "target": "other.example"})
    assert unknown.status_code == 400 and "is not a verified operator" in unknown.json["error"]
    accepted = client.post("/subscribe", data={"email": "Ops@Operator.Example", "kind": "operator",
                                               "target": "https://operator.example/"})
    assert accepted.status_code == 202
    [pending] = SubscriptionStore(State(config.state_dir).db).everything()
    assert (pending.kind, pending.target, pending.status) == ("operator", "operator.example", "pending")


def test_contact_subscriptions_are_for_administrators_unless_switched_on(app, tmp_path):
    client, _ = app
    answer = client.post("/subscribe", data={"email": "x@example.org", "kind": "contact", "target": "op@example.org"})
    assert answer.status_code == 400 and "added by the administrators" in answer.json["error"]
    from agent.web.subscriptions import create_app

    path = tmp_path / "open.yaml"
    path.write_text("state_dir: open\nalerts:\n  public_url: https://agent.example.org\n"
                    "subscriptions:\n  public_contact: true\n")
    opened = create_app(load_config(path, environ={}), environ={}).test_client()
    assert opened.post("/subscribe", data={"email": "x@example.org", "kind": "contact",
                                           "target": "op@example.org"}).status_code == 202


def test_an_address_the_operator_no_longer_names_is_dropped_at_confirmation_and_hears_nothing(tmp_path):
    from agent.web.subscriptions import create_app

    path = tmp_path / "agent.yaml"
    path.write_text("state_dir: state\nalerts:\n  public_url: https://agent.example.org\n")
    config = load_config(path, environ={})
    current = {"book": book()}
    client = create_app(config, environ={}, proofs=lambda: current["book"]).test_client()
    assert client.post("/subscribe", data={"email": "OPS@operator.example", "kind": "operator",
                                           "target": "operator.example"}).status_code == 202
    state = State(config.state_dir)
    [pending] = SubscriptionStore(state.db).everything()
    assert pending.email == "ops@operator.example"  # stored as the CIISS field it matches is read
    token = re.search(r"confirm\?token=([\w-]+)", state.db.execute(
        "SELECT message FROM deliveries").fetchone()[0]).group(1)
    current["book"] = book(emails=("new@operator.example",))  # the operator changed its relays' email: field
    answer = client.post("/confirm", data={"token": token})
    assert answer.status_code == 409 and answer.json["error"].startswith("email: not an address")
    assert SubscriptionStore(state.db).everything() == []
    # an active subscription whose address the verified relays stop naming covers nobody any more
    SubscriptionStore(state.db).add_active("ops@operator.example", "operator", "operator.example", 0)
    snapshot = snapshot_of(consensus_of(entry(A)), [descriptor(B, contact=CLAIM)])
    watch = RelayWatch(state.db, SETTINGS)
    assert [a.subjects["relay"] for a in watch.alerts(snapshot, 1000, proofs=book())] == [B]
    assert watch.alerts(snapshot, 2000, proofs=book(emails=("new@operator.example",))) == []
