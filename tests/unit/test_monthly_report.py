"""The monthly report's arithmetic on hand-built series, its mail and chart, and its once-a-month bookkeeping."""

from __future__ import annotations

import base64
import email
import email.policy
import html
import io
import json
import statistics
import struct
from email.message import EmailMessage

import pytest
import yaml

from agent.alerts.deliveries import DeliveryOutbox
from agent.alerts.inline import InlineImage, attach
from agent.alerts.quality import SUBSCRIPTIONS, note_period
from agent.alerts.render import Message
from agent.config.loader import load_config
from agent.model.alerts import Alert
from agent.model.retry import RetryPolicy
from agent.pipeline.state import State
from agent.reports import chart
from agent.reports.mail import STATUS_KEY, due_reports, render, token
from agent.reports.monthly import Month, MonthlyReport, alerts_raised, slots, summarise, trend, watched
from agent.reports.units import bandwidth, percent, share, utc
from agent.subscriptions.store import SubscriptionStore

MARCH = Month.parse("2024-03")
H = 3600
FP_A, FP_B = "A" * 40, "B" * 40


def hourly(hours, value=1.0, month=MARCH):
    """Samples at the start of each of ``hours`` (callable values take the hour)."""
    return [(month.start + hour * H, value(hour) if callable(value) else value) for hour in hours]


# --- months -----------------------------------------------------------------------------------------------------

def test_months_are_utc_calendar_months():
    assert (MARCH.label, MARCH.hours) == ("2024-03", 744)
    assert utc(MARCH.start) == "2024-03-01T00:00Z" and utc(MARCH.end) == "2024-04-01T00:00Z"
    assert Month.parse("2024-02").hours == 29 * 24  # a leap year
    assert Month.parse("2023-12").end == Month.parse("2024-01").start
    assert Month.before(MARCH.start) == Month.parse("2024-02")  # the first second of March: February is done
    assert Month.before(MARCH.start - 1) == Month.parse("2024-01")
    assert Month.before(Month.parse("2024-01").start + 5) == Month.parse("2023-12")


@pytest.mark.parametrize("text", ["2024-13", "2024-3", "24-03", "2024-00", "March", ""])
def test_a_month_that_is_no_month_is_refused(text):
    with pytest.raises(ValueError, match="not a month"):
        Month.parse(text)


# --- the arithmetic ---------------------------------------------------------------------------------------------

def test_each_hour_slot_keeps_its_newest_sample_and_nothing_outside_the_month():
    samples = [(MARCH.start - 1, 9.0), (MARCH.start + 10, 1.0), (MARCH.start + 3000, 2.0), (MARCH.start + H, 3.0),
               (MARCH.end, 9.0)]
    assert slots(samples, MARCH) == {MARCH.start: 2.0, MARCH.start + H: 3.0}


def test_time_in_consensus_counts_the_hours_listed_not_the_zero_written_on_leaving():
    present = [*range(0, 100), *range(148, 744)]
    series = {"in_consensus": hourly(present) + hourly([100], 0.0),
              "flag_running": hourly(present, lambda h: float(not 300 <= h < 310)),
              "flag_valid": hourly(present)}
    relay = summarise(FP_A, series, MARCH, "nick")
    assert relay.hours_in_consensus == 744 - 48
    assert relay.hours_running == 744 - 48 - 10
    assert (relay.first_seen, relay.last_seen) == (MARCH.start, MARCH.end - H)
    assert relay.name == "nick (AAAAAAAA)"
    assert [(utc(c.at), c.gained, c.lost) for c in relay.changes] == [
        ("2024-03-13T12:00Z", (), ("Running",)), ("2024-03-13T22:00Z", ("Running",), ())]


