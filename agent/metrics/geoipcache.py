"""A compact cache of a parsed GeoIP file, so a start loads arrays instead of parsing 9.5 MB of text.

Parsing tor's ``geoip`` (about 385,000 ``LOW,HIGH,CC`` lines) costs 0.5-1 s
of CPU at every start of ``once``, ``run`` or ``backfill``; loading the same
columns from an ``.npz`` file of numpy arrays costs a few milliseconds.

- One cache file per source path (``geoip-<hash of the path>.npz``), in a
  cache directory: the caller's (e.g. under the state directory), else the
  user's (``$XDG_CACHE_HOME/allium-agent``, by default
  ``~/.cache/allium-agent``).
- Keyed by the source's content: its size and the SHA-256 of its bytes
  (about 10 ms), with this module's format version. A changed file (a
  tor-geoipdb update), even one of the same size and time, is parsed again
  and the cache rewritten; an unchanged one copied elsewhere or touched is
  not.
- Written atomically, the agent's one way (``agent.model.files.write_atomically``:
  a temporary file beside it, fsync'd, then renamed over it), so a reader
  sees the old cache or the new one, never half of one.
- Read without pickle (``allow_pickle=False``) and checked (key, dtypes,
  shapes, codes within the names, starts sorted): anything else, a damaged
  file included, is rebuilt from the source. A cache that cannot be read or
  written costs the parse, never the start.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from agent.model.files import write_atomically

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the arrays' layout or the parse they hold changes
APPLICATION = "allium-agent"
_MEMBERS = ("key", "starts", "ends", "codes", "names")

#: starts, ends, codes, names: what ``GeoIP`` is made of
Columns = tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]


def default_cache_dir() -> Path | None:
    """``$XDG_CACHE_HOME/allium-agent``, else ``~/.cache/allium-agent``; None when there is no home."""
    base = os.environ.get("XDG_CACHE_HOME")
    if base and os.path.isabs(base):
        return Path(base) / APPLICATION
    try:
        return Path.home() / ".cache" / APPLICATION
    except RuntimeError:  # no HOME and no passwd entry
        return None


def cache_file(source: Path | str, cache_dir: Path | str) -> Path:
    """Where the cache of ``source`` lives: one file per source path."""
    name = hashlib.sha256(os.fsencode(os.path.abspath(source))).hexdigest()[:16]
    return Path(cache_dir) / f"geoip-{name}.npz"


def source_key(source: Path | str) -> str:
    """What a cache must have been built from: the format, the source's size and the SHA-256 of its bytes."""
    with open(source, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    return json.dumps({"format": FORMAT, "size": size, "sha256": digest}, sort_keys=True)


def read(path: Path, key: str) -> Columns | None:
    """The cached columns, or None when the file is missing, built from another source, or damaged."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            if sorted(stored.files) != sorted(_MEMBERS):
                raise ValueError(f"members {sorted(stored.files)}")
            if str(stored["key"]) != key:
                log.info("GeoIP cache %s was built from another version of the file; building it again", path)
                return None
            columns = stored["starts"], stored["ends"], stored["codes"], stored["names"]
        return _checked(*columns)
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 -- any damage (truncated, bad zip, wrong arrays): rebuild
        log.warning("GeoIP cache %s is unreadable (%s); building it again", path, _short(error))
        return None


def _checked(starts: np.ndarray, ends: np.ndarray, codes: np.ndarray, names: np.ndarray) -> Columns:
    """The columns if they are what ``GeoIP`` needs, else ValueError."""
    count = len(starts)
    if (starts.dtype != np.int64 or ends.dtype != np.int64 or codes.dtype != np.uint16 or names.dtype.kind != "U"
            or any(column.ndim != 1 for column in (starts, ends, codes, names))):
        raise ValueError("unexpected array types")
    if len(ends) != count or len(codes) != count or len(names) == 0:
        raise ValueError("columns of different lengths")
    if count and (int(codes.max()) >= len(names) or bool(np.any(starts[1:] < starts[:-1]))):
        raise ValueError("codes beyond the names, or ranges out of order")
    return starts, ends, codes, names.tolist()


def write(path: Path, key: str, columns: Columns) -> None:
    """Stores ``columns`` atomically; a cache that cannot be written is logged and left (never fatal)."""
    starts, ends, codes, names = columns
    packed = io.BytesIO()
    np.savez(packed, key=np.array(key), starts=starts, ends=ends, codes=codes, names=np.array(names, dtype="U"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, packed.getvalue())
    except Exception as error:  # noqa: BLE001 -- a full disk, a read-only or odd directory: parse next time
        log.warning("GeoIP cache %s cannot be written (%s); the file is parsed at each start", path, _short(error))


def _short(error: BaseException) -> str:
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)[:200] or type(error).__name__
