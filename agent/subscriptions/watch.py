"""Each period: which relays the active subscriptions cover, their history, and the alerts they raise.

Family, operator and contact subscriptions are resolved again every period,
so a relay that joins the family (or that its operator's proof lists) later
is covered at once; relays they covered before
are remembered for HISTORY_SECONDS, so one that vanished is reported down
rather than silently dropped. What subscriptions read of each watched relay's
descriptor is remembered too: a period whose descriptors did not arrive uses
the last ones, so it neither ends nor starts the alerts that read them.
The overload-general time (TorRelayOverloaded) is not in that table: it is
kept in the active alert's ``extra`` and read back from there. The table's
``family`` column holds, as JSON, the family mismatch (MyFamily) and the
relay's tor 0.4.9 family IDs with why any were lost
(``agent.model.family.lost_ids``), so a relay whose family-cert vanished
is still known to have held the ID its siblings keep.
Each subscription's preferences (agent.subscriptions.store.Preferences) decide
what it hears: its own thresholds replace the configured ones for its relays,
and only the alert kinds it chose reach it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timezone

from agent.model.alerts import Alert
from agent.model.aroi import EMPTY, ProofBook
from agent.model.time import unix
from agent.subscriptions.events import (
    bandwidth_votes,
    conditions,
    effective_family,
    relay_status,
    relays_with_contact,
    verified_operators,
)
from agent.subscriptions.store import Subscription, SubscriptionStore

HISTORY_SECONDS = 7 * 86400
_LAST_SECOND = 7_258_118_399  # 2199-12-31 23:59:59 UTC: the parser's last time (agent.parse.grammar)


@dataclass(frozen=True)
class KnownDescriptor:
    """What ``relay_status`` reads of a watched relay's descriptor, as remembered from an earlier period."""

    hibernating: bool
    uptime: int | None
    observed_bandwidth: int | None
    overload_general: datetime | None = None  # from the relay's active TorRelayOverloaded alert, if any
    # (lists_unreturned, listed_unreturned) as last judged (TorRelayFamilyBroken); None: unknown
    family_mismatch: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    family_ids: tuple[str, ...] | None = None  # as RelayStatus.family_ids was last judged
    family_ids_lost: tuple[str, ...] = ()


