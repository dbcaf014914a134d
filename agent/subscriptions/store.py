"""Subscriptions in SQLite: double opt-in with single-use, expiring confirmation tokens.

A request creates a pending subscription and a confirmation token that is
shown once (to be mailed) and stored only as its SHA-256 hash. Confirming
makes it active and burns the token. Pending subscriptions expire after
``subscriptions.confirm_hours``; only active ones ever receive alerts.

Each subscription may carry its own preferences (``Preferences``, the JSON
``preferences`` column; NULL: the configured defaults): the alert kinds it
hears, its wait before TorRelayDown (Tor Weather's wait_for), its low-bandwidth
threshold, the flags whose loss it hears of and its weight-drop threshold.
They are set with the request (while pending) and changed later only with
the subscription's unsubscribe token, which only its mailbox receives.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from agent.model.aroi import normalised_domain
from agent.model.errors import SubscriptionError
from agent.subscriptions.events import ALERTS

#: relay and family: by fingerprint; operator: every relay a verified AROI domain's proof lists; contact: relays
#: whose contact line contains a string (anyone can write anything there: administrators only, see the web endpoints).
KINDS = ("relay", "family", "operator", "contact")
_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]\\]{1,64}@[A-Za-z0-9.-]{1,253}\.?[A-Za-z0-9-]*$")
CONTACT_LIMIT = 500


#: The alert kinds a subscription can choose (agent.subscriptions.events.ALERTS; docs/alerts.md's table).
ALERT_KINDS = tuple(ALERTS)
#: Flags whose loss a subscription can choose to hear of (Running is TorRelayDown's; the rest are not a relay's own).
FLAG_CHOICES = ("Exit", "Fast", "Guard", "HSDir", "Stable", "V2Dir", "Valid")
#: Numeric preferences: (least, most, what it is). A week is as long as watched relays are remembered.
BOUNDS: dict[str, tuple[float, float, str]] = {
    "down_hours": (0, 168, "hours a relay must be down before you are told"),
    "low_bandwidth_kbytes": (0, 1_000_000, "kB/s of observed bandwidth under which you are told (0: never)"),
    "weight_drop_percent": (1, 99, "percent of consensus weight lost"),
    "weight_drop_hours": (1, 168, "hours over which the weight drop is measured"),
}
PREFERENCE_FIELDS = ("kinds", "flags", *BOUNDS)


@dataclass(frozen=True)
class Preferences:
    """A subscription's own choices; None everywhere: the configured defaults (and every alert kind)."""

    kinds: tuple[str, ...] | None = None
    flags: tuple[str, ...] | None = None
    down_hours: float | None = None
    low_bandwidth_kbytes: float | None = None
    weight_drop_percent: float | None = None
    weight_drop_hours: float | None = None

    def hears(self, alert_id: str) -> bool:
        return self.kinds is None or alert_id in self.kinds

    def applied(self, settings):
        """``settings`` (the ``subscriptions`` section) with this subscription's thresholds in place of its own."""
        chosen = {name: value for name in ("flags", *BOUNDS) if (value := getattr(self, name)) is not None}
        return replace(settings, **chosen) if chosen else settings

    def thresholds(self) -> tuple:
        """What ``applied`` changes: subscriptions with equal thresholds are judged once per relay."""
        return self.flags, self.down_hours, self.low_bandwidth_kbytes, self.weight_drop_percent, self.weight_drop_hours

    def as_dict(self) -> dict[str, Any]:
        return {name: list(value) if isinstance(value, tuple) else value
                for name in PREFERENCE_FIELDS if (value := getattr(self, name)) is not None}

    def as_json(self) -> str | None:
        chosen = self.as_dict()
        return json.dumps(chosen, sort_keys=True) if chosen else None

    @classmethod
    def from_json(cls, text: str | None) -> Preferences:
        """The stored preferences; a value that does not read (or no longer validates) counts as the default."""
        try:
            stored = json.loads(text) if text else {}
        except (ValueError, TypeError):
            return DEFAULTS
        if not isinstance(stored, dict):
            return DEFAULTS
        found = {}
        for name in PREFERENCE_FIELDS:
            try:
                found.update(parse_preferences({name: stored.get(name)}).as_dict())
            except SubscriptionError:
                continue
        return parse_preferences(found)


DEFAULTS = Preferences()


