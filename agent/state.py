"""The agent's state between cycles and restarts, in SQLite (state_dir/agent.sqlite).

Holds what the next period needs from earlier ones: each recent period's
relays and their flags (for churn and for relays that left). Schema changes
go through MIGRATIONS, applied in order and recorded in PRAGMA user_version.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from pathlib import Path

from agent.metrics import PreviousRelays

MIGRATIONS = (
    """CREATE TABLE period_relays (
           valid_after INTEGER PRIMARY KEY,  -- Unix seconds
           relays BLOB NOT NULL              -- zlib'd JSON {fingerprint: "Flag Flag ..."}
       )""",
)
KEEP_PERIODS = 48


class State:
    def __init__(self, directory: Path):
        Path(directory).mkdir(parents=True, exist_ok=True)
        self.path = Path(directory) / "agent.sqlite"
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._migrate()

    def close(self) -> None:
        self._db.close()

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
