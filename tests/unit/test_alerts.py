"""The alert life cycle, subjects, escaping, routes and the delivery outbox (no servers needed)."""

from dataclasses import dataclass

import pytest

from agent.alerts.deliveries import DeliveryOutbox
from agent.alerts.email import EmailSender
from agent.alerts.engine import AlertBook, SuppressionPolicy, plan
from agent.alerts.render import DESCRIPTION_LIMIT, Message, clean, compose, subject_of
from agent.alerts.routes import Route
from agent.config.loader import load_config
from agent.model.alerts import Alert, Notice
from agent.model.errors import ConfigError
from agent.model.retry import RetryPolicy
from agent.pipeline.state import State

DOCTOR = SuppressionPolicy({"info": 24, "warning": 4, "critical": 0}, {})
HOUR = 3600


def alert(check="TorAuthorityClockSkew", severity="warning", **subjects):
    return Alert(check, severity, subjects or {"authority": "moria1"}, "summary", f"{check} observed")


def run(periods, policy=DOCTOR, start=1_000_000):
    """Feeds one list of alerts per hour; returns the notices of each period as (status, label)."""
    book, told = {}, []
    for hour, current in enumerate(periods):
        book, notices = plan(book, current, start + hour * HOUR, policy)
        told.append([(n.status, n.alert.label) for n in notices])
    return told


def test_a_warning_fires_once_is_reminded_after_four_hours_and_resolves():
    skew = alert()
    told = run([[skew]] * 6 + [[]])
    assert told == [[("firing", "TorAuthorityClockSkew (moria1)")], [], [], [],
                    [("reminder", "TorAuthorityClockSkew (moria1)")], [],
                    [("resolved", "TorAuthorityClockSkew (moria1)")]]


def test_critical_is_never_suppressed_and_info_waits_a_day():
    assert run([[alert("TorConsensusStale", "critical", x="1")]] * 3) == [
        [("firing", "TorConsensusStale (1)")], [("reminder", "TorConsensusStale (1)")],
        [("reminder", "TorConsensusStale (1)")]]
    told = run([[alert(severity="info")]] * 26)
    assert [i for i, notices in enumerate(told) if notices] == [0, 24]


def test_per_alert_hours_override_the_severity():
    policy = SuppressionPolicy(DOCTOR.hours_by_severity, {"TorBadExitOutOfSync": 2})
    told = run([[alert("TorBadExitOutOfSync", "info")]] * 5, policy)
    assert [i for i, notices in enumerate(told) if notices] == [0, 2, 4]


def test_silenced_and_waiting_alerts_tell_nothing_and_never_resolve_noisily():
    silenced = Alert("TorX", "warning", {"authority": "a"}, "s", "d", silenced=True)
    assert run([[silenced], [silenced], []]) == [[], [], []]
    down = Alert("TorRelayDown", "warning", {"relay": "AAAA"}, "s", "d", wait_seconds=2 * HOUR)
    assert run([[down], [down], [down], []]) == [[], [], [("firing", "TorRelayDown (AAAA)")],
                                                 [("resolved", "TorRelayDown (AAAA)")]]
    assert run([[down], []]) == [[], []]  # gone before anyone was told: nothing to resolve


def test_the_book_survives_a_restart(tmp_path):
    state = State(tmp_path)
    book = AlertBook(state.db)
    with state.db:
        assert [n.status for n in book.advance([alert()], 1000, DOCTOR)] == ["firing"]
    state.close()
    again = AlertBook(State(tmp_path).db)
    assert again.advance([alert()], 1000 + HOUR, DOCTOR) == []
    assert [n.status for n in again.advance([], 1000 + 2 * HOUR, DOCTOR)] == ["resolved"]


def notice(check, severity, status="firing", **subjects):
    return Notice(alert(check, severity, **subjects), status, 1_000_000, 1_000_000 + 600)


