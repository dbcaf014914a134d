"""The webhook notifier: payloads from real rendered alerts, signatures, endpoint validation, and how each answer
of a real HTTP server on 127.0.0.1 is classified (delivered, retried, given up)."""

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.alerts import notifiers, webhook
from agent.alerts.render import Message, compose
from agent.alerts.webhook import Endpoint, InvalidEndpoints, WebhookConfig, WebhookSender, parse_endpoints, verify
from agent.config import values
from agent.config.loader import load_config
from agent.model.alerts import Alert, Notice, from_finding
from agent.model.errors import ConfigError, DeliveryError
from agent.model.findings import Finding
from agent.pipeline.state import State

SECRET = "s3cret-for-the-webhook-tests-0123456789"
PERIOD = 1_700_000_400


def wire(monkeypatch):
    """Registers the webhook channel and its converter where the lead's wiring is not (yet) in the tree."""
    from agent.alerts.webhook import WebhookSender as sender

    if "webhook" not in notifiers.NOTIFIERS:
        monkeypatch.setitem(notifiers.NOTIFIERS, "webhook", sender)
    if not hasattr(values, "webhook_endpoints"):
        def webhook_endpoints(value):
            try:
                return parse_endpoints(value)
            except InvalidEndpoints as error:
                raise values.InvalidValue(str(error)) from None
        monkeypatch.setattr(values, "webhook_endpoints", webhook_endpoints, raising=False)


def utc(seconds):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def notices():
    skew = from_finding(Finding("TorAuthorityClockSkew", "warning", {"authority": "moria1"}, "moria1's clock is off",
                                "moria1 is 12 s off\x1b[31m", {}))
    down = Alert("TorAuthorityUnreachable", "critical", {"authority": "auth3", "document": "vote"},
                 "auth3 unreachable", "no vote from auth3")
    return [Notice(skew, "firing", PERIOD - 7200, PERIOD), Notice(down, "resolved", PERIOD - 3600, PERIOD)]


def message():
    return compose(notices(), "vp-1", "https://agent.example.org")


def sender(url="http://127.0.0.1:9/hook", fmt="json", secret=SECRET, timeout=5.0, **settings):
    endpoint = Endpoint("ops", url, fmt, "HOOK_SECRET" if fmt == "json" or secret else None)
    return WebhookSender(WebhookConfig({"ops": endpoint}, timeout, **settings),
                         {"HOOK_SECRET": secret} if secret else {})


def test_the_message_carries_its_alerts_as_data_and_email_fields_are_unchanged():
    rendered = message()
    assert [a["id"] for a in rendered.alerts] == ["TorAuthorityUnreachable", "TorAuthorityClockSkew"]
    resolved, firing = rendered.alerts
    assert firing == {"id": "TorAuthorityClockSkew", "severity": "warning", "status": "firing", "reminder": False,
                      "label": "TorAuthorityClockSkew (moria1)", "subjects": {"authority": "moria1"},
                      "summary": "moria1's clock is off", "description": "moria1 is 12 s off [31m",
                      "started_at": utc(PERIOD - 7200), "ended_at": None}
    assert resolved["status"] == "resolved" and resolved["ended_at"] == utc(PERIOD) == "2023-11-14T22:20:00Z"
    assert rendered.vantage == "vp-1"
    stored = json.loads(json.dumps(rendered.as_dict()))
    assert Message.from_dict(stored) == rendered
    plain = Message("s", "t", "h")
    assert plain.as_dict() == {"subject": "s", "text": "t", "html": "h", "headers": {}}  # as before
    with pytest.raises(ValueError, match="alerts"):
        Message.from_dict({**stored, "alerts": "no"})


