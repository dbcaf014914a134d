"""The state file's SQLite connection: errors of the file or its disk become StateErrors naming the file.

Every module that uses ``State.db`` (alerts, deliveries, subscriptions) goes
through this connection, so a read-only directory, a full disk or a damaged
file is reported the same way everywhere; other errors (a constraint, a bug)
are raised as they are, for their callers to handle.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

from agent.model.errors import StateError

DAMAGED = ("damaged: not a readable SQLite database (move it aside to start afresh; the outbox is kept "
           "apart, but alerts, subscriptions and the relays of recent periods are in this file)")
#: (SQLite result code prefix, or words of the message of an error without one): what puts the file or its disk
#: at fault, as a person should hear it. Any other error (a constraint, a bug) is raised as it is.
_CAUSES = (("SQLITE_FULL", "disk is full", "the disk is full"), ("SQLITE_NOTADB", "not a database", DAMAGED),
           ("SQLITE_READONLY", "readonly", "the file or its directory is read-only"),
           ("SQLITE_CANTOPEN", "unable to open", "cannot open it (is the directory missing or read-only?)"),
           ("SQLITE_CORRUPT", "malformed", DAMAGED), ("SQLITE_IOERR", "disk i/o", "an I/O error"),
           ("SQLITE_PERM", "permission", "permission denied"), ("SQLITE_BUSY", "locked", "locked by another process"),
           ("SQLITE_LOCKED", "locked", "locked by another process"))


def state_error(path: Path | str, error: BaseException) -> StateError | None:
    """The StateError for an error of the file or its disk; None for anything else (a bug, a constraint)."""
    if isinstance(error, OSError):
        return StateError(path, error.strerror or str(error))
    if type(error) not in (sqlite3.DatabaseError, sqlite3.OperationalError):
        return None  # IntegrityError and the like: their callers handle them
    name, message = getattr(error, "sqlite_errorname", None), str(error).lower()
    cause = next((cause for code, words, cause in _CAUSES if (name or "").startswith(code)
                  or (name is None and words in message)), None)
    return None if cause is None else StateError(path, cause if cause == DAMAGED else f"{cause} ({error})")


@contextmanager
def guarded(path: Path | str) -> Iterator[None]:
    """Raises the StateError naming ``path`` for an sqlite3 or OS error of the file or its disk."""
    try:
        yield
    except (sqlite3.Error, OSError) as error:
        mapped = state_error(path, error)
        if mapped is None:
            raise
        raise mapped from error


class _Cursor(sqlite3.Cursor):
    """A cursor whose file and disk errors, while stepping through rows too, name the state file."""

    def _path(self) -> Path:
        return getattr(self.connection, "path", Path("agent.sqlite"))

    def execute(self, *args: Any, **kwargs: Any) -> Self:
        with guarded(self._path()):
            return super().execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> Self:
        with guarded(self._path()):
            return super().executemany(*args, **kwargs)

    def fetchone(self) -> Any:
        with guarded(self._path()):
            return super().fetchone()

    def fetchall(self) -> list[Any]:
        with guarded(self._path()):
            return super().fetchall()

    def __next__(self) -> Any:
        with guarded(self._path()):
            return super().__next__()


class _Connection(sqlite3.Connection):
    """The state's connection: every module using ``State.db`` gets StateErrors naming the file."""

    path = Path("agent.sqlite")

    def execute(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        return self.cursor(_Cursor).execute(*args, **kwargs)

    def executemany(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        return self.cursor(_Cursor).executemany(*args, **kwargs)

    def commit(self) -> None:
        with guarded(self.path):
            super().commit()

    def __exit__(self, *exc_info: Any) -> Any:
        with guarded(self.path):
            return super().__exit__(*exc_info)


def connect(path: Path, read_only: bool = False) -> _Connection:
    """A connection to the state file; read-only ones (``status``) create nothing and write nothing."""
    if not read_only:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, factory=_Connection)
    else:
        # A read-only WAL database needs its -shm file; on a read-only disk without one, read it as immutable.
        wal = path.with_name(path.name + "-wal")
        pending_log = wal.exists() and wal.stat().st_size > 0
        options = "mode=ro" if os.access(path.parent, os.W_OK) or pending_log else "mode=ro&immutable=1"
        db = sqlite3.connect(f"file:{quote(str(path))}?{options}", uri=True, isolation_level=None,
                             check_same_thread=False, factory=_Connection)
    db.path = path
    return db
