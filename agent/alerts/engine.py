"""The alert life cycle: firing, still firing (reminded per suppression policy), resolved.

State persists in SQLite (table ``alerts``), so a restart neither repeats
nor forgets anything. DocTor's defaults: an info alert is repeated after
24 h, a warning after 4 h, a critical one every period (never suppressed).

A row that cannot be read back (bad JSON, wrong types, text SQLite cannot
decode) costs only itself: it is set aside in ``agent_status`` under
``set_aside:alerts:<rowid>`` with the reason, logged once and counted
(``alerts status``), and the book goes on without it.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from agent.alerts.quality import note_period
from agent.model.alerts import Alert, Notice
from agent.model.findings import SEVERITIES

log = logging.getLogger(__name__)

#: agent_status keys of rows set aside: ``set_aside:<table>:<rowid>``.
SET_ASIDE_PREFIX = "set_aside:"


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
        """Every readable alert by key; an unreadable row is set aside (see the module's docstring)."""
        book = {}
        for rowid, row in read_rows(self.db, "alerts", "key, alert, first_seen, last_seen, last_notified"):
            try:
                key, tracked = _tracked(row)
            except ValueError as error:
                set_aside(self.db, "alerts", rowid, row, str(error))
                self.db.execute("DELETE FROM alerts WHERE rowid = ?", (rowid,))
                continue
            book[key] = tracked
        return book

    def advance(self, current: list[Alert], now: int, policy: SuppressionPolicy,
                scope=lambda alert: True, history: str | None = None) -> list[Notice]:
        """Moves the alerts within ``scope`` (e.g. only relay alerts) one period on; returns the notices.

        ``history`` names the scope in the alert history (``agent.alerts.quality``); None keeps none.
        """
        everything = self.load()
        mine = {key: tracked for key, tracked in everything.items() if scope(tracked.alert)}
        book, notices = plan(mine, current, now, policy)
        self.db.executemany("DELETE FROM alerts WHERE key = ?", [(key,) for key in mine if key not in book])
        self.db.executemany("INSERT OR REPLACE INTO alerts VALUES (?, ?, ?, ?, ?)",
                            [(key, json.dumps(t.alert.as_dict()), t.first_seen, t.last_seen, t.last_notified)
                             for key, t in book.items()])
        if history is not None:
            note_period(self.db, history, {key: (t.alert.id, t.first_seen) for key, t in book.items()}, now)
        return notices

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0]

    def active(self) -> list[Tracked]:
        return sorted(self.load().values(), key=lambda t: (t.alert.severity, t.alert.key))


def _tracked(row: tuple | None) -> tuple[str, Tracked]:
    """One ``alerts`` row as (key, Tracked); ValueError saying what is wrong with it."""
    if row is None:
        raise ValueError("a column is not UTF-8 text")
    key, stored, first_seen, last_seen, last_notified = row
    if not isinstance(key, str) or not isinstance(stored, str):
        raise ValueError("key or alert is not text")
    if not all(_is_int(v) for v in (first_seen, last_seen)) or not (last_notified is None or _is_int(last_notified)):
        raise ValueError("first_seen, last_seen or last_notified is not a Unix time")
    try:
        data = json.loads(stored)
    except ValueError:
        raise ValueError("the alert is not JSON") from None
    return key, Tracked(alert_from_dict(data), first_seen, last_seen, last_notified)


_ALERT_TYPES: dict[str, tuple[type, ...]] = {
    "id": (str,), "severity": (str,), "subjects": (dict,), "summary": (str,), "description": (str,),
    "silenced": (bool,), "wait_seconds": (int,), "recipient": (str, type(None)),
    "unsubscribe_token": (str, type(None)), "extra": (dict,)}
_REQUIRED = ("id", "severity", "subjects", "summary", "description")


def alert_from_dict(data: Any) -> Alert:
    """A stored alert, checked field by field so that a damaged one fails here and not in a message.

    Keys it does not know are ignored (a later version may add some).
    """
    if not isinstance(data, dict):
        raise ValueError(f"the alert is a JSON {type(data).__name__}, not an object")
    missing = [name for name in _REQUIRED if name not in data]
    wrong = [name for name, types in _ALERT_TYPES.items() if name in data and not isinstance(data[name], types)]
    if missing or wrong:
        raise ValueError(f"the alert lacks {', '.join(missing) or 'nothing'}; wrong type: {', '.join(wrong) or '-'}")
    if data["severity"] not in SEVERITIES:
        raise ValueError(f"unknown severity {str(data['severity'])[:40]!r}")
    if not all(isinstance(v, str) for v in data["subjects"].values()) or isinstance(data.get("wait_seconds"), bool):
        raise ValueError("subjects are not text or wait_seconds is not a number")
    if not isinstance(data.get("extra", {}).get("name", ""), str):
        raise ValueError("extra.name is not text")
    return Alert.from_dict({name: data[name] for name in _ALERT_TYPES if name in data})


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_rows(db, table: str, columns: str, where: str = "1") -> list[tuple[int, tuple | None]]:
    """(rowid, values) of the matching rows, oldest first; values None where SQLite holds text that is not UTF-8.

    One such value makes the plain query raise for every row, so then each row is read alone.
    """
    try:
        return [(row[0], tuple(row[1:])) for row in
                db.execute(f"SELECT rowid, {columns} FROM {table} WHERE {where} ORDER BY rowid").fetchall()]
    except sqlite3.OperationalError as error:
        if "decode" not in str(error).lower():
            raise
    rows: list[tuple[int, tuple | None]] = []
    for (rowid,) in db.execute(f"SELECT rowid FROM {table} WHERE {where} ORDER BY rowid").fetchall():
        try:
            row = db.execute(f"SELECT {columns} FROM {table} WHERE rowid = ?", (rowid,)).fetchone()
            rows.append((rowid, tuple(row)))
        except sqlite3.OperationalError:
            rows.append((rowid, None))
    return rows


def set_aside(db, table: str, rowid: int | str, row: tuple | None, reason: str) -> None:
    """Keeps a row that cannot be used in ``agent_status`` with the reason, and says so once (the caller removes it)."""
    kept = [value if isinstance(value, (int, float, str)) or value is None else repr(value) for value in row or ()]
    record = {"row": kept, "reason": reason, "at": int(time.time())}
    db.execute("INSERT OR REPLACE INTO agent_status VALUES (?, ?)",
               (f"{SET_ASIDE_PREFIX}{table}:{rowid}", json.dumps(record, default=repr)))
    log.warning("%s row %s set aside: %s", table, rowid, reason)


def set_aside_counts(db) -> dict[str, int]:
    """How many rows of each table were set aside (from ``agent_status``)."""
    counts: dict[str, int] = {}
    for (key,) in db.execute("SELECT key FROM agent_status WHERE key LIKE ?", (SET_ASIDE_PREFIX + "%",)).fetchall():
        table = str(key)[len(SET_ASIDE_PREFIX):].split(":", 1)[0]
        counts[table] = counts.get(table, 0) + 1
    return counts