class RelayWatch:
    def __init__(self, db, settings):
        self.db = db
        self.settings = settings
        self.store = SubscriptionStore(db)

    def alerts(self, snapshot, now: int, warnings: dict | None = None,
               proofs: ProofBook = EMPTY) -> list[Alert] | None:
        """Alerts for every active subscription; None when the period cannot be judged (no consensus).

        ``warnings``: each relay's at-risk warnings this period (``agent.metrics.atrisk.RiskWarning``);
        ``proofs``: the operators' AROI proofs, which say the relays of an operator subscription.
        """
        consensus = snapshot.latest_consensus()
        if consensus is None:
            return None
        self.store.expire(now)
        subscriptions = self.store.active()
        descriptors = {d.fingerprint: d for d in snapshot.server_descriptors}
        votes = snapshot.votes()
        measuring = bandwidth_votes(votes)
        valid_after = unix(consensus.valid_after)
        period_seconds = unix(consensus.fresh_until) - valid_after
        operators = verified_operators(descriptors, proofs) if any(s.kind == "operator" for s in subscriptions) \
            else {}
        members = {s.id: self._members(s, descriptors, valid_after, proofs, operators) for s in subscriptions}
        watched = sorted(set().union(*members.values())) if members else []
        history, nicknames = self._history(watched, valid_after)
        known = descriptors or self._last_descriptors(watched, valid_after)  # none: their fetch failed
        before = self._family_ids_before(watched, valid_after) if descriptors else {}
        found = {fingerprint: relay_status(fingerprint, consensus, known, votes, measuring,
                                           nicknames.get(fingerprint), tuple((warnings or {}).get(fingerprint, ())),
                                           valid_after, before.get(fingerprint, ()),
                                           snapshot.extra_infos.get(fingerprint))
                 for fingerprint in watched}
        self._remember(found, descriptors, valid_after)
        judged: dict[tuple, list] = {}  # (relay, thresholds): its conditions, once per distinct thresholds

        def judge(fingerprint: str, preferences) -> list:
            key = (fingerprint, preferences.thresholds())
            if key not in judged:
                judged[key] = conditions(found[fingerprint], history.get(fingerprint, []), consensus,
                                         preferences.applied(self.settings), valid_after, period_seconds)
            return judged[key]

        return _shortest_waits([
            self._alert(subscription, found[fingerprint], condition)
            for subscription in subscriptions for fingerprint in sorted(members[subscription.id])
            for condition in judge(fingerprint, subscription.preferences)
            if subscription.preferences.hears(condition.id)])

    def _members(self, subscription: Subscription, descriptors: dict, valid_after: int,
                 proofs: ProofBook, operators: dict[str, set[str]]) -> set[str]:
        if subscription.kind == "relay":
            return {subscription.target}
        if subscription.kind == "family":
            current = effective_family(subscription.target, descriptors, valid_after)
        elif subscription.kind == "operator":
            if subscription.target in proofs.domains() \
                    and subscription.email.lower() not in proofs.emails_of(subscription.target):
                return set()  # the operator's verified relays no longer name this address: it hears nothing
            current = set(operators.get(subscription.target, ()))
        else:
            current = relays_with_contact(subscription.target, descriptors)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT OR REPLACE INTO subscription_members VALUES (?, ?, ?)",
                                [(subscription.id, fingerprint, valid_after) for fingerprint in current])
            aged = [row[0] for row in self.db.execute(
                "SELECT fingerprint FROM subscription_members WHERE subscription_id = ? AND last_seen < ?",
                (subscription.id, valid_after - HISTORY_SECONDS))]
            # A member gone for a week is dropped quietly: its alerts end without a false "resolved".
            self.db.executemany("DELETE FROM alerts WHERE json_extract(alert, '$.extra.subscription') = ? "
                                "AND json_extract(alert, '$.subjects.relay') = ?",
                                [(subscription.id, fingerprint) for fingerprint in aged])
            self.db.executemany("DELETE FROM subscription_members WHERE subscription_id = ? AND fingerprint = ?",
                                [(subscription.id, fingerprint) for fingerprint in aged])
        rows = self.db.execute("SELECT fingerprint FROM subscription_members WHERE subscription_id = ?",
                               (subscription.id,)).fetchall()
        return current | {row[0] for row in rows}

    def _last_descriptors(self, fingerprints: list[str], valid_after: int) -> dict[str, KnownDescriptor]:
        """What was read of the watched relays' descriptors in the last week, for a period without any."""
        rows = self.db.execute(
            "SELECT fingerprint, hibernating, uptime, observed_bandwidth, family FROM watched_descriptors "
            f"WHERE seen >= ? AND fingerprint IN ({', '.join('?' * len(fingerprints))})",
            (valid_after - HISTORY_SECONDS, *fingerprints)).fetchall() if fingerprints else []
        overloads = self._overloads(set(fingerprints)) if rows else {}
        return {row[0]: KnownDescriptor(bool(row[1]), row[2], row[3], overloads.get(row[0]), _mismatch(row[4]),
                                        *_family_ids(row[4])) for row in rows}

    def _family_ids_before(self, fingerprints: list[str], valid_after: int) -> dict[str, tuple[str, ...]]:
        """Each watched relay's family IDs as last remembered before this period (within HISTORY_SECONDS)."""
        rows = self.db.execute(
            "SELECT fingerprint, family FROM watched_descriptors WHERE seen < ? AND seen >= ? "
            f"AND fingerprint IN ({', '.join('?' * len(fingerprints))}) ORDER BY seen",
            (valid_after, valid_after - HISTORY_SECONDS, *fingerprints)).fetchall() if fingerprints else []
        return {fingerprint: _family_ids(text)[0] or () for fingerprint, text in rows}  # the newest row wins

    def _overloads(self, fingerprints: set[str]) -> dict[str, datetime]:
        """The overload-general time of the watched relays' active TorRelayOverloaded alerts (the newest per relay).

        Read in Python, not with json_extract: an unreadable row is the alert
        engine's to set aside, and must not stop the subscriptions' period.
        """
        found: dict[str, int] = {}
        for (text,) in self.db.execute("SELECT alert FROM alerts WHERE key LIKE 'TorRelayOverloaded|%'"):
            try:
                alert = json.loads(text)
                fingerprint, since = alert["subjects"]["relay"], alert["extra"]["overload_since"]
            except (ValueError, TypeError, KeyError):
                continue
            if fingerprint in fingerprints and isinstance(since, int) and 0 <= since <= _LAST_SECOND:
                found[fingerprint] = max(since, found.get(fingerprint, since))
        return {fingerprint: datetime.fromtimestamp(since, timezone.utc).replace(tzinfo=None)
                for fingerprint, since in found.items()}

    def _history(self, fingerprints: list[str], valid_after: int) -> tuple[dict[str, list], dict[str, str]]:
        """(valid_after, weight, flags) per relay, oldest first, and the last nickname each was seen with."""
        history: dict[str, list] = {fingerprint: [] for fingerprint in fingerprints}
        nicknames: dict[str, str] = {}
        rows = self.db.execute(
            "SELECT fingerprint, valid_after, weight, flags, nickname FROM relay_history "
            f"WHERE valid_after < ? AND fingerprint IN ({', '.join('?' * len(fingerprints))}) "
            "ORDER BY valid_after", (valid_after, *fingerprints)).fetchall() if fingerprints else []
        for fingerprint, at, weight, flags, nickname in rows:
            history[fingerprint].append((at, weight, frozenset(flags.split())))
            if nickname:
                nicknames[fingerprint] = nickname
        return history, nicknames

    def _remember(self, found: dict, descriptors: dict, valid_after: int) -> None:
        """The watched relays' period, and what was read of the descriptors that arrived with it."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT OR REPLACE INTO relay_history VALUES (?, ?, ?, ?, ?)",
                                [(fp, valid_after, status.weight, " ".join(sorted(status.flags)), status.nickname)
                                 for fp, status in found.items()])
            self.db.execute("DELETE FROM relay_history WHERE valid_after < ?", (valid_after - HISTORY_SECONDS,))
            self.db.executemany("INSERT OR REPLACE INTO watched_descriptors VALUES (?, ?, ?, ?, ?, ?)",
                                [(fp, valid_after, int(status.hibernating), status.uptime_seconds,
                                  status.observed_bandwidth, _mismatch_text(status))
                                 for fp, status in found.items() if fp in descriptors])
            self.db.execute("DELETE FROM watched_descriptors WHERE seen < ?", (valid_after - HISTORY_SECONDS,))

    @staticmethod
    def _alert(subscription: Subscription, status, condition) -> Alert:
        subjects = {"relay": status.fingerprint}
        if condition.flag:
            subjects["flag"] = condition.flag
        extra = {"name": status.nickname or "", "subscription": subscription.id}
        if condition.overload_since is not None:  # read back in a period without descriptors (_overloads)
            extra["overload_since"] = condition.overload_since
        return Alert(condition.id, condition.severity, subjects, condition.summary, condition.description,
                     wait_seconds=condition.wait_seconds, recipient=subscription.email,
                     unsubscribe_token=subscription.unsubscribe_token, extra=extra)


def _shortest_waits(alerts: list[Alert]) -> list[Alert]:
    """Alerts one address hears through two subscriptions are one alert (the engine keeps the first of a key):
    each gets the shortest wait among them, so the address is told as soon as one of its subscriptions asks."""
    shortest: dict[str, int] = {}
    for alert in alerts:
        shortest[alert.key] = min(alert.wait_seconds, shortest.get(alert.key, alert.wait_seconds))
    return [alert if alert.wait_seconds == shortest[alert.key] else replace(alert, wait_seconds=shortest[alert.key])
            for alert in alerts]


def _mismatch_text(status) -> str | None:
    """A relay's family mismatch and family IDs as stored (JSON: [lists, listed, ids, lost]), or None when its
    family line was not judged."""
    if status.family_lists_unreturned is None or status.family_listed_unreturned is None:
        return None
    return json.dumps([list(status.family_lists_unreturned), list(status.family_listed_unreturned),
                       list(status.family_ids or ()), list(status.family_ids_lost)])


def _mismatch(text: str | None) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """The stored family mismatch back; None for none or a row that does not read as one (never fatal)."""
    try:
        lists, listed = (json.loads(text) if text else (None, None))[:2]
        if all(isinstance(side, list) and all(isinstance(fp, str) for fp in side) for side in (lists, listed)):
            return tuple(lists), tuple(listed)
    except (ValueError, TypeError, KeyError):
        pass
    return None


def _family_ids(text: str | None) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """The stored family IDs and why any were lost; (None, ()) for a row without them (older rows: two lists)."""
    try:
        stored = json.loads(text) if text else []
        ids, lost = (stored[2], stored[3]) if isinstance(stored, list) and len(stored) >= 4 else (None, [])
        if isinstance(ids, list) and isinstance(lost, list) and all(isinstance(x, str) for x in ids + lost):
            return tuple(ids), tuple(lost)
    except (ValueError, TypeError):
        pass
    return None, ()