def test_json_payload_from_real_alerts_is_signed_over_the_exact_body():
    notifier = sender()
    rendered = message()
    body = notifier.body(notifier.settings.endpoints["ops"], rendered, "token-1", PERIOD + 5)
    payload = json.loads(body)
    assert set(payload) == {"version", "token", "sent_at", "vantage", "subject", "text", "alerts"}
    assert payload["version"] == 1 and payload["token"] == "token-1" and payload["sent_at"] == utc(PERIOD + 5)
    assert payload["subject"] == rendered.subject and payload["text"] == rendered.text
    assert payload["alerts"] == [dict(a) for a in rendered.alerts]
    sent = webhook.headers(body, "token-1", PERIOD + 5, SECRET)
    expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert sent["X-Allium-Signature"] == f"sha256={expected}"
    assert sent["X-Allium-Delivery"] == "token-1" and sent["X-Allium-Timestamp"] == str(PERIOD + 5)
    assert verify(SECRET, body, sent["X-Allium-Signature"])
    assert not verify(SECRET, body.replace(b"moria1", b"moria2"), sent["X-Allium-Signature"])
    assert not verify("another-secret-entirely", body, sent["X-Allium-Signature"])
    assert "X-Allium-Signature" not in webhook.headers(body, "token-1", PERIOD, None)


RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def test_alertmanager_payload_has_exactly_the_fields_alertmanager_documents():
    """prometheus.io/docs/alerting/latest/configuration/#webhook_config: the Message (version 4) fields."""
    rendered = message()
    payload = json.loads(json.dumps(webhook.alertmanager_payload(rendered, "ops", "https://agent.example.org")))
    assert set(payload) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                            "commonLabels", "commonAnnotations", "externalURL", "alerts"}
    assert payload["version"] == "4" and isinstance(payload["groupKey"], str) and payload["truncatedAlerts"] == 0
    assert payload["status"] == "firing" and payload["receiver"] == "ops"
    assert payload["externalURL"] == "https://agent.example.org"
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in payload[key].items()), key
    assert len(payload["alerts"]) == 2
    for alert in payload["alerts"]:
        assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}
        assert alert["status"] in ("firing", "resolved")
        assert all(LABEL_NAME.fullmatch(k) and isinstance(v, str) for k, v in alert["labels"].items())
        assert all(isinstance(v, str) for v in alert["annotations"].values())
        assert RFC3339.fullmatch(alert["startsAt"]) and RFC3339.fullmatch(alert["endsAt"])
        assert re.fullmatch(r"[0-9a-f]{16}", alert["fingerprint"])
    resolved, firing = payload["alerts"]
    assert firing["status"] == "firing" and firing["endsAt"] == webhook.ZERO_TIME
    assert firing["labels"] == {"alertname": "TorAuthorityClockSkew", "severity": "warning", "vantage": "vp-1",
                                "authority": "moria1"}
    assert firing["annotations"] == {"summary": "moria1's clock is off", "description": "moria1 is 12 s off [31m"}
    assert resolved["status"] == "resolved"
    assert datetime.fromisoformat(resolved["endsAt"]) > datetime.fromisoformat(resolved["startsAt"])
    assert resolved["labels"]["document"] == "vote"
    assert payload["commonLabels"] == {"vantage": "vp-1"}  # what both alerts share, as Alertmanager computes it
    # The same alert in a later message keeps its fingerprint (receivers group by it).
    again = webhook.alertmanager_payload(compose(notices()[:1], "vp-1"), "ops", None)
    assert again["alerts"][0]["fingerprint"] == firing["fingerprint"] and again["externalURL"] == ""
    assert webhook.alertmanager_payload(compose(notices()[1:], "vp-1"), "ops", None)["status"] == "resolved"


@pytest.mark.parametrize("endpoints, problem", [
    ({"a": {"url": "ftp://example.org/x", "secret_env": "S"}}, "a: url must be an http:// or https:// URL"),
    ({"a": {"url": "http://hooks.example.org/x", "secret_env": "S"}}, "only allowed to loopback"),
    ({"a": {"url": "https://u:p@hooks.example.org/x", "secret_env": "S"}}, "must not hold a user or password"),
    ({"a": {"url": "https://hooks.example.org/x"}}, "secret_env is required for format json"),
    ({"a": {"url": "https://hooks.example.org/x", "format": "slack", "secret_env": "S"}}, "format must be"),
    ({"a": {"url": "https://hooks.example.org/x", "secret_env": "1X"}}, "environment variable name"),
    ({"a": {"url": "https://hooks.example.org/x", "headers": {}}}, "needs a url and only format and secret_env"),
    ({"a b": {"url": "https://hooks.example.org/x"}}, "a name is letters"),
    (["https://hooks.example.org/x"], "must map endpoint names"),
])
def test_bad_endpoints_are_refused(endpoints, problem):
    with pytest.raises(InvalidEndpoints, match=re.escape(problem)):
        parse_endpoints(endpoints)


