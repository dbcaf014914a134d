"""Storage: every period goes through the durable outbox, then to the TSDB if one is configured.

With no TSDB configured the agent still runs and everything waits in the
outbox (the embedded default); configure ``store.url`` later and the next
cycle drains it, oldest first.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from agent.model.errors import StoreError
from agent.model.points import Point
from agent.store.lineprotocol import encode_all
from agent.store.outbox import Outbox, fsync_directory, pack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedPoints:
    """A period's points already encoded and packed for the outbox (picklable: backfill's workers encode)."""

    payload: bytes
    line_count: int

    def __len__(self) -> int:
        return self.line_count


def encode_points(points: list[Point]) -> EncodedPoints:
    """The line protocol of ``points``, packed as the outbox keeps it."""
    lines = encode_all(points)
    return EncodedPoints(pack(lines), len(lines))


@dataclass(frozen=True)
class SaveResult:
    """What happened to one period's points and to the backlog."""

    points: int
    stored: bool  # durably in the outbox (False: outbox full, the period was dropped)
    periods_written: int  # outbox records delivered to the TSDB in this drain, this one included
    lines_written: int
    periods_waiting: int
    destination: str | None
    error: str | None = None


class Store:
    """The outbox plus, optionally, an InfluxDB v2 writer (see agent.store.influx)."""

    def __init__(self, outbox: Outbox, writer=None):
        self.outbox = outbox
        self.writer = writer

    @classmethod
    def from_config(cls, config) -> Store:
        outbox = Outbox(Path(config.state_dir) / "outbox", config.store.outbox_max_bytes)
        writer = None
        if config.store.url:
            from agent.store.influx import InfluxWriter

            writer = InfluxWriter(config.store.url, config.store.org, config.store.bucket,
                                  os.environ.get(config.store.token_env, ""), config.store.timeout_seconds,
                                  config.store.batch_lines, config.store.retry)
        return cls(outbox, writer)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.outbox.close()

    def save(self, points: list[Point] | EncodedPoints, period_time: int) -> SaveResult:
        """Appends the period to the outbox, then drains the outbox into the TSDB."""
        encoded = points if isinstance(points, EncodedPoints) else encode_points(points)
        payload, line_count = encoded.payload, encoded.line_count
        stored = self.outbox.append_packed(payload, line_count, period_time)
        written, written_lines, error = self.drain()
        if not stored and written:  # the drain made room
            stored = self.outbox.append_packed(payload, line_count, period_time)
            more, more_lines, error = self.drain()
            written, written_lines = written + more, written_lines + more_lines
        return SaveResult(line_count, stored, written, written_lines, self.outbox.records,
                          self.writer.url if self.writer else None, error)

    def drain(self) -> tuple[int, int, str | None]:
        """Delivers waiting periods oldest first; stops at the first that cannot be written now.

        A shutdown does not interrupt it (the newest period drains last); the
        daemon's grace time bounds it, and a period cut off mid-write is re-sent
        next time, which the store absorbs.
        """
        if self.writer is None:
            return 0, 0, None
        periods = lines = 0
        for record in self.outbox.pending():
            try:
                self.writer.write(record.lines)
            except StoreError as error:
                if not error.permanent:
                    log.warning("TSDB unavailable, %d periods wait in the outbox: %s", self.outbox.records, error)
                    return periods, lines, str(error)
                try:
                    self._reject(record, error)
                except OSError as failure:  # it stays in the outbox until it can be kept aside
                    message = f"cannot keep rejected period {record.time} aside in {self.outbox.directory}: " \
                              f"{failure.strerror or failure}"
                    log.error("%s", message)
                    return periods, lines, message
            else:
                periods += 1
                lines += len(record.lines)
            self.outbox.commit(record.end)
        return periods, lines, None

    def _reject(self, record, error: StoreError) -> None:
        """A period the TSDB will never accept is kept aside for a person, not retried forever."""
        path = self.outbox.directory / f"rejected-{record.time}-{record.start}.lp"
        with open(path, "w") as kept:  # durable before the outbox forgets the record
            kept.write("\n".join(record.lines) + "\n")
            kept.flush()
            os.fsync(kept.fileno())
        fsync_directory(self.outbox.directory)
        log.error("the TSDB rejected period %d for good (%s); its lines are in %s", record.time, error, path)
