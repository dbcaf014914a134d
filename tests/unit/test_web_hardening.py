"""The subscription endpoints against hostile requests: mail bombing, cross-origin posts, subject text,
timing oracles, forged X-Forwarded-For and strings that mail headers refuse (Flask's test client)."""

import re
import sqlite3
import unicodedata
from email.message import EmailMessage

import pytest

from agent.config.loader import load_config
from agent.model.errors import ConfigError, SubscriptionError
from agent.pipeline.state import State
from agent.subscriptions.store import SubscriptionStore, normalise

A, B = "A" * 40, "B" * 40
PUBLIC = "https://agent.example.org"
VICTIM = "victim@example.org"


def make_app(tmp_path, extra=""):
    from agent.web.subscriptions import create_app

    path = tmp_path / "agent.yaml"
    path.write_text(f"state_dir: state\nsubscriptions:\n  rate_limit: 5 per minute\n{extra}"
                    f"alerts:\n  public_url: {PUBLIC}\n")
    config = load_config(path, environ={})
    State(config.state_dir).save_relays(1000, {A: frozenset({"Running"}), B: frozenset({"Running"})})
    return create_app(config, environ={}), config


def queued(config) -> list[tuple[str, str, str]]:
    """(target, subject, text) of every queued mail."""
    rows = State(config.state_dir).db.execute("SELECT target, message FROM deliveries ORDER BY id").fetchall()
    return [(target, *re.findall(r'"subject": "(.*?)", "text": "(.*?)"', message)[0]) for target, message in rows]


def client_at(app, address):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


# --- mail bombing: a limit per recipient, whatever the client ------------------------------------------

def test_twenty_one_requests_from_different_clients_mail_one_address_at_most_five_times(tmp_path):
    app, config = make_app(tmp_path)
    answers = [client_at(app, f"192.0.2.{i}").post("/subscribe", data={"email": VICTIM, "kind": "relay",
                                                                       "target": A}).status_code
               for i in range(21)]
    assert len(queued(config)) == 5  # 21 before: one per request
    assert answers[:5] == [202] * 5 and set(answers[5:]) == {429}


def test_the_recipient_limit_sees_through_case_and_plus_tags_and_counts_every_kind_of_mail(tmp_path):
    app, config = make_app(tmp_path)
    SubscriptionStore(State(config.state_dir).db).add_active(VICTIM, "relay", B, 0)
    variants = ["Victim@Example.org", "victim+1@example.org", "VICTIM+x@EXAMPLE.ORG", "victim+2@example.org",
                "victim@example.org.", "victim+3@Example.Org"]
    for i, address in enumerate(variants):
        client_at(app, f"198.51.100.{i}").post("/subscribe", data={"email": address, "kind": "relay", "target": A})
    for i in range(5):
        client_at(app, f"203.0.113.{i}").post("/subscriptions", data={"email": VICTIM})
    assert len(queued(config)) == 5


# --- cross-origin posts ------------------------------------------------------------------------------

@pytest.mark.parametrize("headers, status", [
    ({"Origin": "https://evil.example"}, 403),
    ({"Origin": "null"}, 403),
    ({"Origin": "http://agent.example.org"}, 403),  # another scheme is another origin
    ({"Sec-Fetch-Site": "cross-site"}, 403),
    ({"Sec-Fetch-Site": "same-site"}, 403),  # a sibling subdomain is not us
    ({"Origin": PUBLIC, "Sec-Fetch-Site": "cross-site"}, 403),
    ({"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin"}, 403),
    ({"Origin": PUBLIC}, 202),
    ({"Origin": "https://AGENT.example.org:443"}, 202),  # the same origin, spelled otherwise
    ({"Sec-Fetch-Site": "same-origin"}, 202),
    ({"Origin": PUBLIC, "Sec-Fetch-Site": "same-origin"}, 202),
    ({}, 202),  # no browser: curl, scripts
])
def test_cross_origin_posts_are_refused(tmp_path, headers, status):
    app, config = make_app(tmp_path)
    answer = app.test_client().post("/subscribe", headers=headers,
                                    data={"email": "op@example.org", "kind": "relay", "target": A})
    assert answer.status_code == status
    assert len(queued(config)) == (status == 202)


def test_every_post_but_one_click_unsubscribe_checks_the_origin(tmp_path):
    app, config = make_app(tmp_path)
    active = SubscriptionStore(State(config.state_dir).db).add_active("op@example.org", "relay", A, 0)
    hostile = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    client = app.test_client()
    for path, data in (("/subscriptions", {"email": "op@example.org"}), ("/confirm", {"token": "x"}),
                       ("/unsubscribe", {"token": active.unsubscribe_token})):
        assert client.post(path, headers=hostile, data=data).status_code == 403, path
    one_click = client.post(f"/unsubscribe?token={active.unsubscribe_token}", headers=hostile,
                            data={"List-Unsubscribe": "One-Click"})  # RFC 8058: the mail provider posts
    assert one_click.json["status"] == "removed"


