"""A durable, append-only outbox of periods waiting for the TSDB.

Every period's lines are appended here (fsync'd) before any write is tried,
and a record is marked delivered only after the TSDB accepted it. A crash
between the two re-sends that record: delivery is at least once, and the
store makes it exactly once, because a period's points carry its valid-after
as timestamp (InfluxDB overwrites; VictoriaMetrics deduplicates with
``-dedup.minScrapeInterval``).

Files in the outbox directory:
  outbox.data    records: header (magic, payload length, crc32, period time) + the lines, compressed
                 (magic ALB2: zstd, written now; ALB1: zlib, written before 0.x and still read)
  outbox.offset  where undelivered records start (replaced atomically)
  outbox.lock    held (flock) by the one process using the outbox
A damaged tail (a crash mid-append) is reported, moved aside to
``outbox.damaged-<time>-at-<byte>`` and cut off; every intact record before
it is kept. (Damage in the middle is treated the same way: the records after
it are kept aside in that file, not re-sent. Not resynchronised yet.)
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

import zstandard

from agent.model.errors import StoreError

log = logging.getLogger(__name__)

MAGIC = b"ALB2"
HEADER = struct.Struct(">4sIIq")  # magic, payload bytes, crc32 of payload, period time (Unix s)
WARN_FILL_RATIO = 0.8


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
_UNPACK = {b"ALB1": zlib.decompress, MAGIC: decompress}


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
        self.directory.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.data_path = self.directory / "outbox.data"
        self.offset_path = self.directory / "outbox.offset"
        self._lock = open(self.directory / "outbox.lock", "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise StoreError(f"the outbox in {self.directory} is in use by another allium-agent process") from None
        self.data_path.touch()
        self._offset = self._read_offset()
        self.records = self._recover()

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
        record = HEADER.pack(MAGIC, len(payload), zlib.crc32(payload), period_time) + payload
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
                raise StoreError(f"cannot append to {self.data_path}: {error.strerror or error}") from None
        self.records += 1
        if self.pending_bytes > WARN_FILL_RATIO * self.max_bytes:
            log.warning("outbox %.0f%% full (%d periods waiting); the TSDB is not taking writes",
                        100 * self.pending_bytes / self.max_bytes, self.records)
        return True

    def pending(self) -> Iterator[PendingRecord]:
        """Undelivered records, oldest first; stops (with an error) at a record that fails its checks."""
        with open(self.data_path, "rb") as data:
            data.seek(self._offset)
            position = self._offset
            while True:
                header = data.read(HEADER.size)
                if len(header) < HEADER.size:
                    return
                magic, length, checksum, period_time = HEADER.unpack(header)
                payload = data.read(length)
                if magic not in _UNPACK or len(payload) < length or zlib.crc32(payload) != checksum:
                    log.error("outbox record at byte %d fails its checks; it is set aside at the next start",
                              position)
                    return
                end = position + HEADER.size + length
                yield PendingRecord(position, end, period_time, _UNPACK[magic](payload).decode().split("\n"))
                position = end

    def commit(self, end: int) -> None:
        """Marks everything before ``end`` delivered; empties the file once all is."""
        self._write_offset(end)
        self.records = max(0, self.records - 1)
        if end >= self.data_path.stat().st_size:
            # Order matters: a crash after the truncate leaves offset > size, which recovery resets.
            with open(self.data_path, "r+b") as data:
                data.truncate(0)
                os.fsync(data.fileno())
            self._write_offset(0)
            self.records = 0

    def _read_offset(self) -> int:
        try:
            offset = int(self.offset_path.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except ValueError:
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
        with open(temporary, "w") as handle:
            handle.write(f"{offset}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.offset_path)
        fsync_directory(self.directory)
        self._offset = offset

    def _recover(self) -> int:
        """Counts intact records; cuts off and keeps aside a damaged tail."""
        size = self.data_path.stat().st_size
        records, position = 0, self._offset
        with open(self.data_path, "rb") as data:
            data.seek(position)
            while position < size:
                problem = _check_record(data, size - position)
                if problem:
                    self._set_aside(position, size, problem, records)
                    break
                position = data.tell()
                records += 1
        if records:
            log.info("outbox holds %d undelivered periods (%d bytes)", records, position - self._offset)
        return records

    def _set_aside(self, position: int, size: int, problem: str, intact: int) -> None:
        damaged = self.directory / f"outbox.damaged-{time.time_ns()}-at-{position}"
        with open(self.data_path, "r+b") as data:
            data.seek(position)
            with open(damaged, "wb") as kept:  # durable before the data file is cut
                kept.write(data.read())
                kept.flush()
                os.fsync(kept.fileno())
            fsync_directory(self.directory)
            data.truncate(position)
            os.fsync(data.fileno())
        log.error("outbox record at byte %d is damaged (%s): kept %d intact periods, moved the last %d bytes to %s",
                  position, problem, intact, size - position, damaged)


def fsync_directory(directory: Path) -> None:
    """Makes a rename or a new file in ``directory`` durable."""
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _check_record(data, available: int) -> str | None:
    header = data.read(HEADER.size)
    if len(header) < HEADER.size:
        return f"truncated header ({len(header)} of {HEADER.size} bytes)"
    magic, length, checksum, _ = HEADER.unpack(header)
    if magic not in _UNPACK:
        return "bad magic"
    if HEADER.size + length > available:
        return f"truncated payload ({available - HEADER.size} of {length} bytes)"
    if zlib.crc32(data.read(length)) != checksum:
        return "checksum mismatch"
    return None


def _when(period_time: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(period_time))
