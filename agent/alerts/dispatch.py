"""From a period's findings and relay alerts to queued and delivered messages.

Per period: the alert book decides what to tell (new, reminded, resolved);
the routes decide who hears it; each destination gets one message grouping
all of it; every message goes through the delivery outbox, and the outbox is
drained (also between periods, so an outage ends as soon as the server is back).

A message that can never go out never holds back the ones behind it: a
notifier's permanent refusal gives it up at once, and a surprise (an
exception that is not a DeliveryError) is retried, as it may pass, but
given up after UNEXPECTED_LIMIT such failures in a row. Everything a server
said is redacted (``agent.model.redact``) before it is logged or stored.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sqlite3
import time
import traceback
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from agent.alerts.deliveries import Delivery, DeliveryOutbox
from agent.alerts.engine import AlertBook, SuppressionPolicy, set_aside, set_aside_counts
from agent.alerts.notifiers import Notifier, notifiers, subscription_channel
from agent.alerts.quality import FINDINGS, SUBSCRIPTIONS
from agent.alerts.render import Message, compose
from agent.model.alerts import Alert, Notice, from_finding
from agent.model.errors import DeliveryError
from agent.model.redact import redact

log = logging.getLogger(__name__)

#: Surprising failures in a row after which a message is given up (a deterministic one would block forever).
UNEXPECTED_LIMIT = 5
_UNEXPECTED = re.compile(r"unexpected \((\d+)\)")


def _is_subscription(alert: Alert) -> bool:
    return alert.recipient is not None


class Alerting:
    """The alerting stage over one database connection.

    ``config`` is the agent's ``Config`` (``agent.config.loader``), read by
    attribute only: ``vantage``, ``alerts`` and each notifier's own section.
    """

    def __init__(self, config: Any, db, environ: Mapping[str, str] = os.environ, clock=time.time):
        self.config = config
        self.db = db
        self.clock = clock
        self.book = AlertBook(db)
        self.outbox = DeliveryOutbox(db, config.alerts.retry)
        self.policy = SuppressionPolicy(config.alerts.suppression_hours, config.alerts.per_alert_hours)
        self.senders: dict[str, Notifier] = notifiers(config, environ)

    def on_period(self, findings: list, relay_alerts: list[Alert] | None = None, period: int | None = None
                  ) -> list[Notice]:
        """Advances the alert book by one period and queues what must be told; returns the notices.

        ``period`` is the period's valid-after (Unix seconds): it is the time
        waits and suppressions are measured in, and a period already alerted
        on (a rerun after a crash) changes nothing. Without one (a failed
        period) the clock is used. ``relay_alerts`` None means subscriptions
        were not evaluated: their alerts are left as they are, not resolved.
        """
        now = int(self.clock()) if period is None else period
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            if period is not None:
                done = self._alerted_period()
                if done is not None and done >= period:
                    return []
                self.db.execute("INSERT OR REPLACE INTO agent_status VALUES ('alerts_period', ?)", (str(period),))
            notices = self.book.advance([from_finding(f) for f in findings], now, self.policy,
                                        scope=lambda alert: not _is_subscription(alert), history=FINDINGS)
            if relay_alerts is not None:
                notices += self.book.advance(relay_alerts, now, self.policy, scope=_is_subscription,
                                             history=SUBSCRIPTIONS)
            self.queue(notices, now)
        return notices

    def _alerted_period(self) -> int | None:
        """The last period alerted on; a value that is not a number is set aside (and then overwritten)."""
        try:
            row = self.db.execute("SELECT value FROM agent_status WHERE key = 'alerts_period'").fetchone()
        except sqlite3.OperationalError as error:  # not UTF-8
            row = (None,) if "decode" in str(error).lower() else None
        if row is None:
            return None
        try:
            return int(row[0])
        except (TypeError, ValueError):
            set_aside(self.db, "status", "alerts_period", tuple(row), "alerts_period is not a period")
            return None

    def queue(self, notices: list[Notice], now: int) -> int:
        """One message per destination, inside the caller's transaction; returns how many were queued."""
        grouped: dict[tuple[str, str], list[Notice]] = defaultdict(list)
        for notice in notices:
            for destination in self._destinations(notice.alert):
                grouped[destination].append(notice)
        queued = 0
        for (channel, target), group in sorted(grouped.items()):
            message = self._compose(group)
            if message is not None:
                queued += self.outbox.enqueue(channel, target, _token(channel, target, now, group), message, now)
        return queued

    def _compose(self, group: list[Notice]) -> Message | None:
        """The group's message; a notice that cannot be told (a damaged alert) is left out, not the whole period."""
        try:
            return compose(group, self.config.vantage, self.config.alerts.public_url)
        except Exception:
            told = []
            for notice in group:
                try:
                    compose([notice], self.config.vantage)
                except Exception as error:
                    log.error("alert %s cannot be told, left out: %s", redact(notice.alert.key, 200), redact(error))
                else:
                    told.append(notice)
            return compose(told, self.config.vantage, self.config.alerts.public_url) if told else None

    def send_later(self, channel: str, target: str, message: Message, token: str) -> bool:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            return self.outbox.enqueue(channel, target, token, message, int(self.clock()))

    def _destinations(self, alert: Alert) -> list[tuple[str, str]]:
        if alert.recipient is not None:
            return [(subscription_channel(self.config), alert.recipient)]
        found = [destination for route in self.config.alerts.routes if route.matches(alert)
                 for destination in route.destinations()]
        return list(dict.fromkeys(found))

    def drain(self, budget_seconds: float = 30.0) -> dict[str, int]:
        """Tries every due message (within the budget); returns the outbox counts after.

        A destination is left for the next drain when a try fails (its order
        must hold) or another sender holds one of its messages.
        """
        started = time.monotonic()
        skipped: set[tuple[str, str]] = set()
        for delivery in self.outbox.due(int(self.clock())):
            if time.monotonic() - started > budget_seconds:
                break
            destination = (delivery.channel, delivery.target)
            if destination in skipped:
                continue
            claimed = self.outbox.claim(delivery, int(self.clock()))
            if claimed is None or not self._try(claimed):
                skipped.add(destination)
        return self.outbox.counts()

    def quarantined(self) -> dict[str, int]:
        """Rows set aside as unreadable: deliveries, alerts and status values."""
        aside = set_aside_counts(self.db)
        return {"deliveries": self.outbox.corrupt(), "alerts": aside.get("alerts", 0), "status": aside.get("status", 0)}

    def sweep(self) -> None:
        """Reads every waiting message and alert once, setting aside what cannot be read (for ``alerts status``)."""
        self.outbox.due(int(self.clock()))
        self.book.load()

    def _try(self, delivery: Delivery) -> bool:
        """Sends one claimed message and records how it went; False when its destination must wait."""
        sender = self.senders.get(delivery.channel)
        if sender is None:
            return self._failed(delivery, DeliveryError(f"no {delivery.channel} settings in the config"))
        try:
            sender.send(delivery.target, delivery.message, delivery.token)
        except DeliveryError as error:
            return self._failed(delivery, error)
        except Exception as error:  # a surprise (bad JSON from a proxy...) is a failed try, not a crash
            return self._failed(delivery, self._unexpected(delivery, error))
        except BaseException:  # interrupted: the message is due again at once (it may have gone out)
            self.outbox.release(delivery, int(self.clock()))
            raise
        self.outbox.delivered(delivery, int(self.clock()))
        log.info("%s delivered to %s: %s", delivery.channel, _shown(delivery.target), _shown(delivery.message.subject))
        return True

    def _failed(self, delivery: Delivery, error: DeliveryError) -> bool:
        """Records a failed try; True if it was given up (then it must not hold back the ones after it)."""
        reason = redact(error, 500)
        verdict = "given up" if error.permanent else f"attempt {delivery.attempts + 1}"
        log.warning("%s to %s not delivered (%s): %s", delivery.channel, _shown(delivery.target), verdict, reason)
        self.outbox.failed(delivery, int(self.clock()), reason, error.permanent, error.retry_after_seconds)
        return error.permanent

    def _unexpected(self, delivery: Delivery, error: Exception) -> DeliveryError:
        """A surprise as a DeliveryError, permanent once it has happened UNEXPECTED_LIMIT times in a row."""
        before = _UNEXPECTED.match(delivery.last_error or "")
        count = int(before.group(1)) + 1 if before else 1
        log.error("sending %s to %s failed unexpectedly:\n%s", delivery.channel, _shown(delivery.target),
                  redact(traceback.format_exc(), 4000))
        return DeliveryError(f"unexpected ({count}) {type(error).__name__}: {redact(error, 200)}",
                             permanent=count >= UNEXPECTED_LIMIT)


def _shown(text: str) -> str:
    """A target or subject as it may appear in a log line: bounded, redacted, its control characters escaped."""
    return redact(text, 200).encode("unicode_escape", errors="backslashreplace").decode("ascii")


def _token(channel: str, target: str, now: int, notices: list[Notice]) -> str:
    """Stable for the same notices to the same destination in the same period."""
    content = "|".join(sorted(f"{n.status}:{n.alert.key}" for n in notices))
    return hashlib.sha256(f"{channel}|{target}|{now}|{content}".encode()).hexdigest()[:40]
