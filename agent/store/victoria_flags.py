"""The VictoriaMetrics flags for the agent's data: one sample per series and voting period, stamped in the past.

``victoria_flags(period_seconds)`` is what the embedded store
(``agent.store.embedded``) adds to its own flags (listen address, data path,
retention); docs/queries.md says the same for a VictoriaMetrics of one's own.

- ``-dedup.minScrapeInterval=1s``: samples of a series with the same
  timestamp count once, so a period written again (an outbox retried after a
  lost answer, a backfill rerun) overwrites instead of adding.
- ``-search.latencyOffset=0s``: by default a sample stays invisible to queries
  for 30 s after its timestamp; a period's points are stamped with its
  valid-after and, on a network voting every few seconds, would stay hidden
  for several periods. Harmless for hourly periods (their stamp is a minute
  old when they are written).
- ``-search.maxLookback=<period + 10 min>`` (Prometheus's
  ``--query.lookback-delta``): how far back a bare selector such as
  ``tor_network_relays`` finds a series' newest sample. VictoriaMetrics looks
  back 5 minutes for an instant query by default, so with one sample an hour
  such a query answers only from hh:00 to hh:05. The ready-made queries,
  panels and rules do not need this (they ask ``last_over_time(x[70m])``,
  ``agent.dashboards.lookback``); it is for a person's own queries (vmui,
  Grafana Explore, ``allium-agent query 'tor_network_relays'``).

``-search.cacheTimestampOffset`` is left alone: a period is written within a
minute or two of its valid-after, inside the 5 minutes VictoriaMetrics never
caches, and a later write (or a backfill) resets its response cache itself.
"""

from __future__ import annotations

#: What the agent may take after a period's valid-after to write it: the poll delay (10 s), the fetch deadline (60 s),
#: retries every 30 s while the new consensus is not out yet. Queries keep showing the previous period until then.
WRITE_MARGIN_SECONDS = 600


def lookback_seconds(period_seconds: float) -> int:
    """How far back a query looks for a series' newest sample: one period plus the write margin (70 min live)."""
    return round(period_seconds) + WRITE_MARGIN_SECONDS


def victoria_flags(period_seconds: float) -> list[str]:
    """The flags a VictoriaMetrics holding the agent's periods of ``period_seconds`` needs (3600 on the live network).

    The flags for the live hour suit every shorter period as well (a longer lookback only keeps a series that a
    newer period dropped visible for longer); the embedded store passes 3600.
    """
    return ["-dedup.minScrapeInterval=1s", "-search.latencyOffset=0s",
            f"-search.maxLookback={lookback_seconds(period_seconds)}s"]
