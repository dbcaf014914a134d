"""The agent's health as ``allium-agent status`` shows it, read from the state file only."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from agent.config.loader import Config
from agent.pipeline.state import State

#: Unhealthy when the last recorded period is older than this many periods.
STALE_PERIODS = 2


def health(config: Config, now: float | None = None) -> dict:
    """Last success, last cycle summary, counters, and whether the agent keeps up."""
    now = time.time() if now is None else now
    state = State(config.state_dir)
    try:
        last_success = state.last_success()
        period = state.period_seconds(None)
        last_processed = state.last_processed()
        report = {
            "state": str(state.path),
            "last_success": _iso(last_success),
            "last_period": _iso(last_processed),
            "period_seconds": period,
            "counters": state.counters(),
            "last_cycle": state.last_cycle(),
        }
    finally:
        state.close()
    if last_success is None or period is None:
        report.update(healthy=False, reason="no period recorded yet")
    elif now - last_success > STALE_PERIODS * period:
        report.update(healthy=False, reason=f"last success {now - last_success:.0f} s ago, "
                                            f"more than {STALE_PERIODS} periods of {period} s")
    else:
        report.update(healthy=True, reason=f"last success {now - last_success:.0f} s ago")
    return report


def _iso(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).isoformat()
