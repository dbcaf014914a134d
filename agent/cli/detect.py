"""The ``evaluate`` command: the anomaly detectors on real history, or on replays with injected incidents.

``--history PATH`` (repeatable) replays real history through the daemon's
own ``Detector.update`` (``agent.evaluation.real``): a relay-population
series directory, depictor's hourly vote-count CSV, or consensuses (a
directory, file or CollecTor tarball), told apart by looking. Without it
the synthetic mode runs (``agent.evaluation.evaluate``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_PROBLEM, EXIT_CONFIG = 0, 1, 2
#: Where the sample data lives in a development checkout (../shared next to the source tree). An installed
#: agent has none: the defaults that read it say so rather than fail on a missing file.
SHARED = Path(__file__).resolve().parents[3] / "shared"
SYNTHETIC_CONSENSUSES = ("2020-02-29-10-00-00-consensus", "2020-03-05-10-00-00-consensus",
                         "2017-04-15-00-00-00-consensus")
SYNTHETIC_DESCRIPTORS = ("2020-02-29-10-05-00-server-descriptors",)


def add_commands(commands, with_config) -> None:
    evaluate = with_config(commands.add_parser(
        "evaluate", help="score the anomaly detectors on real history (--history) or on replays with injected "
                         "incidents"), _evaluate)
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON (both modes)")
    evaluate.add_argument("--no-progress", action="store_true", help="no progress bar (with its ETA) on stderr")
    real = evaluate.add_argument_group("real history")
    real.add_argument("--history", action="append", type=Path, metavar="PATH", default=[],
                      help="replay real history through the detectors (repeatable): a relay-population series "
                           "directory (snapshots.csv, relays.csv.gz, relay_runs.csv.gz), depictor's hourly vote "
                           "counts (CSV), or consensuses (a directory, file or .tar/.tar.xz archive)")
    real.add_argument("--depictor", type=Path, metavar="CSV", help="the same as --history CSV (kept for old scripts)")
    real.add_argument("--slice", type=_slice, metavar="START:STOP", default=(0, None),
                      help="replay only periods START..STOP-1 of each history (0-based; either may be left out)")
    real.add_argument("--jobs", type=_positive, default=1, metavar="N",
                      help="replay in N worker processes, each part after the first led in by 336 periods that "
                           "are not judged (default 1)")
    real.add_argument("--labels", type=Path, metavar="CSV",
                      help="labelled incidents (default: the package's agent/evaluation/incidents.csv)")
    synthetic = evaluate.add_argument_group("synthetic replays (without --history)")
    synthetic.add_argument("--consensus", nargs="+", type=Path, metavar="FILE",
                           help="real consensuses: the first is the start, the others supply arriving relays "
                                "(default: three from ../shared/tordata in a development checkout)")
    synthetic.add_argument("--descriptors", nargs="*", type=Path, metavar="FILE",
                           help="real server descriptors for contacts, versions, platforms, bandwidth")
    synthetic.add_argument("--seeds", type=int, default=5,
                           help="replays, each with its own random churn (default 5)")
    synthetic.add_argument("--periods", type=int, default=1000, help="periods per replay (default 1000)")
    synthetic.add_argument("--incidents-every", type=int, default=50,
                           help="periods between incident trials (each trial forks the replay; default 50)")


def _slice(text: str) -> tuple[int, int | None]:
    import argparse

    start, colon, stop = text.partition(":")
    try:
        if not colon:
            raise ValueError
        first, last = int(start) if start else 0, int(stop) if stop else None
        if first < 0 or (last is not None and last <= first):
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected START:STOP, 0 <= START < STOP (e.g. 13000:13430)") \
            from None
    return first, last


def _positive(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return value


def _evaluate(arguments) -> int:
    from agent.config.loader import load_config

    config = load_config(arguments.config)
    histories = [*arguments.history, *([arguments.depictor] if arguments.depictor else [])]
    if histories:
        return _real(histories, arguments, config)
    return _synthetic(arguments, config)


def _real(paths: list[Path], arguments, config) -> int:
    from agent.evaluation.history import HistoryError, open_history
    from agent.evaluation.real import evaluate_history, text
    from agent.evaluation.scoring import load_labels

    try:
        labels = load_labels(arguments.labels)
    except (OSError, ValueError) as error:
        print(f"evaluate: labels: {error}", file=sys.stderr)
        return EXIT_CONFIG
    results = []
    for path in paths:
        try:
            history = open_history(path, config)
        except HistoryError as error:
            print(f"evaluate: {error}", file=sys.stderr)
            return EXIT_CONFIG
        if not arguments.no_progress:
            print(f"evaluate: {history.describe()}", file=sys.stderr)
        start, stop = arguments.slice
        try:
            results.append(evaluate_history(history, config.detect.settings, labels, start, stop, arguments.jobs,
                                            config.metrics.geoip_file, not arguments.no_progress))
        except HistoryError as error:
            print(f"evaluate: {error}", file=sys.stderr)
            return EXIT_PROBLEM
    if arguments.json:
        print(json.dumps([result.as_dict() for result in results], indent=2))
    else:
        print("\n\n".join(text(result) for result in results))
    return EXIT_OK


def _synthetic(arguments, config) -> int:
    from agent.cli.human import duration, number, plural
    from agent.evaluation.evaluate import INCIDENT_NAMES, evaluate
    from agent.evaluation.replay import population, read_documents
    from agent.metrics.geoip import load_or_empty

    tordata = SHARED / "tordata"
    if (arguments.consensus is None or arguments.descriptors is None) and not tordata.is_dir():
        print(f"evaluate: no --consensus/--descriptors given, and the sample documents they default to are not "
              f"here: {tordata} does not exist (it is only in a development checkout, next to the source tree). "
              f"Give --consensus FILE... --descriptors FILE..., or replay real history with --history PATH.",
              file=sys.stderr)
        return EXIT_CONFIG
    consensuses = arguments.consensus or [tordata / "consensus" / name for name in SYNTHETIC_CONSENSUSES]
    descriptors = arguments.descriptors if arguments.descriptors is not None else [
        tordata / "server-descriptors" / name for name in SYNTHETIC_DESCRIPTORS]
    missing = [str(path) for path in [*consensuses, *descriptors] if not path.is_file()]
    if missing:
        print(f"evaluate: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_CONFIG
    started = time.process_time()
    base, reserve = population(*read_documents(consensuses, descriptors), load_or_empty(config.metrics.geoip_file))
    settings = config.detect.settings
    result = evaluate(base, reserve, settings, list(range(1, arguments.seeds + 1)), arguments.periods,
                      arguments.incidents_every, progress=not arguments.no_progress)
    if arguments.json:
        print(json.dumps(_synthetic_json(result, arguments, settings.warmup_periods), indent=2))
        return EXIT_OK
    print(f"Replays: {plural(arguments.seeds, 'replay')} of {plural(arguments.periods, 'hourly period')} from "
          f"{consensuses[0].name} ({plural(len(base), 'relay')}; {number(len(reserve))} more real relays can "
          f"arrive); warm-up {plural(settings.warmup_periods, 'period')}; {plural(result.periods, 'period')} "
          "judged; incident trials: " + ", ".join(f"{INCIDENT_NAMES.get(kind, kind)} {number(count)}"
                                                  for kind, count in result.trials.items()))  # the table's order
    print("Detected: trials caught within 2 periods, and the mean period of detection (0 = the incident's own).\n")
    print(result.table())
    print(f"\nCPU: {duration(time.process_time() - started)}")
    return EXIT_OK


def _synthetic_json(result, arguments, warmup_periods: int) -> dict:
    """``evaluate --json`` without --history: the figures of the table, incidents by their names."""
    from agent.evaluation.evaluate import INCIDENT_NAMES

    named = {kind: INCIDENT_NAMES.get(kind, kind) for kind in result.trials}
    return {"replays": arguments.seeds, "periods_per_replay": arguments.periods, "warmup_periods": warmup_periods,
            "periods_judged": result.periods, "trials": {named[kind]: count for kind, count in result.trials.items()},
            "detectors": [{"detector": detector,
                           "false_alarms": result.false_alarms.get(detector, 0),
                           "detected": {named[kind]: result.detected.get((detector, kind), []) for kind in named}}
                          for detector in result.detectors()]}
