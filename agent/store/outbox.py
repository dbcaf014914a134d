"""A durable, append-only outbox of periods waiting for the TSDB.

Every period's lines are appended here (fsync'd) before any write is tried,
and a record is marked delivered only after the TSDB accepted it. A crash
between the two re-sends that record: delivery is at least once, and the
store makes it exactly once, because a period's points carry its valid-after
as timestamp (InfluxDB overwrites; VictoriaMetrics deduplicates with
``-dedup.minScrapeInterval``).

Files in the outbox directory:
  outbox.data    records: header (magic, payload length, crc32, period time) + the lines, compressed
                 (magic ALB3: zstd, the crc32 over the period time and the payload, written now;
                 ALB2: zstd, crc32 over the payload only; ALB1: zlib; both written before and still read)
  outbox.offset  where undelivered records start (replaced atomically)
  outbox.lock    held (flock) by the one process writing the outbox
``inspect`` reads an outbox without that lock and without changing a byte
(``outbox status``, beside a running daemon).
A damaged stretch (a crash mid-append, a flipped byte, a zeroed block) is
reported and its bytes moved aside to ``outbox.damaged-<time>-at-<byte>``;
reading resynchronises on the next intact record (a valid magic whose CRC
matches), so only the damaged record is lost and every intact one, before
or after it, is delivered. On opening, damage is cut out of the file: a
damaged tail is truncated, damage in the middle is compacted away.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from agent.model.errors import StoreError

log = logging.getLogger(__name__)

MAGIC = b"ALB3"
HEADER = struct.Struct(">4sIIq")  # magic, payload bytes, crc32 (see _checksum), period time (Unix s)
PERIOD_TIME = struct.Struct(">q")
#: Magics whose crc32 also covers the period time: a flipped bit there would otherwise file a period's
#: points under another hour, unnoticed.
_TIME_CHECKED = frozenset({MAGIC})
WARN_FILL_RATIO = 0.8
#: Bytes read at a time when checking, scanning for the next record after damage, or copying.
SCAN_BYTES = 1 << 20


def compress(data: bytes) -> bytes:
    """zstd level 1 (the outbox's records; backfill's archive members while they wait).

    A period of per-relay points is ~2.6 MB of text: zstd packs it in 1.7 ms
    to 230 kB, where zlib's fastest level took 7.4 ms for 340 kB (and 10 ms
    to unpack, zstd 0.5 ms). The result is copied to a bytes of its own size:
    zstd's is shrunk from a buffer of the input's size, and the allocator
    could not reuse the freed tails (a backfill worker holding a run's 24
    payloads grew by 110 MB).
    """
    return bytes(memoryview(zstandard.ZstdCompressor(level=1).compress(data)))


def decompress(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompress(data)


#: How each record magic's payload is unpacked. ALB1 records (zlib) were written by earlier versions and may
#: still wait in an outbox; they are delivered as they are.
_UNPACK = {b"ALB1": zlib.decompress, b"ALB2": decompress, MAGIC: decompress}


def _checksum_start(magic: bytes, period_time: int) -> int:
    """The crc32 a record's payload continues: over its period time first for the records written now."""
    return zlib.crc32(PERIOD_TIME.pack(period_time)) if magic in _TIME_CHECKED else 0


def pack(lines: list[str]) -> bytes:
    """A record's payload: the lines, compressed."""
    return compress("\n".join(lines).encode())


@dataclass(frozen=True)
class PendingRecord:
    start: int
    end: int
    time: int
    lines: list[str]