def test_endpoints_in_the_config_and_routes_naming_them(tmp_path, monkeypatch):
    wire(monkeypatch)
    path = tmp_path / "c.yaml"
    path.write_text("webhook:\n  endpoints:\n    ops: {url: 'https://hooks.example.org/allium', secret_env: HOOK}\n"
                    "    am: {url: 'http://127.0.0.1:9093/hook', format: alertmanager}\n    bad: {url: 'http://x/'}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert error.value.problems == ["webhook.endpoints: bad: url: http:// sends alerts in clear text; only allowed "
                                    "to loopback, not x (use https://); secret_env is required for format json "
                                    "(receivers verify the signature)"]
    path.write_text("webhook:\n  endpoints:\n    ops: {url: 'https://hooks.example.org/allium', secret_env: HOOK}\n"
                    "    am: {url: 'http://[::1]:9093/hook', format: alertmanager}\n"
                    "alerts:\n  routes:\n    - {name: hooks, webhook: [ops, am]}\n")
    config = load_config(path, environ={})
    assert config.notifiers["webhook"].endpoints == {
        "ops": Endpoint("ops", "https://hooks.example.org/allium", "json", "HOOK"),
        "am": Endpoint("am", "http://[::1]:9093/hook", "alertmanager", None)}
    assert config.alerts.routes[0].destinations() == [("webhook", "ops"), ("webhook", "am")]
    assert isinstance(notifiers.notifiers(config, {"HOOK": SECRET})["webhook"], WebhookSender)
    assert "webhook" not in notifiers.notifiers(load_config(None, environ={}), {})  # no endpoints: no notifier