def test_flags_gained_and_lost_compare_the_first_and_last_hour_and_every_change_is_listed():
    hours = range(0, 744)
    series = {"in_consensus": hourly(hours),
              "flag_guard": hourly(hours, lambda h: float(h < 200 or 400 <= h < 600)),
              "flag_stable": hourly(hours, lambda h: float(h >= 50)),
              "flag_running": hourly(hours)}
    relay = summarise(FP_A, series, MARCH)
    assert relay.first_flags == {"Guard", "Running"} and relay.last_flags == {"Running", "Stable"}
    assert (relay.gained, relay.lost) == (("Stable",), ("Guard",))
    assert [(c.at - MARCH.start) // H for c in relay.changes] == [50, 200, 400, 600]
    assert [c.gained or c.lost for c in relay.changes] == [("Stable",), ("Guard",), ("Guard",), ("Guard",)]


def test_trends_compare_the_first_and_last_week_medians():
    weights = hourly(range(744), lambda h: 1000.0 if h < 7 * 24 else 1300.0 if h >= 744 - 7 * 24 else 5.0)
    month_trend = trend(weights, MARCH)
    assert (month_trend.first, month_trend.last, month_trend.percent) == (1000.0, 1300.0, pytest.approx(30.0))
    halving = trend(hourly(range(744), lambda h: 2e6 if h < 372 else 1e6), MARCH)
    assert halving.percent == pytest.approx(-50.0)
    # A median, not a mean: one outlier hour in the first week changes nothing.
    outlier = trend(hourly(range(744), lambda h: 1e9 if h == 3 else 100.0), MARCH)
    assert outlier.first == 100.0 and outlier.percent == 0.0


def test_a_trend_without_both_weeks_or_from_zero_is_not_a_percentage():
    assert trend(hourly(range(0, 100), 5.0), MARCH).percent is None  # gone before the last week
    assert trend(hourly(range(0, 744), lambda h: 0.0 if h < 168 else 10.0), MARCH).percent is None
    assert percent(None) == "n/a"


def test_a_relay_never_listed_has_no_hours_no_flags_and_no_trend():
    relay = summarise(FP_B, {"in_consensus": hourly([5], 0.0)}, MARCH)
    assert (relay.hours_in_consensus, relay.first_seen, relay.first_flags, relay.changes) == (0, None, frozenset(), ())
    assert relay.weight.percent is None and relay.name == FP_B


def test_without_the_in_consensus_series_an_hour_with_a_weight_counts_as_listed():
    relay = summarise(FP_A, {"weight": hourly(range(10, 20), 50.0)}, MARCH)
    assert relay.hours_in_consensus == 10


# --- figures as people read them --------------------------------------------------------------------------------

def test_units():
    assert bandwidth(850_000) == "850 kB/s" and bandwidth(1_260_000) == "1.3 MB/s"
    assert bandwidth(12_345_678) == "12.3 MB/s" and bandwidth(250e6) == "250 MB/s"
    assert bandwidth(512) == "512 B/s" and bandwidth(None) == "-"
    assert percent(5.94) == "+5.9 %" and percent(-12) == "-12.0 %" and percent(0.01) == "0.0 %"
    assert share(693, 744) == "693 h of 744 h (93.1 %)"


# --- the state: watched relays and alerts -----------------------------------------------------------------------

@pytest.fixture
def state(tmp_path):
    opened = State(tmp_path / "state")
    yield opened
    opened.close()


def _alert(alert_id, fingerprint, recipient, flag=None):
    return Alert(alert_id, "warning", {"relay": fingerprint, **({"flag": flag} if flag else {})}, "s", "d",
                 recipient=recipient)


def test_alerts_raised_are_this_address_s_for_its_relays_begun_in_the_month(state):
    subscription = SubscriptionStore(state.db).add_active("op@example.org", "family", FP_A, MARCH.start)
    with state.db:
        state.db.execute("INSERT INTO subscription_members VALUES (?, ?, ?)", (subscription.id, FP_B, MARCH.start))
    assert watched(state.db, subscription) == [FP_A, FP_B]
    episodes = [(MARCH.start + H, _alert("TorRelayDown", FP_A, "op@example.org")),
                (MARCH.start + 5 * H, _alert("TorRelayDown", FP_B, "op@example.org")),
                (MARCH.start + 6 * H, _alert("TorRelayFlagLost", FP_B, "op@example.org", "Guard")),
                (MARCH.start + 7 * H, _alert("TorRelayDown", FP_A, "other@example.org")),  # another address
                (MARCH.start + 8 * H, _alert("TorRelayDown", "C" * 40, "op@example.org")),  # another relay
                (MARCH.start - H, _alert("TorRelayDown", FP_A, "op@example.org")),  # February
                (MARCH.end, _alert("TorRelayFlagLost", FP_A, "op@example.org", "Exit"))]  # April
    with state.db:
        for onset, alert in episodes:
            note_period(state.db, SUBSCRIPTIONS, {alert.key: (alert.id, onset)}, onset)
    assert alerts_raised(state.db, subscription, [FP_A, FP_B], MARCH) == {"TorRelayDown": 2, "TorRelayFlagLost": 1}


# --- the mail and the chart -------------------------------------------------------------------------------------

def _report(state, nickname="nick<script>"):
    subscription = SubscriptionStore(state.db).add_active("op@example.org", "relay", FP_A, MARCH.start)
    series = {"in_consensus": hourly(range(744)), "flag_running": hourly(range(744)),
              "weight": hourly(range(744), lambda h: 1000.0 + h), "advertised_bandwidth_bytes":
              hourly(range(744), lambda h: 2e6 + (h % 24) * 1e4)}
    relay = summarise(FP_A, series, MARCH, nickname)
    return MonthlyReport(subscription, MARCH, (relay,), 744, {"TorRelayDown": 2}, 0, {FP_A: series})


def _png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_mail_says_everything_in_plain_text_and_shows_the_chart_inline_in_html(state):
    report = _report(state)
    rendered = render(report, "vantage", "https://agent.example.org/")
    message = rendered.message
    assert message.subject == "[monthly report] 2024-03: nick<script>"
    first, last = 1000 + statistics.median(range(168)), 1000 + statistics.median(range(744 - 168, 744))
    for line in ("monthly report for 2024-03 (UTC, 2024-03-01T00:00Z to 2024-04-01T00:00Z)",
                 "in the consensus   744 h of 744 h (100.0 %)", "flags first        Running",
                 f"consensus weight   {first:,.0f} -> {last:,.0f} ({(last - first) / first * 100:+.1f} %)",
                 "TorRelayDown  2", "advertised bw      2.1 MB/s -> 2.1 MB/s (0.0 %)",
                 f"https://agent.example.org/unsubscribe?token={report.subscription.unsubscribe_token}"):
        assert line in message.text
    assert "<script>" not in message.html and "nick&lt;script&gt;" in message.html
    [image] = message.images
    assert f'<img src="cid:{image.cid}" width="600" height="240" alt="{html.escape(image.alt)}">' in message.html
    assert image.alt.startswith("Line charts of consensus weight") and "nick<script> (AAAAAAAA)" in image.alt
    assert f"weight {first:,.0f} to {last:,.0f}" in image.alt and f"Chart: {image.alt}" in message.text
    assert message.headers["List-Unsubscribe"].startswith("<https://agent.example.org/unsubscribe?token=")
    assert token(report.subscription.id, MARCH) == f"monthly|{report.subscription.id}|2024-03"


def test_the_chart_is_a_small_png_of_several_colours(state):
    import matplotlib.image

    png = chart.render(_report(state))
    assert _png_size(png) == (chart.WIDTH, chart.HEIGHT)
    assert 5_000 < len(png) < 200_000
    pixels = matplotlib.image.imread(io.BytesIO(png), format="png").reshape(-1, 4)
    assert len({tuple(row) for row in pixels.tolist()}) > 8


def test_a_chart_without_data_says_so(state):
    report = _report(state)
    empty = MonthlyReport(report.subscription, MARCH, (summarise(FP_A, {}, MARCH),), 0, {}, 0, {})
    assert _png_size(chart.render(empty)) == (chart.WIDTH, chart.HEIGHT)
    assert "no consensus weight or bandwidth was recorded" in chart.alt_text(empty)


# --- inline images through the outbox and into the MIME structure -----------------------------------------------

def test_a_message_with_images_survives_the_outbox_and_becomes_multipart_related(state):
    image = InlineImage("chart.2024-03.1@allium-agent", b"\x89PNG\r\n\x1a\n" + b"x" * 50, "alt text")
    message = Message(subject="s", text="plain\n", html=f'<img src="cid:{image.cid}" alt="alt text">',
                      images=(image,))
    stored = json.loads(json.dumps(message.as_dict()))
    older = {key: value for key, value in stored.items() if key != "inline"}
    assert Message.from_dict(older).text == "plain\n"  # the text stands without the images' key
    back = Message.from_dict(stored)
    assert back == message and back.images == (image,)
    assert Message.from_dict({"subject": "s", "text": "t", "html": "h"}).images == ()
    assert "inline" not in Message(subject="s", text="t", html="h").as_dict()  # other rows as they always were

    mail = EmailMessage()  # as agent.alerts.email.compose builds it, which calls attach itself once wired
    mail.set_content(back.text)
    mail.add_alternative(back.html, subtype="html")
    attach(mail, back.images)
    parsed = email.message_from_bytes(mail.as_bytes(policy=email.policy.SMTP), policy=email.policy.default)
    assert [part.get_content_type() for part in parsed.walk()] == [
        "multipart/alternative", "text/plain", "multipart/related", "text/html", "image/png"]
    png = list(parsed.walk())[4]
    assert png["Content-ID"] == f"<{image.cid}>" and png.get_content() == image.data
    assert png.get_content_disposition() == "inline"

    outbox = DeliveryOutbox(state.db, RetryPolicy(3, 1, 2, 30))
    with state.db:
        assert outbox.enqueue("email", "op@example.org", "monthly|1|2024-03", message, MARCH.start)
        assert not outbox.enqueue("email", "op@example.org", "monthly|1|2024-03", message, MARCH.start + 1)
    [row] = state.db.execute("SELECT message FROM deliveries").fetchall()
    assert json.loads(row[0])["inline"][0]["data"] == base64.b64encode(image.data).decode()


@pytest.mark.parametrize("stored, complaint", [
    ({"cid": "no-at-sign", "subtype": "png", "filename": "c.png", "alt": "", "data": "eA=="}, "cid"),
    ({"cid": "a@b", "subtype": "svg+xml", "filename": "c.svg", "alt": "", "data": "eA=="}, "png, jpeg or gif"),
    ({"cid": "a@b", "subtype": "png", "filename": "c.png", "alt": "", "data": "not base64!"}, "base64"),
    ({"cid": "a@b", "subtype": "png", "filename": "c.png", "alt": ""}, "an object"),
])
def test_a_damaged_inline_image_is_refused_when_read(stored, complaint):
    with pytest.raises(ValueError, match=complaint):
        Message.from_dict({"subject": "s", "text": "t", "html": "h", "inline": [stored]})


# --- once a month -----------------------------------------------------------------------------------------------

def _config(tmp_path, query_url=None):
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "store": {"embedded": False},
                                    **({"query": {"url": query_url}} if query_url else {})}))
    return load_config(path, environ={})


def _closed_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_due_reports_waits_without_a_store_and_does_nothing_once_the_month_is_done(tmp_path, state):
    from agent.alerts.dispatch import Alerting

    config = _config(tmp_path)
    alerting = Alerting(config, state.db, environ={})
    SubscriptionStore(state.db).add_active("op@example.org", "relay", FP_A, MARCH.start)
    april = Month.parse("2024-04").start + 600
    assert due_reports(config, alerting, None, april) == 0  # no endpoint: not marked, tried next period
    unreachable = f"http://127.0.0.1:{_closed_port()}"
    assert due_reports(config, alerting, unreachable, april) == 0  # the store does not answer: not marked
    assert state.db.execute("SELECT value FROM agent_status WHERE key = ?", (STATUS_KEY,)).fetchone() is None
    with state.db:
        state.db.execute("INSERT INTO agent_status VALUES (?, ?)", (STATUS_KEY, json.dumps("2024-03")))
    assert due_reports(config, alerting, unreachable, april) == 0  # done: the store is not even asked
    assert state.db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 0
