"""The ``allium-agent`` command line; the only place logging is configured.

Exit codes: 0 success; 1 the command ran but found a problem (``once``: no
authority served a consensus with a quorum of valid signatures); 2 bad
configuration or usage; 3 the private network could not be managed; 4 the
state directory or a state file cannot be used (read-only, disk full,
damaged: the one-line message names the file and the cause). Any other
AlliumError is printed in one line and exits 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from datetime import timezone
from pathlib import Path

from agent import __version__
from agent.cli.backfill import add_commands as add_backfill_commands
from agent.cli.backfill import utc_time
from agent.model.errors import AlliumError, ConfigError, StateError, StoreError, TestnetError

log = logging.getLogger("agent")

EXIT_OK, EXIT_PROBLEM, EXIT_CONFIG, EXIT_TESTNET, EXIT_STATE = 0, 1, 2, 3, 4


def _with_config(parser: argparse.ArgumentParser, handler) -> argparse.ArgumentParser:
    """Adds the --config option every agent command takes, and the function that runs the command."""
    parser.add_argument("--config", help="config file (default: $ALLIUM_AGENT_CONFIG or the defaults)")
    parser.set_defaults(handler=handler)
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="allium-agent",
                                     description="Watches the Tor network's directory authorities.")
    parser.add_argument("--version", action="version", version=f"allium-agent {__version__}")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="overrides logging.level from the config")
    commands = parser.add_subparsers(dest="command", required=True)

    config = commands.add_parser("config", help="configuration tools")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate a config file and report every problem")
    check.set_defaults(handler=lambda arguments: _config_check(arguments.file))
    check.add_argument("file", nargs="?", help="config file (default: $ALLIUM_AGENT_CONFIG or the defaults)")

    once = _with_config(commands.add_parser("once", help="fetch one voting period now and report per authority"), _once)
    once.add_argument("--json", action="store_true", help="print the documented JSON object (docs/once-json.md)")

    _with_config(commands.add_parser("run", help="run as a daemon: one cycle per voting period until SIGTERM/SIGINT"),
                 _run)

    status = _with_config(commands.add_parser("status", help="the last cycle and the agent's health (exit 1 if stale)"),
                          _later("status_command"))
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    checks = _with_config(commands.add_parser(
        "check", help="run the consensus-health checks now (or on files) and list findings"), _check)
    checks.add_argument("--from", dest="paths", nargs="+", action="extend", metavar="PATH",
                        help="judge the newest period in these files instead of fetching (repeatable)")
    checks.add_argument("--json", action="store_true", help="print the findings as JSON")

    add_backfill_commands(commands, _with_config)  # agent/cli/backfill.py

    outbox = commands.add_parser("outbox", help="the periods waiting for the TSDB")
    outbox_commands = outbox.add_subparsers(dest="outbox_command", required=True)
    outbox_status = _with_config(outbox_commands.add_parser(
        "status", help="show how many periods wait, their time range and the outbox's size (read-only: works "
                       "beside a running daemon)"), _later("outbox_command"))
    outbox_status.add_argument("--json", action="store_true", help="print the status as one JSON object")
    _with_config(outbox_commands.add_parser("drain", help="deliver waiting periods to the store now, oldest first"),
                 _later("outbox_command"))

    query = _with_config(commands.add_parser(
        "query", help="run a PromQL query against query.url (VictoriaMetrics or Prometheus)"), _query)
    query.add_argument("promql", help="the query, e.g. 'tor_network_relays'")
    when = query.add_mutually_exclusive_group()
    when.add_argument("--at", type=utc_time, help="evaluate at this time (UTC) instead of now")
    when.add_argument("--range", dest="range_", metavar="DURATION", help="a range query over e.g. 7d, 24h, 90m")
    query.add_argument("--step", metavar="DURATION", help="range step (default: the range / 250)")
    query.add_argument("--format", choices=("table", "csv", "json"), default="table",
                       help="table: aligned, numbers by magnitude (default); csv: the raw values; json: the "
                            "endpoint's data object")

    from agent.cli.alerting import add_commands

    add_commands(commands, _with_config)
    from agent.cli.detect import add_commands as add_detect_commands

    add_detect_commands(commands, _with_config)
    from agent.cli.demo import add_commands as add_demo_commands

    add_demo_commands(commands, _with_config)
    from agent.cli.relay import add_commands as add_relay_commands

    add_relay_commands(commands, _with_config)
    from agent.cli.aroi import add_commands as add_aroi_commands

    add_aroi_commands(commands, _with_config)
    from agent.cli.reports import add_commands as add_report_commands

    add_report_commands(commands, _with_config)
    from agent.cli.apikeys import add_commands as add_api_key_commands

    add_api_key_commands(commands, _with_config)

    testnet = commands.add_parser("testnet", help="a private Tor network on 127.0.0.1")
    testnet_commands = testnet.add_subparsers(dest="testnet_command", required=True)
    for name, text in (("up", "create (if needed) and start the network, wait for a consensus"),
                       ("status", "show each node, its pid and the consensus each authority serves"),
                       ("down", "stop every node by PID"),
                       ("start", "start stopped nodes (all, or those named)"),
                       ("stop", "stop nodes by name, e.g. one authority")):
        sub = testnet_commands.add_parser(name, help=text)
        sub.set_defaults(handler=_testnet)
        sub.add_argument("--dir", default="testnet", help="the network's directory (default: ./testnet)")
        if name in ("start", "stop"):
            sub.add_argument("nodes", nargs="*", help="node names (default: all)")
        if name == "up":
            sub.add_argument("--authorities", type=int, default=3, help="directory authorities (default 3)")
            sub.add_argument("--relays", type=int, default=3, help="relays (default 3)")
            sub.add_argument("--interval", type=int, default=10, help="voting interval in seconds (default 10)")
            sub.add_argument("--no-wait", action="store_true", help="return without waiting for a consensus")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    _configure_logging(arguments.log_level or "INFO")
    try:
        return arguments.handler(arguments)
    except ConfigError as error:
        print(f"configuration error in {error.source}:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except TestnetError as error:
        print(f"testnet: {error}", file=sys.stderr)
        return EXIT_TESTNET
    except StoreError as error:
        print(f"store: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    except StateError as error:
        print(f"state: {error}", file=sys.stderr)
        return EXIT_STATE
    except AlliumError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_PROBLEM


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S")
    from agent.model.redact import install_log_filter

    install_log_filter()  # credentials out of every record, whoever logs it
    # urllib3 logs every connection at DEBUG and retries at WARNING; our records say it better.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    # APScheduler logs every job run at INFO; our one summary line per cycle says more.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _later(name: str):
    """A handler from agent.cli.health, imported only when its command runs (``status``, ``outbox``)."""
    return lambda arguments: getattr(importlib.import_module("agent.cli.health"), name)(arguments)


def _config_check(path: str | None) -> int:
    from agent.config.loader import load_config

    config = load_config(path)
    print(f"{config.source}: OK ({len(config.authorities.bootstrap)} bootstrap authorities, "
          f"vantage {config.vantage!r})")
    return EXIT_OK


def _once(arguments) -> int:
    from agent.cli.report import build_report, command_seconds, render_table
    from agent.config.loader import load_config
    from agent.loop.once import run_cycle
    from agent.metrics.geoip import load_or_empty
    from agent.pipeline.state import State
    from agent.store.store import Store

    config = load_config(arguments.config)
    if not arguments.log_level:
        logging.getLogger().setLevel(config.log_level)
    state = State(config.state_dir)
    store = Store.from_config(config)
    try:
        result = run_cycle(config, state, store, load_or_empty(config.metrics.geoip_file))
    finally:
        store.close()
        state.close()
    report = build_report(result.snapshot, result.saved)
    print(json.dumps(report, indent=2) if arguments.json else render_table(report, command_seconds()))
    return EXIT_OK if report["valid_after"] else EXIT_PROBLEM


def _run(arguments) -> int:
    import signal
    import threading

    from agent.config.loader import load_config
    from agent.loop.runner import PeriodRunner
    from agent.loop.scheduler import Daemon, exit_when_shutdown_overruns
    from agent.metrics.geoip import load_or_empty
    from agent.pipeline.state import State
    from agent.store.store import Store

    config = load_config(arguments.config)
    if not arguments.log_level:
        logging.getLogger().setLevel(config.log_level)
    stop = threading.Event()

    def request_stop(signum, frame):
        log.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    exit_when_shutdown_overruns(stop, config.schedule.grace_seconds, EXIT_OK)  # whatever still runs then
    state = State(config.state_dir)
    store = Store.from_config(config)
    log.info("allium-agent %s starting: vantage %s, %d bootstrap authorities, store %s, state %s",
             __version__, config.vantage, len(config.authorities.bootstrap), _store_name(store),
             config.state_dir)
    runner = PeriodRunner(config, state, store, load_or_empty(config.metrics.geoip_file))
    web = None
    if config.subscriptions.listen:
        from agent.web.subscriptions import WebServer

        web = WebServer(config, proofs=runner.proofs.book).start()
    finished = Daemon(runner, stop, config.schedule.grace_seconds).run()
    runner.proofs.stop()
    if web is not None:
        web.stop()
    if not finished:
        # The cycle thread is stuck in I/O; everything it stored is fsync'd in the outbox.
        logging.shutdown()
        os._exit(EXIT_OK)
    store.close()
    state.close()
    log.info("stopped")
    return EXIT_OK


def _store_name(store) -> str:
    """Where points go, for the start-up line: the TSDB, the embedded store or only the outbox."""
    if store.writer is None:
        return "outbox only"
    return f"embedded store {store.writer.url}" if store.embedded is not None else store.writer.where


def _check(arguments) -> int:
    from agent.config.loader import load_config
    from agent.pipeline.judge import Memory, judge_checks

    config = load_config(arguments.config)
    if arguments.paths:
        from agent.loop.backfill import newest_snapshot

        snapshot, read = newest_snapshot([Path(p) for p in arguments.paths], config)
        for problem in read.read.unreadable:
            print(f"problem: {problem}", file=sys.stderr)
        if snapshot is None:
            print("no usable consensus in the files", file=sys.stderr)
            return EXIT_CONFIG
    else:
        from agent.loop.collect import collect

        snapshot = collect(config)
    findings, _ = judge_checks(snapshot, Memory(), config)
    active = [f for f in findings if not f.silenced_by]
    if arguments.json:
        print(json.dumps({"valid_after": str(snapshot.valid_after) if snapshot.valid_after else None,
                          "findings": [f.as_dict() for f in findings]}, indent=2))
    else:
        for finding in findings:
            muted = f" [silenced: {finding.silenced_by}]" if finding.silenced_by else ""
            print(f"[{finding.severity}] {finding.check}: {finding.description}{muted}")
        from agent.cli.human import plural

        counts = {s: sum(1 for f in active if f.severity == s) for s in ("critical", "warning", "info")}
        print(f"{plural(len(findings), 'finding')} ({counts['critical']} critical, {counts['warning']} warning, "
              f"{counts['info']} info, {len(findings) - len(active)} silenced)")
    if any(f.severity == "critical" for f in active):
        return 2
    return 1 if any(f.severity == "warning" for f in active) else EXIT_OK


def _query(arguments) -> int:
    from agent.config.loader import load_config
    from agent.model.errors import QueryError
    from agent.store.query import columns, duration_seconds, render, run_query
    from agent.store.store import query_endpoint

    config = load_config(arguments.config)
    try:
        range_seconds = duration_seconds(arguments.range_) if arguments.range_ else None
        step_seconds = duration_seconds(arguments.step) if arguments.step else None
    except ValueError as error:
        print(f"query: {error}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        with query_endpoint(config) as url:  # query.url, else the embedded store (started for the query if need be)
            if url is None:
                print("no query.url configured and no embedded store (set query.url to a PromQL endpoint, e.g. "
                      "http://127.0.0.1:8428, or install victoria-metrics)", file=sys.stderr)
                return EXIT_CONFIG
            result = run_query(url, arguments.promql, arguments.at and arguments.at.replace(
                tzinfo=timezone.utc), range_seconds, step_seconds, config.query.timeout_seconds)
    except QueryError as error:
        print(f"query failed: {error}", file=sys.stderr)
        return EXIT_PROBLEM
    if arguments.format != "table":
        sys.stdout.write(render(result, arguments.format))
        return EXIT_OK
    from agent.cli.human import number, table

    header, rows = columns(result)  # values by magnitude for people; csv and json keep them raw
    shown = table([[*row[:-1], number(row[-1])] for row in rows], header, right={len(header) - 1})
    print("\n".join(shown) if shown[1:] else "(no data)")
    return EXIT_OK


def _testnet(arguments) -> int:
    from agent.testnet import network as testnet
    from agent.testnet.watch import describe, status_lines, wait_until_ready

    directory = Path(arguments.dir)
    action = arguments.testnet_command
    if action == "up":
        if (directory / testnet.DESCRIPTION).exists():
            network = testnet.Network.load(directory)
        else:
            network = testnet.create(directory, arguments.authorities, arguments.relays, arguments.interval)
        testnet.start(network)
        if not arguments.no_wait:
            try:
                ready = wait_until_ready(network)
            except TestnetError:
                testnet.stop(network)  # never leave half a network running behind a failed command
                print(f"testnet: stopped every node; their logs are in {network.directory}", file=sys.stderr)
                raise
            for served in ready:
                print(describe(served))
        print(f"agent config: {network.directory / testnet.AGENT_CONFIG}")
        return EXIT_OK
    network = testnet.Network.load(directory)
    if action == "status":
        print("\n".join(status_lines(network)))
    elif action == "start":
        testnet.start(network, arguments.nodes or None)
        print("\n".join(status_lines(network)))
    else:  # down, stop
        names = None if action == "down" else (arguments.nodes or None)
        stopped = testnet.stop(network, names)
        print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
    return EXIT_OK