def parse_preferences(fields: Mapping[str, Any]) -> Preferences:
    """Validated preferences from a form or JSON object; absent or empty fields mean the default.

    ``kinds`` and ``flags`` are lists (or one string); the numbers may be text. Every
    alert kind chosen is the same as none chosen (everything, kinds added later too).
    Raises SubscriptionError naming the field.
    """
    kinds = _choices(fields.get("kinds"), "kinds", ALERT_KINDS)
    if kinds is not None and not kinds:
        raise SubscriptionError("kinds: choose at least one alert kind (or unsubscribe)")
    flags = _choices(fields.get("flags"), "flags", FLAG_CHOICES)
    numbers = {name: _number(fields.get(name), name) for name in BOUNDS}
    return Preferences(kinds=None if kinds is not None and set(kinds) == set(ALERT_KINDS) else kinds,
                       flags=flags, **numbers)


def _choices(value: Any, name: str, known: tuple[str, ...]) -> tuple[str, ...] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list | tuple) or not all(isinstance(v, str) for v in values) or len(values) > 50:
        raise SubscriptionError(f"{name}: a list of names from {', '.join(known)}")
    unknown = [v for v in values if v not in known]
    if unknown:
        raise SubscriptionError(f"{name}: unknown {unknown[0][:40]!r}; choose from {', '.join(known)}")
    return tuple(v for v in known if v in values)  # in the known order, each once


def _number(value: Any, name: str) -> float | None:
    least, most, meaning = BOUNDS[name]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    problem = SubscriptionError(f"{name}: {meaning}, a number from {least:g} to {most:g}, got {str(value)[:20]!r}")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise problem
    try:
        number = float(value)
    except ValueError:
        raise problem from None
    if not math.isfinite(number) or not least <= number <= most:
        raise problem
    return number


@dataclass(frozen=True)
class Subscription:
    id: int
    email: str
    kind: str
    target: str
    status: str
    created: int
    expires: int | None
    unsubscribe_token: str
    preferences: Preferences = DEFAULTS


def _hash(token: str) -> str:
    # "replace": a token from a JSON body may hold a lone surrogate; it then matches nothing rather than crash.
    return hashlib.sha256(token.encode(errors="replace")).hexdigest()


def header_safe(value: str) -> bool:
    """True if no character of ``value`` is one a mail header refuses or that hides what a mail shows.

    Refuses control, format, surrogate, private-use and unassigned characters and
    line or paragraph separators (U+0085, U+2028, ``str.splitlines``' others): the
    ``email`` package raises on them, and one stored would block every later
    message to its address.
    """
    return all(unicodedata.category(c)[0] != "C" and unicodedata.category(c) not in ("Zl", "Zp") for c in value)


def normalise_email(email: str) -> str:
    """The address, validated: printable ASCII (no SMTPUTF8), one @, a domain; raises SubscriptionError."""
    email = (email or "").strip()
    if not email.isascii() or not header_safe(email) or not _EMAIL.match(email) or len(email) > 254:
        raise SubscriptionError(f"email: not an address we can write to (printable ASCII, name@domain): "
                                f"{email[:80].encode('ascii', 'backslashreplace').decode()!r}")
    return email


def normalise(email: str, kind: str, target: str) -> tuple[str, str, str]:
    """Validated (email, kind, target); raises SubscriptionError naming the bad field."""
    email = normalise_email(email)
    if kind not in KINDS:
        raise SubscriptionError(f"kind: must be one of {', '.join(KINDS)}, got {str(kind)[:20]!r}")
    target = (target or "").strip()
    if kind in ("relay", "family"):
        target = target.upper().lstrip("$").replace(" ", "")
        if not _FINGERPRINT.match(target):
            raise SubscriptionError(f"target: a relay fingerprint is 40 hex digits, got {target[:50]!r}")
    elif kind == "operator":
        domain = normalised_domain(target)
        if domain is None:
            raise SubscriptionError(f"target: an operator is a domain like example.org, got {target[:80]!r}")
        target = domain
        email = email.lower()  # as the CIISS email: fields it must match are read
    elif not target or len(target) > CONTACT_LIMIT or not header_safe(target):
        raise SubscriptionError(f"target: a contact string of 1-{CONTACT_LIMIT} printable characters (no control, "
                                "format or line-separator characters)")
    return email, kind, target


