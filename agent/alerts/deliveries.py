"""The delivery outbox: every message waits in SQLite until its server took it.

A message is enqueued under a token derived from what it says and to whom
(INSERT OR IGNORE), so enqueueing the same period twice sends nothing
twice. Failed sends are retried with the one RetryPolicy's backoff, for as
long as it takes; a permanent refusal (unknown recipient) is given up and
kept for the record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from agent.alerts.render import Message
from agent.model.retry import RetryPolicy

#: A claimed message is not tried by anyone else for this long (longer than any send's timeouts).
CLAIM_SECONDS = 300
#: Delivered messages are kept (subject only) this long, for `alerts status` and deduplication.
KEEP_DELIVERED_SECONDS = 30 * 86400


@dataclass(frozen=True)
class Delivery:
    id: int
    channel: str
    target: str
    token: str
    message: Message
    attempts: int


class DeliveryOutbox:
    def __init__(self, db, retry: RetryPolicy):
        self.db = db
        self.retry = retry

    def enqueue(self, channel: str, target: str, token: str, message: Message, now: int) -> bool:
        """Queues one message (in the caller's transaction); False if this token was queued before."""
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO deliveries (channel, target, token, message, created, next_attempt) "
            "VALUES (?, ?, ?, ?, ?, ?)", (channel, target, token, json.dumps(message.as_dict()), now, now))
        return cursor.rowcount == 1

    def due(self, now: int) -> list[Delivery]:
        """Waiting messages in the order they were queued, for every destination whose oldest one is due.

        Each destination gets its messages in order: a "resolved" never
        overtakes the "firing" it resolves, whatever their backoffs.
        """
        rows = self.db.execute(
            "SELECT id, channel, target, token, message, attempts, next_attempt FROM deliveries "
            "WHERE delivered IS NULL AND gave_up IS NULL ORDER BY id").fetchall()
        blocked, started, ready = set(), set(), []
        for id_, channel, target, token, message, attempts, next_attempt in rows:
            destination = (channel, target)
            if destination in blocked:
                continue
            if next_attempt > now and destination not in started:  # its oldest is not due yet
                blocked.add(destination)
                continue
            started.add(destination)
            ready.append(Delivery(id_, channel, target, token, Message(**json.loads(message)), attempts))
        return ready

    def claim(self, delivery: Delivery, now: int, lease_seconds: int = CLAIM_SECONDS) -> bool:
        """Takes a message for sending; False if another process (daemon, web, CLI) took it first.

        The claim pushes the next try past the lease, so a sender that dies
        mid-send only delays the message.
        """
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db.execute(
                "UPDATE deliveries SET next_attempt = ? WHERE id = ? AND delivered IS NULL AND gave_up IS NULL "
                "AND attempts = ? AND next_attempt < ?",
                (now + lease_seconds, delivery.id, delivery.attempts, now + lease_seconds)).rowcount == 1

    def delivered(self, delivery: Delivery, now: int) -> None:
        """Marks it sent and keeps only its subject: bodies may hold confirmation tokens."""
        slim = json.dumps({"subject": delivery.message.subject, "text": "", "html": "", "headers": {}})
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE deliveries SET delivered = ?, attempts = attempts + 1, last_error = NULL, "
                            "message = ? WHERE id = ?", (now, slim, delivery.id))
            self.db.execute("DELETE FROM deliveries WHERE delivered < ?", (now - KEEP_DELIVERED_SECONDS,))

    def failed(self, delivery: Delivery, now: int, error: str, permanent: bool,
               retry_after_seconds: float | None = None) -> None:
        if permanent:
            update, values = "gave_up = ?", (now,)
        else:
            wait = max(self.retry.delay_after(delivery.attempts + 1), retry_after_seconds or 0)
            update, values = "next_attempt = ?", (now + max(1, round(wait)),)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(f"UPDATE deliveries SET {update}, attempts = attempts + 1, last_error = ? WHERE id = ?",
                            (*values, error[:500], delivery.id))

    def counts(self) -> dict[str, int]:
        row = self.db.execute(
            "SELECT COUNT(*) FILTER (WHERE delivered IS NULL AND gave_up IS NULL), "
            "COUNT(*) FILTER (WHERE delivered IS NOT NULL), COUNT(*) FILTER (WHERE gave_up IS NOT NULL) "
            "FROM deliveries").fetchone()
        return {"waiting": row[0], "delivered": row[1], "given_up": row[2]}

    def waiting(self) -> list[tuple]:
        """(channel, target, subject, attempts, last error) of every undelivered message."""
        rows = self.db.execute("SELECT channel, target, message, attempts, last_error FROM deliveries "
                               "WHERE delivered IS NULL AND gave_up IS NULL ORDER BY id").fetchall()
        return [(channel, target, json.loads(message)["subject"], attempts, error)
                for channel, target, message, attempts, error in rows]
