"""Webhooks through the outbox, driven as the daemon drives it (``Alerting.on_period`` then ``drain``), to a
receiver of our own on 127.0.0.1 that verifies signatures and dedupes by ``X-Allium-Delivery``.

The receiver is down (503) for a while, then takes a message but drops the connection before answering (a
lost 200), then answers: the outbox retries, every try carries the same delivery token, and the receiver acts
on each message exactly once.
"""

import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.alerts.dispatch import Alerting
from agent.alerts.webhook import verify
from agent.config.loader import load_config
from agent.model.findings import Finding
from agent.pipeline.state import State
from tests.unit.test_webhook import wire

pytestmark = pytest.mark.integration
SECRET = "receiver-shared-secret-7f3a9c1e5b"
PERIOD = 1_700_000_400


class Receiver(BaseHTTPRequestHandler):
    """What a careful receiver does: verify the signature and the timestamp, then act once per delivery."""

    def do_POST(self):
        server = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        delivery = self.headers.get("X-Allium-Delivery")
        signature = self.headers.get("X-Allium-Signature")
        fresh = abs(time.time() - int(self.headers.get("X-Allium-Timestamp", 0))) < 300
        verified = verify(SECRET, body, signature) if signature else None
        with server.lock:
            outcome = server.plan[self.path].pop(0) if server.plan[self.path] else "ok"
            if outcome in ("ok", "drop") and (verified is False or not fresh):
                outcome = "refused"
            elif outcome in ("ok", "drop") and delivery not in server.processed:  # a repeat is acknowledged only
                server.processed[delivery] = (self.path, json.loads(body))
                server.acted[delivery] += 1
            server.requests.append((self.path, delivery, verified, outcome))
        if outcome == "drop":  # acted on, but the answer never leaves: the sender sees a dropped connection
            self.close_connection = True
            return
        code = {"ok": 200, "503": 503, "refused": 401}[outcome]
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    server.daemon_threads = True
    server.lock = threading.Lock()
    server.plan = {"/ops": [], "/am": []}
    server.requests, server.processed, server.acted = [], {}, Counter()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def alerting_for(tmp_path, port, clock):
    path = tmp_path / "agent.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\n"
                    "alerts:\n  retry: {initial_delay_seconds: 1, max_delay_seconds: 2}\n"
                    "  routes:\n    - {name: hooks, webhook: [ops, am], severities: [critical, warning]}\n"
                    "webhook:\n  timeout_seconds: 5\n  external_url: 'https://agent.example.org'\n  endpoints:\n"
                    f"    ops: {{url: 'http://127.0.0.1:{port}/ops', format: json, secret_env: TEST_WEBHOOK_SECRET}}\n"
                    f"    am: {{url: 'http://127.0.0.1:{port}/am', format: alertmanager}}\n")
    config = load_config(path, environ={})
    return Alerting(config, State(config.state_dir).db, environ={"TEST_WEBHOOK_SECRET": SECRET}, clock=clock)


def findings():
    return [Finding("TorAuthorityClockSkew", "warning", {"authority": "moria1"}, "moria1's clock is off",
                    "moria1 is 12 s off", {}),
            Finding("TorAuthorityUnreachable", "critical", {"authority": "auth3", "document": "vote"},
                    "auth3 unreachable", "no vote from auth3 <script>", {})]


def drain_until_empty(alerting, now, tries=20):
    """Drains as the daemon does between periods, the clock moving past each backoff; returns the drains taken."""
    for drains in range(1, tries + 1):
        now[0] += 10
        if alerting.drain()["waiting"] == 0:
            return drains
    raise AssertionError(f"still waiting after {tries} drains: {alerting.outbox.waiting()}")


