"""How far back the ready-made PromQL looks for a series' newest sample: one live voting period plus a margin.

Each series has one sample a voting period, stamped with the consensus
valid-after (one an hour on the live network). An instant selector such as
``tor_network_relays`` looks back only 5 minutes by default (Prometheus's
``--query.lookback-delta``, VictoriaMetrics' instant-query ``step``), so it
answers from hh:00 to hh:05 and is empty for the rest of the hour. Every
dashboard target, alert rule and README query therefore asks for
``last_over_time(x[LATEST_WINDOW])``: the newest sample of the last hour and
ten minutes. That needs no server flag, and is right for the private test
network's 10-second periods as well (the newest sample is the newest period).

The ten minutes are the margin for the agent to fetch and write the next
period after its valid-after (``schedule.poll_delay_seconds`` 10 s, the fetch
deadline 60 s, retries every 30 s): without it every query would go blank
(and every ``> 0`` alert resolve) from hh:00 until the new period is written.
Its price: for ten minutes after a period is written, a series that period
dropped (a relay that left the consensus) still shows with its last value.
A wider window would show the period before the newest one all through the
hour. docs/queries.md says this for users' own queries and servers.

``agent.store.victoria_flags.lookback_seconds`` is the same rule for any
period (the embedded VictoriaMetrics' ``-search.maxLookback``, the ``query``
command's lookback); a unit test keeps the two equal for the live hour.
"""

from __future__ import annotations

#: One live voting period (1 h) plus ten minutes for the agent to write the next one, in PromQL duration syntax.
LATEST_WINDOW = "70m"
LATEST_WINDOW_SECONDS = 70 * 60


def latest(selector: str, offset: str = "") -> str:
    """The newest sample of each series ``selector`` matches, whenever in the hour it is asked (``offset``, a PromQL
    duration such as ``7d``: as it was that long before)."""
    shift = f" offset {offset}" if offset else ""
    return f"last_over_time({selector}[{LATEST_WINDOW}]{shift})"
