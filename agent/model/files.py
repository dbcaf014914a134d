"""Files the agent writes whole: the one way to replace a file atomically, and pickled state that survives damage.

A crash mid-write leaves the old file or the new one, never half of either:
the bytes go to a temporary file beside the target, are fsync'd, and
replace it by rename. Pickled state that cannot be read (a damaged file, a
layout of another version) is set aside under a name saying so and the
stage starts afresh: never fatal, never silently overwritten.
"""

from __future__ import annotations

import logging
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar, cast

log = logging.getLogger(__name__)
T = TypeVar("T")


def write_atomically(path: Path, data: bytes) -> None:
    """Replaces ``path`` with ``data`` durably: fsync'd before the rename, the directory fsync'd after it.

    The temporary file has a name of its own (two writers never share one)
    and is removed if anything fails before the rename.
    """
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def set_aside(path: Path, error: object, consequence: str) -> Path:
    """Moves a state file that cannot be used to ``<name>.unreadable-<time>`` and says so; returns where it went."""
    aside = path.with_suffix(f".unreadable-{int(time.time())}")
    path.rename(aside)
    log.error("state %s is unreadable (%s); moved to %s, %s", path, error, aside.name, consequence)
    return aside


class PickledState(Generic[T]):
    """One stage's learned state in ``state_dir/<name>.pickle``, tagged with the layout version it was saved in."""

    def __init__(self, state_dir: Path, name: str, version: int, make: Callable[[], T]):
        self.path, self.version, self.make = Path(state_dir) / f"{name}.pickle", version, make

    def load(self) -> T:
        """The saved state, or a fresh one (no file yet, or one that cannot be used, which is set aside)."""
        if not self.path.exists():
            return self.make()
        try:
            with self.path.open("rb") as handle:
                version, state = pickle.load(handle)
            if version != self.version:
                raise ValueError(f"saved in layout {version}, this agent reads layout {self.version}")
        except Exception as error:  # noqa: BLE001 -- any unreadable state means: start afresh, keep the file
            set_aside(self.path, error, "it starts afresh")
            return self.make()
        return cast(T, state)

    def save(self, state: T) -> None:
        write_atomically(self.path, pickle.dumps((self.version, state), protocol=pickle.HIGHEST_PROTOCOL))
