"""The delivery outbox: every message waits in SQLite until its server took it.

A message is enqueued under a token derived from what it says and to whom
(INSERT OR IGNORE), so enqueueing the same period twice sends nothing
twice. Failed sends are retried with the one RetryPolicy's backoff, for as
long as it takes; a permanent refusal (unknown recipient) is given up and
kept for the record.

Senders (the daemon, the web mailer, any number of ``alerts drain``) take a
message with a lease before sending it: one UPDATE that succeeds only while
no one else's lease is running, recording a fresh owner token and the
lease's end (``next_attempt``). Only that token can mark the message
delivered, failed or released. So two senders never both send a message.
A sender that dies mid-send leaves its lease to expire, and the message is
then sent again: at-least-once across a crash is the honest limit, since no
SMTP server can say whether it took a message whose session broke (the
Message-ID and Matrix transaction ID let the far end recognise the repeat).

A row that cannot be read (bad JSON, wrong types, text that is not UTF-8)
is given up at once with "corrupt row set aside: <reason>" as its error,
logged once and counted; it never stops the queue.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, replace

from agent.alerts.engine import read_rows
from agent.alerts.render import Message
from agent.model.redact import redact
from agent.model.retry import RetryPolicy

log = logging.getLogger(__name__)

#: How long a claim lasts: longer than any send's timeouts, so only a dead sender's lease runs out.
CLAIM_SECONDS = 300
#: Delivered messages are kept (subject only) this long, for `alerts status` and deduplication.
KEEP_DELIVERED_SECONDS = 30 * 86400
#: The start of last_error for rows set aside as unreadable.
CORRUPT = "corrupt row set aside: "
_WAITING = "delivered IS NULL AND gave_up IS NULL"
_COLUMNS = "id, channel, target, token, message, attempts, next_attempt, last_error, lease"


@dataclass(frozen=True)
class Delivery:
    id: int
    channel: str
    target: str
    token: str
    message: Message
    attempts: int
    last_error: str | None = None
    lease: str | None = None  # the claim's owner token: set only on what ``claim`` returned


class DeliveryOutbox:
    def __init__(self, db, retry: RetryPolicy):
        self.db = db
        self.retry = retry

    def enqueue(self, channel: str, target: str, token: str, message: Message, now: int) -> bool:
        """Queues one message (in the caller's transaction); False if this token was queued before."""
        return _changed(self.db, "INSERT OR IGNORE INTO deliveries (channel, target, token, message, created, "
                        "next_attempt) VALUES (?, ?, ?, ?, ?, ?)",
                        (channel, target, token, json.dumps(message.as_dict()), now, now))

    def due(self, now: int) -> list[Delivery]:
        """Waiting messages in the order they were queued, for every destination whose oldest one is due.

        Each destination gets its messages in order: a "resolved" never
        overtakes the "firing" it resolves, whatever their backoffs, and
        nothing overtakes a message another sender holds. Unreadable rows
        are set aside on the way.
        """
        blocked, started, ready = set(), set(), []
        for row_id, row in read_rows(self.db, "deliveries", _COLUMNS, _WAITING):
            try:
                delivery, next_attempt = _parse(row)
            except ValueError as error:
                self._set_aside(row_id, str(error), now)
                continue
            destination = (delivery.channel, delivery.target)
            if destination in blocked:
                continue
            held = delivery.lease is not None and next_attempt > now
            if held or (next_attempt > now and destination not in started):  # not due, or being sent
                blocked.add(destination)
                continue
            started.add(destination)
            ready.append(replace(delivery, lease=None))
        return ready

    def claim(self, delivery: Delivery, now: int, lease_seconds: int = CLAIM_SECONDS) -> Delivery | None:
        """Takes a message for sending under a new lease; None if another sender holds it or it moved on.

        ``attempts`` must be as ``delivery`` saw it, so a stale view of a
        message that failed meanwhile (and now waits for its backoff) is refused.
        """
        lease = secrets.token_hex(16)
        taken = _changed(self.db, f"UPDATE deliveries SET lease = ?, next_attempt = ? WHERE id = ? AND {_WAITING} "
                         "AND attempts = ? AND (lease IS NULL OR next_attempt <= ?)",
                         (lease, now + lease_seconds, delivery.id, delivery.attempts, now))
        return replace(delivery, lease=lease) if taken else None

    def delivered(self, delivery: Delivery, now: int) -> bool:
        """Marks it sent and keeps only its subject (bodies may hold confirmation tokens); False without the lease."""
        slim = json.dumps({"subject": delivery.message.subject, "text": "", "html": "", "headers": {}})
        done = self._finish(delivery, "delivered = ?, attempts = attempts + 1, last_error = NULL, message = ?",
                            (now, slim))
        self.db.execute("DELETE FROM deliveries WHERE delivered < ?", (now - KEEP_DELIVERED_SECONDS,))
        return done

    def failed(self, delivery: Delivery, now: int, error: str, permanent: bool,
               retry_after_seconds: float | None = None) -> bool:
        """Records a failed try: given up if ``permanent``, else due after the backoff; False without the lease."""
        if permanent:
            update, values = "gave_up = ?", (now,)
        else:
            wait = max(self.retry.delay_after(delivery.attempts + 1), retry_after_seconds or 0)
            update, values = "next_attempt = ?", (now + max(1, round(wait)),)
        return self._finish(delivery, f"{update}, attempts = attempts + 1, last_error = ?",
                            (*values, redact(error, 500)))

    def release(self, delivery: Delivery, now: int) -> bool:
        """Gives a claimed message back untried (due at once); False without the lease."""
        return self._finish(delivery, "next_attempt = ?", (now,))

    def _finish(self, delivery: Delivery, update: str, values: tuple) -> bool:
        if delivery.lease is None:
            return False
        done = _changed(self.db, f"UPDATE deliveries SET {update}, lease = NULL WHERE id = ? AND lease = ? "
                        f"AND {_WAITING}", (*values, delivery.id, delivery.lease))
        if not done:
            log.warning("%s to %r: the lease ran out before the send ended; it may be sent twice",
                        delivery.channel, redact(delivery.target, 100))
        return done

    def _set_aside(self, row_id: int, reason: str, now: int) -> None:
        if _changed(self.db, f"UPDATE deliveries SET gave_up = ?, lease = NULL, last_error = ? WHERE id = ? "
                    f"AND {_WAITING}", (now, redact(CORRUPT + reason, 500), row_id)):
            log.warning("deliveries row %d set aside: %s", row_id, reason)

    def counts(self) -> dict[str, int]:
        row = self.db.execute(
            f"SELECT COUNT(*) FILTER (WHERE {_WAITING}), "
            "COUNT(*) FILTER (WHERE delivered IS NOT NULL), COUNT(*) FILTER (WHERE gave_up IS NOT NULL) "
            "FROM deliveries").fetchone()
        return {"waiting": row[0], "delivered": row[1], "given_up": row[2]}

    def corrupt(self) -> int:
        """How many rows were set aside as unreadable (they are among the given up)."""
        return self.db.execute("SELECT COUNT(*) FROM deliveries WHERE gave_up IS NOT NULL AND last_error LIKE ?",
                               (CORRUPT + "%",)).fetchone()[0]

    def waiting(self) -> list[tuple]:
        """(channel, target, subject, attempts, last error) of every undelivered message that can be read."""
        shown = []
        for _, row in read_rows(self.db, "deliveries", _COLUMNS, _WAITING):
            try:
                delivery, _ = _parse(row)
            except ValueError:
                continue  # the next drain sets it aside
            shown.append((delivery.channel, delivery.target, delivery.message.subject, delivery.attempts,
                          delivery.last_error))
        return shown


def _changed(db, statement: str, values: tuple) -> bool:
    """Runs one INSERT or UPDATE; True if it changed a row.

    Asks the statement itself (RETURNING) rather than ``rowcount``: the
    daemon's threads share one connection, and ``rowcount`` is read from the
    connection after the statement, when another thread's may have run.
    """
    return bool(db.execute(f"{statement} RETURNING 1", values).fetchall())


def _parse(row: tuple | None) -> tuple[Delivery, int]:
    """A waiting row as (Delivery, next_attempt); ValueError saying what is wrong with it."""
    if row is None:
        raise ValueError("a column is not UTF-8 text")
    id_, channel, target, token, message, attempts, next_attempt, last_error, lease = row
    if not all(isinstance(value, str) for value in (channel, target, token, message)):
        raise ValueError("channel, target, token or message is not text")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (attempts, next_attempt)):
        raise ValueError("attempts or next_attempt is not a whole number")
    if not (last_error is None or isinstance(last_error, str)) or not (lease is None or isinstance(lease, str)):
        raise ValueError("last_error or lease is not text")
    try:
        data = json.loads(message)
    except ValueError:
        raise ValueError("the message is not JSON") from None
    return Delivery(id_, channel, target, token, Message.from_dict(data), attempts, last_error, lease), next_attempt
