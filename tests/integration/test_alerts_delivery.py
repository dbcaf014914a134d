"""Alerts from the private Tor network to a real SMTP server (aiosmtpd) and a real Matrix homeserver (Synapse).

Only the two checks an authority outage raises at once are routed, so what
arrives is decided by the test, not by the network's timing.
"""

import json
import time
from datetime import datetime

import pytest
import yaml

from agent.alerts.render import Message
from agent.config.loader import load_config
from agent.loop.runner import PROCESSED, PeriodRunner
from agent.metrics.geoip import GeoIP
from agent.pipeline.state import State
from agent.store.store import Store
from agent.testnet import network as testnet
from agent.testnet.network import _free_ports
from tests.integration.smtp import SmtpServer
from tests.integration.synapse import Synapse

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROUTED = ["TorAuthorityUnreachable", "TorAuthorityOrPortUnreachable"]
INBOX = "network-health@example.org"


@pytest.fixture
def servers(tmp_path):
    smtp_port, synapse_port = _free_ports(2)
    smtp, synapse = SmtpServer(smtp_port), Synapse(tmp_path / "synapse", synapse_port)
    smtp.start()
    synapse.start()
    try:
        token = synapse.register("allium")
        room = synapse.create_room(token, "health")
        yield smtp, synapse, token, room
    finally:
        smtp.stop()
        synapse.stop()


def runner_for(tor_network, tmp_path, smtp, synapse, token, room):
    base = yaml.safe_load((tor_network.directory / testnet.AGENT_CONFIG).read_text())
    base.update({
        "state_dir": str(tmp_path / "state"),
        "alerts": {"routes": [{"name": "health", "email": [INBOX], "matrix": [room], "checks": ROUTED}],
                   "retry": {"initial_delay_seconds": 1, "max_delay_seconds": 2}},
        "email": {"host": "127.0.0.1", "port": smtp.port, "security": "none"},
        "matrix": {"homeserver": synapse.url, "token_env": "TEST_MATRIX_TOKEN"},
    })
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(base))
    config = load_config(path, environ={})
    state = State(config.state_dir)
    runner = PeriodRunner(config, state, Store.from_config(config), GeoIP.empty())
    runner.alerting.senders["matrix"].token = token
    return runner


