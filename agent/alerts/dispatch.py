"""From a period's findings and relay alerts to queued and delivered messages.

Per period: the alert book decides what to tell (new, reminded, resolved);
the routes decide who hears it; each destination gets one message grouping
all of it; every message goes through the delivery outbox, and the outbox is
drained (also between periods, so an outage ends as soon as the server is back).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from agent.alerts.deliveries import Delivery, DeliveryOutbox
from agent.alerts.engine import AlertBook, SuppressionPolicy
from agent.alerts.notifiers import SUBSCRIPTION_CHANNEL, Notifier, notifiers
from agent.alerts.render import Message, compose
from agent.model.alerts import Alert, Notice, from_finding
from agent.model.errors import DeliveryError

log = logging.getLogger(__name__)


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
                done = self.db.execute("SELECT value FROM agent_status WHERE key = 'alerts_period'").fetchone()
                if done is not None and int(done[0]) >= period:
                    return []
                self.db.execute("INSERT OR REPLACE INTO agent_status VALUES ('alerts_period', ?)", (str(period),))
            notices = self.book.advance([from_finding(f) for f in findings], now, self.policy,
                                        scope=lambda alert: not _is_subscription(alert))
            if relay_alerts is not None:
                notices += self.book.advance(relay_alerts, now, self.policy, scope=_is_subscription)
            self.queue(notices, now)
        return notices

    def queue(self, notices: list[Notice], now: int) -> int:
        """One message per destination, inside the caller's transaction; returns how many were queued."""
        grouped: dict[tuple[str, str], list[Notice]] = defaultdict(list)
        for notice in notices:
            for destination in self._destinations(notice.alert):
                grouped[destination].append(notice)
        queued = 0
        for (channel, target), group in sorted(grouped.items()):
            message = compose(group, self.config.vantage, self.config.alerts.public_url)
            queued += self.outbox.enqueue(channel, target, _token(channel, target, now, group), message, now)
        return queued

    def send_later(self, channel: str, target: str, message: Message, token: str) -> bool:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            return self.outbox.enqueue(channel, target, token, message, int(self.clock()))

    def _destinations(self, alert: Alert) -> list[tuple[str, str]]:
        if alert.recipient is not None:
            return [(SUBSCRIPTION_CHANNEL, alert.recipient)]
        found = [destination for route in self.config.alerts.routes if route.matches(alert)
                 for destination in route.destinations()]
        return list(dict.fromkeys(found))

    def drain(self, budget_seconds: float = 30.0) -> dict[str, int]:
        """Tries every due message (within the budget); returns the outbox counts after."""
        started = time.monotonic()
        failing: set[tuple[str, str]] = set()
        for delivery in self.outbox.due(int(self.clock())):
            if time.monotonic() - started > budget_seconds:
                break
            if (delivery.channel, delivery.target) in failing:
                continue  # keeps the order: the next try starts again from the oldest
            if not self.outbox.claim(delivery, int(self.clock())):
                continue  # another process is sending it
            if not self._try(delivery):
                failing.add((delivery.channel, delivery.target))
        return self.outbox.counts()

    def _try(self, delivery: Delivery) -> bool:
        sender = self.senders.get(delivery.channel)
        now = int(self.clock())
        if sender is None:
            self.outbox.failed(delivery, now, f"no {delivery.channel} settings in the config", permanent=False)
            return False
        try:
            sender.send(delivery.target, delivery.message, delivery.token)
        except Exception as error:  # a surprise (bad JSON from a proxy...) is a failed try, not a crash
            if not isinstance(error, DeliveryError):
                log.exception("sending %s to %s failed unexpectedly", delivery.channel, delivery.target)
                error = DeliveryError(f"unexpected {type(error).__name__}: {str(error)[:200]}")
            log.warning("%s to %s not delivered (attempt %d): %s", delivery.channel, delivery.target,
                        delivery.attempts + 1, error)
            self.outbox.failed(delivery, now, str(error), error.permanent, error.retry_after_seconds)
            return error.permanent  # a refused message must not hold back the ones after it
        self.outbox.delivered(delivery, now)
        log.info("%s delivered to %s: %s", delivery.channel, delivery.target, delivery.message.subject)
        return True


def _token(channel: str, target: str, now: int, notices: list[Notice]) -> str:
    """Stable for the same notices to the same destination in the same period."""
    content = "|".join(sorted(f"{n.status}:{n.alert.key}" for n in notices))
    return hashlib.sha256(f"{channel}|{target}|{now}|{content}".encode()).hexdigest()[:40]
