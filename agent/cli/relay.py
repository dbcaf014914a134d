"""The ``relay`` command: per authority, the flags a relay was voted, those withheld, and why.

``allium-agent relay FINGERPRINT`` fetches the current votes (and the
period's server descriptors) from the authorities, as ``once`` does;
``--from PATH...`` reads votes and server descriptors from files,
directories or CollecTor archives instead, and uses the newest period's
votes (no consensus needed). Each vote's author signature is checked with
the key certificate it carries; a vote whose signature provably fails is
left out unless ``--unverified`` (cropped samples have such signatures).

The explanations are ``agent.metrics.eligibility``'s; docs/relays.md gives
the rules. The ``stats`` lines (the authority's WFU, time known and MTBF)
are read from each vote (tor 0.4.7 and later write them); where a vote has
none, ``--history`` derives the figures from the agent's store (the relay's
``tor_relay_flag_running`` series).
"""

from __future__ import annotations

import json
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_NOT_LISTED, EXIT_CONFIG = 0, 1, 2
_FINGERPRINT = re.compile(r"\$?([0-9A-Fa-f]{40})")
_VALID_AFTER = re.compile(rb"^valid-after (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)$", re.M)
HISTORY_DAYS = 30


def add_commands(commands, with_config) -> None:
    relay = with_config(commands.add_parser(
        "relay", help="explain, per authority, which flags a relay was voted or withheld and why"), _relay)
    relay.add_argument("fingerprint", type=fingerprint, help="the relay's fingerprint (40 hex digits, spaces or a "
                                                               "leading $ allowed)")
    relay.add_argument("--from", dest="paths", nargs="+", action="extend", metavar="PATH",
                       help="read votes (and server descriptors) from these files, directories or archives "
                            "instead of fetching; the newest period's votes are used (repeatable)")
    relay.add_argument("--unverified", action="store_true",
                       help="with --from: also use votes whose signature fails (e.g. cropped samples)")
    relay.add_argument("--history", action="store_true",
                       help=f"derive WFU, time known and MTBF from the store's last {HISTORY_DAYS} days of the "
                            "relay's Running flag where a vote has no stats line")
    relay.add_argument("--hsdir-hours", type=float, default=96, metavar="HOURS",
                       help="the uptime HSDir needs (MinUptimeHidServDirectoryV2, not in votes; default 96, "
                            "tor's; 0 on a test network)")
    relay.add_argument("--json", action="store_true", help="print the explanation as JSON")


def fingerprint(text: str) -> str:
    """``$ABCD...``, ``abcd ...`` (Relay Search groups it in fours) -> 40 upper-case hex digits."""
    import argparse

    match = _FINGERPRINT.fullmatch(text.replace(" ", ""))
    if match is None:
        raise argparse.ArgumentTypeError(f"{text[:60]!r}: expected a relay fingerprint, 40 hex digits")
    return match.group(1).upper()


def _relay(arguments) -> int:
    from agent.config.loader import load_config
    from agent.metrics.eligibility import explain
    from agent.metrics.thresholds import VoteStats, vote_stats

    config = load_config(arguments.config)
    problems: list[str] = []
    votes: list[tuple[Any, bytes | None, str | None]]
    if arguments.paths:
        votes, descriptors = _from_files([Path(p) for p in arguments.paths], arguments.unverified, problems)
        if not votes:  # what was wrong with the files is logged already
            print("no usable vote in the files", file=sys.stderr)
            return EXIT_CONFIG
    else:
        from agent.loop.collect import collect

        snapshot = collect(config)
        votes = [(vote, None, None) for vote in snapshot.votes()]
        descriptors = snapshot.server_descriptors
        if not votes:
            problems.append("no authority served its vote this period")
    history = None
    if arguments.history and votes:
        history = _history(config, arguments.fingerprint, max(v.valid_after for v, _, _ in votes), problems)
    verdicts = []
    for vote, raw, trust in votes:
        stats = (vote_stats(raw) if raw is not None else VoteStats(vote)).get(arguments.fingerprint)
        descriptor = descriptor_for(descriptors, arguments.fingerprint, getattr(vote, "published", vote.valid_after))
        verdicts.append((explain(vote, arguments.fingerprint, descriptor, stats or history,
                                 arguments.hsdir_hours * 3600), trust))
    verdicts.sort(key=lambda pair: pair[0].authority.lower())
    valid_after = max(vote.valid_after for vote, _, _ in votes) if votes else None
    if arguments.json:
        print(json.dumps({"fingerprint": arguments.fingerprint, "valid_after": _utc(valid_after),
                          "source": "files" if arguments.paths else "live", "problems": problems,
                          "authorities": [{**verdict.as_dict(), "vote_signature": trust}
                                          for verdict, trust in verdicts]}, indent=2))
    else:
        print("\n".join(render([verdict for verdict, _ in verdicts], arguments.fingerprint, valid_after, problems)))
    return EXIT_OK if any(verdict.listed for verdict, _ in verdicts) else EXIT_NOT_LISTED