class Outbox:
    """The outbox in ``directory``, bounded to ``max_bytes`` of undelivered data."""

    def __init__(self, directory: Path, max_bytes: int):
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.data_path = self.directory / "outbox.data"
        self.offset_path = self.directory / "outbox.offset"
        self._kept_aside: set[int] = set()  # damaged stretches already copied aside by this process
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.directory / "outbox.lock", "a+")
        except OSError as error:
            raise _error(f"cannot use the outbox in {self.directory}", error) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StoreError(f"the outbox in {self.directory} is in use by another allium-agent process") from None
        try:
            self.data_path.touch()
            self._offset = self._read_offset()
            self.records = self._recover()
        except OSError as error:
            self._lock.close()
            raise _error(f"cannot use the outbox in {self.directory}", error) from None

    def close(self) -> None:
        self._lock.close()

    @property
    def pending_bytes(self) -> int:
        return self.data_path.stat().st_size - self._offset

    def append(self, lines: list[str], period_time: int) -> bool:
        """Stores one period durably; False (and an error log) if the outbox is full."""
        return self.append_packed(pack(lines), len(lines), period_time)

    def append_packed(self, payload: bytes, line_count: int, period_time: int) -> bool:
        """``append`` for lines already packed by ``pack`` (backfill packs them in its worker processes)."""
        checksum = zlib.crc32(payload, _checksum_start(MAGIC, period_time))
        record = HEADER.pack(MAGIC, len(payload), checksum, period_time) + payload
        if self.pending_bytes + len(record) > self.max_bytes:
            log.error("outbox full (%d of %d bytes waiting): period %s (%d points) NOT stored",
                      self.pending_bytes, self.max_bytes, _when(period_time), line_count)
            return False
        with open(self.data_path, "ab") as data:
            size_before = data.tell()
            try:
                data.write(record)
                data.flush()
                os.fsync(data.fileno())
            except OSError as error:  # disk full, I/O error: leave no partial record behind
                data.truncate(size_before)
                raise _error(f"cannot append to {self.data_path}", error) from None
        self.records += 1
        if self.pending_bytes > WARN_FILL_RATIO * self.max_bytes:
            log.warning("outbox %.0f%% full (%d periods waiting); the TSDB is not taking writes",
                        100 * self.pending_bytes / self.max_bytes, self.records)
        return True

    def pending(self) -> Iterator[PendingRecord]:
        """Undelivered records, oldest first; a damaged one is kept aside and skipped, resynchronising after it."""
        with open(self.data_path, "rb") as data:
            position, size = self._offset, os.fstat(data.fileno()).st_size
            while position < size:
                end, problem = _check(data, position, size)
                if problem is None:
                    data.seek(position)
                    magic, length, _, period_time = HEADER.unpack(data.read(HEADER.size))
                    try:
                        lines = _UNPACK[magic](data.read(length)).decode().split("\n")
                    except (zstandard.ZstdError, zlib.error, UnicodeDecodeError) as error:
                        problem = f"intact but cannot be unpacked: {error}"
                    else:
                        yield PendingRecord(position, end, period_time, lines)
                        position = end
                        continue
                resume = end if problem.startswith("intact") else _next_intact(data, position, size)
                if position not in self._kept_aside:
                    self._keep_aside(data, position, resume, problem)
                    self.records = max(0, self.records - 1)
                position = resume

    def commit(self, end: int) -> None:
        """Marks everything before ``end`` delivered; empties the file once all is."""
        self._write_offset(end)
        self.records = max(0, self.records - 1)
        if end >= self.data_path.stat().st_size:
            # Order matters: a crash after the truncate leaves offset > size, which recovery resets.
            try:
                with open(self.data_path, "r+b") as data:
                    data.truncate(0)
                    os.fsync(data.fileno())
            except OSError as error:
                raise _error(f"cannot empty {self.data_path}", error) from None
            self._write_offset(0)
            self.records = 0

    def _read_offset(self) -> int:
        try:
            offset = int(self.offset_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except (ValueError, UnicodeDecodeError):
            offset = -1
        if offset < 0:
            log.error("%s is unreadable; re-sending the whole outbox (the store ignores duplicates)",
                      self.offset_path)
            return 0
        if offset > self.data_path.stat().st_size:
            # The data file was emptied after a full drain but the crash came
            # before the offset was reset: reset it durably now, or later
            # appends would be taken as delivered.
            self._write_offset(0)
            return 0
        return offset

    def _write_offset(self, offset: int) -> None:
        temporary = self.offset_path.with_suffix(".tmp")
        try:
            with open(temporary, "w") as handle:
                handle.write(f"{offset}\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.offset_path)
            fsync_directory(self.directory)
        except OSError as error:
            raise _error(f"cannot write {self.offset_path}", error) from None
        self._offset = offset

    def _recover(self) -> int:
        """Counts intact records; keeps every damaged stretch aside and cuts it out of the file."""
        size = self.data_path.stat().st_size
        with open(self.data_path, "rb") as data:
            intact, damaged = _survey(data, self._offset, size)
            for start, end, problem in damaged:
                self._keep_aside(data, start, end, problem)
        if damaged and intact and intact[-1][0] > damaged[0][0]:
            self._compact(intact)
        elif damaged:
            self._cut(damaged[0][0])
        if damaged:
            log.error("outbox: kept %d intact periods; set aside %d damaged stretch(es), %d bytes", len(intact),
                      len(damaged), sum(end - start for start, end, _ in damaged))
        if intact:
            log.info("outbox holds %d undelivered periods (%d bytes)", len(intact), self.pending_bytes)
        return len(intact)

    def _keep_aside(self, data: BinaryIO, start: int, end: int, problem: str) -> None:
        """Copies a damaged stretch durably to a file of its own, for a person (it is never re-sent)."""
        damaged = self.directory / f"outbox.damaged-{time.time_ns()}-at-{start}"
        try:
            with open(damaged, "wb") as kept:
                _copy(data, start, end, kept)
                kept.flush()
                os.fsync(kept.fileno())
            fsync_directory(self.directory)
        except OSError as error:
            raise _error(f"cannot set damaged outbox data aside in {damaged}", error) from None
        self._kept_aside.add(start)
        log.error("outbox record at byte %d is damaged (%s): moved its %d bytes to %s; reading resumes at byte %d",
                  start, problem, end - start, damaged, end)

    def _cut(self, position: int) -> None:
        """Truncates a damaged tail (its bytes are already kept aside)."""
        with open(self.data_path, "r+b") as data:
            data.truncate(position)
            os.fsync(data.fileno())

    def _compact(self, intact: list[tuple[int, int]]) -> None:
        """Rewrites the data file with only its intact records (damage in the middle is already kept aside).

        The offset is reset first: a crash before the rename re-sends the old
        file from its start, which the store absorbs; nothing is lost.
        """
        temporary = self.directory / "outbox.data.tmp"
        with open(self.data_path, "rb") as source, open(temporary, "wb") as target:
            for start, end in intact:
                _copy(source, start, end, target)
            target.flush()
            os.fsync(target.fileno())
        self._write_offset(0)
        os.replace(temporary, self.data_path)
        fsync_directory(self.directory)


@dataclass(frozen=True)
class OutboxView:
    """What waits in an outbox, as ``inspect`` read it."""

    directory: Path
    periods: int  # intact records waiting
    pending_bytes: int
    max_bytes: int
    first: int | None  # the oldest and newest waiting period's time (Unix s)
    last: int | None
    damaged: int  # stretches failing their checks: a writer sets them aside when it next opens the outbox
    damaged_bytes: int


def inspect(directory: Path, max_bytes: int, attempts: int = 3) -> OutboxView:
    """The outbox in ``directory`` read-only: no lock taken, nothing created, repaired or moved.

    So it answers beside the process that holds the outbox (the daemon) and
    on a read-only disk. That process may deliver (move the offset, empty the
    file) while this reads: the reading is then done again, up to
    ``attempts`` times, so a drain is not taken for damage. A missing outbox
    is an empty one.
    """
    directory = Path(directory)
    view = OutboxView(directory, 0, 0, max_bytes, None, None, 0, 0)
    for _ in range(attempts):
        try:
            with open(directory / "outbox.data", "rb") as data:
                size, offset = os.fstat(data.fileno()).st_size, _peek_offset(directory / "outbox.offset")
                offset = offset if offset <= size else 0  # emptied by a drain, offset not reset yet
                intact, damaged = _survey(data, offset, size)
                times = [_period_time(data, start) for start, _ in intact]
            settled = os.stat(directory / "outbox.data").st_size >= size \
                and _peek_offset(directory / "outbox.offset") == offset
        except FileNotFoundError:
            return view
        except OSError as error:
            raise _error(f"cannot read the outbox in {directory}", error) from None
        view = OutboxView(directory, len(intact), size - offset, max_bytes, min(times, default=None),
                          max(times, default=None), len(damaged), sum(end - start for start, end, _ in damaged))
        if settled:
            break
    return view


def _peek_offset(path: Path) -> int:
    """The offset file as a writer would take it (missing or unreadable: 0), without repairing it."""
    try:
        offset = int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return 0
    return max(offset, 0)


def _period_time(data: BinaryIO, start: int) -> int:
    """The period time in the header of the intact record at ``start``."""
    data.seek(start)
    return int(HEADER.unpack(data.read(HEADER.size))[3])


def fsync_directory(directory: Path) -> None:
    """Makes a rename or a new file in ``directory`` durable."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _error(what: str, error: OSError) -> StoreError:
    """A StoreError naming the file and the system's reason (disk full, read-only, permission)."""
    return StoreError(f"{what}: {error.strerror or error}")


def _survey(data: BinaryIO, position: int, size: int) -> tuple[list[tuple[int, int]], list[tuple[int, int, str]]]:
    """The intact records (start, end) and the damaged stretches (start, end, problem) from ``position`` on."""
    intact: list[tuple[int, int]] = []
    damaged: list[tuple[int, int, str]] = []
    while position < size:
        end, problem = _check(data, position, size)
        if problem is None:
            intact.append((position, end))
        else:
            end = _next_intact(data, position, size)
            damaged.append((position, end, problem))
        position = end
    return intact, damaged


def _check(data: BinaryIO, position: int, size: int) -> tuple[int, str | None]:
    """The end of the record at ``position`` and why it is not intact (None if it is), in bounded memory."""
    data.seek(position)
    header = data.read(HEADER.size)
    if len(header) < HEADER.size:
        return size, f"truncated header ({len(header)} of {HEADER.size} bytes)"
    magic, length, checksum, period_time = HEADER.unpack(header)
    end = position + HEADER.size + length
    if magic not in _UNPACK:
        return size, "bad magic"
    if end > size:
        return size, f"truncated payload ({size - position - HEADER.size} of {length} bytes)"
    crc, left = _checksum_start(magic, period_time), length
    while left:
        chunk = data.read(min(left, SCAN_BYTES))
        if not chunk:  # the file shrank under us
            return size, "truncated payload"
        crc, left = zlib.crc32(chunk, crc), left - len(chunk)
    return end, None if crc == checksum else "checksum mismatch"


def _next_intact(data: BinaryIO, start: int, size: int) -> int:
    """Where the first intact record after ``start`` begins (``size`` if none): a magic whose record checks out."""
    window_start = start + 1
    while window_start < size:
        data.seek(window_start)
        window = data.read(SCAN_BYTES + len(MAGIC) - 1)  # overlapping, so a magic across windows is seen
        index = 0
        while True:
            hits = [hit for hit in (window.find(magic, index) for magic in _UNPACK) if 0 <= hit < SCAN_BYTES]
            if not hits:
                break
            candidate = window_start + min(hits)
            if _check(data, candidate, size)[1] is None:
                return candidate
            index = min(hits) + 1
        window_start += SCAN_BYTES
    return size


def _copy(source: BinaryIO, start: int, end: int, target: BinaryIO) -> None:
    """Copies bytes ``start``..``end`` of ``source`` to ``target`` in bounded chunks."""
    source.seek(start)
    while start < end:
        chunk = source.read(min(end - start, SCAN_BYTES))
        if not chunk:
            return
        target.write(chunk)
        start += len(chunk)


def _when(period_time: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(period_time))
