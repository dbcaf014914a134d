"""The agent's state between cycles and restarts, in SQLite (state_dir/agent.sqlite).

Holds what the next period needs from earlier ones (each recent period's
relays and their flags, for churn and relays that left), the daemon's
progress and health (last processed period, last success, counters, the last
cycle's summary) and which periods a backfill has written. Schema changes go
through MIGRATIONS, applied in order and recorded in PRAGMA user_version;
a migration is never edited once released, only added.

A file or disk at fault (read-only, full, damaged, not a database) raises a
StateError naming the file, from every user of the connection
(``agent/pipeline/statefile.py``); a row that
cannot be read costs only itself: it is moved to ``state_dir/quarantine/``,
counted (``rows_quarantined``) and logged, and the period carries on.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import zlib
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

from agent.model.errors import StateError
from agent.model.relays import PreviousRelays
from agent.pipeline.statefile import connect, guarded

log = logging.getLogger(__name__)


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
           kind TEXT NOT NULL,               -- relay | family | operator | contact
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
    # The sender holding a delivery (agent/alerts/deliveries.py): its lease token; the lease ends at next_attempt.
    """ALTER TABLE deliveries ADD COLUMN lease TEXT""",
    # Alert quality (agent/alerts/quality.py): each alert's episodes, from the period it entered the alert book
    # to the period it left, and the periods the alert engine evaluated.
    """CREATE TABLE alert_history (
           key TEXT NOT NULL,                -- alerts.key
           alert_id TEXT NOT NULL,           -- the check or detector that raised it
           scope TEXT NOT NULL,              -- findings | subscriptions
           onset INTEGER NOT NULL,           -- first_seen (Unix seconds)
           resolved INTEGER,                 -- the period it was gone in; NULL while active
           periods INTEGER NOT NULL,         -- evaluated periods it was active in
           PRIMARY KEY (key, onset)
       )""",
    """CREATE INDEX alert_history_open ON alert_history (scope, resolved)""",
    """CREATE TABLE alert_periods (
           scope TEXT NOT NULL,              -- findings | subscriptions
           period INTEGER NOT NULL,          -- the time the engine evaluated (valid-after, or the clock's)
           PRIMARY KEY (scope, period)
       )""",
    # A watched relay's family mismatch as last read (JSON [lists_unreturned, listed_unreturned]; NULL: unknown),
    # so a period without descriptors neither ends nor starts TorRelayFamilyBroken.
    """ALTER TABLE watched_descriptors ADD COLUMN family TEXT""",
    # A subscription's own choices (JSON: alert kinds, wait hours, thresholds; NULL: the global defaults).
    """ALTER TABLE subscriptions ADD COLUMN preferences TEXT""",
    # REST API keys (agent/web): shown once, kept as a SHA-256 hash; scopes as a space-separated list.
    """CREATE TABLE api_keys (
           id INTEGER PRIMARY KEY AUTOINCREMENT,
           name TEXT NOT NULL,
           prefix TEXT NOT NULL UNIQUE,      -- the key's first characters, to name it in lists and logs
           hash TEXT NOT NULL,
           scopes TEXT NOT NULL,             -- read | subscriptions-admin, space-separated
           created INTEGER NOT NULL,
           revoked INTEGER,                  -- Unix seconds; NULL while valid
           last_used INTEGER
       )""",
    # What the REST API searches relays by (agent/web/api_handlers.py): the newest live period's relays only,
    # replaced whole each live period (record.py); never written by a backfill.
    """CREATE TABLE relay_directory (
           fingerprint TEXT PRIMARY KEY,
           valid_after INTEGER NOT NULL,     -- the period it describes (Unix seconds)
           nickname TEXT,
           country TEXT,                     -- two letters, upper case; NULL: unknown
           version TEXT,                     -- tor version as the consensus gives it; NULL: none or other software
           contact TEXT,                     -- the descriptor's contact line, normalised, at most 200 characters
           operator TEXT                     -- the verified AROI domain; NULL: none verified
       )""",
    """CREATE INDEX relay_directory_country ON relay_directory (country)""",
    """CREATE INDEX relay_directory_version ON relay_directory (version)""",
    """CREATE INDEX relay_directory_nickname ON relay_directory (lower(nickname))""",
    """CREATE INDEX relay_directory_operator ON relay_directory (operator)""",
    # Each relay's newest extra-info descriptor as read (agent/pipeline/extrainfos.py): so a digest read once is
    # not fetched again, and the overload lines hold through periods without a fetch.
    """CREATE TABLE extra_infos (
           fingerprint TEXT PRIMARY KEY,
           nickname TEXT NOT NULL,
           digest TEXT NOT NULL,             -- SHA-1, upper-case hex (what extra-info-digest names)
           published INTEGER NOT NULL,       -- Unix seconds
           seen INTEGER NOT NULL,            -- valid-after of the last live period whose descriptors named one
           overload TEXT NOT NULL            -- JSON: ratelimits [time, rate, burst, read, write] | null,
                                             -- fd_exhausted time | null, ignored [reasons]
       )""",
)
KEEP_PERIODS = 48
#: The relay directory keeps this much of each contact line (and searches for no more).
MAX_DIRECTORY_CONTACT = 200
_LAST_CHARACTER = chr(0x10FFFF)  # sorts after any text: a prefix's range ends at prefix + this
#: A stored period's relays inflate to about 0.5 MB on the live network; more than this is not ours.
MAX_RELAYS_BYTES = 64 * 2**20


class State:
    """The state file in ``directory``; ``read_only`` for reporting on it without changing anything."""

    def __init__(self, directory: Path, read_only: bool = False):
        self.directory = Path(directory)
        self.path = self.directory / "agent.sqlite"
        self.read_only = read_only
        if not read_only:
            _writable_directory(self.directory)
        if not self.path.is_file() and (read_only or self.path.exists()):
            raise StateError(self.path, "not a regular file" if self.path.exists() else "no state file yet")
        # The daemon opens the state in the main thread and uses it from the
        # scheduler's worker; one connection, serialised by SQLite's own
        # locking and our transactions, is enough for one writer.
        with guarded(self.path):
            self._db = connect(self.path, read_only)
        try:
            self._open()
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]  # reads the header: damage shows here
        if version > len(MIGRATIONS):
            raise StateError(self.path, f"written by a newer allium-agent (schema {version}; this one knows "
                                        f"{len(MIGRATIONS)}): upgrade, or move the file aside")
        if not self.read_only:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._migrate(version)

    def close(self) -> None:
        self._db.close()

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for the modules that own the other tables (alerts, deliveries, subscriptions)."""
        return self._db

    def _migrate(self, version: int) -> None:
        for number, statement in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._db:
                self._db.execute("BEGIN")
                self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")

    def relays_before(self, valid_after: int) -> PreviousRelays | None:
        """The relays of the newest readable stored period before ``valid_after`` (a bad row is quarantined)."""
        while True:
            row = self._db.execute("SELECT valid_after, relays FROM period_relays WHERE valid_after < ? "
                                   "ORDER BY valid_after DESC LIMIT 1", (valid_after,)).fetchone()
            if row is None:
                return None
            try:
                return _decode_relays(row[1])
            except (ValueError, TypeError, zlib.error) as error:
                self._quarantine("period_relays", "valid_after", row[0], row[1], str(error))
                valid_after = row[0]

    def save_relays(self, valid_after: int, relays: PreviousRelays) -> None:
        blob = zlib.compress(json.dumps({fp: " ".join(sorted(flags)) for fp, flags in relays.items()}).encode())
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO period_relays VALUES (?, ?)", (valid_after, blob))
            self._db.execute("DELETE FROM period_relays WHERE valid_after NOT IN "
                             "(SELECT valid_after FROM period_relays ORDER BY valid_after DESC LIMIT ?)",
                             (KEEP_PERIODS,))

    def _get(self, key: str, default: Any = None, kind: type | tuple[type, ...] = object) -> Any:
        """A JSON value of the agent's status if it is a ``kind``, else ``default`` (a bad value is quarantined)."""
        row = self._db.execute("SELECT value FROM agent_status WHERE key = ?", (key,)).fetchone()
        return default if row is None else self._decoded(key, row[0], default, kind)

    def _decoded(self, key: str, raw: Any, default: Any, kind: type | tuple[type, ...]) -> Any:
        try:
            value = json.loads(raw)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not object):
                raise ValueError(f"not a {getattr(kind, '__name__', 'number')}: {raw!r:.80}")
        except (ValueError, TypeError) as error:
            self._quarantine("agent_status", "key", key, raw, str(error))
            return default
        return value

    def _number(self, key: str, default: int | None = None) -> int | None:
        value = self._get(key, default, (int, float))
        return None if value is None else int(value)

    def _put(self, **values: Any) -> None:
        """Sets several status values in one transaction."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO agent_status VALUES (?, ?)",
                                 [(key, json.dumps(value)) for key, value in values.items()])

    def count(self, name: str, by: int = 1) -> int:
        """Adds to a persistent counter and returns its new value."""
        value = int(self._get(f"counter:{name}", 0, int)) + by
        self._put(**{f"counter:{name}": value})
        return value

    def counters(self) -> dict[str, int]:
        rows = self._db.execute("SELECT key, value FROM agent_status WHERE key LIKE 'counter:%'").fetchall()
        decoded = {key.removeprefix("counter:"): self._decoded(key, value, None, int) for key, value in rows}
        return {name: value for name, value in decoded.items() if value is not None}

    def _quarantine(self, table: str, column: str, key: Any, raw: Any, problem: str) -> None:
        """Moves one unreadable row to ``quarantine/`` (durably, before it is deleted), counts it and logs it."""
        if self.read_only:
            log.error("%s: row %s=%r of %s is unreadable (%s); skipped", self.path, column, key, table, problem)
            return
        folder = self.directory / "quarantine"
        kept = folder / f"{table}-{quote(str(key), safe='')[:80]}-{time.time_ns()}.bin"
        with guarded(kept):
            folder.mkdir(exist_ok=True)
            with open(kept, "wb") as handle:
                handle.write(raw if isinstance(raw, bytes) else str(raw).encode())
                handle.flush()
                os.fsync(handle.fileno())
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(f"DELETE FROM {table} WHERE {column} = ?", (key,))
        quarantined = self.count("rows_quarantined")
        log.error("%s: row %s=%r of %s is unreadable (%s); moved to %s (%d rows quarantined so far)",
                  self.path, column, key, table, problem, kept, quarantined)

    def bandwidth_authorities(self) -> dict[str, float]:
        """Authorities whose votes carried Measured= values: nickname -> valid-after (Unix s) of the last such."""
        return dict(self._get("bandwidth_authorities", {}, dict))

    def set_bandwidth_authorities(self, authorities: dict[str, float]) -> None:
        self._put(bandwidth_authorities=authorities)

    def record_processed(self, valid_after: int, period_seconds: int, at: int) -> None:
        """The daemon recorded the period of ``valid_after`` (Unix s) at ``at``; counted once."""
        self._put(last_processed=valid_after, last_success=at, period_seconds=period_seconds)
        self.count("periods_processed")

    def last_success(self) -> int | None:
        """When (Unix s) the daemon last recorded a period."""
        return self._number("last_success")

    def set_last_cycle(self, summary: dict[str, Any]) -> None:
        """The last cycle's summary (``status`` shows it)."""
        self._put(last_cycle=summary)

    def last_cycle(self) -> dict[str, Any] | None:
        cycle = self._get("last_cycle", None, dict)
        return None if cycle is None else dict(cycle)

    def set_last_alerted(self, at: int) -> None:
        self._put(last_alerted=at)

    def last_processed(self) -> int | None:
        """The valid-after (Unix s) of the newest period the daemon recorded."""
        return self._number("last_processed")

    def period_seconds(self, default: int | None = 3600) -> int | None:
        """The voting interval of the newest recorded period (``default`` before the first)."""
        return self._number("period_seconds", default)

    def last_alerted(self) -> int:
        """When (Unix s) a period without a consensus was last alerted on."""
        return self._number("last_alerted", 0) or 0

    def backfilled(self) -> set[int]:
        return {row[0] for row in self._db.execute("SELECT valid_after FROM backfilled")}

    def mark_backfilled(self, valid_after: int, written_at: int) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO backfilled VALUES (?, ?)", (valid_after, written_at))

    def replace_relay_directory(self, valid_after: int, entries: Iterable[DirectoryEntry]) -> int:
        """Makes the relay directory the relays of the period ``valid_after``, in one transaction; how many."""
        rows = [(entry.fingerprint.upper(), valid_after, entry.nickname, entry.country, entry.version,
                 (entry.contact or "")[:MAX_DIRECTORY_CONTACT] or None, entry.operator) for entry in entries]
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM relay_directory")
            self._db.executemany("INSERT OR REPLACE INTO relay_directory VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return len(rows)

    def relay_directory_period(self) -> int | None:
        """The valid-after (Unix s) of the period the relay directory describes; None while it is empty."""
        period = self._db.execute("SELECT MAX(valid_after) FROM relay_directory").fetchone()[0]
        return None if period is None else int(period)

    def relay_directory(self, search: DirectorySearch | None = None,
                        fingerprints: Collection[str] | None = None) -> dict[str, DirectoryEntry]:
        """The directory's relays matching ``search`` (every filter given must hold), among ``fingerprints`` if
        given, in fingerprint order. Only parameters reach SQL; LIKE patterns are escaped and bounded."""
        clauses, values = (search or DirectorySearch()).where()
        if fingerprints is None:
            return self._directory_rows(clauses, values)
        found: dict[str, DirectoryEntry] = {}
        wanted = sorted({fingerprint.upper() for fingerprint in fingerprints})
        for start in range(0, len(wanted), 500):  # well under SQLite's bound on parameters
            chunk = wanted[start:start + 500]
            found.update(self._directory_rows([*clauses, f"fingerprint IN ({', '.join('?' * len(chunk))})"],
                                              [*values, *chunk]))
        return found

    def _directory_rows(self, clauses: list[str], values: list[Any]) -> dict[str, DirectoryEntry]:
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute("SELECT fingerprint, nickname, country, version, contact, operator "
                                f"FROM relay_directory{where} ORDER BY fingerprint", values)
        return {row[0]: DirectoryEntry(*row) for row in rows}


class DirectoryEntry(NamedTuple):
    """One relay of the relay directory (None: not known)."""

    fingerprint: str
    nickname: str | None = None
    country: str | None = None  # two letters, upper case
    version: str | None = None  # e.g. 0.4.2.6, 0.4.3.2-alpha
    contact: str | None = None  # the contact line, normalised (agent.model.ciiss.ContactFields.raw)
    operator: str | None = None  # the verified AROI domain


@dataclass(frozen=True)
class DirectorySearch:
    """Filters of the relay directory; None: not filtered on.

    ``nickname`` is a case-insensitive prefix, ``contact`` a case-insensitive
    (ASCII) substring of the contact line, ``country`` two letters,
    ``version`` a tor version that matches itself and the versions it
    begins up to a ``.`` or ``-`` (0.4.2 matches 0.4.2.6 and 0.4.2.6-dev,
    not 0.4.20.1), ``operator`` a verified domain (lower case).
    """

    nickname: str | None = None
    contact: str | None = None
    country: str | None = None
    version: str | None = None
    operator: str | None = None

    @property
    def active(self) -> bool:
        return any(value is not None for value in (self.nickname, self.contact, self.country, self.version,
                                                    self.operator))

    def where(self) -> tuple[list[str], list[Any]]:
        """SQL conditions (placeholders only) and their values; prefixes as ranges, so the indexes serve them."""
        clauses: list[str] = []
        values: list[Any] = []
        if self.nickname is not None:
            start = self.nickname.lower()
            clauses.append("lower(nickname) >= ? AND lower(nickname) < ?")
            values += [start, start + _LAST_CHARACTER]
        if self.contact is not None:
            clauses.append("contact LIKE ? ESCAPE '\\'")
            values.append(f"%{like_escaped(self.contact[:MAX_DIRECTORY_CONTACT])}%")
        if self.country is not None:
            clauses.append("country = ?")
            values.append(self.country.upper())
        if self.version is not None:
            # '-' and '.' are adjacent in ASCII ('/' follows): the range holds exactly the versions continuing
            # with either.
            clauses.append("(version = ? OR (version >= ? AND version < ?))")
            values += [self.version, self.version + "-", self.version + "/"]
        if self.operator is not None:
            clauses.append("operator = ?")
            values.append(self.operator.lower())
        return clauses, values


def like_escaped(text: str) -> str:
    """``text`` matched literally by LIKE ... ESCAPE '\\': its backslashes, % and _ escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _writable_directory(directory: Path) -> None:
    """Creates the state directory, or says plainly why it cannot be used."""
    with guarded(directory):
        directory.mkdir(parents=True, exist_ok=True)
    if not os.access(directory, os.W_OK | os.X_OK):
        why = "read-only file system" if os.statvfs(directory).f_flag & os.ST_RDONLY else "permission denied"
        raise StateError(directory, f"the state directory is not writable ({why})")


def _decode_relays(blob: Any) -> PreviousRelays:
    """A period_relays row's relays; ValueError or TypeError if the row is not what save_relays writes."""
    if not isinstance(blob, bytes):
        raise TypeError(f"holds a {type(blob).__name__}, not compressed bytes")
    inflater = zlib.decompressobj()
    text = inflater.decompress(blob, MAX_RELAYS_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"inflates to more than {MAX_RELAYS_BYTES} bytes")
    if not inflater.eof:
        raise ValueError("truncated compressed data")
    stored = json.loads(text)
    if not isinstance(stored, dict) or not all(isinstance(flags, str) for flags in stored.values()):
        raise ValueError("not a mapping of fingerprints to flags")
    return {fingerprint: frozenset(flags.split()) for fingerprint, flags in stored.items()}

