"""The ``backfill`` command: archived periods (CollecTor files, tarballs) into the store, and with ``--detect``
into anomaly detection's state."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from agent.cli.human import number, plural, utc

EXIT_OK, EXIT_PROBLEM, EXIT_CONFIG = 0, 1, 2

DESCRIPTION = """\
Replays archived voting periods (CollecTor files, directories, .tar/.tar.xz
archives) in valid-after order through the same metrics and checks as the
live agent, into the store. Resumable: written periods are remembered in the
state and skipped next time (--force rewrites). Nothing is ever notified.

With --detect, anomaly detection also learns the periods, in valid-after
order whatever --jobs, into the very state `run` and `once` resume from
(<state_dir>/detectors.pickle): an agent installed today starts with
baselines learned from the archive instead of warming up for two days.
Learning only goes forward: a period not newer than the last one learned is
skipped, so backfill oldest first and before the daemon's first period, and
stop the daemon while this runs (both save that state). A period written
before but not yet learned is computed and written again. The detectors'
tor_anomaly points are stored with each period; their findings are
counted, never notified. Without votes in the input there are no
per-authority series to learn."""


def add_commands(commands, with_config) -> None:
    backfill = with_config(commands.add_parser(
        "backfill", help="replay archived periods (CollecTor files, tarballs) into the store",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter), _backfill)
    backfill.add_argument("paths", nargs="+", help="files, directories or .tar/.tar.xz archives")
    backfill.add_argument("--since", type=utc_time, help="first valid-after to write (UTC, e.g. 2020-02-29T10:00)")
    backfill.add_argument("--until", type=utc_time, help="last valid-after to write (UTC)")
    backfill.add_argument("--force", action="store_true", help="rewrite periods already written")
    backfill.add_argument("--detect", action="store_true",
                          help="also learn the periods into anomaly detection's saved state, in time order (the "
                               "state run and once resume from; no notifications; see above)")
    backfill.add_argument("--no-progress", action="store_true", help="no progress bar")
    backfill.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                          help="worker processes computing periods (default: the CPUs, at most 4; 1: none)")
    backfill.add_argument("--max-document-mib", type=_mebibytes, metavar="MIB",
                          help="the most one file or archive member may expand to, in MiB; a larger one is named "
                               "and skipped (default: 128, 3.5 times a day of server descriptors)")


def utc_time(text: str) -> datetime:
    """An ISO time, taken as UTC, as the naive datetime stem uses."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO time: {text!r} (e.g. 2020-02-29T10:00)") from None
    return moment.astimezone(timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


def _mebibytes(text: str) -> float:
    """A positive number of MiB (``--max-document-mib``)."""
    try:
        value = float(text)
    except ValueError:
        value = 0
    if not 0 < value < 1 << 20:
        raise argparse.ArgumentTypeError(f"not a size in MiB between 0 and 1048576: {text!r}")
    return value


def _backfill(arguments) -> int:
    from agent.config.loader import load_config
    from agent.loop.backfill import backfill
    from agent.metrics.geoip import load_or_empty
    from agent.parse.archive import MAX_DOCUMENT_BYTES
    from agent.pipeline.state import State
    from agent.store.store import Store

    config = load_config(arguments.config)
    if arguments.detect and not config.detect.enabled:
        print(f"backfill --detect: anomaly detection is off in {config.source} (detect.enabled: false)",
              file=sys.stderr)
        return EXIT_CONFIG
    state = State(config.state_dir)
    store = Store.from_config(config)
    try:
        result = backfill([Path(p) for p in arguments.paths], config, state, store,
                          load_or_empty(config.metrics.geoip_file), arguments.since, arguments.until,
                          arguments.force, progress=not arguments.no_progress, jobs=max(1, arguments.jobs),
                          max_document_bytes=int(arguments.max_document_mib * (1 << 20)) if arguments.max_document_mib
                          else MAX_DOCUMENT_BYTES, detect=arguments.detect)
    finally:
        store.close()
        state.close()
    documents = ", ".join(f"{number(count)} {kind}" for kind, count in sorted(result.documents.items())) or "none"
    print(f"read: {documents}; {plural(result.read.ignored, 'file')} of other kinds passed over")
    print(f"periods: {number(result.periods_found)} found, {number(result.periods_written)} written, "
          f"{number(result.periods_already_done)} already written (use --force to rewrite), "
          f"{number(result.periods_without_consensus)} without a consensus, {number(result.periods_unverified)} "
          f"unverified (too few of their configured signers' key certificates in the input)")
    if arguments.detect:
        from agent.detect.engine import STATE_FILE

        until = utc(result.learned_until) if result.learned_until is not None else "nothing yet"
        print(f"anomaly detection: {plural(result.periods_learned, 'period')} learned, "
              f"{number(result.periods_learned_before)} skipped (not newer than what it had learned), "
              f"{plural(result.anomalies, 'anomaly', 'anomalies')} found (stored as tor_anomaly points, not "
              f"notified); it has learned up to {until} ({Path(config.state_dir) / STATE_FILE})")
    if result.unknown_signers:
        print("signatures not counted (signer not among authorities.bootstrap): " + ", ".join(
            f"{identity} ({plural(count, 'consensus', 'consensuses')})"
            for identity, count in sorted(result.unknown_signers.items())))
    print(f"points: {number(result.points)}; {plural(result.lines_written, 'line')} delivered"
          + (f" to {config.store.url}" if config.store.url else "")
          + f"; {plural(result.periods_waiting, 'period waits', 'periods wait')} in the outbox")
    problems = result.read.unreadable + result.periods_rejected + result.conflicts
    for problem in result.read.unreadable + result.periods_rejected:
        print(f"problem: {problem}")
    for conflict in result.conflicts:
        print(f"conflict: {conflict}")
    return EXIT_PROBLEM if problems else EXIT_OK