def test_outage_then_a_lost_answer_and_each_message_is_acted_on_once(tmp_path, monkeypatch, receiver):
    wire(monkeypatch)
    now = [PERIOD]
    alerting = alerting_for(tmp_path, receiver.server_port, lambda: now[0])
    receiver.plan["/ops"] = ["503"] * 3 + ["drop"]
    receiver.plan["/am"] = ["503"] * 3

    assert len(alerting.on_period(findings(), period=PERIOD)) == 2
    drains = drain_until_empty(alerting, now)
    assert alerting.outbox.counts() == {"waiting": 0, "delivered": 2, "given_up": 0}
    ops = [r for r in receiver.requests if r[0] == "/ops"]
    am = [r for r in receiver.requests if r[0] == "/am"]
    print(f"\nfiring: {drains} drains; /ops saw {[r[3] for r in ops]}, /am saw {[r[3] for r in am]}")
    assert [r[3] for r in ops] == ["503", "503", "503", "drop", "ok"]
    assert [r[3] for r in am] == ["503", "503", "503", "ok"]
    # Every try of a message carries its token, signed (ours) or not (Alertmanager format without a secret).
    assert len({r[1] for r in ops}) == 1 and all(r[2] is True for r in ops)
    assert len({r[1] for r in am}) == 1 and all(r[2] is None for r in am)
    attempts = dict(alerting.db.execute("SELECT target, attempts FROM deliveries").fetchall())
    assert attempts == {"ops": 5, "am": 4}  # the lost answer was a failed try of its own, retried by the outbox
    assert sorted(receiver.acted.values()) == [1, 1]  # acted on once each, though /ops received it twice

    token = ops[0][1]
    path, payload = receiver.processed[token]
    assert path == "/ops" and payload["token"] == token and payload["vantage"] == alerting.config.vantage
    assert [(a["id"], a["status"]) for a in payload["alerts"]] == [
        ("TorAuthorityUnreachable", "firing"), ("TorAuthorityClockSkew", "firing")]
    assert "<script>" in payload["alerts"][0]["description"]  # data, not markup: JSON carries it as text
    _, grouped = receiver.processed[am[0][1]]
    assert grouped["version"] == "4" and grouped["status"] == "firing" and grouped["receiver"] == "am"
    assert {a["labels"]["alertname"] for a in grouped["alerts"]} == {"TorAuthorityClockSkew",
                                                                     "TorAuthorityUnreachable"}
    assert grouped["externalURL"] == "https://agent.example.org"

    # The next period the critical one is told again (critical: every period), the warning is not (4 h);
    # the one after, both resolve. New messages, new tokens, each acted on once.
    now[0] = PERIOD + 3600
    told = alerting.on_period(findings(), period=PERIOD + 3600)
    assert [(n.alert.id, n.status) for n in told] == [("TorAuthorityUnreachable", "reminder")]
    drain_until_empty(alerting, now)
    now[0] = PERIOD + 7200
    assert {n.status for n in alerting.on_period([], period=PERIOD + 7200)} == {"resolved"}
    drain_until_empty(alerting, now)
    assert alerting.outbox.counts() == {"waiting": 0, "delivered": 6, "given_up": 0}
    assert len(receiver.processed) == 6 and set(receiver.acted.values()) == {1}
    ours = [payload for _, (path, payload) in receiver.processed.items() if path == "/ops"]
    assert [[(a["id"], a["status"], a["reminder"]) for a in p["alerts"]] for p in ours[1:]] == [
        [("TorAuthorityUnreachable", "firing", True)],
        [("TorAuthorityUnreachable", "resolved", False), ("TorAuthorityClockSkew", "resolved", False)]]
    theirs = [payload for _, (path, payload) in receiver.processed.items() if path == "/am"]
    assert [p["status"] for p in theirs] == ["firing", "firing", "resolved"]
    assert all(a["endsAt"] != "0001-01-01T00:00:00Z" for a in theirs[-1]["alerts"])


def test_a_bad_signature_is_refused_by_the_receiver_and_given_up(tmp_path, monkeypatch, receiver):
    """The agent signing with another secret than the receiver's: 401, a permanent refusal, nothing acted on."""
    wire(monkeypatch)
    now = [PERIOD]
    alerting = alerting_for(tmp_path, receiver.server_port, lambda: now[0])
    alerting.senders["webhook"].secrets["ops"] = "not-the-receivers-secret-at-all"
    alerting.on_period(findings()[:1], period=PERIOD)
    drain_until_empty(alerting, now)
    assert alerting.outbox.counts() == {"waiting": 0, "delivered": 1, "given_up": 1}
    assert [(r[0], r[2], r[3]) for r in receiver.requests if r[0] == "/ops"] == [("/ops", False, "refused")]
    assert [path for path, _ in receiver.processed.values()] == ["/am"]
