"""What the /api/v1 routes answer, read from the store (PromQL) and the state (relays, alerts).

``Sources`` holds the API's own state connection (used under one lock, as
the subscription endpoints do) and asks the PromQL endpoint the ``query``
command asks: ``query.url``, else the embedded store the daemon runs (never
started from here: with neither, the store routes answer 503). Store answers
are reused for ``api.cache_seconds``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection
from pathlib import Path

from agent.alerts.engine import AlertBook, Tracked
from agent.model.errors import QueryError
from agent.model.relays import PreviousRelays
from agent.pipeline.state import DirectoryEntry, DirectorySearch, State
from agent.store.query import run_query
from agent.web.settings import ApiConfig

#: Store queries give up after this long: a request must not hold a worker for the store's 30 s.
QUERY_TIMEOUT_SECONDS = 10
SERIES_DAYS = 7
Labels = dict[str, str]


class StoreUnavailable(Exception):
    """No PromQL endpoint, or it did not answer: the route answers 503 with this message."""


def number(text) -> float | None:
    """A sample's value as JSON can hold it: NaN and infinities become null."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class Sources:
    def __init__(self, config, settings: ApiConfig, clock: Callable[[], float] = time.time):
        self.config, self.settings, self.clock = config, settings, clock
        self.state = State(config.state_dir)
        self.lock = threading.Lock()
        self._cache: dict[tuple, tuple[float, object]] = {}
        self._cache_lock = threading.Lock()
        self._relays: tuple[int | None, PreviousRelays] = (None, {})

    def close(self) -> None:
        self.state.close()

    def _cached(self, key: tuple, make: Callable[[], object]):
        now = time.monotonic()
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is not None and now - hit[0] < self.settings.cache_seconds:
                return hit[1]
        value = make()
        with self._cache_lock:
            if len(self._cache) > 1000:
                self._cache.clear()
            self._cache[key] = (now, value)
        return value

    def store_url(self) -> str:
        def find() -> str | None:
            if self.config.query.url:
                return self.config.query.url
            if self.config.store.uses_embedded:
                from agent.store.embedded import describe

                running = describe(Path(self.config.state_dir))
                return running["url"] if running else None
            return None

        url = self._cached(("url",), find)
        if not url:
            raise StoreUnavailable("no query.url configured and no embedded store running")
        return str(url)

    def instant(self, promql: str) -> list[tuple[Labels, int, float | None]]:
        """(labels, time, value) of each series at now, with the live lookback."""
        def ask():
            try:
                result = run_query(self.store_url(), promql, timeout=QUERY_TIMEOUT_SECONDS)
            except QueryError as error:
                raise StoreUnavailable(str(error)) from None
            return [(labels, int(samples[-1][0]), number(samples[-1][1])) for labels, samples in result.series
                    if samples]

        return list(self._cached(("instant", promql), ask))  # type: ignore[call-overload]

    def newest_relays(self) -> tuple[int | None, PreviousRelays]:
        """The newest stored period's valid-after and its relays (fingerprint -> flags), decoded once a period."""
        with self.lock:
            period = self.state.db.execute("SELECT MAX(valid_after) FROM period_relays").fetchone()[0]
            if period is None:
                return None, {}
            if self._relays[0] != period:
                self._relays = (period, self.state.relays_before(period + 1) or {})
            return self._relays

    def directory_period(self) -> int | None:
        """The period the relay directory describes (the newest live one recorded); None before the first."""
        with self.lock:
            return self.state.relay_directory_period()

    def directory(self, search: DirectorySearch | None = None, fingerprints: Collection[str] | None = None
                  ) -> dict[str, DirectoryEntry]:
        """The relay directory's relays matching ``search`` (among ``fingerprints`` if given)."""
        with self.lock:
            return self.state.relay_directory(search, fingerprints)

    def alerts(self) -> list[Tracked]:
        with self.lock:
            return AlertBook(self.state.db).active()


def finding(tracked: Tracked) -> dict:
    alert = tracked.alert
    return {"id": alert.id, "severity": alert.severity, "summary": alert.summary, "description": alert.description,
            "subjects": dict(alert.subjects), "silenced": alert.silenced, "first_seen": tracked.first_seen,
            "last_seen": tracked.last_seen, "notified": tracked.last_notified is not None}


def public_findings(sources: Sources) -> tuple[list[dict], int]:
    """The active alerts anyone may see, most severe first, and how many subscription alerts there are."""
    from agent.model.findings import severity_rank

    everything = sources.alerts()
    public = [t for t in everything if t.alert.recipient is None]
    public.sort(key=lambda t: (severity_rank(t.alert.severity), t.alert.id, t.alert.key))
    return [finding(t) for t in public], len(everything) - len(public)


def grouped(rows: list[tuple[Labels, int, float | None]], keys: tuple[str, ...], prefix: str
            ) -> tuple[dict[tuple[str, ...], dict[str, float | None]], int | None]:
    """Samples grouped by the label values ``keys``, each group {field: value}; and the newest sample time."""
    groups: dict[tuple[str, ...], dict[str, float | None]] = {}
    newest = None
    for labels, at, value in rows:
        field = labels.get("__name__", "").removeprefix(prefix)
        groups.setdefault(tuple(labels.get(key, "") for key in keys), {})[field] = value
        newest = at if newest is None else max(newest, at)
    return groups, newest


def fields(names: tuple[str, ...]) -> str:
    return "|".join(names)