def test_pages_cannot_be_framed_nor_leak_their_token(tmp_path):
    app, _ = make_app(tmp_path)
    page = app.test_client().get("/confirm?token=secret")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"


# --- subjects carry no request text ------------------------------------------------------------------

def test_subjects_hold_nothing_the_request_said(tmp_path):
    app, config = make_app(tmp_path, "  public_contact: true\n")  # contact targets: the most a request can say
    client = app.test_client()
    contact = "URGENT reset your password at evil.example"
    client.post("/subscribe", data={"email": "op@example.org", "kind": "contact", "target": contact})
    client.post("/subscribe", data={"email": "op@example.org", "kind": "relay", "target": A.lower()})
    SubscriptionStore(State(config.state_dir).db).add_active("op@example.org", "family", B, 0)
    client.post("/subscribe", data={"email": "op@example.org", "kind": "family", "target": B})  # already active
    client.post("/subscriptions", data={"email": "op@example.org"})
    mails = queued(config)
    assert len(mails) == 4
    for _, subject, _ in mails:
        assert not re.search(r"URGENT|evil|op@|AAAA|BBBB|contact|relay|family", subject, re.IGNORECASE), subject
    assert contact in mails[0][2]  # the body says what is being confirmed


# --- the same work whether or not the address is subscribed ------------------------------------------

def statements_of(monkeypatch):
    """Every SQL statement run on connections opened from now on, literals replaced by '?'."""
    seen, connect = [], sqlite3.connect

    def traced(*args, **kwargs):
        connection = connect(*args, **kwargs)
        connection.set_trace_callback(lambda sql: seen.append(re.sub(r"'[^']*'|\b\d+\b", "?", sql)))
        return connection

    monkeypatch.setattr(sqlite3, "connect", traced)
    return seen


@pytest.mark.parametrize("path, data", [
    ("/subscriptions", lambda email: {"email": email}),
    ("/subscribe", lambda email: {"email": email, "kind": "relay", "target": A}),
])
def test_answers_and_database_work_do_not_depend_on_being_subscribed(tmp_path, monkeypatch, path, data):
    seen = statements_of(monkeypatch)
    app, config = make_app(tmp_path)
    SubscriptionStore(State(config.state_dir).db).add_active("subscribed@example.org", "relay", A, 0)
    runs = {}
    for email in ("subscribed@example.org", "stranger@example.org"):
        seen.clear()
        answer = client_at(app, f"192.0.2.{len(runs)}").post(path, data=data(email))
        runs[email] = (answer.status_code, answer.data, list(seen))
    assert runs["subscribed@example.org"] == runs["stranger@example.org"]
    assert any(s.startswith("INSERT OR IGNORE INTO deliveries") for s in seen)  # both mail the address


# --- X-Forwarded-For only from the configured proxies ------------------------------------------------

def six_requests(app, peer, forwarded):
    client = client_at(app, peer)
    return [client.post("/subscriptions", headers={"X-Forwarded-For": hop},
                        data={"email": f"user{i}@example.org"}).status_code for i, hop in enumerate(forwarded)]


def test_forwarded_for_is_ignored_from_a_peer_that_is_not_a_configured_proxy(tmp_path):
    app, _ = make_app(tmp_path, "  trusted_proxies: [10.0.0.1, 192.168.0.0/16]\n")
    forged = [f"203.0.113.{i}" for i in range(6)]
    assert six_requests(app, "198.51.100.7", forged) == [202] * 5 + [429]  # one client: the peer


def test_forwarded_for_names_the_client_behind_a_configured_proxy(tmp_path):
    app, _ = make_app(tmp_path, "  trusted_proxies: [10.0.0.1, 192.168.0.0/16]\n")
    assert six_requests(app, "10.0.0.1", [f"203.0.113.{i}" for i in range(6)]) == [202] * 6
    # The client is the last hop a trusted proxy did not add: what it claims before that is ignored.
    chained = [f"198.51.100.{i}, 203.0.113.99, 192.168.3.4" for i in range(6)]
    assert six_requests(app, "192.168.1.1", chained) == [202] * 5 + [429]
    assert six_requests(app, "10.0.0.1", ["garbage"] * 6) == [202] * 5 + [429]  # the proxy itself