def _from_files(paths: list[Path], unverified: bool, problems: list[str]) -> tuple[list[Any], list]:
    """The newest period's votes (one per author: vote, bytes, signature verdict) and every server descriptor."""
    from agent.loop.archived import parse_raw
    from agent.model.snapshot import DocKind
    from agent.parse.archive import ReadReport, read_paths
    from agent.parse.signatures import vote_trust

    report = ReadReport()
    newest: bytes = b""
    kept: list = []
    descriptors: list = []
    for document in read_paths(paths, report):
        if document.kind is DocKind.VOTE:
            match = _VALID_AFTER.search(document.raw[:4000])
            if match is None:
                report.problem(document.name, "a vote without a valid-after line")
            elif match.group(1) > newest:  # the times compare as text: fixed width, most significant first
                newest, kept = match.group(1), [document]
            elif match.group(1) == newest:
                kept.append(document)
        elif document.kind is DocKind.SERVER_DESCRIPTORS:
            descriptors.extend(parse_raw(document, report) or [])
    votes: dict[str, tuple[Any, bytes, Any]] = {}  # author -> (vote, bytes, Trust)
    for document in kept:
        vote = parse_raw(document, report)
        if vote is None:
            continue
        trust = vote_trust(document.raw, vote)
        author = vote.directory_authorities[0].v3ident if vote.directory_authorities else document.name
        if trust.rejected and not unverified:
            report.problem(document.name, f"vote left out: {trust.reason} (--unverified uses it)")
        elif author in votes and not (trust.verified and not votes[author][2].verified):
            report.problem(document.name, f"vote left out: another vote by {author} of the same period is used")
        else:
            votes[author] = (vote, document.raw, trust)
    problems.extend(report.unreadable or [])
    return [(vote, raw, f"{trust.verdict}: {trust.reason}") for vote, raw, trust in votes.values()], descriptors


def descriptor_for(descriptors: list, fingerprint: str, when: datetime) -> Any:
    """The descriptor an authority voting at ``when`` had: the newest published by then, else the oldest after."""
    from agent.metrics.eligibility import utc

    mine = sorted((d for d in descriptors if d.fingerprint == fingerprint), key=lambda d: utc(d.published))
    before = [d for d in mine if utc(d.published) <= utc(when)]
    return before[-1] if before else (mine[0] if mine else None)


def _history(config, fingerprint: str, valid_after: datetime, problems: list[str]):
    """WFU, time known and MTBF derived from the store's hourly ``tor_relay_flag_running`` of the relay.

    Periods the store has no ``tor_network_relays`` for (the agent was not
    running) are left out, not counted down; the relay is known from its
    first period in the store.
    """
    from agent.metrics.eligibility import utc
    from agent.model.errors import QueryError
    from agent.store.query import run_query
    from agent.store.store import query_endpoint

    at = utc(valid_after)
    seconds = HISTORY_DAYS * 86400
    try:
        with query_endpoint(config) as url:
            if url is None:
                problems.append("--history: no query.url configured and no embedded store")
                return None
            relay = run_query(url, f'tor_relay_flag_running{{fingerprint="{fingerprint}"}}', at, seconds, 3600,
                              config.query.timeout_seconds)
            network = run_query(url, "tor_network_relays", at, seconds, 3600, config.query.timeout_seconds)
    except QueryError as error:
        problems.append(f"--history: {error}")
        return None
    running = {time: float(value) == 1 for _, samples in relay.series for time, value in samples}
    if not running:
        problems.append("--history: the store has no period of this relay")
        return None
    known = sorted({time for _, samples in network.series for time, _ in samples} | running.keys())
    # A step's sample stands for the period before it; the relay is known from its first period on.
    samples = [(time - 3600, running.get(time, False)) for time in known if time >= min(running)]
    return history_from_running(samples, at.timestamp())


