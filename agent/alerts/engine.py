"""The alert life cycle: firing, still firing (reminded per suppression policy), resolved.

State persists in SQLite (table ``alerts``), so a restart neither repeats
nor forgets anything. DocTor's defaults: an info alert is repeated after
24 h, a warning after 4 h, a critical one every period (never suppressed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from agent.model.alerts import Alert, Notice


@dataclass(frozen=True)
class SuppressionPolicy:
    """Hours before a still-firing alert is told again: per alert ID, else per severity."""

    hours_by_severity: dict[str, float]
    hours_by_alert: dict[str, float]

    def repeat_seconds(self, alert: Alert) -> float:
        hours = self.hours_by_alert.get(alert.id, self.hours_by_severity.get(alert.severity, 0))
        return hours * 3600


@dataclass(frozen=True)
class Tracked:
    """What the book remembers of an alert between periods."""

    alert: Alert
    first_seen: int
    last_seen: int
    last_notified: int | None


def plan(tracked: dict[str, Tracked], current: list[Alert], now: int, policy: SuppressionPolicy
         ) -> tuple[dict[str, Tracked], list[Notice]]:
    """The new book and the notices due; pure, so every rule is testable without a database."""
    book: dict[str, Tracked] = {}
    notices: list[Notice] = []
    for alert in current:
        if alert.key in book:
            continue  # the same alert twice in one period counts once
        before = tracked.get(alert.key)
        first_seen = before.first_seen if before else now
        last_notified = before.last_notified if before else None
        if alert.silenced:
            last_notified = None  # muted: its end is not announced either (and an unmute tells it afresh)
        elif now - first_seen >= alert.wait_seconds:
            if last_notified is None:
                notices.append(Notice(alert, "firing", first_seen, now))
                last_notified = now
            elif now - last_notified >= policy.repeat_seconds(alert):
                notices.append(Notice(alert, "reminder", first_seen, now))
                last_notified = now
        book[alert.key] = Tracked(alert, first_seen, now, last_notified)
    for key, gone in tracked.items():
        if key not in book and gone.last_notified is not None:
            notices.append(Notice(gone.alert, "resolved", gone.first_seen, now))
    return book, notices


class AlertBook:
    """The ``alerts`` table: loads the book, applies ``plan`` and stores the result.

    The caller holds the transaction, so the notices and the messages they
    become are committed together or not at all.
    """

    def __init__(self, db):
        self.db = db

    def load(self) -> dict[str, Tracked]:
        rows = self.db.execute("SELECT key, alert, first_seen, last_seen, last_notified FROM alerts").fetchall()
        return {key: Tracked(Alert.from_dict(json.loads(alert)), first, last, notified)
                for key, alert, first, last, notified in rows}

    def advance(self, current: list[Alert], now: int, policy: SuppressionPolicy,
                scope=lambda alert: True) -> list[Notice]:
        """Moves the alerts within ``scope`` (e.g. only relay alerts) one period on; returns the notices."""
        everything = self.load()
        mine = {key: tracked for key, tracked in everything.items() if scope(tracked.alert)}
        book, notices = plan(mine, current, now, policy)
        self.db.executemany("DELETE FROM alerts WHERE key = ?", [(key,) for key in mine if key not in book])
        self.db.executemany("INSERT OR REPLACE INTO alerts VALUES (?, ?, ?, ?, ?)",
                            [(key, json.dumps(t.alert.as_dict()), t.first_seen, t.last_seen, t.last_notified)
                             for key, t in book.items()])
        return notices

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]

    def active(self) -> list[Tracked]:
        return sorted(self.load().values(), key=lambda t: (t.alert.severity, t.alert.key))