class SubscriptionStore:
    def __init__(self, db):
        self.db = db

    def request(self, email: str, kind: str, target: str, now: int, confirm_seconds: float,
                preferences: Preferences = DEFAULTS) -> tuple[Subscription, str | None]:
        """The subscription and its fresh confirmation token (None if it is already active).

        One upsert whatever exists (an active subscription is left as it is, preferences
        included: only its token changes them), so the work done, and its time, tell
        nothing about who is subscribed to what.
        """
        email, kind, target = normalise(email, kind, target)
        token = secrets.token_urlsafe(32)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO subscriptions (email, kind, target, status, created, expires, confirm_hash, "
                "unsubscribe_token, preferences) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?) "
                "ON CONFLICT (email, kind, target) "
                "DO UPDATE SET confirm_hash = iif(status = 'pending', excluded.confirm_hash, confirm_hash), "
                "expires = iif(status = 'pending', excluded.expires, expires), "
                "preferences = iif(status = 'pending', excluded.preferences, preferences)",
                (email, kind, target, now, now + int(confirm_seconds), _hash(token), secrets.token_urlsafe(32),
                 preferences.as_json()))
        found = self._one("email = ? AND kind = ? AND target = ?", (email, kind, target))
        assert found is not None  # just written, under the caller's lock
        return found, (token if found.status == "pending" else None)

    def add_active(self, email: str, kind: str, target: str, now: int) -> Subscription:
        """An administrator's subscription: active at once."""
        email, kind, target = normalise(email, kind, target)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO subscriptions (email, kind, target, status, created, unsubscribe_token) "
                "VALUES (?, ?, ?, 'active', ?, ?) ON CONFLICT (email, kind, target) DO UPDATE SET "
                "status = 'active', expires = NULL, confirm_hash = NULL",
                (email, kind, target, now, secrets.token_urlsafe(32)))
        found = self._one("email = ? AND kind = ? AND target = ?", (email, kind, target))
        assert found is not None  # just written
        return found

    def confirm(self, token: str, now: int) -> Subscription | None:
        """Activates the pending subscription of this token (once); None if unknown, used or expired."""
        found = self._one("confirm_hash = ? AND status = 'pending' AND expires > ?", (_hash(token or ""), now))
        if found is None:
            return None
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE subscriptions SET status = 'active', confirm_hash = NULL, expires = NULL "
                            "WHERE id = ?", (found.id,))
        return self._one("id = ?", (found.id,))

    def by_token(self, token: str) -> Subscription | None:
        """The subscription of this unsubscribe token (the one its mails carry), or None."""
        return self._one("unsubscribe_token = ?", (token or "",))

    def set_preferences(self, token: str, preferences: Preferences) -> Subscription | None:
        """Replaces the preferences of the subscription of this unsubscribe token; None if there is none.

        Its alerts of kinds it no longer hears are dropped quietly, as on
        unsubscribing: no "resolved" mail for what it chose not to hear of.
        """
        found = self.by_token(token)
        if found is None:
            return None
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE subscriptions SET preferences = ? WHERE id = ?", (preferences.as_json(), found.id))
            if preferences.kinds is not None:
                self.db.execute(
                    "DELETE FROM alerts WHERE json_extract(alert, '$.extra.subscription') = ? AND json_extract("
                    f"alert, '$.id') NOT IN ({', '.join('?' * len(preferences.kinds))})",
                    (found.id, *preferences.kinds))
        return self._one("id = ?", (found.id,))

    def unsubscribe(self, token: str) -> Subscription | None:
        found = self._one("unsubscribe_token = ?", (token or "",))
        if found is not None:
            self.remove(found.id)
        return found

    def remove(self, subscription_id: int) -> bool:
        """Deletes a subscription and, silently, its alerts: no "resolved" mail after unsubscribing."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM subscription_members WHERE subscription_id = ?", (subscription_id,))
            self.db.execute("DELETE FROM alerts WHERE json_extract(alert, '$.extra.subscription') = ?",
                            (subscription_id,))
            return self.db.execute("DELETE FROM subscriptions WHERE id = ?", (subscription_id,)).rowcount == 1

    def expire(self, now: int) -> int:
        """Deletes pending subscriptions past their confirmation deadline; returns how many."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db.execute("DELETE FROM subscriptions WHERE status = 'pending' AND expires <= ?",
                                   (now,)).rowcount

    def of(self, email: str) -> list[Subscription]:
        return self._all("email = ?", (email.strip(),))

    def active(self) -> list[Subscription]:
        return self._all("status = 'active'", ())

    def everything(self) -> list[Subscription]:
        return self._all("1 = 1", ())

    def _one(self, where: str, values: tuple) -> Subscription | None:
        found = self._all(where, values)
        return found[0] if found else None

    def _all(self, where: str, values: tuple) -> list[Subscription]:
        rows = self.db.execute("SELECT id, email, kind, target, status, created, expires, unsubscribe_token, "
                               f"preferences FROM subscriptions WHERE {where} ORDER BY id", values).fetchall()
        return [Subscription(id=row[0], email=row[1], kind=row[2], target=row[3], status=row[4], created=row[5],
                             expires=row[6], unsubscribe_token=row[7], preferences=Preferences.from_json(row[8]))
                for row in rows]
