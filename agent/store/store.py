"""Storage: every period goes through the durable outbox, then to the TSDB if one is configured.

With no ``store.url`` the agent writes to its own VictoriaMetrics
(``agent/store/embedded.py``); if that cannot run (the binary is missing, or
``store.embedded: false``) everything waits in the outbox, and the next
cycle with a store drains it, oldest first.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
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


def start_embedded(config):
    """The embedded store for this config's state directory (started, or the one running); None if impossible."""
    from agent.store.embedded import EmbeddedSettings, EmbeddedVictoria

    try:
        return EmbeddedVictoria.start_or_attach(EmbeddedSettings(
            Path(config.state_dir), config.store.embedded_binary, config.store.embedded_port,
            config.store.embedded_retention_years))
    except StoreError as error:  # the agent still runs: periods wait in the outbox
        log.error("no embedded store: %s; periods wait in the outbox", error)
        return None


@contextmanager
def query_endpoint(config) -> Iterator[str | None]:
    """The PromQL endpoint to ask: ``query.url``, else the embedded store's (started for the while if need be).

    The embedded store answers PromQL on the port it takes writes on; one
    started here (no daemon running) is stopped again afterwards.
    """
    if config.query.url or not config.store.uses_embedded:
        yield config.query.url
        return
    embedded = start_embedded(config)
    try:
        yield embedded.url if embedded is not None else None
    finally:
        if embedded is not None:
            embedded.stop()


class Store:
    """The outbox plus, optionally, an InfluxDB v2 writer (see agent.store.influx) and the embedded store."""

    def __init__(self, outbox: Outbox, writer=None, embedded=None):
        self.outbox = outbox
        self.writer = writer
        self.embedded = embedded  # an EmbeddedVictoria the writer writes to, stopped on close if ours

    @classmethod
    def from_config(cls, config) -> Store:
        outbox = Outbox(Path(config.state_dir) / "outbox", config.store.outbox_max_bytes)
        url, embedded = config.store.url, None
        if config.store.uses_embedded:
            try:
                embedded = start_embedded(config)
            except BaseException:
                outbox.close()
                raise
            url = embedded.url if embedded else None
        writer = None
        if url:
            from agent.store.influx import InfluxWriter

            writer = InfluxWriter(url, config.store.org, config.store.bucket,
                                  os.environ.get(config.store.token_env, ""), config.store.timeout_seconds,
                                  config.store.batch_lines, config.store.retry)
        return cls(outbox, writer, embedded)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.embedded is not None:
            self.embedded.stop()
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
        self._supervise()
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

    def _supervise(self) -> None:
        """Keeps the embedded store up: restarted if it died, the writer pointed at it again if it moved."""
        if self.embedded is None or not self.embedded.ensure_running():
            return
        from agent.store.influx import InfluxWriter

        old = self.writer
        self.writer = InfluxWriter(self.embedded.url, old.org, old.bucket, "", old.timeout_seconds,
                                   old.batch_lines, old.retry)
        old.close()

    def _reject(self, record, error: StoreError) -> None:
        """A period the TSDB will never accept is kept aside for a person, not retried forever."""
        path = self.outbox.directory / f"rejected-{record.time}-{record.start}.lp"
        with open(path, "w") as kept:  # durable before the outbox forgets the record
            kept.write("\n".join(record.lines) + "\n")
            kept.flush()
            os.fsync(kept.fileno())
        fsync_directory(self.outbox.directory)
        log.error("the TSDB rejected period %d for good (%s); its lines are in %s", record.time, error, path)
