"""The agent's health as ``allium-agent status`` shows it, read from the state file only.

``status`` must answer whatever state the state is in: it opens the file
read-only (it works on a read-only disk, and changes nothing), and a missing,
unreadable or damaged file, or a read-only state directory, is reported as
the reason the agent is unhealthy rather than raised. ``outbox status``
reads the outbox the same way: no lock, no change, beside a running daemon.
Both print aligned ``label  value`` lines for people (agent.cli.human), or
with ``--json`` the raw values.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.cli.human import duration, number, plural, size, table, utc
from agent.config.loader import Config
from agent.model.errors import StateError
from agent.pipeline.state import State

#: Unhealthy when the last recorded period is older than this many periods.
STALE_PERIODS = 2


def health(config: Config, now: float | None = None) -> dict:
    """Last success, last cycle summary, counters, and whether the agent keeps up (or why it cannot)."""
    now = time.time() if now is None else now
    directory = Path(config.state_dir)
    report: dict[str, Any] = {"state": str(directory / "agent.sqlite"), "last_success": None, "last_period": None,
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
        report["quarantined"] = (f"{plural(quarantined, 'unreadable row')} "
                                 f"{'was' if quarantined == 1 else 'were'} set aside in {directory / 'quarantine'}")
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
        return {"healthy": False, "reason": f"last success {duration(now - last_success)} ago, "
                                            f"more than {STALE_PERIODS} periods of {duration(period)}"}
    return {"healthy": True, "reason": f"last success {duration(now - last_success)} ago"}


def _iso(seconds: int | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).isoformat()


def status_command(arguments) -> int:
    """``allium-agent status``: the report, aligned or as JSON; exit 0 healthy, 1 not (the reason says why)."""
    from agent.config.loader import load_config

    report = health(load_config(arguments.config))
    print(json.dumps(report, indent=2) if arguments.json else "\n".join(status_lines(report)))
    return 0 if report["healthy"] else 1


#: How ``status`` names the state's counters (agent.pipeline.state, agent.loop.runner): noun, plural, what.
COUNTERS = {
    "periods_processed": ("period", "periods", "processed"),
    "periods_skipped": ("period", "periods", "skipped (not fetched in time)"),
    "cycles_without_consensus": ("cycle", "cycles", "without an accepted consensus"),
    "cycle_errors": ("cycle", "cycles", "failed with an error"),
    "rows_quarantined": ("unreadable row", "unreadable rows", "set aside"),
}


def status_lines(report: dict) -> list[str]:
    """``status`` for people: one aligned ``label  value`` line per fact, the last cycle's below it."""
    rows: list[tuple[str, str]] = [
        ("healthy", f"{'yes' if report['healthy'] else 'NO'}: {report['reason']}"),
        ("state file", report["state"]),
        ("last success", utc(report["last_success"])),
        ("last period", utc(report["last_period"])),
        ("voting period", duration(report["period_seconds"])),
        ("counters", counters(report["counters"])),
    ]
    if report.get("quarantined"):
        rows.append(("quarantined", report["quarantined"]))
    cycle = report.get("last_cycle")
    if cycle:
        rows += [("last cycle", f"{cycle.get('status', '?')} in {duration(cycle.get('duration_seconds'))}, "
                                f"started {utc(cycle.get('started_at'))}")]
        rows += [(f"  {label}", text) for label, text in _cycle_rows(cycle)]
    else:
        rows.append(("last cycle", "none recorded"))
    return table(rows)


def counters(values: dict[str, int]) -> str:
    """``6 periods processed, 1 cycle without an accepted consensus``; ``none`` when all are zero."""
    parts = []
    order = list(COUNTERS)
    for name, count in sorted(values.items(), key=lambda item: (order.index(item[0]) if item[0] in COUNTERS
                                                                  else len(order), item[0])):
        if name in COUNTERS:
            noun, nouns, what = COUNTERS[name]
            parts.append(f"{plural(count, noun, nouns)} {what}")
        else:
            parts.append(f"{name.replace('_', ' ')} {number(count)}")
    return ", ".join(parts) or "none"


