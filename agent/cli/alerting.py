"""The ``alerts`` and ``subscriptions`` commands (administrators' side of alerting)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

EXIT_OK, EXIT_PROBLEM = 0, 1


def add_commands(commands, with_config) -> None:
    alerts = commands.add_parser("alerts", help="active alerts and the delivery outbox")
    alert_commands = alerts.add_subparsers(dest="alerts_command", required=True)
    status = with_config(alert_commands.add_parser(
        "status", help="active alerts, messages waiting for delivery and each check's alert quality"), _alerts)
    status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    with_config(alert_commands.add_parser("drain", help="try every waiting message now"), _alerts)

    subscriptions = commands.add_parser("subscriptions", help="relay-operator subscriptions")
    sub_commands = subscriptions.add_subparsers(dest="subscriptions_command", required=True)
    add = with_config(sub_commands.add_parser("add", help="add an active subscription (no confirmation mail)"),
                      _subscriptions)
    add.add_argument("email")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--relay", metavar="FINGERPRINT")
    target.add_argument("--family", metavar="FINGERPRINT", help="every relay in this relay's effective family")
    target.add_argument("--contact", metavar="STRING", help="every relay with exactly this contact line")
    listing = with_config(sub_commands.add_parser("list", help="list subscriptions"), _subscriptions)
    listing.add_argument("--email", help="only this address's")
    remove = with_config(sub_commands.add_parser("remove", help="remove a subscription by ID or token"),
                         _subscriptions)
    which = remove.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int)
    which.add_argument("--token", help="the unsubscribe token from an alert")


def _alerts(arguments) -> int:
    from agent.alerts.dispatch import Alerting
    from agent.alerts.quality import load, summarise
    from agent.config.loader import load_config
    from agent.pipeline.state import State

    config = load_config(arguments.config)
    state = State(config.state_dir)
    try:
        alerting = Alerting(config, state.db)
        if arguments.alerts_command == "drain":
            counts = alerting.drain(budget_seconds=120)
            print(f"{counts['delivered']} delivered in all, {counts['waiting']} waiting, {counts['given_up']} given up")
            _print_set_aside(alerting.quarantined())
            return EXIT_PROBLEM if counts["waiting"] else EXIT_OK
        alerting.sweep()
        active, waiting, counts = alerting.book.active(), alerting.outbox.waiting(), alerting.outbox.counts()
        flap_periods = config.alerts.flap_periods
        episodes, observed = load(state.db)
        report = summarise(episodes, observed, flap_periods)
        if arguments.json:
            print(json.dumps(_status_json(active, waiting, counts, alerting.quarantined(), report, observed,
                                          flap_periods), indent=2))
            return EXIT_OK
        for tracked in active:
            told = "told" if tracked.last_notified else "not told (waiting or silenced)"
            print(f"[{tracked.alert.severity}] {_printable(tracked.alert.label)} since "
                  f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(tracked.first_seen))} UTC, {told}")
        for channel, target, subject, attempts, error in waiting:
            print(f"waiting: {channel} to {_printable(target)}: {_printable(subject)} "
                  f"({attempts} attempts; {_printable(error or 'not tried yet')})")
        print(f"{counts['waiting']} waiting, {counts['delivered']} delivered, {counts['given_up']} given up")
        _print_set_aside(alerting.quarantined())
        _print_quality(report, observed, flap_periods)
        return EXIT_OK
    finally:
        state.close()


def _status_json(active, waiting, counts: dict[str, int], set_aside: dict[str, int], report,
                 observed: dict[str, int], flap_periods: int) -> dict[str, Any]:
    """``alerts status --json``: the same as the text, as one object (times in Unix seconds)."""
    return {
        "active": [{"key": t.alert.key, "id": t.alert.id, "severity": t.alert.severity, "label": t.alert.label,
                    "first_seen": t.first_seen, "told": t.last_notified is not None} for t in active],
        "waiting": [{"channel": channel, "target": target, "subject": subject, "attempts": attempts,
                     "last_error": error} for channel, target, subject, attempts, error in waiting],
        "deliveries": counts,
        "set_aside": set_aside,
        "quality": {"flap_periods": flap_periods, "periods_observed": observed,
                    "checks": [q.as_dict() for q in report]},
    }


def _print_quality(report, observed: dict[str, int], flap_periods: int) -> None:
    """Each check's alarms per 1,000 periods, mean time to resolve and flaps (``agent.alerts.quality``)."""
    from agent.alerts.quality import FINDINGS, table

    if not report:
        print(f"alert quality: no alarm in the {observed.get(FINDINGS, 0)} periods observed")
        return
    print(f"alert quality (a flap: an alarm gone within {flap_periods} periods):")
    for line in table(report):
        print(_printable(line))


def _print_set_aside(counts: dict[str, int]) -> None:
    """``3 deliveries, 1 alert and 1 status value set aside as unreadable``, when any were."""
    nouns = {"deliveries": ("delivery", "deliveries"), "alerts": ("alert", "alerts"),
             "status": ("status value", "status values")}
    parts = [f"{count} {nouns[kind][count != 1]}" for kind, count in counts.items() if count]
    if parts:
        listed = ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]
        print(f"{listed} set aside as unreadable (kept with the reason; see docs/alerts.md)")


def _printable(text: object) -> str:
    """Text from the state (addresses, subjects, servers' errors) with control characters shown as escapes."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def _subscriptions(arguments) -> int:
    from agent.config.loader import load_config
    from agent.model.errors import SubscriptionError
    from agent.pipeline.state import State
    from agent.subscriptions.store import SubscriptionStore

    config = load_config(arguments.config)
    state = State(config.state_dir)
    store = SubscriptionStore(state.db)
    try:
        action = arguments.subscriptions_command
        if action == "add":
            kind = next(k for k in ("relay", "family", "contact") if getattr(arguments, k))
            try:
                added = store.add_active(arguments.email, kind, getattr(arguments, kind), int(time.time()))
            except SubscriptionError as error:
                print(f"not added: {error}", file=sys.stderr)
                return EXIT_PROBLEM
            print(f"subscription {added.id}: {added.email} {added.kind} {added.target} (active)")
            return EXIT_OK
        if action == "remove":
            removed = store.remove(arguments.id) if arguments.id is not None else store.unsubscribe(arguments.token)
            print("removed" if removed else "no such subscription")
            return EXIT_OK if removed else EXIT_PROBLEM
        shown = store.of(arguments.email) if arguments.email else store.everything()
        for s in shown:
            print(f"{s.id}\t{s.status}\t{s.email}\t{s.kind}\t{s.target}")
        print(f"{len(shown)} subscriptions")
        return EXIT_OK
    finally:
        state.close()
