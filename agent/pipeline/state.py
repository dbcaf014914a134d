"""The agent's state between cycles and restarts, in SQLite (state_dir/agent.sqlite).

Holds what the next period needs from earlier ones (each recent period's
relays and their flags, for churn and relays that left), the daemon's
progress and health (last processed period, last success, counters, the last
cycle's summary) and which periods a backfill has written. Schema changes go
through MIGRATIONS, applied in order and recorded in PRAGMA user_version;
a migration is never edited once released, only added.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path
from typing import Any

from agent.model.relays import PreviousRelays

MIGRATIONS = (
    """CREATE TABLE period_relays (
           valid_after INTEGER PRIMARY KEY,  -- Unix seconds
           relays BLOB NOT NULL              -- zlib'd JSON {fingerprint: "Flag Flag ..."}
       )""",
    """CREATE TABLE agent_status (
           key TEXT PRIMARY KEY,             -- e.g. last_processed, counter:cycle_errors
           value TEXT NOT NULL               -- JSON
       )""",
    """CREATE TABLE backfilled (
           valid_after INTEGER PRIMARY KEY,  -- a period a backfill wrote (Unix seconds)
           written_at INTEGER NOT NULL
       )""",
    # Alerts (agent/alerts): each active alert's life cycle, keyed by check and subjects.
    """CREATE TABLE alerts (
           key TEXT PRIMARY KEY,             -- alert ID + sorted subjects
           alert TEXT NOT NULL,              -- JSON of the newest occurrence
           first_seen INTEGER NOT NULL,      -- Unix seconds
           last_seen INTEGER NOT NULL,
           last_notified INTEGER             -- NULL: no firing notice sent yet (waiting or silenced)
       )""",
    # The delivery outbox: one row per message and destination, kept after delivery for dedup.
    """CREATE TABLE deliveries (
           id INTEGER PRIMARY KEY AUTOINCREMENT,
           channel TEXT NOT NULL,            -- email | matrix
           target TEXT NOT NULL,             -- address or room ID
           token TEXT NOT NULL UNIQUE,       -- Message-ID / Matrix transaction ID
           message TEXT NOT NULL,            -- JSON: subject, text, html, headers
           created INTEGER NOT NULL,
           attempts INTEGER NOT NULL DEFAULT 0,
           next_attempt INTEGER NOT NULL,
           delivered INTEGER,                -- Unix seconds, NULL while waiting
           gave_up INTEGER,                  -- Unix seconds: a permanent failure (recipient refused)
           last_error TEXT
       )""",
    """CREATE INDEX deliveries_waiting ON deliveries (delivered, next_attempt)""",
    # Operator subscriptions (double opt-in). The confirmation token is kept only
    # as a SHA-256 hash; the unsubscribe token must go into every alert, so it is
    # kept as is (it can do nothing but end its own subscription).
    """CREATE TABLE subscriptions (
           id INTEGER PRIMARY KEY AUTOINCREMENT,
           email TEXT NOT NULL,
           kind TEXT NOT NULL,               -- relay | family | contact
           target TEXT NOT NULL,             -- fingerprint, or contact string
           status TEXT NOT NULL,             -- pending | active
           created INTEGER NOT NULL,
           expires INTEGER,                  -- pending ones expire unconfirmed
           confirm_hash TEXT,
           unsubscribe_token TEXT NOT NULL UNIQUE,
           UNIQUE (email, kind, target)
       )""",
    # Relays a family or contact subscription has covered, so one that vanished is still watched.
    """CREATE TABLE subscription_members (
           subscription_id INTEGER NOT NULL REFERENCES subscriptions (id) ON DELETE CASCADE,
           fingerprint TEXT NOT NULL,
           last_seen INTEGER NOT NULL,
           PRIMARY KEY (subscription_id, fingerprint)
       )""",
    # What subscriptions need from earlier periods, for watched relays only.
    """CREATE TABLE relay_history (
           fingerprint TEXT NOT NULL,
           valid_after INTEGER NOT NULL,
           weight INTEGER,                   -- NULL: not in the consensus
           flags TEXT NOT NULL,
           nickname TEXT,                    -- so a relay that vanished is still named
           PRIMARY KEY (fingerprint, valid_after)
       )""",
    # The newest descriptor of each watched relay: what subscriptions read of it, for a period whose descriptors
    # did not arrive.
    """CREATE TABLE watched_descriptors (
           fingerprint TEXT PRIMARY KEY,
           seen INTEGER NOT NULL,            -- valid-after of the last period that had it
           hibernating INTEGER NOT NULL,
           uptime INTEGER,
           observed_bandwidth INTEGER
       )""",
)
KEEP_PERIODS = 48


class State:
    def __init__(self, directory: Path):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = Path(directory) / "agent.sqlite"
        # The daemon opens the state in the main thread and uses it from the
        # scheduler's worker; one connection, serialised by SQLite's own
        # locking and our transactions, is enough for one writer.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._migrate()

    def close(self) -> None:
        self._db.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the modules that own the other tables (alerts, deliveries, subscriptions)."""
        return self._db

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, statement in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    def relays_before(self, valid_after: int) -> PreviousRelays | None:
        """The relays of the newest stored period before ``valid_after``, or None."""
        row = self._db.execute("SELECT relays FROM period_relays WHERE valid_after < ? "
                               "ORDER BY valid_after DESC LIMIT 1", (valid_after,)).fetchone()
        if row is None:
            return None
        stored = json.loads(zlib.decompress(row[0]))
        return {fingerprint: frozenset(flags.split()) for fingerprint, flags in stored.items()}

    def save_relays(self, valid_after: int, relays: PreviousRelays) -> None:
        blob = zlib.compress(json.dumps({fp: " ".join(sorted(flags)) for fp, flags in relays.items()}).encode())
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO period_relays VALUES (?, ?)", (valid_after, blob))
            self._db.execute("DELETE FROM period_relays WHERE valid_after NOT IN "
                             "(SELECT valid_after FROM period_relays ORDER BY valid_after DESC LIMIT ?)",
                             (KEEP_PERIODS,))

    def _get(self, key: str, default: Any = None) -> Any:
        """A JSON value of the agent's status, or ``default`` (the typed accessors below read these)."""
        row = self._db.execute("SELECT value FROM agent_status WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def _put(self, **values: Any) -> None:
        """Sets several status values in one transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO agent_status VALUES (?, ?)",
                                 [(key, json.dumps(value)) for key, value in values.items()])

    def count(self, name: str, by: int = 1) -> int:
        """Adds to a persistent counter and returns its new value."""
        value = int(self._get(f"counter:{name}", 0)) + by
        self._put(**{f"counter:{name}": value})
        return value

    def counters(self) -> dict[str, int]:
        rows = self._db.execute("SELECT key, value FROM agent_status WHERE key LIKE 'counter:%'").fetchall()
        return {key.removeprefix("counter:"): json.loads(value) for key, value in rows}

    def bandwidth_authorities(self) -> dict[str, float]:
        """Authorities whose votes carried Measured= values: nickname -> valid-after (Unix s) of the last such."""
        return dict(self._get("bandwidth_authorities", {}))

    def set_bandwidth_authorities(self, authorities: dict[str, float]) -> None:
        self._put(bandwidth_authorities=authorities)

    def record_processed(self, valid_after: int, period_seconds: int, at: int) -> None:
        """The daemon recorded the period of ``valid_after`` (Unix s) at ``at``; counted once."""
        self._put(last_processed=valid_after, last_success=at, period_seconds=period_seconds)
        self.count("periods_processed")

    def last_success(self) -> int | None:
        """When (Unix s) the daemon last recorded a period."""
        last = self._get("last_success")
        return None if last is None else int(last)

    def set_last_cycle(self, summary: dict[str, Any]) -> None:
        """The last cycle's summary (``status`` shows it)."""
        self._put(last_cycle=summary)

    def last_cycle(self) -> dict[str, Any] | None:
        cycle = self._get("last_cycle")
        return None if cycle is None else dict(cycle)

    def set_last_alerted(self, at: int) -> None:
        self._put(last_alerted=at)

    def last_processed(self) -> int | None:
        """The valid-after (Unix s) of the newest period the daemon recorded."""
        last = self._get("last_processed")
        return None if last is None else int(last)

    def period_seconds(self, default: int | None = 3600) -> int | None:
        """The voting interval of the newest recorded period (``default`` before the first)."""
        period = self._get("period_seconds", default)
        return None if period is None else int(period)

    def last_alerted(self) -> int:
        """When (Unix s) a period without a consensus was last alerted on."""
        return int(self._get("last_alerted", 0))

    def backfilled(self) -> set[int]:
        return {row[0] for row in self._db.execute("SELECT valid_after FROM backfilled")}

    def mark_backfilled(self, valid_after: int, written_at: int) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO backfilled VALUES (?, ?)", (valid_after, written_at))
