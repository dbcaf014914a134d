"""The monthly report as a mail, queued once per subscription and month through the delivery outbox.

The mail is plain text (all of it readable there) and HTML with the chart
inline (``cid:``, alt text saying what it shows); the chart travels in the
message's ``images`` (``agent.alerts.inline``). Its outbox
token is ``monthly|<subscription id>|<YYYY-MM>``: the outbox's token is
unique, so queueing the same month again (a restart, a second ``report
monthly --send``) queues nothing.

``due_reports`` is what the daemon calls once per period: on the first
period of a new month (UTC) it queues the previous month's reports for every
active subscription and notes the month as done in the state
(``agent_status`` key ``reports:monthly``), so later periods do nothing.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass

from agent.alerts.inline import InlineImage
from agent.alerts.notifiers import subscription_channel
from agent.alerts.render import Message, clean
from agent.model.errors import QueryError
from agent.reports import chart
from agent.reports.monthly import Month, MonthlyReport, RelayMonth, build
from agent.reports.units import bandwidth, percent, share, utc, weight
from agent.subscriptions.store import Subscription, SubscriptionStore

log = logging.getLogger(__name__)

STATUS_KEY = "reports:monthly"
#: Flag changes listed per relay; more are counted.
MAX_CHANGES = 10


def token(subscription_id: int, month: Month) -> str:
    return f"monthly|{subscription_id}|{month.label}"


def cid(report: MonthlyReport) -> str:
    return f"chart.{report.month.label}.{report.subscription.id}@allium-agent"


@dataclass(frozen=True)
class Rendered:
    message: Message
    png: bytes


def render(report: MonthlyReport, vantage: str, public_url: str | None = None) -> Rendered:
    """The report's mail: subject, plain text, HTML and the chart."""
    png = chart.render(report)
    alt = chart.alt_text(report)
    subscription, month = report.subscription, report.month
    names = ", ".join(relay.nickname or relay.fingerprint[:8] for relay in report.relays[:3])
    names += f" and {len(report.relays) - 3} more" if len(report.relays) > 3 else ""
    subject = clean(f"[monthly report] {month.label}: {names or 'no relays'}", 200)
    what = f"{subscription.kind} {subscription.target}"
    text = [f"Allium Agent ({clean(vantage, 60)}): monthly report for {month.label} (UTC, "
            f"{utc(month.start)} to {utc(month.end)})",
            f"Subscription {subscription.id}: {clean(what, 200)}", "",
            f"The agent recorded {share(report.hours_observed, month.hours)} of the month.",
            "Trends compare the median of the month's first 7 days with that of its last 7.", ""]
    body = [f"<p>Allium Agent ({html.escape(clean(vantage, 60))}): monthly report for <b>{month.label}</b> "
            f"(UTC, {utc(month.start)} to {utc(month.end)})<br>Subscription {subscription.id}: "
            f"{html.escape(clean(what, 200))}</p>",
            f"<p>The agent recorded {share(report.hours_observed, month.hours)} of the month. Trends compare the "
            "median of the month's first 7 days with that of its last 7.</p>",
            f'<p><img src="cid:{cid(report)}" width="{chart.WIDTH}" height="{chart.HEIGHT}" '
            f'alt="{html.escape(alt)}"></p>']
    if not report.relays:
        text.append("No relay was watched for this subscription this month.")
        body.append("<p>No relay was watched for this subscription this month.</p>")
    for relay in report.relays:
        rows = _rows(relay, month)
        text += [clean(relay.name, 120), *(f"  {label:<18} {value}" for label, value in rows), ""]
        body.append(f"<h3>{html.escape(clean(relay.name, 120))}</h3><table>" + "".join(
            f'<tr><th scope="row" style="text-align:left">{html.escape(label)}</th><td>{html.escape(value)}</td>'
            "</tr>" for label, value in rows) + "</table>")
    if report.left_out:
        text += [f"{report.left_out} more relays are not in this report.", ""]
        body.append(f"<p>{report.left_out} more relays are not in this report.</p>")
    text += _alert_lines(report)
    body.append("<p>" + "<br>".join(html.escape(line) for line in _alert_lines(report) if line) + "</p>")
    text += ["", f"Chart: {alt}"]
    headers = {}
    link = _unsubscribe(public_url, subscription.unsubscribe_token)
    text += ["", f"To stop these reports and alerts: {link}"]
    body.append(f'<p>To stop these reports and alerts: <a href="{html.escape(link)}">{html.escape(link)}</a></p>')
    if link.startswith("http"):
        headers = {"List-Unsubscribe": f"<{link}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    image = InlineImage(cid(report), png, alt, "png", f"allium-{month.label}.png")
    message = Message(subject=subject, text="\n".join(text).rstrip() + "\n", html="\n".join(body), headers=headers,
                      images=(image,))
    return Rendered(message, png)


def _rows(relay: RelayMonth, month: Month) -> list[tuple[str, str]]:
    rows = [("in the consensus", share(relay.hours_in_consensus, month.hours)),
            ("with Running", share(relay.hours_running, month.hours)),
            ("first / last hour", f"{utc(relay.first_seen)} / {utc(relay.last_seen)}"),
            ("flags first", " ".join(sorted(relay.first_flags)) or "-"),
            ("flags last", " ".join(sorted(relay.last_flags)) or "-"),
            ("flags gained", " ".join(relay.gained) or "none"),
            ("flags lost", " ".join(relay.lost) or "none"),
            ("consensus weight", f"{weight(relay.weight.first)} -> {weight(relay.weight.last)} "
                                 f"({percent(relay.weight.percent)})"),
            ("advertised bw", f"{bandwidth(relay.bandwidth.first)} -> {bandwidth(relay.bandwidth.last)} "
                              f"({percent(relay.bandwidth.percent)})"),
            ("flag changes", str(len(relay.changes)) if relay.changes else "none")]
    for change in relay.changes[:MAX_CHANGES]:
        moved = " ".join([*(f"+{flag}" for flag in change.gained), *(f"-{flag}" for flag in change.lost)])
        rows.append(("", f"{utc(change.at)} {moved}"))
    if len(relay.changes) > MAX_CHANGES:
        rows.append(("", f"... and {len(relay.changes) - MAX_CHANGES} more"))
    return rows


def _alert_lines(report: MonthlyReport) -> list[str]:
    if not report.alerts:
        return [f"Alerts raised for you in {report.month.label}: none."]
    width = max(len(kind) for kind in report.alerts)
    return [f"Alerts raised for you in {report.month.label}, by kind:",
            *(f"  {kind:<{width}}  {count:,}" for kind, count in report.alerts.items())]


def _unsubscribe(public_url: str | None, unsubscribe_token: str) -> str:
    if public_url:
        return f"{public_url.rstrip('/')}/unsubscribe?token={unsubscribe_token}"
    return f"allium-agent subscriptions remove --token {unsubscribe_token}"


def subscriptions_for(db, month: Month, only: int | None = None) -> list[Subscription]:
    """Active subscriptions that existed before the month ended (``only``: that one)."""
    return [s for s in SubscriptionStore(db).active()
            if s.created < month.end and (only is None or s.id == only)]


def queued(db, subscription_id: int, month: Month) -> bool:
    return db.execute("SELECT 1 FROM deliveries WHERE token = ?", (token(subscription_id, month),)).fetchone() \
        is not None


def queue_month(config, alerting, url: str, month: Month, only: int | None = None) -> tuple[int, int]:
    """Queues the month's report of every active subscription not queued before; (queued, failed).

    Raises QueryError when the store cannot answer (nothing more is tried).
    """
    done = failed = 0
    for subscription in subscriptions_for(alerting.db, month, only):
        if queued(alerting.db, subscription.id, month):
            continue  # the outbox would refuse it anyway: spare the queries and the chart
        try:
            report = build(alerting.db, url, subscription, month, config.query.timeout_seconds)
            rendered = render(report, config.vantage, config.alerts.public_url)
        except QueryError:
            raise
        except Exception:
            log.exception("the %s report of subscription %d cannot be made", month.label, subscription.id)
            failed += 1
            continue
        done += alerting.send_later(subscription_channel(config), subscription.email, rendered.message,
                                    token(subscription.id, month))
    return done, failed


def due_reports(config, alerting, query_url: str | None, now: float) -> int:
    """Queues last month's reports once, on the first period of a new month; returns how many were queued.

    Safe to call every period: the month done is kept in the state, and a
    failure (the store unreachable) leaves it to the next period.
    """
    reports = getattr(config, "reports", None)  # the section, once the config loader mounts it
    if reports is not None and not reports.monthly:
        return 0
    month = Month.before(now)
    db = alerting.db
    row = db.execute("SELECT value FROM agent_status WHERE key = ?", (STATUS_KEY,)).fetchone()
    if row is not None and row[0] == json.dumps(month.label):
        return 0
    if query_url is None:
        log.warning("monthly reports for %s wait: no PromQL endpoint (query.url, or the embedded store)", month.label)
        return 0
    try:
        done, failed = queue_month(config, alerting, query_url, month)
    except QueryError as error:
        log.warning("monthly reports for %s wait for the store: %s", month.label, error)
        return 0
    if not failed:
        with db:
            db.execute("INSERT OR REPLACE INTO agent_status VALUES (?, ?)", (STATUS_KEY, json.dumps(month.label)))
    log.info("monthly reports for %s: %d queued%s", month.label, done, f", {failed} failed" if failed else "")
    return done