def test_subject_names_the_worst_first_then_counts_the_rest():
    notices = [notice("TorAuthorityClockSkew", "warning", authority="moria1"),
               notice("TorConsensusStale", "critical", consensus="x"),
               notice("TorAuthorityClockSkew", "warning", authority="tor26"),
               notice("TorAuthorityUnreachable", "warning", "resolved", authority="dizum"),
               notice("TorProtocolsDiffer", "info", authority="gabelmoo")]
    assert subject_of(notices) == ("[critical] TorConsensusStale (x); 2 warnings: TorAuthorityClockSkew (moria1), "
                                   "TorAuthorityClockSkew (tor26); 1 info: TorProtocolsDiffer (gabelmoo); "
                                   "resolved: TorAuthorityUnreachable (dizum)")
    assert subject_of([notices[3]]) == "[resolved] TorAuthorityUnreachable (dizum)"


def test_a_long_list_is_cut_between_items_and_says_how_many_it_leaves_out():
    relays = "; ".join(f"relay{n} ({n:040X}): consensus weight jumped from 100 to {n * 1000}" for n in range(40))
    shortened = clean(f"40 relays: {relays}", 600)
    assert len(shortened) <= 600 and shortened.endswith("more)")
    kept, _, left_out = shortened.rpartition("; … (")
    assert kept.split("; ")[-1].endswith("to " + str((len(kept.split("; ")) - 1) * 1000))  # the last item is whole
    assert int(left_out.split()[0]) == 40 - len(kept.split("; "))
    assert clean("word " * 200, 50).endswith("word…")  # plain text is cut between words


def test_attacker_controlled_text_is_escaped_bounded_and_cannot_inject_headers():
    nasty = "<script>alert(1)</script>\r\nBcc: victim@example.org\n**bold** [x](http://evil)" + "A" * 2000
    relay = Alert("TorRelayDown", "warning", {"relay": nasty}, "relay down", f"{nasty} is down",
                  recipient="op@example.org", unsubscribe_token="tok")
    message = compose([Notice(relay, "firing", 1_000_000, 1_000_000)], "vp", "https://agent.example.org")
    assert "\n" not in message.subject and "\r" not in message.subject and len(message.subject) <= 200
    assert "<script>" not in message.html and "&lt;script&gt;" in message.html
    assert all(len(line) < DESCRIPTION_LIMIT + 100 for line in message.text.splitlines())
    email = EmailSender(load_config(None, environ={}).notifiers["email"], {}).build("op@example.org", message, "t1")
    assert email["Bcc"] is None and email["Message-ID"] == "<t1@allium-agent>"
    assert email["List-Unsubscribe"] == "<https://agent.example.org/unsubscribe?token=tok>"
    assert "https://agent.example.org/unsubscribe?token=tok" in message.text


def test_routes_filter_by_severity_check_and_authority():
    route = Route("moria1 operator", {"email": ("op@example.org",)}, frozenset({"warning", "critical"}),
                  frozenset(), frozenset({"moria1"}))
    assert route.matches(alert())
    assert not route.matches(alert(severity="info"))
    assert not route.matches(alert(authority="tor26"))
    assert Route("all", {"email": ("list@example.org",)}).matches(alert(severity="info"))


