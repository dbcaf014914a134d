"""``allium-agent report monthly``: render the monthly report mails, to files or stdout, or queue them.

Without ``--send`` nothing is queued: the reports are printed (plain text)
or, with ``--out DIR``, written as ``monthly-<YYYY-MM>-<id>.txt``, ``.html``
and ``.png`` (the HTML file shows the PNG beside it; the mail refers to it
by ``cid:``). ``--send`` queues them through the delivery outbox (a month
already queued for a subscription is not queued again) and tries to deliver.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

EXIT_OK, EXIT_PROBLEM, EXIT_CONFIG = 0, 1, 2


def add_commands(commands, with_config) -> None:
    report = commands.add_parser("report", help="reports mailed to subscribers")
    kinds = report.add_subparsers(dest="report_command", required=True)
    monthly = with_config(kinds.add_parser(
        "monthly", help="each active subscription's report on a month: print, write to files, or queue the mails"),
        _monthly)
    monthly.add_argument("--month", metavar="YYYY-MM", help="the month (UTC; default: the previous one)")
    monthly.add_argument("--subscription", type=int, metavar="ID", help="only this subscription's")
    monthly.add_argument("--send", action="store_true",
                         help="queue the mails (once per subscription and month) and try to deliver them")
    monthly.add_argument("--out", metavar="DIR", help="write each report as .txt, .html and .png into DIR")


def _monthly(arguments) -> int:
    from agent.alerts.dispatch import Alerting
    from agent.config.loader import load_config
    from agent.model.errors import QueryError
    from agent.pipeline.state import State
    from agent.reports.mail import queue_month, render, subscriptions_for
    from agent.reports.monthly import Month, build
    from agent.store.store import query_endpoint

    try:
        month = Month.parse(arguments.month) if arguments.month else Month.before(time.time())
    except ValueError as error:
        print(error, file=sys.stderr)
        return EXIT_CONFIG
    config = load_config(arguments.config)
    state = State(config.state_dir)
    try:
        alerting = Alerting(config, state.db)
        chosen = subscriptions_for(state.db, month, arguments.subscription)
        if not chosen:
            print(f"no active subscription{' ' + str(arguments.subscription) if arguments.subscription else ''} "
                  f"existed in {month.label}", file=sys.stderr)
            return EXIT_PROBLEM
        with query_endpoint(config) as url:
            if url is None:
                print("no PromQL endpoint: set query.url (or use the embedded store)", file=sys.stderr)
                return EXIT_CONFIG
            try:
                if arguments.send:
                    queued, failed = queue_month(config, alerting, url, month, arguments.subscription)
                    counts = alerting.drain(budget_seconds=120)
                    print(f"{month.label}: {queued:,} report(s) queued ({len(chosen) - queued - failed:,} queued "
                          f"before), {failed:,} failed; outbox: {counts['waiting']:,} waiting, "
                          f"{counts['delivered']:,} delivered")
                    return EXIT_PROBLEM if failed else EXIT_OK
                for subscription in chosen:
                    report = build(state.db, url, subscription, month, config.query.timeout_seconds)
                    rendered = render(report, config.vantage, config.alerts.public_url)
                    if arguments.out:
                        for path in _write(Path(arguments.out), rendered, month.label, subscription.id):
                            print(path)
                    else:
                        print(f"Subject: {rendered.message.subject}\nTo: {subscription.email}\n")
                        print(rendered.message.text)
            except QueryError as error:
                print(f"the store did not answer: {error}", file=sys.stderr)
                return EXIT_PROBLEM
        return EXIT_OK
    finally:
        state.close()


def _write(directory: Path, rendered, label: str, subscription_id: int) -> list[Path]:
    """The report as three files; the HTML page refers to the PNG file where the mail refers to its cid."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = directory / f"monthly-{label}-{subscription_id}"
    message = rendered.message
    page = message.html
    for image in message.images:
        page = page.replace(f"cid:{image.cid}", stem.with_suffix(".png").name)
    written = [stem.with_suffix(".txt"), stem.with_suffix(".html"), stem.with_suffix(".png")]
    written[0].write_text(f"Subject: {message.subject}\n\n{message.text}", encoding="utf-8")
    written[1].write_text(f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
                          f"{_escape(message.subject)}</title></head><body>\n{page}\n</body></html>\n",
                          encoding="utf-8")
    written[2].write_bytes(rendered.png)
    return written


def _escape(text: str) -> str:
    import html

    return html.escape(text)
