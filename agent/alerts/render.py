"""One message per destination per period: a subject that names the worst, plain text and HTML bodies.

Relay nicknames, contact lines and anything else from the network are
attacker-controlled: every such value is stripped of control characters
(no header or line injection), bounded in length, and HTML-escaped in the
HTML part. "Control characters" are every character ``str.splitlines`` or
the ``email`` package treat as a line break (C0, DEL, C1 with U+0085,
U+2028, U+2029), lone surrogates (no encoding can carry them) and the
bidirectional overrides that make a subject read differently than it is.

A message also carries the notices it tells as plain data (``alerts``, with
the ``vantage``), cleaned and bounded the same way, for the channels that
deliver machine-readable payloads (``agent.alerts.webhook``); the mail and
Matrix notifiers do not read them.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone

from agent.alerts.inline import InlineImage, images_from
from agent.model.alerts import Notice
from agent.model.findings import SEVERITIES

SUBJECT_LIMIT = 200
FIELD_LIMIT = 500
DESCRIPTION_LIMIT = 2000  # a finding's description lists up to ten relays with their details
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]+")
_STATUS_HEADINGS = (("firing", "New"), ("reminder", "Still firing"), ("resolved", "Resolved"))


@dataclass(frozen=True)
class Message:
    subject: str
    text: str
    html: str
    headers: dict = field(default_factory=dict)
    #: The notices told, as JSON-ready mappings (see ``facts``); empty for messages that are no alerts.
    alerts: tuple = ()
    vantage: str = ""
    #: Images the HTML part shows inline (``cid:``; ``agent.alerts.inline``): the monthly report's chart.
    images: tuple[InlineImage, ...] = ()

    def as_dict(self) -> dict:
        data = {"subject": self.subject, "text": self.text, "html": self.html, "headers": self.headers}
        if self.alerts:  # only then, so rows and dicts of other messages are as they always were
            data.update(alerts=list(self.alerts), vantage=self.vantage)
        if self.images:
            data["inline"] = [image.as_dict() for image in self.images]
        return data

    @classmethod
    def from_dict(cls, data: object) -> Message:
        """A message as stored; ValueError saying what is wrong with it.

        Keys it does not know are ignored (a later version may add some);
        wrong types are not, so a damaged row is caught here, not mid-send.
        """
        if not isinstance(data, dict):
            raise ValueError(f"the message is a JSON {type(data).__name__}, not an object")
        for name in ("subject", "text", "html"):
            if not isinstance(data.get(name), str):
                raise ValueError(f"the message's {name} is {type(data.get(name)).__name__}, not text")
        headers = data.get("headers", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise ValueError("the message's headers are not a mapping of text")
        alerts, vantage = data.get("alerts", []), data.get("vantage", "")
        if not isinstance(alerts, list) or not all(isinstance(a, dict) for a in alerts) or not isinstance(vantage, str):
            raise ValueError("the message's alerts are not a list of mappings")
        return cls(data["subject"], data["text"], data["html"], dict(headers), tuple(alerts), vantage,
                   images_from(data.get("inline")))


def clean(value: object, limit: int = FIELD_LIMIT) -> str:
    """One line, no control characters, at most ``limit`` characters, never cut inside an item.

    A list (items separated by ``; `` or ``, ``) keeps its whole leading
    items and says how many it leaves out; other text is cut between words.
    """
    text = _CONTROL.sub(" ", str(value)).strip()
    return text if len(text) <= limit else _shorten(text, limit)


def _shorten(text: str, limit: int) -> str:
    for separator in ("; ", ", "):
        items = text.split(separator)
        if len(items) < 2:
            continue
        for kept in range(len(items) - 1, 0, -1):
            shown = separator.join(items[:kept]) + f"{separator}… ({len(items) - kept} more)"
            if len(shown) <= limit:
                return shown
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + "…"


def subject_of(notices: list[Notice]) -> str:
    """``[critical] TorConsensusStale; 2 warnings: TorAuthorityClockSkew (moria1), …; resolved: …``."""
    firing = [n for n in notices if n.status != "resolved"]
    resolved = [n for n in notices if n.status == "resolved"]
    parts = []
    # One label per check and main subject: auth3's three unreachable documents are one item here.
    by_severity = {severity: list(dict.fromkeys(n.alert.short_label for n in firing if n.alert.severity == severity))
                   for severity in SEVERITIES}
    present = [severity for severity in SEVERITIES if by_severity[severity]]
    for index, severity in enumerate(present):
        labels = ", ".join(by_severity[severity])
        if index == 0:
            parts.append(f"[{severity}] {labels}")
        else:
            count = len(by_severity[severity])
            noun = severity if severity == "info" or count == 1 else f"{severity}s"
            parts.append(f"{count} {noun}: {labels}")
    if resolved:
        labels = ", ".join(dict.fromkeys(n.alert.short_label for n in resolved))
        parts.append(f"resolved: {labels}" if firing else f"[resolved] {labels}")
    return clean("; ".join(parts), SUBJECT_LIMIT)


def compose(notices: list[Notice], vantage: str, public_url: str | None = None) -> Message:
    """The message telling one destination about this period's notices."""
    ordered = sorted(notices, key=lambda n: (SEVERITIES.index(n.alert.severity), n.alert.key))
    when = datetime.fromtimestamp(ordered[0].now, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = [f"Allium Agent ({clean(vantage, 60)}), {when}", ""]
    body = [f"<p>Allium Agent ({html.escape(clean(vantage, 60))}), {when}</p>"]
    for status, heading in _STATUS_HEADINGS:
        group = [n for n in ordered if n.status == status]
        if not group:
            continue
        text.append(f"{heading}:")
        body.append(f"<h3>{heading}</h3><ul>")
        for notice in group:
            line, detail = _describe(notice)
            text += [f"- {line}", f"  {detail}"]
            body.append(f"<li><b>{html.escape(line)}</b><br>{html.escape(detail)}</li>")
        text.append("")
        body.append("</ul>")
    headers = {}
    tokens = sorted({n.alert.unsubscribe_token for n in ordered if n.alert.unsubscribe_token})
    if tokens:
        links = [_unsubscribe_link(public_url, token) for token in tokens]
        text += ["To stop these alerts: " + " ".join(links)]
        body.append("<p>To stop these alerts: " + " ".join(
            f'<a href="{html.escape(link)}">{html.escape(link)}</a>' for link in links) + "</p>")
        headers["List-Unsubscribe"] = ", ".join(f"<{link}>" for link in links if link.startswith("http"))
        if headers["List-Unsubscribe"]:
            headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"  # RFC 8058
    return Message(subject_of(ordered), "\n".join(text).rstrip() + "\n", "\n".join(body), {
        key: value for key, value in headers.items() if value}, tuple(facts(n) for n in ordered), clean(vantage, 60))


def facts(notice: Notice) -> dict:
    """One notice as plain data: what a machine-readable payload says about it (no recipient, no token).

    ``status`` is ``firing`` or ``resolved`` (a reminder is firing, with
    ``reminder`` true); times are ISO 8601 UTC with Z, ``ended_at`` null
    while it fires. Texts are cleaned and bounded as in the mail.
    """
    alert = notice.alert
    resolved = notice.status == "resolved"
    return {"id": clean(alert.id, 200), "severity": alert.severity, "status": "resolved" if resolved else "firing",
            "reminder": notice.status == "reminder", "label": clean(alert.label, 200),
            "subjects": {clean(name, 100): clean(value, 200) for name, value in alert.subjects.items()},
            "summary": clean(alert.summary, FIELD_LIMIT), "description": clean(alert.description, DESCRIPTION_LIMIT),
            "started_at": _iso(notice.first_seen), "ended_at": _iso(notice.now) if resolved else None}


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _describe(notice: Notice) -> tuple[str, str]:
    alert = notice.alert
    line = f"[{alert.severity}] {clean(alert.label, 200)}: {clean(alert.summary, 200)}"
    since = datetime.fromtimestamp(notice.first_seen, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if notice.status == "resolved":
        minutes = max(0, notice.now - notice.first_seen) // 60
        return line, f"cleared after {minutes} min (first seen {since}). Was: " \
                     f"{clean(alert.description, DESCRIPTION_LIMIT)}"
    return line, f"{clean(alert.description, DESCRIPTION_LIMIT)} (since {since})"


def _unsubscribe_link(public_url: str | None, token: str) -> str:
    if public_url:
        return f"{public_url.rstrip('/')}/unsubscribe?token={token}"
    return f"allium-agent subscriptions remove --token {token}"