def test_ipv6_clients_are_limited_by_their_slash_64(tmp_path):
    app, _ = make_app(tmp_path)
    answers = [client_at(app, f"2001:db8:1:2::{i:x}").post("/subscriptions", data={"email": f"u{i}@example.org"})
               .status_code for i in range(6)]
    assert answers == [202] * 5 + [429]


@pytest.mark.parametrize("value, problem", [
    (1, "a list of proxy addresses or networks"),
    ("[10.0.0.1, not-an-address]", "not-an-address"),
    ("10.0.0.1", "a list of proxy addresses or networks"),
])
def test_trusted_proxies_is_a_list_of_networks_and_the_old_count_is_refused(tmp_path, value, problem):
    path = tmp_path / "agent.yaml"
    path.write_text(f"subscriptions:\n  trusted_proxies: {value}\n")
    with pytest.raises(ConfigError, match=re.escape(problem)):
        load_config(path, environ={})


def test_trusted_proxies_zero_still_means_none(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("subscriptions:\n  trusted_proxies: 0\n")
    assert load_config(path, environ={}).subscriptions.trusted_proxies == ()


# --- strings mail headers refuse are refused at the edge ---------------------------------------------

@pytest.mark.parametrize("email, kind, target", [
    ("a@b.org", "contact", "x\x85y"),
    ("a@b.org", "contact", "x\u2028y"),
    ("a@b.org", "contact", "x\u2029y"),
    ("a@b.org", "contact", "x\x0by"),
    ("a@b.org", "contact", "x\x1dy"),
    ("a@b.org", "contact", "x\x7fy"),
    ("a@b.org", "contact", "x\u200ey"),  # bidi marks: invisible, and spoof what the mail shows
    ("a@b.org", "contact", "x\ud800y"),
    ("a\x00b@c.org", "relay", A),
    ("a\x85b@c.org", "relay", A),
    ("ä@b.org", "relay", A),
])
def test_characters_mail_refuses_are_refused_with_a_clear_error(email, kind, target):
    with pytest.raises(SubscriptionError, match=r"^(email|target): "):
        normalise(email, kind, target)


def test_every_accepted_contact_string_makes_a_valid_mail_header():
    accepted, refused = [], 0
    for point in [*range(0x3100), *range(0xD7F0, 0xE010), *range(0xFDD0, 0xFFFF), 0x1F600, 0xE0001, 0x10FFFF]:
        try:
            accepted.append(normalise("a@b.org", "contact", f"x{chr(point)}y")[2])
        except SubscriptionError:
            refused += 1
    assert refused > 100 and all(len(target.splitlines()) == 1 for target in accepted)
    assert not [target for target in accepted if unicodedata.category(target[1])[0] == "C"]
    for start in range(0, len(accepted), 100):  # a hundred targets per subject: the email package checks each
        message = EmailMessage()
        message["Subject"] = " ".join(accepted[start:start + 100])
        message["To"] = "a@b.org"
        message.as_bytes()


def test_a_refused_target_never_reaches_the_store_over_http(tmp_path):
    app, config = make_app(tmp_path)
    answer = app.test_client().post("/subscribe", data={"email": "a@b.org", "kind": "contact", "target": "x\x85y"})
    assert answer.status_code == 400 and answer.json["error"].startswith("target: ")
    assert SubscriptionStore(State(config.state_dir).db).everything() == [] and queued(config) == []


@pytest.mark.parametrize("path, body", [
    ("/subscribe", [1, 2]),
    ("/subscribe", "text"),
    ("/subscribe", {"email": ["a@b.org"], "kind": "relay", "target": A}),
    ("/subscribe", {"email": "a@b.org", "kind": {"x": 1}, "target": A}),
    ("/subscribe", {"email": "\ud800@b.org", "kind": "relay", "target": A}),
    ("/subscribe", {"email": "a@b.org", "kind": "contact", "target": "\ud800"}),
    ("/subscriptions", [1]),
    ("/subscriptions", {"email": None}),
    ("/subscriptions", {"email": "nobody"}),
])
def test_odd_json_is_a_clear_400_not_a_crash(tmp_path, path, body):
    app, config = make_app(tmp_path)
    answer = app.test_client().post(path, json=body)
    assert answer.status_code == 400 and answer.json["error"].split(":")[0] in ("email", "kind", "target")
    assert queued(config) == []


# --- bodies: bounded before Flask reads them ---------------------------------------------------------

def test_flask_itself_refuses_a_large_body(tmp_path):
    app, config = make_app(tmp_path)
    answer = app.test_client().post("/subscribe", data={"email": "a@b.org", "kind": "contact", "target": "x" * 99_999})
    assert answer.status_code == 413 and queued(config) == []
