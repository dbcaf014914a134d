"""The monthly report end to end: a real VictoriaMetrics holding a month of hourly points for two real relays,
a real state with one active subscription, the report rendered, queued twice (one delivery) and sent to a real
SMTP server on 127.0.0.1, whose received MIME is checked.

The month (2020-03) is written from the real consensus of 2020-02-29 10:00 (fingerprints, flags, consensus
weights) and the server descriptors of that hour (advertised bandwidth), with the times shifted into March and
scripted changes: relay A is out of the consensus for 48 hours, loses Guard, regains it and loses it again, and
its weight ends 25 % higher; relay B gains Guard, lacks Running for 10 hours and its weight ends 10 % lower. The
agent itself records nothing for 3 hours.
"""

from __future__ import annotations

import os
import socket
import struct
import time
import zlib
from pathlib import Path

import pytest
import requests
import yaml

from agent.alerts.dispatch import Alerting
from agent.alerts.quality import SUBSCRIPTIONS, note_period
from agent.config.loader import load_config
from agent.model.alerts import Alert
from agent.model.entries import entries_of
from agent.model.points import point
from agent.pipeline.state import State
from agent.reports.mail import STATUS_KEY, due_reports, queue_month, render, token
from agent.reports.monthly import FLAGS, Month, build
from agent.store.lineprotocol import encode_all
from agent.subscriptions.store import SubscriptionStore
from tests.integration.smtp import SmtpServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MONTH = Month.parse("2020-03")
EMAIL = "operator@example.org"
A_GONE = range(100, 148)  # hours relay A is out of the consensus
AGENT_DOWN = range(600, 603)  # hours nothing is recorded
B_NOT_RUNNING = range(200, 210)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _relays(hour10, descriptors) -> tuple[tuple[str, list, int, int], tuple[str, list, int, int]]:
    """Two real relays of the hour with a descriptor: a Guard and a non-Guard (fingerprint, flags, weight, bw)."""
    entries = entries_of(hour10)
    advertised = {d.fingerprint: min(d.average_bandwidth, d.burst_bandwidth, d.observed_bandwidth)
                  for d in descriptors if d.observed_bandwidth}
    guard = next(fp for fp in sorted(entries) if fp in advertised and "Guard" in entries[fp].flags
                 and "Running" in entries[fp].flags and (entries[fp].bandwidth or 0) > 1000)
    other = next(fp for fp in sorted(entries) if fp in advertised and "Guard" not in entries[fp].flags
                 and "Running" in entries[fp].flags and (entries[fp].bandwidth or 0) > 1000)
    return tuple((fp, list(entries[fp].flags), entries[fp].bandwidth, advertised[fp])  # type: ignore[return-value]
                 for fp in (guard, other))


def _month_points(a, b) -> tuple[list, dict]:
    """The month's points, and per relay the hours it was written as in the consensus."""
    points: list = []
    written: dict[str, set[int]] = {a[0]: set(), b[0]: set()}
    for hour in range(MONTH.hours):
        at = MONTH.start + hour * 3600
        if hour in AGENT_DOWN:
            continue
        points.append(point("tor_network", {}, {"relays": 6500}, at))
        for index, (fingerprint, flags, weight, bandwidth) in enumerate((a, b)):
            flags = set(flags)
            if index == 0:
                if hour in A_GONE:
                    if hour == A_GONE[0]:
                        points.append(point("tor_relay", {"fingerprint": fingerprint}, {"in_consensus": 0}, at))
                    continue
                if 400 <= hour < 500 or hour >= 700:
                    flags.discard("Guard")
                weight = weight * (1.25 if hour >= MONTH.hours - 7 * 24 else 1.0)
            else:
                if hour >= 300:
                    flags.add("Guard")
                if hour in B_NOT_RUNNING:
                    flags.discard("Running")
                weight = round(weight * (0.9 if hour >= MONTH.hours - 7 * 24 else 1.0))
                bandwidth = bandwidth + (hour % 24) * 1000  # a daily wave, so the line is no flat one
            written[fingerprint].add(hour)
            fields = {"in_consensus": 1, "weight": weight, "advertised_bandwidth_bytes": bandwidth,
                      **{f"flag_{flag.lower()}": int(flag in flags) for flag in FLAGS}}
            points.append(point("tor_relay", {"fingerprint": fingerprint}, fields, at))
    return points, written


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    return struct.unpack(">II", data[16:24])


