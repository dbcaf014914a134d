"""API keys for /api/v1, in the state's ``api_keys`` table: shown once, kept only as a SHA-256 hash.

A key reads ``aa_`` + an 8-character prefix + a 43-character secret. The
prefix is stored as is (it names the key in lists and finds its row); the
whole key only as its SHA-256 hash, compared in constant time, so the state
file alone gives no usable key. Keys carry scopes: ``read`` (the data routes)
and ``subscriptions-admin`` (which includes read). Revoking keeps the row, so a
revoked key's prefix is never handed out again and lists still show it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass

from agent.model.errors import AlliumError

SCOPES = ("read", "subscriptions-admin")
KEY_START = "aa_"
PREFIX_LENGTH = 8
#: last_used is written at most this often per key: a busy client must not turn reads into writes.
TOUCH_SECONDS = 60
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


class ApiKeyError(AlliumError):
    """A key that cannot be created or revoked (bad scope, unknown key): the message says why."""


@dataclass(frozen=True)
class ApiKey:
    id: int
    name: str
    prefix: str
    scopes: tuple[str, ...]
    created: int
    revoked: int | None
    last_used: int | None

    def allows(self, scope: str) -> bool:
        """subscriptions-admin includes read."""
        return self.revoked is None and (scope in self.scopes or "subscriptions-admin" in self.scopes)

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "prefix": self.prefix, "scopes": list(self.scopes),
                "created": self.created, "revoked": self.revoked, "last_used": self.last_used}


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyStore:
    """The ``api_keys`` table on a connection the caller owns (and serialises)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def create(self, name: str, scopes: tuple[str, ...], now: int) -> tuple[ApiKey, str]:
        """A new key and its text, which only this answer ever holds."""
        name = name.strip()
        if not name or len(name) > 100:
            raise ApiKeyError("name: must be 1 to 100 characters")
        unknown = [scope for scope in scopes if scope not in SCOPES]
        if unknown or not scopes:
            raise ApiKeyError(f"scope: must be {' or '.join(SCOPES)}, got {', '.join(unknown) or 'none'}")
        for _ in range(10):  # a prefix collision is a 1 in 36^8 event; retried, not trusted away
            prefix = "".join(secrets.choice(_ALPHABET) for _ in range(PREFIX_LENGTH))
            key = KEY_START + prefix + secrets.token_urlsafe(32)
            try:
                with self.db:
                    cursor = self.db.execute(
                        "INSERT INTO api_keys (name, prefix, hash, scopes, created) VALUES (?, ?, ?, ?, ?)",
                        (name, prefix, digest(key), " ".join(scopes), now))
            except sqlite3.IntegrityError:
                continue
            return ApiKey(int(cursor.lastrowid or 0), name, prefix, tuple(scopes), now, None, None), key
        raise ApiKeyError("no free key prefix after 10 tries")

    def all(self) -> list[ApiKey]:
        rows = self.db.execute("SELECT id, name, prefix, scopes, created, revoked, last_used FROM api_keys "
                               "ORDER BY id").fetchall()
        return [_key(row) for row in rows]

    def revoke(self, which: str, now: int) -> ApiKey:
        """Revokes the key with this ID or prefix (an ``aa_`` key's own text works too); ApiKeyError if none."""
        which = which.strip()
        if which.startswith(KEY_START):
            which = which[len(KEY_START):len(KEY_START) + PREFIX_LENGTH]
        column = "id" if which.isdigit() else "prefix"
        with self.db:
            updated = self.db.execute(f"UPDATE api_keys SET revoked = COALESCE(revoked, ?) WHERE {column} = ?",
                                      (now, int(which) if column == "id" else which)).rowcount
        if not updated:
            raise ApiKeyError(f"no API key with {'ID' if column == 'id' else 'prefix'} {which[:40]!r}")
        row = self.db.execute(f"SELECT id, name, prefix, scopes, created, revoked, last_used FROM api_keys "
                              f"WHERE {column} = ?", (int(which) if column == "id" else which,)).fetchone()
        return _key(row)

    def verify(self, key: str, now: int) -> ApiKey | None:
        """The valid (not revoked) key this text is, else None; notes its use (at most once a minute)."""
        if not key.startswith(KEY_START) or len(key) > 200:
            return None
        prefix = key[len(KEY_START):len(KEY_START) + PREFIX_LENGTH]
        row = self.db.execute("SELECT id, name, prefix, scopes, created, revoked, last_used, hash FROM api_keys "
                              "WHERE prefix = ?", (prefix,)).fetchone()
        # The hash is compared even without a row, so a wrong prefix costs the same time as a wrong secret.
        matches = hmac.compare_digest(digest(key), row[7] if row else digest(""))
        if row is None or not matches or row[5] is not None:
            return None
        found = _key(row[:7])
        if found.last_used is None or now - found.last_used >= TOUCH_SECONDS:
            with self.db:
                self.db.execute("UPDATE api_keys SET last_used = ? WHERE id = ?", (now, found.id))
        return found

    def active_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM api_keys WHERE revoked IS NULL").fetchone()[0]


def _key(row) -> ApiKey:
    key_id, name, prefix, scopes, created, revoked, last_used = row
    return ApiKey(key_id, name, prefix, tuple(str(scopes).split()), created, revoked, last_used)
