"""Subscriptions in SQLite: double opt-in with single-use, expiring confirmation tokens.

A request creates a pending subscription and a confirmation token that is
shown once (to be mailed) and stored only as its SHA-256 hash. Confirming
makes it active and burns the token. Pending subscriptions expire after
``subscriptions.confirm_hours``; only active ones ever receive alerts.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass

from agent.model.aroi import normalised_domain
from agent.model.errors import SubscriptionError

#: relay and family: by fingerprint; operator: every relay a verified AROI domain's proof lists; contact: relays
#: whose contact line contains a string (anyone can write anything there: administrators only, see the web endpoints).
KINDS = ("relay", "family", "operator", "contact")
_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")
_EMAIL = re.compile(r"^[^@\s<>(),;:\"\[\]\\]{1,64}@[A-Za-z0-9.-]{1,253}\.?[A-Za-z0-9-]*$")
CONTACT_LIMIT = 500


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

    def request(self, email: str, kind: str, target: str, now: int, confirm_seconds: float
                ) -> tuple[Subscription, str | None]:
        """The subscription and its fresh confirmation token (None if it is already active).

        One upsert whatever exists (an active subscription is left as it is), so the
        work done, and its time, tell nothing about who is subscribed to what.
        """
        email, kind, target = normalise(email, kind, target)
        token = secrets.token_urlsafe(32)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO subscriptions (email, kind, target, status, created, expires, confirm_hash, "
                "unsubscribe_token) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?) ON CONFLICT (email, kind, target) "
                "DO UPDATE SET confirm_hash = iif(status = 'pending', excluded.confirm_hash, confirm_hash), "
                "expires = iif(status = 'pending', excluded.expires, expires)",
                (email, kind, target, now, now + int(confirm_seconds), _hash(token), secrets.token_urlsafe(32)))
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
        return self._one("email = ? AND kind = ? AND target = ?", (email, kind, target))

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
        rows = self.db.execute("SELECT id, email, kind, target, status, created, expires, unsubscribe_token "
                               f"FROM subscriptions WHERE {where} ORDER BY id", values).fetchall()
        return [Subscription(*row) for row in rows]
