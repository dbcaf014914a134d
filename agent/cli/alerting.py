"""The ``alerts`` and ``subscriptions`` commands (administrators' side of alerting)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from agent.cli.human import duration, joined, plural, printable, table, utc

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
    add.add_argument("email", help="the address alerts go to")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--relay", metavar="FINGERPRINT", help="one relay, by its 40-hex-digit fingerprint")
    target.add_argument("--family", metavar="FINGERPRINT", help="every relay in this relay's effective family")
    target.add_argument("--operator", metavar="DOMAIN",
                        help="every relay whose CIISS claim for this domain its AROI proof confirms")
    target.add_argument("--contact", metavar="STRING", help="every relay with exactly this contact line")
    listing = with_config(sub_commands.add_parser("list", help="list subscriptions"), _subscriptions)
    listing.add_argument("--email", help="only this address's")
    listing.add_argument("--json", action="store_true", help="print the subscriptions as a JSON array")
    remove = with_config(sub_commands.add_parser("remove", help="remove a subscription by ID or token"),
                         _subscriptions)
    which = remove.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", type=int, help="the subscription's ID, as `subscriptions list` shows it")
    which.add_argument("--token", help="the unsubscribe token from an alert")


def _alerts(arguments) -> int:
    from agent.alerts.dispatch import Alerting
    from agent.alerts.quality import load, summarise
    from agent.config.loader import load_config
    from agent.pipeline.alert_ids import alert_ids
    from agent.pipeline.state import State

    config = load_config(arguments.config)
    state = State(config.state_dir)
    try:
        alerting = Alerting(config, state.db)
        if arguments.alerts_command == "drain":
            counts = alerting.drain(budget_seconds=120)
            print(f"{counts['delivered']:,} delivered in all, {counts['waiting']:,} waiting, "
                  f"{counts['given_up']:,} given up")
            for line in set_aside_lines(alerting.quarantined()):
                print(line)
            return EXIT_PROBLEM if counts["waiting"] else EXIT_OK
        alerting.sweep()
        active, waiting, counts = alerting.book.active(), alerting.outbox.waiting(), alerting.outbox.counts()
        flap_periods = config.alerts.flap_periods
        episodes, observed = load(state.db)
        report = summarise(episodes, observed, flap_periods, alert_ids())
        if arguments.json:
            print(json.dumps(_status_json(active, waiting, counts, alerting.quarantined(), report, observed,
                                          flap_periods), indent=2))
            return EXIT_OK
        print("\n".join(status_lines(active, waiting, counts, alerting.quarantined(), report, observed,
                                      flap_periods)))
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


def status_lines(active, waiting, counts: dict[str, int], set_aside: dict[str, int], report,
                 observed: dict[str, int], flap_periods: int) -> list[str]:
    """``alerts status`` for people: the active alerts, the messages waiting, then each check's alert quality."""
    lines = [f"active alerts: {len(active) or 'none'}"]
    lines += table([(t.alert.severity, t.alert.label, utc(t.first_seen),
                     "yes" if t.last_notified else "not yet (waiting or silenced)") for t in active],
                   ("severity", "alert", "since", "told"), indent="  ") if active else []
    lines.append(f"messages: {counts['waiting']:,} waiting, {counts['delivered']:,} delivered, "
                 f"{counts['given_up']:,} given up")
    lines += table([(channel, target, subject, attempts, error or "not tried yet")
                    for channel, target, subject, attempts, error in waiting],
                   ("channel", "to", "subject", "tries", "last error"), right={3}, indent="  ") if waiting else []
    lines += set_aside_lines(set_aside)
    return lines + quality_lines(report, observed, flap_periods)


def quality_lines(report, observed: dict[str, int], flap_periods: int) -> list[str]:
    """Each check's alarms per 1,000 periods, mean time to resolve and flaps (``agent.alerts.quality``)."""
    from agent.alerts.quality import FINDINGS

    alarmed = [q for q in report if q.alarms]
    if not alarmed:
        watched = plural(len(report), "check or alert kind", "checks and alert kinds")
        return [f"alert quality: no alarm in the {plural(observed.get(FINDINGS, 0), 'period')} observed"
                + (f" from any of the {watched} (--json lists them)" if report else "")]
    quiet = plural(len(report) - len(alarmed), "other check or alert kind", "other checks and alert kinds")
    rows = [(q.check, f"{q.alarms_per_1000_periods:.1f}", duration(q.mean_seconds_to_resolve), q.flaps,
             q.periods_observed) for q in alarmed]
    header = ("check", "alarms/1000 periods", "mean time to resolve", "flaps", "periods observed")
    return [f"alert quality (a flap: an alarm gone within {plural(flap_periods, 'period')}):",
            *table(rows, header, right={1, 3, 4}),
            *([f"no alarm from the {quiet} (--json lists them)"] if len(alarmed) < len(report) else [])]


def set_aside_lines(counts: dict[str, int]) -> list[str]:
    """``3 deliveries, 1 alert and 1 status value set aside as unreadable``, when any were."""
    nouns = {"deliveries": ("delivery", "deliveries"), "alerts": ("alert", "alerts"),
             "status": ("status value", "status values")}
    parts = [plural(count, *nouns[kind]) for kind, count in counts.items() if count]
    return [f"{joined(parts)} set aside as unreadable (kept with the reason; see docs/alerts.md)"] if parts else []


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
            kind = next(k for k in ("relay", "family", "operator", "contact") if getattr(arguments, k))
            try:
                added = store.add_active(arguments.email, kind, getattr(arguments, kind), int(time.time()))
            except SubscriptionError as error:
                print(f"not added: {error}", file=sys.stderr)
                return EXIT_PROBLEM
            print(f"subscription {added.id}: {printable(added.email)} {added.kind} {printable(added.target)} (active)")
            return EXIT_OK
        if action == "remove":
            removed = store.remove(arguments.id) if arguments.id is not None else store.unsubscribe(arguments.token)
            print("removed" if removed else "no such subscription")
            return EXIT_OK if removed else EXIT_PROBLEM
        shown = store.of(arguments.email) if arguments.email else store.everything()
        if arguments.json:
            print(json.dumps([_subscription_json(s) for s in shown], indent=2))
            return EXIT_OK
        print("\n".join(subscription_lines(shown)))
        return EXIT_OK
    finally:
        state.close()


def subscription_lines(shown) -> list[str]:
    """``subscriptions list`` for people: one aligned row per subscription, then how many."""
    pending = any(s.expires for s in shown)  # only unconfirmed subscriptions expire
    rows = [(s.id, s.status, s.email, s.kind, s.target, utc(s.created),
             *([utc(s.expires) if s.expires else ""] if pending else [])) for s in shown]
    header = ("id", "status", "email", "kind", "target", "created", *(["expires"] if pending else []))
    return [*(table(rows, header, right={0}) if rows else []), plural(len(shown), "subscription")]


def _subscription_json(subscription) -> dict[str, Any]:
    """One subscription for ``subscriptions list --json`` (times in Unix seconds; never the token)."""
    return {"id": subscription.id, "status": subscription.status, "email": subscription.email,
            "kind": subscription.kind, "target": subscription.target, "created": subscription.created,
            "expires": subscription.expires}