class Answers(BaseHTTPRequestHandler):
    """Answers each POST with the status its path names (``/503``), recording what it was sent."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.seen.append((self.path, dict(self.headers), body))
        code = int(self.path.strip("/").split("/")[0] or 200)
        if self.path.endswith("/slow"):
            time.sleep(3)
        payload = b""
        if self.path.endswith("/echo"):  # a receiver quoting the request (its headers) in its error
            payload = json.dumps(dict(self.headers)).encode()
        if self.path.endswith("/huge"):
            payload = b"x" * (10 << 20)
        self.send_response(code)
        if code in (301, 302, 307, 308):
            self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/200/redirected")
        if code in (429, 503):
            self.send_header("Retry-After", "7")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        try:
            self.wfile.write(payload)
        except OSError:  # the client stopped reading: what it should do with a huge answer
            pass

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    server.seen = []
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status, permanent", [
    (400, True), (401, True), (403, True), (404, True), (410, True), (413, True), (422, True),
    (408, False), (429, False), (500, False), (502, False), (503, False), (504, False),
    (301, False), (302, False), (307, False), (308, False),
])
def test_each_answer_is_retried_or_given_up(http_server, status, permanent):
    notifier = sender(f"http://127.0.0.1:{http_server.server_port}/{status}")
    with pytest.raises(DeliveryError) as error:
        notifier.send("ops", message(), "token-1")
    assert error.value.permanent is permanent, (status, str(error.value))
    assert f"webhook ops answered {status}" in str(error.value)
    assert error.value.retry_after_seconds == (7.0 if status in (429, 503) else None)
    assert [path for path, _, _ in http_server.seen] == [f"/{status}"]  # one request: redirects are not followed


def test_a_2xx_is_delivered_and_the_request_is_what_a_receiver_verifies(http_server):
    for status in (200, 202, 204):
        assert sender(f"http://127.0.0.1:{http_server.server_port}/{status}").send("ops", message(), "t") == status
    _, headers, body = http_server.seen[-1]
    assert headers["Content-Type"] == "application/json" and verify(SECRET, body, headers["X-Allium-Signature"])
    assert headers["X-Allium-Delivery"] == "t" and json.loads(body)["token"] == "t"


def test_failures_without_an_answer_are_retried(http_server):
    import socket

    with socket.socket() as closed:  # a port just bound and released: nobody listens there
        closed.bind(("127.0.0.1", 0))
        unused_port = closed.getsockname()[1]
    with pytest.raises(DeliveryError) as refused:
        sender(f"http://127.0.0.1:{unused_port}/200").send("ops", message(), "t")
    assert not refused.value.permanent and str(refused.value) == "webhook ops: ConnectionError"
    started = time.monotonic()
    with pytest.raises(DeliveryError) as slow:
        sender(f"http://127.0.0.1:{http_server.server_port}/200/slow", timeout=0.5).send("ops", message(), "t")
    assert not slow.value.permanent and "Timeout" in str(slow.value) and time.monotonic() - started < 2.5


def test_what_a_receiver_answers_is_read_bounded_and_never_shows_the_secret_or_signature(http_server, caplog):
    caplog.set_level(logging.DEBUG)
    started = time.monotonic()
    with pytest.raises(DeliveryError) as huge:
        sender(f"http://127.0.0.1:{http_server.server_port}/500/huge").send("ops", message(), "t")
    assert len(str(huge.value)) < 300 and time.monotonic() - started < 5 and webhook.ANSWER_LIMIT < 10 << 20
    with pytest.raises(DeliveryError) as echoed:
        sender(f"http://127.0.0.1:{http_server.server_port}/400/echo").send("ops", message(), "t")
    signature = http_server.seen[-1][1]["X-Allium-Signature"].removeprefix("sha256=")
    assert "X-Allium-Delivery" in str(echoed.value)  # the echo is there...
    for text in (str(echoed.value), caplog.text):
        assert SECRET not in text and signature not in text  # ...without the secret or the signature


def test_unknown_endpoint_is_given_up_and_a_missing_secret_keeps_the_queue(http_server):
    url = f"http://127.0.0.1:{http_server.server_port}/200"
    with pytest.raises(DeliveryError) as unknown:
        sender(url).send("elsewhere", message(), "t")
    assert unknown.value.permanent and "no webhook endpoint named 'elsewhere'" in str(unknown.value)
    no_secret = WebhookSender(WebhookConfig({"ops": Endpoint("ops", url, "json", "HOOK_SECRET")}), {})
    with pytest.raises(DeliveryError) as missing:
        no_secret.send("ops", message(), "t")
    assert not missing.value.permanent and "set $HOOK_SECRET" in str(missing.value)
    assert http_server.seen == []  # neither made a request
    unsigned = sender(url, fmt="alertmanager", secret=None)
    assert unsigned.send("ops", message(), "t") == 200
    assert "X-Allium-Signature" not in http_server.seen[-1][1]
    assert json.loads(http_server.seen[-1][2])["version"] == "4"


def test_through_the_outbox_a_permanent_refusal_gives_up_and_later_messages_go(http_server, tmp_path, monkeypatch):
    from agent.alerts.dispatch import Alerting

    wire(monkeypatch)
    path = tmp_path / "c.yaml"
    port = http_server.server_port
    path.write_text(f"state_dir: {tmp_path / 'state'}\nwebhook:\n  endpoints:\n"
                    f"    gone: {{url: 'http://127.0.0.1:{port}/410', secret_env: HOOK}}\n"
                    f"    ok: {{url: 'http://127.0.0.1:{port}/200', secret_env: HOOK}}\n"
                    "alerts:\n  routes:\n    - {name: hooks, webhook: [gone, ok]}\n")
    config = load_config(path, environ={})
    alerting = Alerting(config, State(config.state_dir).db, environ={"HOOK": SECRET}, clock=lambda: PERIOD)
    alerting.on_period([Finding("TorAuthorityClockSkew", "warning", {"authority": "moria1"}, "skew", "off", {})],
                       period=PERIOD)
    assert alerting.drain() == {"waiting": 0, "delivered": 1, "given_up": 1}
    gave_up = alerting.db.execute("SELECT target, last_error FROM deliveries WHERE gave_up IS NOT NULL").fetchall()
    assert gave_up == [("gone", "webhook gone answered 410")]


def test_a_route_naming_an_endpoint_that_is_not_configured_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("webhook:\n  endpoints:\n    ops: {url: 'https://hooks.example.org/a', secret_env: HOOK}\n"
                    "alerts:\n  routes:\n    - {name: hooks, webhook: [ops, https://elsewhere.example.org/x]}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert error.value.problems == ["alerts.routes: (hooks) names webhook endpoint https://elsewhere.example.org/x, "
                                    "which webhook.endpoints does not define"]
