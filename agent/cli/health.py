"""The agent's health as ``allium-agent status`` shows it, read from the state file only.

``status`` must answer whatever state the state is in: it opens the file
read-only (it works on a read-only disk, and changes nothing), and a missing,
unreadable or damaged file, or a read-only state directory, is reported as
the reason the agent is unhealthy rather than raised.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from agent.config.loader import Config
from agent.model.errors import StateError
from agent.pipeline.state import State

#: Unhealthy when the last recorded period is older than this many periods.
STALE_PERIODS = 2


def health(config: Config, now: float | None = None) -> dict:
    """Last success, last cycle summary, counters, and whether the agent keeps up (or why it cannot)."""
    now = time.time() if now is None else now
    directory = Path(config.state_dir)
    report = {"state": str(directory / "agent.sqlite"), "last_success": None, "last_period": None,
              "period_seconds": None, "counters": {}, "last_cycle": None}
    if not (directory / "agent.sqlite").exists():
        return report | {"healthy": False, "reason": "no period recorded yet"}
    try:
        recorded, last_success = _recorded(directory)
    except StateError as error:
        return report | {"healthy": False, "reason": f"the state file cannot be read: {error}"}
    report.update(recorded)
    quarantined = report["counters"].get("rows_quarantined", 0)
    if quarantined:
        report["quarantined"] = f"{quarantined} unreadable rows were set aside in {directory / 'quarantine'}"
    return report | _verdict(last_success, report["period_seconds"], now, directory)


def _recorded(directory: Path) -> tuple[dict, int | None]:
    """What the state file says, read without changing it, and the last success (Unix s)."""
    state = State(directory, read_only=True)
    try:
        last_success, period = state.last_success(), state.period_seconds(None)
        return {"last_success": _iso(last_success), "last_period": _iso(state.last_processed()),
                "period_seconds": period, "counters": state.counters(), "last_cycle": state.last_cycle()}, last_success
    finally:
        state.close()


def _verdict(last_success: int | None, period: int | None, now: float, directory: Path) -> dict:
    """healthy and the reason: a read-only state directory, no period yet, or how old the last success is."""
    if os.statvfs(directory).f_flag & os.ST_RDONLY:
        return {"healthy": False, "reason": f"the state directory {directory} is on a read-only file system: "
                                            "the agent cannot record anything"}
    if last_success is None or period is None:
        return {"healthy": False, "reason": "no period recorded yet"}
    if now - last_success > STALE_PERIODS * period:
        return {"healthy": False, "reason": f"last success {now - last_success:.0f} s ago, "
                                            f"more than {STALE_PERIODS} periods of {period} s"}
    return {"healthy": True, "reason": f"last success {now - last_success:.0f} s ago"}


def _iso(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def status_command(arguments) -> int:
    """``allium-agent status``: the report, as lines or JSON; exit 0 healthy, 1 not (the reason says why)."""
    from agent.config.loader import load_config

    report = health(load_config(arguments.config))
    if arguments.json:
        print(json.dumps(report, indent=2))
    else:
        print("\n".join(f"{key}: {value}" for key, value in report.items() if key != "last_cycle"))
        for key, value in (report.get("last_cycle") or {}).items():
            print(f"  last cycle {key}: {value}")
    return 0 if report["healthy"] else 1


def outbox_command(arguments) -> int:
    """``allium-agent outbox status|drain``: exit 1 if there is no TSDB to drain to or it did not take the periods."""
    from agent.config.loader import load_config
    from agent.store.store import Store

    store = Store.from_config(load_config(arguments.config))
    try:
        if arguments.outbox_command == "drain":
            if store.writer is None:
                print("no store.url configured: nothing to drain to", file=sys.stderr)
                return 1
            periods, lines, error = store.drain()
            print(f"delivered {periods} periods ({lines} lines) to {store.writer.url}; "
                  f"{store.outbox.records} periods wait" + (f" ({error})" if error else ""))
            return 1 if error else 0
        times = [record.time for record in store.outbox.pending()]
        span = ""
        if times:
            span = f", {_utc(min(times))} to {_utc(max(times))} UTC"
        print(f"{store.outbox.directory}: {len(times)} periods waiting, {store.outbox.pending_bytes} bytes "
              f"(limit {store.outbox.max_bytes}){span}")
        return 0
    finally:
        store.close()


def _utc(seconds: int) -> str:
    return f"{datetime.fromtimestamp(seconds, timezone.utc):%Y-%m-%d %H:%M:%S}"