def test_bad_routes_are_reported_with_their_index(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("alerts:\n  routes:\n    - name: a\n    - name: b\n      email: x@y\n"
                    "    - name: c\n      email: [x@y]\n      severities: [loud]\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert error.value.problems == [
        "alerts.routes: [0] (a): names no email address, Matrix room, maildir address or webhook endpoint; [1] (b): "
        "email must be a "
        "list of strings; [2] (c): unknown severity loud"]


@dataclass(frozen=True)
class WebhookSettings:
    timeout_seconds: float

    SETTINGS = (("timeout_seconds", 5, "positive_number"),)


class Webhook:
    """A notifier made up for the tests: what a new channel needs is this class and one NOTIFIERS entry."""

    target_noun = "webhook URL"
    Settings = WebhookSettings
    sent: list = []

    @classmethod
    def from_config(cls, settings, environ):
        assert settings == WebhookSettings(5)
        return cls()

    def send(self, target, message, token):
        self.sent.append((target, message.subject, token))


def test_a_new_notifier_is_one_entry_in_NOTIFIERS(tmp_path, monkeypatch):
    from agent.alerts.dispatch import Alerting
    from agent.alerts.notifiers import NOTIFIERS
    from agent.model.findings import Finding

    monkeypatch.setitem(NOTIFIERS, "webhook", Webhook)
    monkeypatch.setattr(Webhook, "sent", [])
    path = tmp_path / "c.yaml"
    path.write_text("alerts:\n  routes:\n    - name: hook\n      webhook: [https://hooks.example.org/x]\n"
                    "    - name: none\n")
    with pytest.raises(ConfigError) as error:
        load_config(path, environ={})
    assert error.value.problems == [
        "alerts.routes: [1] (none): names no email address, Matrix room, maildir address or webhook URL"]
    path.write_text("alerts:\n  routes:\n    - name: hook\n      webhook: [https://hooks.example.org/x]\n")
    config = load_config(path, environ={})
    assert config.alerts.routes == (Route("hook", {"webhook": ("https://hooks.example.org/x",)}),)
    alerting = Alerting(config, State(tmp_path / "state").db, environ={}, clock=lambda: 1000)
    finding = Finding("TorAuthorityClockSkew", "warning", {"authority": "moria1"}, "skew", "skewed", {})
    assert len(alerting.on_period([finding])) == 1
    assert alerting.drain() == {"waiting": 0, "delivered": 1, "given_up": 0}
    assert [(target, subject) for target, subject, _ in Webhook.sent] == [
        ("https://hooks.example.org/x", "[warning] TorAuthorityClockSkew (moria1)")]


def test_the_alerts_stage_does_not_import_the_config():
    import ast
    from pathlib import Path

    import agent.alerts

    for module in Path(agent.alerts.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [name for name in names if name.split(".")[:2] == ["agent", "config"]], module.name


def test_outbox_queues_once_per_token_and_backs_off(tmp_path):
    state = State(tmp_path)
    outbox = DeliveryOutbox(state.db, RetryPolicy(initial_delay_seconds=10, max_delay_seconds=40, jitter=0))
    message = Message("s", "t", "<p>t</p>")
    with state.db:
        assert outbox.enqueue("email", "a@b", "tok1", message, 100)
        assert not outbox.enqueue("email", "a@b", "tok1", message, 100)
    claimed = outbox.claim(outbox.due(100)[0], 100)
    outbox.failed(claimed, 100, "refused", permanent=False)
    assert outbox.due(109) == [] and len(outbox.due(110)) == 1
    outbox.failed(outbox.claim(outbox.due(110)[0], 110), 110, "refused", permanent=False)
    assert outbox.due(129) == [] and len(outbox.due(130)) == 1
    outbox.failed(outbox.claim(outbox.due(130)[0], 130), 130, "rate limited", permanent=False,
                  retry_after_seconds=300)
    assert outbox.due(429) == [] and len(outbox.due(430)) == 1
    outbox.delivered(outbox.claim(outbox.due(430)[0], 430), 430)
    assert outbox.counts() == {"waiting": 0, "delivered": 1, "given_up": 0}
    with state.db:
        outbox.enqueue("matrix", "!r:x", "tok2", message, 500)
    outbox.failed(outbox.claim(outbox.due(500)[0], 500), 500, "403 not in room", permanent=True)
    assert outbox.counts() == {"waiting": 0, "delivered": 1, "given_up": 1}


def test_alerting_groups_a_period_into_one_message_per_destination(tmp_path):
    from agent.alerts.dispatch import Alerting
    from agent.model.findings import Finding

    path = tmp_path / "c.yaml"
    path.write_text("alerts:\n  routes:\n    - name: all\n      email: [list@example.org]\n      matrix: ['!r:x']\n"
                    "    - name: moria1\n      email: [op@example.org]\n      authorities: [moria1]\n")
    config = load_config(path, environ={})
    clock = iter(range(1000, 100000, 3600))
    alerting = Alerting(config, State(tmp_path / "state").db, environ={}, clock=lambda: next(clock))
    findings = [Finding("TorAuthorityClockSkew", "warning", {"authority": a}, "skew", f"{a} skewed", {})
                for a in ("moria1", "tor26")]
    assert len(alerting.on_period(findings)) == 2
    waiting = alerting.outbox.waiting()
    assert sorted((channel, target) for channel, target, *_ in waiting) == [
        ("email", "list@example.org"), ("email", "op@example.org"), ("matrix", "!r:x")]
    subjects = {target: subject for _, target, subject, _, _ in waiting}
    assert subjects["op@example.org"] == "[warning] TorAuthorityClockSkew (moria1)"
    assert subjects["list@example.org"] == "[warning] TorAuthorityClockSkew (moria1), TorAuthorityClockSkew (tor26)"
    assert alerting.on_period(findings) == []  # same findings an hour later: suppressed
    counts = alerting.drain()  # no email or Matrix settings: they wait, nothing is lost
    assert counts == {"waiting": 3, "delivered": 0, "given_up": 0}


def test_a_destination_gets_its_messages_in_order_whatever_the_backoff(tmp_path):
    state = State(tmp_path)
    outbox = DeliveryOutbox(state.db, RetryPolicy(initial_delay_seconds=100, max_delay_seconds=100, jitter=0))
    with state.db:
        outbox.enqueue("email", "a@b", "firing", Message("firing", "t", "h"), 0)
    outbox.failed(outbox.claim(outbox.due(0)[0], 0), 0, "down", permanent=False)  # next try at 100
    with state.db:
        outbox.enqueue("email", "a@b", "resolved", Message("resolved", "t", "h"), 50)
        outbox.enqueue("email", "c@d", "other", Message("other", "t", "h"), 50)
    assert [d.token for d in outbox.due(60)] == ["other"]  # a@b waits for its oldest
    assert [d.token for d in outbox.due(100)] == ["firing", "resolved", "other"]


def test_a_message_is_claimed_by_one_sender_only(tmp_path):
    first, second = State(tmp_path), State(tmp_path)  # two connections: the daemon and the web mailer
    outbox_a = DeliveryOutbox(first.db, RetryPolicy())
    outbox_b = DeliveryOutbox(second.db, RetryPolicy())
    with first.db:
        outbox_a.enqueue("email", "a@b", "tok", Message("s", "secret token here", "h"), 100)
    [seen_by_a], [seen_by_b] = outbox_a.due(100), outbox_b.due(100)
    claimed = outbox_a.claim(seen_by_a, 100)
    assert claimed and not outbox_b.claim(seen_by_b, 100) and not outbox_b.claim(seen_by_b, 101)
    assert outbox_a.delivered(claimed, 101)
    assert "secret token" not in first.db.execute("SELECT message FROM deliveries").fetchone()[0]


def test_a_period_is_alerted_on_once_and_unsubscribing_resolves_nothing(tmp_path):
    from agent.alerts.dispatch import Alerting
    from agent.model.findings import Finding
    from agent.subscriptions.store import SubscriptionStore

    state = State(tmp_path / "state")
    alerting = Alerting(load_config(None, environ={}), state.db, environ={})
    finding = Finding("TorAuthorityClockSkew", "warning", {"authority": "moria1"}, "skew", "skewed", {})
    assert len(alerting.on_period([finding], period=7200)) == 1
    assert alerting.on_period([], period=7200) == []  # a rerun of the same period (after a crash) changes nothing
    subscription = SubscriptionStore(state.db).add_active("op@example.org", "relay", "A" * 40, 0)
    down = Alert("TorRelayDown", "warning", {"relay": "A" * 40}, "down", "d", recipient="op@example.org",
                 extra={"subscription": subscription.id})
    assert [n.status for n in alerting.on_period([finding], [down], period=10800)] == ["firing"]
    SubscriptionStore(state.db).unsubscribe(subscription.unsubscribe_token)
    assert [n.alert.id for n in alerting.on_period([finding], [], period=14400)] == []