def history_from_running(samples, now: float, period: float = 3600):
    """WFU, time known and MTBF as an authority's rephist would have them, from periods seen Running or not.

    ``samples``: (start, running) of each voting period the agent knows, in
    Unix seconds; a period the agent has no data for is left out, not
    counted down. Weights decay as tor's (5 % every 12 h, rephist.c's
    STABILITY_ALPHA and STABILITY_INTERVAL; here continuously), so these
    approximate, never equal, an authority's figures.
    """
    from agent.metrics.thresholds import RelayStats

    points = sorted((start, up) for start, up in samples if start < now)
    if not points:
        return None

    def weight(at: float) -> float:
        return float(0.95 ** ((now - at) / (12 * 3600)))

    known = up_time = 0.0
    runs: list[tuple[float, float]] = []  # (length, end) of each run of consecutive Running periods
    for start, up in points:
        end = min(start + period, now)
        known += weight(end) * (end - start)
        if up:
            up_time += weight(end) * (end - start)
            if runs and runs[-1][1] == start:  # a down period, or a gap in what we know, ends a run
                runs[-1] = (runs[-1][0] + end - start, end)
            else:
                runs.append((end - start, end))
    weights = [weight(end) for _, end in runs]  # a run reaching ``now`` counts in full, as tor's current run
    mtbf = sum(w * length for w, (length, _) in zip(weights, runs)) / sum(weights) if runs else 0.0
    return RelayStats(up_time / known if known else 0.0, known, mtbf,
                      f"derived from the agent's consensus history ({len(points)} periods)", derived=True)


def render(verdicts: list, fingerprint: str, valid_after: datetime | None, problems: list[str]) -> list[str]:
    """The table for people: a row per withheld flag (and per voted flag its rule says fails), then thresholds."""
    from agent.cli.human import plural, table

    nickname = next((verdict.nickname for verdict in verdicts if verdict.nickname), None)
    lines = [f"relay {fingerprint}{f' ({nickname})' if nickname else ''}: {plural(len(verdicts), 'vote')} of "
             f"{_utc(valid_after) or '-'}", ""]
    rows: list[list[str]] = []
    for verdict in verdicts:
        shown = [verdict.authority, " ".join(verdict.voted) if verdict.listed else "(not listed)"]
        if not verdict.listed:
            rows.append([*shown, "-", "the vote does not list this relay", ""])
            continue
        notable = [d for d in verdict.decisions if not d.voted or d.agrees is False]
        for decision in notable:
            flag = decision.flag if not decision.voted else f"{decision.flag} (voted)"
            derived = "-" if not decision.checks else "yes" if decision.derived else "no"
            rows.append([*shown, flag, decision.reason(), derived])
            shown = ["", ""]
        if not notable:
            rows.append([*shown, "-", "every explained flag voted", ""])
    lines += table(rows, ["authority", "flags voted", "withheld", "deciding quantity vs threshold", "derived?"])
    lines += ["", "flag-thresholds:"]
    lines += table([_thresholds_row(verdict) for verdict in verdicts],
                   ["authority", "fast-speed", "guard-bw inc/exc", "guard-wfu", "guard-tk", "stable-uptime",
                    "stable-mtbf", "enough-mtbf", "ignoring-adv-bws"], right=set(range(1, 9)), indent="  ")
    lines += [f"note: {problem}" for problem in problems]
    lines += [f"note: {verdict.authority}'s flag-thresholds: {problem}" for verdict in verdicts
              for problem in verdict.thresholds.problems]
    return lines


def _thresholds_row(verdict) -> list[str]:
    from agent.cli.human import duration

    values = verdict.thresholds.values
    if not verdict.thresholds.present:
        return [verdict.authority, "(no flag-thresholds line)"]

    def shown(key: str, how) -> str:
        return "-" if values.get(key) is None else how(values[key])

    def speed(value: float) -> str:
        return f"{value / 1000:,.0f} kB/s"

    return [verdict.authority, shown("fast-speed", speed),
            f"{shown('guard-bw-inc-exits', speed)} / {shown('guard-bw-exc-exits', speed)}",
            shown("guard-wfu", lambda v: f"{v * 100:.1f}%"), shown("guard-tk", duration),
            shown("stable-uptime", duration), shown("stable-mtbf", duration),
            shown("enough-mtbf", lambda v: f"{v:.0f}"), shown("ignoring-advertised-bws", lambda v: f"{v:.0f}")]


def _utc(moment: datetime | None) -> str | None:
    from agent.cli.human import utc

    return None if moment is None else utc(moment)