def next_period(runner, timeout=60):
    """Runs cycles until one records a new period; returns its summary."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        outcome = runner.cycle()
        if outcome.status == PROCESSED:
            return outcome.summary
        time.sleep(1)
    raise AssertionError("no new period recorded")


def subjects(smtp):
    return [message["Subject"] for message in smtp.to(INBOX)]


def test_one_message_per_destination_then_nothing_then_resolved(tor_network, tmp_path, servers):
    smtp, synapse, token, room = servers
    runner = runner_for(tor_network, tmp_path, smtp, synapse, token, room)
    next_period(runner)
    assert subjects(smtp) == [] and synapse.messages(token, room) == []

    testnet.stop(tor_network, ["auth3"])
    try:
        next_period(runner)
        mails, events = smtp.to(INBOX), synapse.messages(token, room)
        assert len(mails) == 1 and len(events) == 1
        subject = mails[0]["Subject"]
        print(f"\nemail: {subject}\n{mails[0].get_body(('plain',)).get_content()}")
        print(f"matrix: {events[0]['content']['body']}")
        assert subject == "[warning] TorAuthorityOrPortUnreachable (auth3), TorAuthorityUnreachable (auth3)"
        assert "cannot connect to the ORPort of auth3" in mails[0].get_body(("plain",)).get_content()
        assert "<b>[warning] TorAuthorityUnreachable (auth3, vote)" in mails[0].get_body(("html",)).get_content()
        assert events[0]["content"]["format"] == "org.matrix.custom.html"
        assert events[0]["content"]["body"].startswith(subject)

        next_period(runner)
        assert len(smtp.to(INBOX)) == 1 and len(synapse.messages(token, room)) == 1  # still firing: suppressed 4 h
    finally:
        testnet.start(tor_network, ["auth3"])
    wait_until_answering(runner, tor_network)
    mails, events = smtp.to(INBOX), synapse.messages(token, room)
    # auth3 comes back in steps (ORPort first, its vote last), so the resolved
    # notices may arrive over more than one period; nothing fires anew.
    later = [m["Subject"] for m in mails[1:]]
    print("then: " + " | ".join(later))
    assert later and all(subject.startswith("[resolved] ") for subject in later)
    assert len(events) == len(mails) and all("cleared after" in e["content"]["body"] for e in events[1:])
    assert [t.alert.label for t in runner.alerting.book.active() if t.alert.id in ROUTED] == []


def wait_until_answering(runner, tor_network, timeout=90):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        summary = next_period(runner)
        if summary.get("fetch_failures") == 0:
            return summary
    raise AssertionError("auth3 did not come back")


def test_outage_of_both_servers_loses_and_repeats_nothing(tor_network, tmp_path, servers):
    smtp, synapse, token, room = servers
    runner = runner_for(tor_network, tmp_path, smtp, synapse, token, room)
    next_period(runner)
    smtp.stop()
    synapse.stop()
    testnet.stop(tor_network, ["auth3"])
    try:
        waiting = []
        for _ in range(3):
            summary = next_period(runner)
            waiting.append(summary.get("deliveries_waiting"))
    finally:
        testnet.start(tor_network, ["auth3"])
    summary = wait_until_answering(runner, tor_network)
    counts = runner.alerting.outbox.counts()
    # A firing message and one or more resolved ones, each to email and Matrix.
    assert counts["waiting"] >= 4 and counts["waiting"] % 2 == 0 and counts["delivered"] == 0, counts
    print(f"\nduring the outage, deliveries waiting after each period: {waiting}, then {counts}")

    smtp.start()
    synapse.start()
    started = datetime.utcnow()
    end = time.monotonic() + 60
    while runner.alerting.outbox.counts()["waiting"] and time.monotonic() < end:
        runner.drain_deliveries()
        time.sleep(1)
    counts = runner.alerting.outbox.counts()
    mails, events = smtp.to(INBOX), synapse.messages(token, room)
    print(f"after recovery ({(datetime.utcnow() - started).total_seconds():.0f} s): {counts}; "
          f"{len(mails)} emails, {len(events)} Matrix messages")
    queued = counts["delivered"]
    assert counts == {"waiting": 0, "delivered": queued, "given_up": 0}
    assert len(mails) == queued // 2 and len({m["Message-ID"] for m in mails}) == queued // 2
    assert len(events) == queued // 2
    assert [m["Subject"].split()[0] for m in mails] == ["[warning]"] + ["[resolved]"] * (queued // 2 - 1)

    # A retry of a message the homeserver already took (a lost reply) is the same event, not a second one.
    delivery = runner.alerting.outbox.db.execute("SELECT target, token, message FROM deliveries "
                                                 "WHERE channel = 'matrix' ORDER BY id LIMIT 1").fetchone()
    sender = runner.alerting.senders["matrix"]
    again = sender.send(delivery[0], Message(**json.loads(delivery[2])), delivery[1])
    assert again == events[0]["event_id"] and len(synapse.messages(token, room)) == queued // 2


def test_hostile_text_arrives_escaped_and_matrix_rate_limits_are_honoured(tmp_path):
    """A strict homeserver (one message per 4 s) and a relay name full of markup and line breaks."""
    from agent.alerts.dispatch import Alerting
    from agent.alerts.render import compose
    from agent.model.alerts import Alert, Notice

    smtp_port, synapse_port = _free_ports(2)
    smtp, synapse = SmtpServer(smtp_port), Synapse(tmp_path / "synapse", synapse_port, messages_per_second=0.25)
    smtp.start()
    synapse.start()
    try:
        token = synapse.register("allium")
        room = synapse.create_room(token, "health")
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump({
            "state_dir": str(tmp_path / "state"),
            "alerts": {"retry": {"initial_delay_seconds": 1, "max_delay_seconds": 2}},
            "email": {"host": "127.0.0.1", "port": smtp_port, "security": "none"},
            "matrix": {"homeserver": synapse.url, "token_env": "TEST_MATRIX_TOKEN"}}))
        config = load_config(path, environ={})
        alerting = Alerting(config, State(config.state_dir).db, environ={"TEST_MATRIX_TOKEN": token})
        waits = []
        alerting.senders["matrix"].sleep = lambda seconds: (waits.append(seconds), time.sleep(seconds))
        nasty = '<img src=x onerror=alert(1)>\n**bold** [link](http://evil.example)\r\nBcc: victim@example.org'
        relay = Alert("TorRelayDown", "warning", {"relay": "A" * 40}, "A relay you watch is down",
                      f"{nasty} is not in the consensus", extra={"name": nasty})
        for index in range(3):
            message = compose([Notice(relay, "firing", 1_000_000, 1_000_000 + index)], "test")
            alerting.send_later("matrix", room, message, f"m{index}")
            alerting.send_later("email", INBOX, message, f"e{index}")
        end = time.monotonic() + 60
        while alerting.outbox.counts()["waiting"] and time.monotonic() < end:
            alerting.drain()
            time.sleep(0.5)
        attempts = alerting.outbox.db.execute(
            "SELECT SUM(attempts) FROM deliveries WHERE channel = 'matrix'").fetchone()[0]
        events = synapse.messages(token, room)
        print(f"\n3 Matrix messages at 0.25/s: {len(waits)} answers 429 waited out "
              f"({', '.join(f'{w:.1f} s' for w in waits)}), {attempts} outbox attempts, {len(events)} events")
        assert waits and all(0 < w <= 5 for w in waits)  # retry_after_ms honoured
        assert alerting.outbox.counts() == {"waiting": 0, "delivered": 6, "given_up": 0}
        assert len(events) == 3  # every one, once, though the homeserver answered 429 in between
        html_body = events[0]["content"]["formatted_body"]
        assert "<img" not in html_body and "&lt;img src=x onerror=alert(1)&gt;" in html_body
        [mail] = smtp.to(INBOX)[:1]
        assert mail["Bcc"] is None and "\n" not in mail["Subject"]
        assert "<img" not in mail.get_body(("html",)).get_content()
        print(f"email subject as received: {mail['Subject']}")
    finally:
        smtp.stop()
        synapse.stop()


def _smtp_alerting(state_dir, port, clock):
    """An Alerting with its own connection to ``state_dir``, mailing through the aiosmtpd server on ``port``."""
    from agent.alerts.dispatch import Alerting
    from agent.alerts.email import EmailSender

    config = load_config(None, environ={})
    settings = type(config.notifiers["email"])(**{**config.notifiers["email"].__dict__, "host": "127.0.0.1",
                                                  "port": port, "security": "none"})
    alerting = Alerting(config, State(state_dir).db, environ={}, clock=clock)
    alerting.senders = {"email": EmailSender(settings, {})}
    return alerting


def test_two_drains_at_once_hand_each_message_to_the_smtp_server_once(tmp_path):
    """Two senders on one outbox (separate SQLite connections, a clock that moves on): 30 queued, 30 received."""
    import itertools
    import threading

    (port,) = _free_ports(1)
    smtp = SmtpServer(port)
    smtp.start()
    try:
        ticks = itertools.count(1_000_000)
        senders = [_smtp_alerting(tmp_path / "state", port, lambda: next(ticks)) for _ in range(2)]
        for index in range(30):
            senders[0].send_later("email", f"user{index % 5}@example.org", Message(f"m{index}", "t", "h"), f"c{index}")
        start = threading.Barrier(2)

        def drain(alerting):
            start.wait(timeout=30)
            for _ in range(200):  # a hang guard, not a timing
                if alerting.drain()["waiting"] == 0:
                    return

        threads = [threading.Thread(target=drain, args=(a,)) for a in senders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        ids = [message["Message-ID"] for _, message in smtp.messages]
        print(f"\n30 queued, two drains: {len(ids)} received, {len(set(ids))} distinct")
        assert len(ids) == 30 and len(set(ids)) == 30
        for index in range(5):  # each address got its messages in the order they were queued
            subjects = [int(m["Subject"][1:]) for m in smtp.to(f"user{index}@example.org")]
            assert subjects == sorted(subjects) and len(subjects) == 6
    finally:
        smtp.stop()


def test_targets_no_header_can_hold_are_given_up_and_block_nothing(tmp_path):
    """U+0085, U+2028, CR/LF, NUL, over-long addresses, and a non-ASCII one, which this server (SMTPUTF8) takes."""
    import itertools

    (port,) = _free_ports(1)
    smtp = SmtpServer(port)
    smtp.start()
    try:
        ticks = itertools.count(1_000_000, 3600)
        alerting = _smtp_alerting(tmp_path / "state", port, lambda: next(ticks))
        hostile = ["op\u0085@example.org", "op\u2028x@example.org", "op@example.org\r\nBcc: victim@example.org",
                   "op\x00@example.org", "o" * 300 + "@example.org", "op@example.org, victim@example.org"]
        for index, target in enumerate(hostile):
            alerting.send_later("email", target, Message("hostile", "t", "h"), f"h{index}")
            alerting.send_later("email", INBOX, Message(f"after {index}", "t", "h"), f"g{index}")
        alerting.send_later("email", "opérateur@example.org", Message("international", "t", "h"), "utf8")
        alerting.send_later("email", INBOX + "\u0085", Message("spacing", "t", "h"), "spacing")
        alerting.send_later("email", INBOX, Message("a\u0085Bcc: victim@example.org\u2028x", "t\x00", "h"), "subject")
        for _ in range(3):
            alerting.drain()
        counts = alerting.outbox.counts()
        reasons = [row[0] for row in alerting.db.execute("SELECT last_error FROM deliveries WHERE gave_up IS NOT NULL")]
        print(f"\nhostile targets: {counts}; {len(smtp.messages)} received; reasons: {reasons}")
        assert counts == {"waiting": 0, "delivered": len(hostile) + 3, "given_up": len(hostile)}
        assert [r for r, _ in smtp.messages if r != ["opérateur@example.org"]] == [[INBOX]] * (len(hostile) + 2)
        assert [m["Subject"] for m in smtp.to("opérateur@example.org")] == ["international"]
        assert [m["Subject"] for m in smtp.to(INBOX)][-2:] == ["spacing", "a Bcc: victim@example.org x"]
        assert all(m["Bcc"] is None for m in smtp.to(INBOX)) and smtp.to("victim@example.org") == []
        assert all(reason.startswith("not a single email address") for reason in reasons)
    finally:
        smtp.stop()