def _distinct_pixels(data: bytes) -> int:
    import io

    import matplotlib.image

    pixels = matplotlib.image.imread(io.BytesIO(data), format="png")
    flat = pixels.reshape(-1, pixels.shape[-1])
    return len({tuple(row) for row in flat[:: max(1, len(flat) // 20000)].tolist()})


def _artifacts(tmp_path: Path) -> Path:
    directory = Path(os.environ.get("ALLIUM_TEST_ARTIFACTS") or tmp_path / "artifacts") / "monthly-report"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_a_month_of_two_real_relays_reported_queued_once_and_mailed(victoria, tmp_path, hour10, descriptors):
    a, b = _relays(hour10, descriptors)
    points, written = _month_points(a, b)
    answer = requests.post(f"{victoria.url}/write", params={"precision": "s"},
                           data="\n".join(encode_all(points)).encode(), timeout=60)
    assert answer.status_code == 204, answer.text
    victoria.settled_export(f'tor_relay_in_consensus{{fingerprint="{b[0]}"}}', len(written[b[0]]))

    smtp = SmtpServer(_free_port())
    smtp.start()
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({
        "vantage": "test", "state_dir": str(tmp_path / "state"), "store": {"url": victoria.url},
        "query": {"url": victoria.url}, "alerts": {"public_url": "https://agent.example.org"},
        "email": {"host": "127.0.0.1", "port": smtp.port, "security": "none"}}))
    config = load_config(path, environ={})
    state = State(config.state_dir)
    try:
        subscription = SubscriptionStore(state.db).add_active(EMAIL, "family", a[0], MONTH.start - 86400)
        with state.db:
            state.db.execute("INSERT INTO subscription_members VALUES (?, ?, ?)", (subscription.id, b[0], MONTH.end))
            # The watched relays' names, as the subscriptions' watch keeps them (relay_history).
            entries = entries_of(hour10)
            state.db.executemany("INSERT INTO relay_history VALUES (?, ?, ?, ?, ?)", [
                (fp, MONTH.end - 3600, weight, " ".join(flags), entries[fp].nickname)
                for fp, flags, weight, _ in (a, b)])
            # Alerts as the alert engine records them: two for this subscription in March, one in April, one
            # for another address.
            for onset, alert in ((MONTH.start + 100 * 3600, _alert("TorRelayDown", a[0], EMAIL)),
                                 (MONTH.start + 400 * 3600, _alert("TorRelayFlagLost", a[0], EMAIL, "Guard")),
                                 (MONTH.start + 401 * 3600, _alert("TorRelayDown", a[0], "else@example.org")),
                                 (MONTH.end + 3600, _alert("TorRelayDown", b[0], EMAIL))):
                note_period(state.db, SUBSCRIPTIONS, {alert.key: (alert.id, onset)}, onset)

        report = build(state.db, config.query.url, subscription, MONTH)
        relays = {relay.fingerprint: relay for relay in report.relays}
        assert set(relays) == {a[0], b[0]}
        assert report.hours_observed == MONTH.hours - len(AGENT_DOWN)
        assert relays[a[0]].hours_in_consensus == len(written[a[0]]) == MONTH.hours - len(A_GONE) - len(AGENT_DOWN)
        assert relays[b[0]].hours_in_consensus == len(written[b[0]])
        assert relays[b[0]].hours_running == len(written[b[0]]) - len(B_NOT_RUNNING)
        assert relays[a[0]].lost == ("Guard",) and relays[a[0]].gained == ()
        assert [change.lost or change.gained for change in relays[a[0]].changes] == [("Guard",)] * 3
        assert relays[b[0]].gained == ("Guard",) and relays[b[0]].lost == ()
        assert relays[a[0]].first_seen == MONTH.start and relays[a[0]].last_seen == MONTH.end - 3600
        assert relays[a[0]].weight.percent == pytest.approx(25.0)
        assert relays[b[0]].weight.percent == pytest.approx(-10.0, abs=0.1)
        assert report.alerts == {"TorRelayDown": 1, "TorRelayFlagLost": 1}

        rendered = render(report, config.vantage, config.alerts.public_url)
        width, height = _png_size(rendered.png)
        assert 500 <= width <= 700 and 200 <= height <= 280
        assert 5_000 <= len(rendered.png) <= 200_000
        assert _distinct_pixels(rendered.png) >= 8
        text = rendered.message.text
        assert f"{len(written[a[0]])} h of {MONTH.hours} h" in text and "2020-03-01T00:00Z" in text
        assert "TorRelayFlagLost  1" in text
        assert f"{entries[a[0]].nickname} ({a[0][:8]})" in text and entries[b[0]].nickname in rendered.message.subject
        out = _artifacts(tmp_path)
        (out / "monthly-2020-03.txt").write_text(f"Subject: {rendered.message.subject}\n\n{text}")
        (out / "monthly-2020-03.html").write_text(rendered.message.html.replace(
            f"cid:{rendered.message.images[0].cid}", "monthly-2020-03.png"))
        (out / "monthly-2020-03.png").write_bytes(rendered.png)

        alerting = Alerting(config, state.db, environ={})
        assert queue_month(config, alerting, config.query.url, MONTH) == (1, 0)
        assert queue_month(config, alerting, config.query.url, MONTH) == (0, 0)  # skipped: queued before
        assert not alerting.send_later("email", EMAIL, rendered.message, token(subscription.id, MONTH))  # UNIQUE
        assert state.db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 1
        # The daemon's call, on the first period of April: the month is queued already, so nothing more; it is
        # then noted done, and a later period does not even look.
        assert due_reports(config, alerting, config.query.url, MONTH.end + 600) == 0
        assert state.db.execute("SELECT value FROM agent_status WHERE key = ?", (STATUS_KEY,)).fetchone() == (
            '"2020-03"',)

        assert alerting.drain()["delivered"] == 1
        deadline = time.monotonic() + 10
        while not smtp.to(EMAIL) and time.monotonic() < deadline:
            time.sleep(0.1)
        [mail] = smtp.to(EMAIL)
        (out / "monthly-2020-03.eml").write_bytes(mail.as_bytes())
        _check_mime(mail, rendered)
        assert due_reports(config, alerting, config.query.url, MONTH.end + 7200) == 0
        assert state.db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 1

        # The command: files with --out; --send queues nothing more for a month already queued.
        assert _command("report", "monthly", "--month", "2020-03", "--out", str(out / "cli"), "--config", str(path)) \
            == 0
        assert (out / "cli" / f"monthly-2020-03-{subscription.id}.txt").read_text().endswith(text)
        assert _png_size((out / "cli" / f"monthly-2020-03-{subscription.id}.png").read_bytes()) == (width, height)
        assert _command("report", "monthly", "--month", "2020-03", "--send", "--config", str(path)) == 0
        assert state.db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0] == 1 and len(smtp.to(EMAIL)) == 1
        assert _command("report", "monthly", "--month", "2020-03", "--subscription", "99", "--config", str(path)) == 1
    finally:
        state.close()
        smtp.stop()


def _command(*words: str) -> int:
    """``allium-agent report ...`` through agent.cli.reports' own parser (main.py registers the same)."""
    import argparse

    from agent.cli.reports import add_commands

    def with_config(parser, handler):
        parser.add_argument("--config")
        parser.set_defaults(handler=handler)
        return parser

    parser = argparse.ArgumentParser(prog="allium-agent")
    add_commands(parser.add_subparsers(dest="command", required=True), with_config)
    arguments = parser.parse_args(words)
    return arguments.handler(arguments)


def _alert(alert_id: str, fingerprint: str, email: str, flag: str | None = None) -> Alert:
    subjects = {"relay": fingerprint, **({"flag": flag} if flag else {})}
    return Alert(alert_id, "warning", subjects, "summary", "description", recipient=email)


def _check_mime(mail, rendered) -> None:
    assert mail.get_content_type() == "multipart/alternative"
    parts = list(mail.walk())
    types = [part.get_content_type() for part in parts]
    assert types == ["multipart/alternative", "text/plain", "multipart/related", "text/html", "image/png"], types
    plain, html_part, image = parts[1], parts[3], parts[4]
    assert "in the consensus" in plain.get_content()
    cid = rendered.message.images[0].cid
    assert f'src="cid:{cid}"' in html_part.get_content() and 'alt="Line charts' in html_part.get_content()
    assert image["Content-ID"] == f"<{cid}>"
    assert image.get_content() == rendered.png
    assert zlib.crc32(image.get_content()) == zlib.crc32(rendered.png)
    assert mail["Subject"].startswith("[monthly report] 2020-03")
    assert mail["List-Unsubscribe"].startswith("<https://agent.example.org/unsubscribe?token=")
