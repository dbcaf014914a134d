"""Hostile cases for alert delivery: concurrent drains, header-breaking targets, corrupt rows, echoed secrets.

Every test counts what was delivered (or leaked); none times anything.
Servers are fakes on 127.0.0.1 or in-process stand-ins.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import smtplib
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent.alerts.deliveries import DeliveryOutbox
from agent.alerts.dispatch import Alerting
from agent.alerts.email import EmailSender
from agent.alerts.render import Message
from agent.config.loader import load_config
from agent.model.errors import DeliveryError
from agent.model.findings import Finding
from agent.model.retry import RetryPolicy
from agent.pipeline.state import State

ROOT = Path(__file__).resolve().parents[2]
GOOD = "op@example.org"


class Counting:
    """A notifier that counts what it is handed; ``pause`` lets two drains overlap mid-send."""

    def __init__(self, pause: float = 0.0):
        self.sent: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        self.pause = pause

    def send(self, target, message, token):
        time.sleep(self.pause)
        with self.lock:
            self.sent.append((target, message.subject, token))


def alerting_on(state_dir, clock=None, **senders) -> Alerting:
    """An Alerting over its own connection to ``state_dir``, with the given notifiers in place of the real ones."""
    alerting = Alerting(load_config(None, environ={}), State(state_dir).db, environ={},
                        clock=clock or (lambda: 1_000_000))
    alerting.senders = dict(senders)
    return alerting


def queue(alerting, count, targets=("a@example.org", "b@example.org", "c@example.org"), channel="email"):
    for index in range(count):
        alerting.send_later(channel, targets[index % len(targets)], Message(f"m{index}", "t", "h"), f"tok{index}")


def drain_until_done(alerting, rounds=200):
    """Drains until nothing is due or waiting (rounds: a hang guard, not a timing)."""
    for _ in range(rounds):
        if alerting.drain()["waiting"] == 0:
            return
        time.sleep(0.01)


# --- one sender per message ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True], ids=["two connections", "one connection"])
def test_two_threads_draining_one_outbox_deliver_every_message_exactly_once(tmp_path, shared):
    """Two drains, a clock that moves on: 30 queued, 30 delivered, each once and in order.

    With one connection the two threads are the daemon's (its cycle and its between-period drain).
    """
    ticks = itertools.count(1_000_000)
    clock = lambda: next(ticks)  # noqa: E731 - every reading a second later, as in a long drain
    notifier = Counting(pause=0.002)
    first, second = alerting_on(tmp_path, clock, email=notifier), alerting_on(tmp_path, clock, email=notifier)
    if shared:
        second = Alerting(load_config(None, environ={}), first.db, environ={}, clock=clock)
        second.senders = {"email": notifier}
    queue(first, 30)
    start = threading.Barrier(2)

    def drain(alerting):
        start.wait(timeout=30)
        drain_until_done(alerting)

    threads = [threading.Thread(target=drain, args=(a,)) for a in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    tokens = [token for _, _, token in notifier.sent]
    print(f"\n30 queued, two threads: {len(tokens)} delivered, {len(set(tokens))} distinct")
    assert len(tokens) == 30 and len(set(tokens)) == 30
    for target in ("a@example.org", "b@example.org", "c@example.org"):
        subjects = [int(subject[1:]) for sent_to, subject, _ in notifier.sent if sent_to == target]
        assert subjects == sorted(subjects)  # a destination's messages never overtake each other
    assert first.outbox.counts() == {"waiting": 0, "delivered": 30, "given_up": 0}


_CHILD = textwrap.dedent("""
    import itertools, os, sys, time
    sys.path.insert(0, {root!r})
    from agent.alerts.dispatch import Alerting
    from agent.config.loader import load_config
    from agent.pipeline.state import State

    class FileCounter:
        def send(self, target, message, token):
            time.sleep(0.005)
            descriptor = os.open({log!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(descriptor, (token + "\\n").encode())
            os.close(descriptor)

    ticks = itertools.count(int(time.time()))  # every reading a second later, as in a long drain
    alerting = Alerting(load_config(None, environ={{}}), State({state!r}).db, environ={{}}, clock=lambda: next(ticks))
    alerting.senders = {{"email": FileCounter()}}
    open({ready!r} + sys.argv[1], "w").close()
    for _ in range(6000):  # hang guard
        if os.path.exists({go!r}):
            break
        time.sleep(0.005)
    for _ in range(400):
        if alerting.drain()["waiting"] == 0:
            break
        time.sleep(0.01)
""")


def test_two_processes_draining_one_outbox_deliver_every_message_exactly_once(tmp_path):
    """Two `alerts drain` processes on the same state file: every queued message is sent once."""
    seeding = alerting_on(tmp_path / "state", time.time)
    queue(seeding, 30, targets=[f"user{n}@example.org" for n in range(10)])
    log, go, ready = tmp_path / "sent.log", tmp_path / "go", str(tmp_path / "ready-")
    script = _CHILD.format(root=str(ROOT), log=str(log), state=str(tmp_path / "state"), ready=ready, go=str(go))
    children = [subprocess.Popen([sys.executable, "-c", script, str(n)]) for n in range(2)]
    try:
        for _ in range(6000):  # hang guard while both import the agent
            if all(os.path.exists(ready + str(n)) for n in range(2)) or any(c.poll() is not None for c in children):
                break
            time.sleep(0.01)
        go.touch()
        assert [child.wait(timeout=300) for child in children] == [0, 0]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    tokens = log.read_text().split()
    print(f"\n30 queued, two processes: {len(tokens)} delivered, {len(set(tokens))} distinct")
    assert len(tokens) == 30 and len(set(tokens)) == 30


def test_a_claim_is_an_exclusive_expiring_lease_held_by_its_owner(tmp_path):
    """The daemon dies mid-send: nobody else sends it until the lease expires; then it is sent once more."""
    daemon, mailer = State(tmp_path), State(tmp_path)
    outbox_a, outbox_b = DeliveryOutbox(daemon.db, RetryPolicy()), DeliveryOutbox(mailer.db, RetryPolicy())
    with daemon.db:
        outbox_a.enqueue("email", GOOD, "tok", Message("s", "t", "h"), 100)
    [seen_by_a], [seen_by_b] = outbox_a.due(100), outbox_b.due(100)
    held = outbox_a.claim(seen_by_a, 100, lease_seconds=300)
    assert held
    for later in (101, 250, 399):  # every moment of the lease, with the old and with a fresh view
        assert not outbox_b.claim(seen_by_b, later) and outbox_b.due(later) == []
    [expired] = outbox_b.due(400)
    taken = outbox_b.claim(expired, 400)
    assert taken
    assert not outbox_a.delivered(held, 401)  # the dead owner's late word changes nothing
    assert outbox_b.delivered(taken, 402)
    assert outbox_a.counts() == {"waiting": 0, "delivered": 1, "given_up": 0}


def test_only_the_lease_owner_releases_or_fails_a_message(tmp_path):
    state = State(tmp_path)
    outbox = DeliveryOutbox(state.db, RetryPolicy(initial_delay_seconds=10, jitter=0))
    with state.db:
        outbox.enqueue("email", GOOD, "tok", Message("s", "t", "h"), 100)
    [unclaimed] = outbox.due(100)
    assert not outbox.delivered(unclaimed, 100) and not outbox.failed(unclaimed, 100, "x", permanent=True)
    held = outbox.claim(unclaimed, 100)
    assert outbox.release(held, 100) and not outbox.release(held, 100)
    again = outbox.claim(outbox.due(100)[0], 100)
    assert again and outbox.failed(again, 100, "down", permanent=False)
    assert outbox.due(109) == [] and len(outbox.due(110)) == 1


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, SystemExit])
def test_an_interrupted_send_gives_its_lease_back(tmp_path, interruption):
    class Interrupted:
        def send(self, target, message, token):
            raise interruption()

    alerting = alerting_on(tmp_path, email=Interrupted())
    queue(alerting, 1)
    with pytest.raises(interruption):
        alerting.drain()
    [again] = alerting.outbox.due(1_000_000)  # due at once, no lease left to wait out
    assert again.attempts == 0 and alerting.db.execute("SELECT lease FROM deliveries").fetchone() == (None,)
    alerting.senders = {"email": Counting()}
    assert alerting.drain() == {"waiting": 0, "delivered": 1, "given_up": 0}


# --- header-safe email --------------------------------------------------------------------------------------


class FakeSmtp(smtplib.SMTP):
    """smtplib's own client logic over no connection: what it would put on the wire is recorded.

    Like a real session it refuses to put a line break or (without SMTPUTF8) a
    non-ASCII character into a command.
    """

    def __init__(self, outbox: list, smtputf8: bool = False):
        super().__init__()  # no host: nothing is connected
        self.outbox = outbox
        self.esmtp_features = {"8bitmime": "", **({"smtputf8": ""} if smtputf8 else {})}
        self.does_esmtp = True

    def ehlo_or_helo_if_needed(self):
        return None

    def sendmail(self, from_addr, to_addrs, msg, mail_options=(), rcpt_options=()):
        to_addrs = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
        for address in [from_addr, *to_addrs]:
            if "\r" in address or "\n" in address:
                raise ValueError("command and arguments contain prohibited newline characters")
            if "SMTPUTF8" not in mail_options:
                address.encode("ascii")
        self.outbox.append((to_addrs, msg if isinstance(msg, bytes) else msg.encode(), list(mail_options)))
        return {}

    def __exit__(self, *exc):
        return None


def email_alerting(tmp_path, outbox: list, smtputf8=False) -> Alerting:
    sender = EmailSender(load_config(None, environ={}).notifiers["email"], {})
    sender._connect = lambda: FakeSmtp(outbox, smtputf8)
    clock = itertools.count(1_000_000, 3600)  # an hour per reading: every backoff is over by the next drain
    return alerting_on(tmp_path, lambda: next(clock), email=sender)


def parsed(raw: bytes):
    import email
    import email.policy

    return email.message_from_bytes(raw, policy=email.policy.default)


HOSTILE_TARGETS = {
    "nel inside": "op\u0085x@example.org",
    "line separator inside": "op\u2028x@example.org",
    "crlf bcc": "op@example.org\r\nBcc: victim@example.org",
    "lf inside": "op@exam\nple.org",
    "nul": "op@exa\x00mple.org",
    "over-long": "o" * 250 + "@example.org",
    "two addresses": "op@example.org, victim@example.org",
    "display name": "Op <victim@example.org>",
    "no domain": "op@",
    "not text": "",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_TARGETS))
def test_a_target_that_cannot_be_a_header_is_set_aside_and_blocks_nothing(tmp_path, name):
    """Two messages to the hostile target, one to a good one after them: the good one is delivered, the others
    are given up with a reason at once (not retried), and no one else ever receives anything."""
    sent: list = []
    alerting = email_alerting(tmp_path, sent)
    target = HOSTILE_TARGETS[name]
    alerting.send_later("email", target, Message("first", "t", "h"), "t1")
    alerting.send_later("email", target, Message("second", "t", "h"), "t2")
    alerting.send_later("email", GOOD, Message("after", "t", "h"), "t3")
    for _ in range(3):
        alerting.drain()
    recipients = [address for to_addrs, _, _ in sent for address in to_addrs]
    print(f"\n{name}: {len(sent)} delivered, counts {alerting.outbox.counts()}")
    assert recipients == [GOOD]
    assert alerting.outbox.counts() == {"waiting": 0, "delivered": 1, "given_up": 2}
    reasons = [row[0] for row in alerting.db.execute("SELECT last_error FROM deliveries WHERE gave_up IS NOT NULL")]
    assert all(reason and "address" in reason for reason in reasons), reasons


@pytest.mark.parametrize("target,received", [
    ("op@example.org\u0085", "op@example.org"),  # spacing around an address is not part of it
    ("\u2028 op@example.org \t", "op@example.org"),
    ("op@exämple.org", "op@xn--exmple-cua.org"),  # an international domain goes out in its ASCII form
])
def test_an_address_with_only_spacing_around_it_or_an_international_domain_is_delivered(tmp_path, target, received):
    sent: list = []
    alerting = email_alerting(tmp_path, sent)
    alerting.send_later("email", target, Message("hello", "t", "h"), "t1")
    alerting.drain()
    assert [to_addrs for to_addrs, _, _ in sent] == [[received]]
    assert parsed(sent[0][1])["To"] == received


def test_a_non_ascii_mailbox_needs_smtputf8_and_is_set_aside_without_it(tmp_path):
    sent: list = []
    alerting = email_alerting(tmp_path, sent)
    alerting.send_later("email", "opérateur@example.org", Message("s", "t", "h"), "t1")
    alerting.send_later("email", GOOD, Message("s", "t", "h"), "t2")
    alerting.drain()
    assert [to for to, _, _ in sent] == [[GOOD]] and alerting.outbox.counts()["given_up"] == 1
    (reason,) = alerting.db.execute("SELECT last_error FROM deliveries WHERE gave_up IS NOT NULL").fetchone()
    assert "SMTPUTF8" in reason
    with_utf8: list = []
    alerting = email_alerting(tmp_path / "utf8", with_utf8, smtputf8=True)
    alerting.send_later("email", "opérateur@example.org", Message("s", "t", "h"), "t1")
    alerting.drain()
    assert [(to, options) for to, _, options in with_utf8] == [
        (["opérateur@example.org"], ["SMTPUTF8", "BODY=8BITMIME"])]


HOSTILE_MESSAGES = {
    "nel subject": Message("a\u0085Bcc: victim@example.org", "t", "h"),
    "separators subject": Message("a\u2028b\u2029c\x1cd\x0be\x0cf", "t", "h"),
    "crlf subject": Message("a\r\nBcc: victim@example.org", "t", "h"),
    "nul everywhere": Message("a\x00b", "x\x00y", "<p>\x00</p>"),
    "surrogates": Message("a\ud800b", "x\udfffy", "<p>\ud83d</p>"),
    "over-long subject": Message("S" * 5000, "t" * 100_000, "h"),
    "header injection": Message("s", "t", "h", {"Bcc": "victim@example.org", "To": "victim@example.org",
                                                "X-Evil\r\nBcc": "victim@example.org",
                                                "List-Unsubscribe": "<https://x/u>\u0085Bcc: victim@example.org"}),
    "odd headers": Message("s", "t", "h", {"List-Unsubscribe": 7, "": "x", "X y": "z"}),
}


OWN_HEADERS = {b"from", b"to", b"subject", b"date", b"message-id", b"auto-submitted", b"mime-version",
               b"content-type", b"list-unsubscribe", b"list-unsubscribe-post"}


@pytest.mark.parametrize("name", sorted(HOSTILE_MESSAGES))
def test_whatever_reaches_a_header_is_made_safe_and_the_next_message_follows(tmp_path, name):
    """A message as stored (rows can hold anything) is sent with safe headers to its one recipient, then the next."""
    sent: list = []
    alerting = email_alerting(tmp_path, sent)
    with alerting.db:
        alerting.db.execute("BEGIN IMMEDIATE")
        for token, message in (("t1", HOSTILE_MESSAGES[name]), ("t2", Message("next", "t", "h"))):
            alerting.db.execute("INSERT INTO deliveries (channel, target, token, message, created, next_attempt) "
                                "VALUES ('email', ?, ?, ?, 0, 0)",
                                (GOOD, token, json.dumps(message.as_dict())))
    for _ in range(3):
        alerting.drain()
    print(f"\n{name}: {len(sent)} delivered, counts {alerting.outbox.counts()}")
    assert alerting.outbox.counts()["waiting"] == 0
    assert [to for to, _, _ in sent] == [[GOOD]] * len(sent) and len(sent) >= 1
    assert parsed(sent[-1][1])["Subject"] == "next"
    for _, raw, _ in sent:
        mail = parsed(raw)
        header_lines = raw.split(b"\r\n\r\n")[0].split(b"\r\n")
        names = {line.split(b":")[0].lower() for line in header_lines if line[:1] not in (b" ", b"\t")}
        assert names <= OWN_HEADERS and mail.get_all("To") == [GOOD]
        assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
        assert b"\x00" not in raw


def test_a_message_that_can_never_be_built_is_given_up_with_its_reason(tmp_path, monkeypatch):
    sent: list = []
    alerting = email_alerting(tmp_path, sent)
    real_build = EmailSender.build

    def build(self, target, message, token):
        if message.subject == "poison":
            raise ValueError("Header values may not contain linefeed or carriage return characters")
        return real_build(self, target, message, token)

    monkeypatch.setattr(EmailSender, "build", build)
    alerting.send_later("email", GOOD, Message("poison", "t", "h"), "t1")
    alerting.send_later("email", GOOD, Message("next", "t", "h"), "t2")
    alerting.drain()
    assert [parsed(raw)["Subject"] for _, raw, _ in sent] == ["next"]
    (reason,) = alerting.db.execute("SELECT last_error FROM deliveries WHERE gave_up IS NOT NULL").fetchone()
    assert "linefeed" in reason


def test_a_notifier_that_fails_the_same_surprising_way_every_time_stops_blocking_its_destination(tmp_path):
    """An unexpected error is retried (it may be passing), but not forever: the messages behind it go out."""

    class Picky(Counting):
        def send(self, target, message, token):
            if message.subject == "poison":
                raise TypeError("cannot handle this one")
            super().send(target, message, token)

    notifier = Picky()
    clock = itertools.count(1_000_000, 3600)
    alerting = alerting_on(tmp_path, lambda: next(clock), email=notifier)
    alerting.send_later("email", GOOD, Message("poison", "t", "h"), "t1")
    alerting.send_later("email", GOOD, Message("next", "t", "h"), "t2")
    for _ in range(20):
        alerting.drain()
    assert [subject for _, subject, _ in notifier.sent] == ["next"]
    assert alerting.outbox.counts() == {"waiting": 0, "delivered": 1, "given_up": 1}


# --- corrupt rows -------------------------------------------------------------------------------------------


BAD_DELIVERIES = [  # (message, attempts, next_attempt, target, token) written with sqlite3, not through the agent
    ("{not json", 0, 0, GOOD, "b1"),
    ("[1, 2]", 0, 0, GOOD, "b2"),
    ('{"subject": 5, "text": "t", "html": "h", "headers": {}}', 0, 0, GOOD, "b3"),
    ('{"subject": "s"}', 0, 0, GOOD, "b4"),
    ('{"subject": "s", "text": "t", "html": "h", "headers": [1]}', 0, 0, GOOD, "b5"),
    ('{"subject": "s", "text": "t", "html": "h", "headers": {"List-Unsubscribe": 1}}', 0, 0, GOOD, "b6"),
    ('{"subject": "s", "text": "t", "html": "h", "headers": {}}', "many", 0, GOOD, "b7"),
    ('{"subject": "s", "text": "t", "html": "h", "headers": {}}', 0, "soon", GOOD, "b8"),
    ('{"subject": "s", "text": "t", "html": "h", "headers": {}}', 0, 0, b"\xff\xfe", "b9"),
    ('{"subject": "s", "text": "t", "html": "h", "headers": {}}', 0, 0, GOOD, b"\x00tok"),
    (b"\x80\x81", 0, 0, GOOD, "b11"),
    ('{"subject": "s", "text": "t", "html": "h", "headers": {}}', 0, 1.5, GOOD, "b12"),
]


def write_bad_rows(path):
    """Bad rows as a broken disk, an old version or a person with sqlite3 might leave them."""
    with sqlite3.connect(path) as db:
        for message, attempts, next_attempt, target, token in BAD_DELIVERIES:
            db.execute("INSERT INTO deliveries (channel, target, token, message, created, attempts, next_attempt) "
                       "VALUES ('email', ?, ?, ?, 0, ?, ?)", (target, token, message, attempts, next_attempt))
        db.execute("INSERT INTO deliveries (channel, target, token, message, created, next_attempt) "
                   "VALUES (7, ?, 'b13', '{}', 0, 0)", (GOOD,))
        db.execute("INSERT INTO deliveries (channel, target, token, message, created, next_attempt) "
                   "VALUES ('email', ?, 'b14', CAST(x'ff7b41' AS TEXT), 0, 0)", (GOOD,))  # not UTF-8
        db.execute("INSERT INTO alerts VALUES ('k11', CAST(x'c3' AS TEXT), 0, 0, 0)")
        good_alert = {"id": "TorX", "severity": "warning", "subjects": {"authority": "a"}, "summary": "s",
                      "description": "d"}
        for key, alert, first, last, notified in [
                ("k1", "{not json", 0, 0, None),
                ("k2", json.dumps({**good_alert, "severity": "apocalyptic"}), 0, 0, 0),
                ("k3", json.dumps(good_alert), "yesterday", 0, None),
                ("k4", json.dumps(good_alert), 0, 0, "often"),
                ("k5", json.dumps({**good_alert, "subjects": ["a"]}), 0, 0, 0),
                ("k6", json.dumps({**good_alert, "silenced": "yes"}), 0, 0, 0),
                ("k7", json.dumps({"id": "TorX"}), 0, 0, 0),
                (None, json.dumps(good_alert), 0, 0, 0),
                ("k9", "[]", 0, 0, 0),
                ("k10", json.dumps({**good_alert, "wait_seconds": "1h"}), 0, 0, 0)]:
            db.execute("INSERT INTO alerts VALUES (?, ?, ?, ?, ?)", (key, alert, first, last, notified))
        db.execute("INSERT OR REPLACE INTO agent_status VALUES ('alerts_period', 'not a number')")


def test_corrupt_rows_cost_only_themselves_and_are_set_aside_counted_and_reported_once(tmp_path, caplog, capsys):
    config_path = tmp_path / "agent.yaml"
    config_path.write_text(f"state_dir: {tmp_path / 'state'}\n"
                           "alerts:\n  routes:\n    - name: all\n      email: [list@example.org]\n")
    config = load_config(config_path, environ={})
    State(config.state_dir).close()
    write_bad_rows(Path(config.state_dir) / "agent.sqlite")

    notifier = Counting()
    alerting = Alerting(config, State(config.state_dir).db, environ={}, clock=lambda: 2_000_000)
    alerting.senders = {"email": notifier}
    alerting.send_later("email", GOOD, Message("good one", "t", "h"), "g1")
    finding = Finding("TorAuthorityClockSkew", "warning", {"authority": "moria1"}, "skew", "skewed", {})
    with caplog.at_level(logging.WARNING):
        notices = alerting.on_period([finding], period=2_000_000)
        counts = alerting.drain()
        alerting.drain()
        assert alerting.on_period([finding], period=2_003_600) == []
        alerting.drain()
    assert [n.status for n in notices] == ["firing"]
    assert sorted(subject for _, subject, _ in notifier.sent) == ["[warning] TorAuthorityClockSkew (moria1)",
                                                                  "good one"]
    assert counts["waiting"] == 0 and counts["delivered"] == 2
    bad_deliveries, bad_alerts = len(BAD_DELIVERIES) + 2, 11
    set_aside = bad_deliveries + bad_alerts + 1  # and the period marker
    assert alerting.quarantined() == {"deliveries": bad_deliveries, "alerts": bad_alerts, "status": 1}
    complaints = [r for r in caplog.records if "set aside" in r.getMessage()]
    assert len(complaints) == set_aside  # each once, however often it is read

    from agent.cli.main import main

    assert main(["alerts", "status", "--config", str(config_path)]) == 0
    assert main(["alerts", "drain", "--config", str(config_path)]) == 0
    output = capsys.readouterr().out
    assert f"{bad_deliveries} deliveries, {bad_alerts} alerts and 1 status value set aside" in output


def test_an_alert_that_cannot_be_told_is_left_out_and_the_rest_of_the_period_goes_out(tmp_path):
    """A stored alert whose time no calendar holds: its "resolved" is dropped, the period's other news is sent."""
    config_path = tmp_path / "agent.yaml"
    config_path.write_text(f"state_dir: {tmp_path / 'state'}\n"
                           "alerts:\n  routes:\n    - name: all\n      email: [list@example.org]\n")
    config = load_config(config_path, environ={})
    state = State(config.state_dir)
    far = {"id": "TorX", "severity": "warning", "subjects": {"authority": "a"}, "summary": "s", "description": "d"}
    state.db.execute("INSERT INTO alerts VALUES ('TorX|authority=a|', ?, ?, 0, 0)", (json.dumps(far), 10**18))
    notifier = Counting()
    alerting = Alerting(config, state.db, environ={}, clock=lambda: 2_000_000)
    alerting.senders = {"email": notifier}
    finding = Finding("TorAuthorityClockSkew", "warning", {"authority": "moria1"}, "skew", "skewed", {})
    assert sorted(n.status for n in alerting.on_period([finding], period=2_000_000)) == ["firing", "resolved"]
    alerting.drain()
    assert [subject for _, subject, _ in notifier.sent] == ["[warning] TorAuthorityClockSkew (moria1)"]
    assert alerting.on_period([finding], period=2_003_600) == []  # the period after goes on as usual


# --- secrets in what servers answer -------------------------------------------------------------------------

TOKEN = "syt_c2VjcmV0_VGhpc0lzQVNlY3JldA_1a2b3c"
PASSWORD = "correct-horse-battery-staple"


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with an error that quotes the request's Authorization header (and its parts)."""

    statuses: list[int] = []

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        status = self.statuses.pop(0) if self.statuses else 500
        authorization = self.headers.get("Authorization", "")
        credential = authorization.split(" ", 1)[-1]
        body = {"status": "error", "errorType": "bad_data", "errcode": "M_UNKNOWN",
                "error": f"rejected Authorization: {authorization} (credential {credential}) {self.path}",
                "message": f"you sent {authorization}"}
        text = json.dumps(body) if status != 502 else f"<html>you sent {credential} {authorization}</html>"
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status != 502 else "text/html")
        self.send_header("X-Echo", authorization)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def leaked(text: str, *secrets: str) -> list[str]:
    import base64

    forms = set(secrets) | {base64.b64encode(s.encode()).decode() for s in secrets}
    forms |= {base64.b64encode(f"user:{s}".encode()).decode() for s in secrets}
    return [form for form in forms if form in text]


def test_a_tsdb_that_echoes_the_token_leaks_it_nowhere(tmp_path, echo_server, caplog):
    from agent.store.influx import InfluxWriter
    from agent.store.outbox import Outbox
    from agent.store.store import Store

    url = f"http://127.0.0.1:{echo_server.server_port}"
    writer = InfluxWriter(url, "tor", "tor", TOKEN, 5, 100, RetryPolicy(attempts=2, initial_delay_seconds=0))
    store = Store(Outbox(tmp_path / "outbox", 10**6), writer)
    messages = []
    with caplog.at_level(logging.DEBUG):
        for statuses in ([500, 500], [400], [502, 502], [401]):
            _Echo.statuses = list(statuses)
            result = store.save([], 1_000_000)
            messages.append(str(result.error))
            try:
                writer.write(["m v=1 1"])
            except Exception as error:
                messages.append(str(error))
    store.close()
    text = "\n".join(messages + [r.getMessage() for r in caplog.records] + [caplog.text])
    assert "HTTP 500" in text and "HTTP 400" in text and "[redacted]" in text
    assert leaked(text, TOKEN) == []
    stored = "".join(p.read_text(errors="replace") for p in (tmp_path / "outbox").iterdir() if p.is_file())
    assert leaked(stored, TOKEN) == []


def test_a_query_endpoint_that_echoes_url_credentials_leaks_them_nowhere(echo_server, caplog):
    from agent.model.errors import QueryError
    from agent.store.query import run_query

    url = f"http://user:{PASSWORD}@127.0.0.1:{echo_server.server_port}"
    messages = []
    with caplog.at_level(logging.DEBUG):
        for status in (400, 500, 502):
            _Echo.statuses = [status]
            with pytest.raises(QueryError) as error:
                run_query(url, "up")
            messages.append(str(error.value))
    text = "\n".join(messages + [caplog.text])
    assert "[redacted]" in text
    assert leaked(text, PASSWORD) == []


def test_a_homeserver_that_echoes_the_token_leaks_it_into_no_log_error_or_row(tmp_path, echo_server, caplog):
    from agent.alerts.matrix import MatrixSender

    config = load_config(None, environ={})
    settings = type(config.notifiers["matrix"])(f"http://127.0.0.1:{echo_server.server_port}", "TEST_TOKEN", 5)
    matrix = MatrixSender(settings, {"TEST_TOKEN": TOKEN}, sleep=lambda seconds: None)
    clock = itertools.count(1_000_000, 3600)
    alerting = alerting_on(tmp_path, lambda: next(clock), matrix=matrix)
    errors = []
    with caplog.at_level(logging.DEBUG):
        for status in (400, 500, 502, 401, 403):
            _Echo.statuses = [status]
            try:
                matrix.send("!room:example.org", Message("s", "t", "h"), "txn")
            except DeliveryError as error:
                errors.append(str(error))
        _Echo.statuses = [500, 502, 400]
        for index in range(3):
            alerting.send_later("matrix", "#room:example.org", Message("s", "t", "h"), f"m{index}")
            alerting.drain()
    rows = "\n".join(alerting.db.iterdump())
    text = "\n".join(errors + [caplog.text, rows])
    assert "homeserver answered 400" in text and "[redacted]" in text
    assert leaked(text, TOKEN) == []


def test_an_smtp_server_that_echoes_the_login_leaks_it_nowhere(tmp_path, caplog):
    import base64

    environ = {"SMTP_USER": "user", "SMTP_PASSWORD": PASSWORD}
    settings = load_config(None, environ={}).notifiers["email"]
    settings = type(settings)(**{**settings.__dict__, "host": "127.0.0.1", "username_env": "SMTP_USER",
                                 "password_env": "SMTP_PASSWORD"})
    sender = EmailSender(settings, environ)
    plain = base64.b64encode(f"\0user\0{PASSWORD}".encode()).decode()
    refusals = iter([
        smtplib.SMTPAuthenticationError(535, f"5.7.8 bad credentials AUTH PLAIN {plain}".encode()),
        smtplib.SMTPSenderRefused(530, f"user:{PASSWORD} not allowed".encode(), "allium@localhost"),
        smtplib.SMTPDataError(554, f"password={PASSWORD}".encode()),
        OSError(f"connection reset after {PASSWORD}"),
    ])

    def connect():
        raise next(refusals)

    sender._connect = connect
    clock = itertools.count(1_000_000, 3600)
    alerting = alerting_on(tmp_path, lambda: next(clock), email=sender)
    with caplog.at_level(logging.DEBUG):
        for index in range(4):
            alerting.send_later("email", f"u{index}@example.org", Message("s", "t", "h"), f"e{index}")
        alerting.drain()
    text = caplog.text + "\n".join(alerting.db.iterdump())
    assert "535" in text and "554" in text
    assert leaked(text, PASSWORD) == [] and plain not in text


@pytest.mark.parametrize("text", [
    "Authorization: Bearer abc.def-ghi",
    'HTTP 401 {"headers": {"authorization": "Token abc+/="}}',
    "{'Authorization': 'Basic dXNlcjpwYXNz'}",
    "proxy-authorization: Negotiate YIIabc",
    "Cookie: session=abc123",
    "GET /?access_token=abc123&x=1",
    '{"password": "hunter two"}',
    "ALLIUM_MATRIX_TOKEN=abc123def",
    "https://bob:hunter2@tsdb.example.org/api",
    "got bearer abc123 from you",
    "Token Zm9vYmFyYmF6cXV4MTIz==",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
])
def test_credential_shapes_are_redacted(text):
    from agent.model.redact import MASK, redact

    redacted = redact(text)
    assert MASK in redacted
    assert not any(secret in redacted for secret in ("abc", "dXNlcjpwYXNz", "hunter", "YIIabc", "Zm9vYmFy",
                                                      "c2lnbmF0dXJl"))


def test_ordinary_words_survive_redaction():
    from agent.model.redact import redact

    for text in ("no Matrix access token: set $ALLIUM_MATRIX_TOKEN", "the token expired", "SMTP 535 bad password",
                 "homeserver answered 403: M_FORBIDDEN not in room"):
        assert redact(text) == text


def test_registered_secrets_are_redacted_in_every_usual_encoding():
    import base64
    from urllib.parse import quote

    from agent.model.redact import redact, register, register_login

    secret = "s3cret/with+plus=and\"quote"
    register(secret)
    register_login("alice", "pa55word!")
    for form in (secret, quote(secret, safe=""), json.dumps(secret)[1:-1], base64.b64encode(secret.encode()).decode(),
                 base64.b64encode(b"alice:pa55word!").decode(), base64.b64encode(b"\0alice\0pa55word!").decode(),
                 secret.upper()):
        assert redact(f"server said <{form}>") == "server said <[redacted]>", form
    assert redact("x" * 50 + secret, limit=60).count("s3cret") == 0  # redacted before it is cut


def test_the_log_filter_redacts_messages_arguments_and_tracebacks(caplog):
    from agent.model.redact import RedactingFilter, register

    register("filter-secret-123")
    logger = logging.getLogger("test.redact")
    logger.addFilter(RedactingFilter())
    try:
        with caplog.at_level(logging.INFO):
            logger.info("token %s", "filter-secret-123")
            try:
                raise ValueError("Authorization: Bearer filter-secret-123")
            except ValueError:
                logger.exception("failed")
    finally:
        logger.filters.clear()
    assert "filter-secret-123" not in caplog.text and caplog.text.count("[redacted]") >= 2
