"""/healthz and /metrics: the agent's liveness as ``status`` decides it, and its self-metrics for Prometheus.

/healthz is ``allium-agent status``'s verdict (agent.cli.health: unhealthy
once the last recorded period is older than two periods): 200 or 503, with
the reason, never the state file's path. /metrics writes the state's
counters, the last cycle's numeric summary, deliveries waiting and active
alerts in the Prometheus text format (0.0.4).
"""

from __future__ import annotations

import re

from agent.cli.health import health
from agent.web.api_data import Sources
from agent.web.apikeys import KeyStore

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def healthz(sources: Sources) -> tuple[dict, int]:
    now = sources.clock()
    report = health(sources.config, now)
    period_seconds = report.get("period_seconds")
    last_success = _unix(report.get("last_success"))
    body = {"healthy": bool(report["healthy"]), "status": "ok" if report["healthy"] else "unhealthy",
            "reason": str(report["reason"]), "last_success": last_success,
            "last_period": _unix(report.get("last_period")),
            "period_seconds": int(period_seconds) if period_seconds is not None else None,
            "age_seconds": int(now - last_success) if last_success is not None else None}
    return body, 200 if report["healthy"] else 503


def _unix(iso: str | None) -> int | None:
    from datetime import datetime

    return None if iso is None else int(datetime.fromisoformat(iso).timestamp())


def metrics(sources: Sources) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend((f"# HELP {name} {text}", f"# TYPE {name} {kind}"))
        lines.extend(f"{name}{labels} {_value(value)}" for labels, value in samples)

    with sources.lock:
        state = sources.state
        counters = state.counters()
        cycle = state.last_cycle() or {}
        last_success, last_period, period = state.last_success(), state.last_processed(), state.period_seconds(None)
        waiting = state.db.execute("SELECT COUNT(*) FROM deliveries WHERE delivered IS NULL AND gave_up IS NULL"
                                   ).fetchone()[0]
        keys = KeyStore(state.db).active_count()
    alerts = sources.alerts()
    now = sources.clock()
    healthy = last_success is not None and period is not None and now - last_success <= 2 * period
    metric("allium_agent_up", "gauge", "1 while the last recorded period is at most two periods old.",
           [("", 1 if healthy else 0)])
    for name, value in sorted(counters.items()):
        safe = _UNSAFE.sub("_", name)
        metric(f"allium_agent_{safe}_total", "counter", f"The state's counter {safe}.", [("", value)])
    if last_success is not None:
        metric("allium_agent_last_success_timestamp_seconds", "gauge", "When the last period was recorded.",
               [("", last_success)])
    if last_period is not None:
        metric("allium_agent_last_period_timestamp_seconds", "gauge", "Valid-after of the newest recorded period.",
               [("", last_period)])
    if period is not None:
        metric("allium_agent_period_seconds", "gauge", "The voting interval.", [("", period)])
    for key, value in sorted(cycle.items()):
        if isinstance(value, int | float) and not isinstance(value, bool):
            safe = _UNSAFE.sub("_", key)
            metric(f"allium_agent_last_cycle_{safe}", "gauge", f"The last cycle's {safe}.", [("", value)])
    metric("allium_agent_deliveries_waiting", "gauge", "Messages waiting for delivery.", [("", waiting)])
    public = sum(1 for t in alerts if t.alert.recipient is None)
    metric("allium_agent_alerts_active", "gauge", "Active alerts by scope.",
           [('{scope="findings"}', public), ('{scope="subscriptions"}', len(alerts) - public)])
    metric("allium_agent_api_keys", "gauge", "API keys not revoked.", [("", keys)])
    return "\n".join(lines) + "\n"


def _value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