def _cycle_rows(cycle: dict) -> list[tuple[str, str]]:
    """The last cycle's summary (agent.loop.runner) as labelled values; keys it does not know are shown plainly."""
    shown = {"status", "duration_seconds", "started_at", "rejected"}
    rows = []
    if "valid_after" in cycle:
        rows.append(("consensus", f"{utc(cycle['valid_after'])}, periods of {duration(cycle.get('period_seconds'))}"))
        shown |= {"valid_after", "period_seconds"}
    if "points" in cycle:
        rows.append(("points", f"{number(cycle['points'])}: {cycle.get('storage', '')}".rstrip(": ")))
        shown |= {"points", "storage"}
    for key, label, say in (("periods_waiting", "outbox", lambda n: plural(n, "period waits", "periods wait")),
                            ("fetch_failures", "fetches failed", number),
                            ("documents_rejected", "rejected", lambda n: plural(n, "document")),
                            ("notices", "alerts told", number),
                            ("deliveries_waiting", "deliveries", lambda n: plural(n, "message waits", "messages wait")),
                            ("errors", "cycle errors", lambda n: f"{number(n)} in all")):
        if key in cycle:
            rows.append((label, say(cycle[key])))
            shown.add(key)
            if key == "documents_rejected":
                rows += [("", str(item)) for item in cycle.get("rejected", [])]  # one a line, under the count
    if "problem" in cycle:
        rows.append(("problem", str(cycle["problem"])))
        shown.add("problem")
    rows += [(key.replace("_", " "), _plain(value)) for key, value in cycle.items() if key not in shown
             and key != "next_run"]
    rows.append(("next run", utc(cycle.get("next_run"))))
    return rows


def _plain(value: object) -> str:
    """A value of the state shown without Python's notation: lists and mappings as comma-separated text."""
    if isinstance(value, dict):
        return ", ".join(f"{key} {_plain(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_plain(item) for item in value)
    return number(value) if isinstance(value, int | float) else str(value)


def outbox_command(arguments) -> int:
    """``allium-agent outbox status|drain``: exit 1 if there is no TSDB to drain to or it did not take the periods.

    ``status`` only reads (``agent.store.outbox.inspect``): it takes no lock,
    so it answers beside a running daemon, starts no store and changes nothing.
    """
    from agent.config.loader import load_config

    config = load_config(arguments.config)
    if arguments.outbox_command == "status":
        from agent.store.outbox import inspect

        view = inspect(Path(config.state_dir) / "outbox", config.store.outbox_max_bytes)
        print(json.dumps(_outbox_json(view), indent=2) if arguments.json else "\n".join(outbox_lines(view)))
        return 0
    from agent.store.store import Store

    store = Store.from_config(config)
    try:
        if store.writer is None:
            print("no store to drain to (no store.url, and no embedded store running)", file=sys.stderr)
            return 1
        periods, lines, error = store.drain()
        print(f"delivered {plural(periods, 'period')} ({plural(lines, 'line')}) to {store.writer.url}; "
              f"{plural(store.outbox.records, 'period')} waiting" + (f" ({error})" if error else ""))
        return 1 if error else 0
    finally:
        store.close()


def outbox_lines(view) -> list[str]:
    """``outbox status`` for people: where, how many periods of which hours, how full."""
    waiting = plural(view.periods, "period")
    if view.periods:
        waiting += f", {utc(view.first)} to {utc(view.last)}" if view.first != view.last else f", {utc(view.first)}"
    share = 100 * view.pending_bytes / view.max_bytes if view.max_bytes else 0
    rows = [("outbox", str(view.directory)), ("waiting", waiting),
            ("size", f"{size(view.pending_bytes)} of {size(view.max_bytes)} ({share:.1f} % full)")]
    if view.damaged:
        rows.append(("damaged", f"{plural(view.damaged, 'stretch', 'stretches')}, {size(view.damaged_bytes)} "
                                "(set aside when the agent next opens the outbox; the newest may be a period "
                                "being written)"))
    return table(rows)


def _outbox_json(view) -> dict:
    """``outbox status --json``: raw counts, bytes, and times as ``YYYY-MM-DDTHH:MM:SSZ`` (null if none)."""
    return {"directory": str(view.directory), "periods_waiting": view.periods, "pending_bytes": view.pending_bytes,
            "max_bytes": view.max_bytes, "first_period": None if view.first is None else utc(view.first),
            "last_period": None if view.last is None else utc(view.last), "damaged_stretches": view.damaged,
            "damaged_bytes": view.damaged_bytes}
