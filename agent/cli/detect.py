"""The ``evaluate`` command: the anomaly detectors on replays with injected incidents and on real history."""

from __future__ import annotations

import sys
import time
from pathlib import Path

EXIT_OK, EXIT_PROBLEM, EXIT_CONFIG = 0, 1, 2
SHARED = Path(__file__).resolve().parents[2] / "shared"


def add_commands(commands, with_config) -> None:
    evaluate = with_config(commands.add_parser(
        "evaluate", help="replay periods built from real documents, inject incidents, report each detector"),
        _evaluate)
    evaluate.add_argument("--consensus", nargs="+", type=Path, metavar="FILE",
                          help="real consensuses: the first is the start, the others supply arriving relays "
                               "(default: three from ../shared/tordata)")
    evaluate.add_argument("--descriptors", nargs="*", type=Path, metavar="FILE",
                          help="real server descriptors for contacts, versions, platforms, bandwidth")
    evaluate.add_argument("--depictor", type=Path, metavar="CSV",
                          help="also replay real hourly vote counts (depictor's history, 2014-2016)")
    evaluate.add_argument("--seeds", type=int, default=5, help="replays, each with its own random churn (default 5)")
    evaluate.add_argument("--periods", type=int, default=1000, help="periods per replay (default 1000)")
    evaluate.add_argument("--incidents-every", type=int, default=50,
                          help="periods between incident trials (each trial forks the replay; default 50)")


def _evaluate(arguments) -> int:
    from agent.config.loader import load_config
    from agent.evaluation.evaluate import evaluate, replay_depictor
    from agent.evaluation.replay import population, read_documents
    from agent.metrics.geoip import load_or_empty

    config = load_config(arguments.config)
    tordata = SHARED / "tordata"
    consensuses = arguments.consensus or [tordata / "consensus" / name for name in (
        "2020-02-29-10-00-00-consensus", "2020-03-05-10-00-00-consensus", "2017-04-15-00-00-00-consensus")]
    descriptors = arguments.descriptors if arguments.descriptors is not None else [
        tordata / "server-descriptors" / "2020-02-29-10-05-00-server-descriptors"]
    missing = [str(path) for path in [*consensuses, *descriptors] if not path.is_file()]
    if missing:
        print(f"evaluate: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_CONFIG
    started = time.process_time()
    base, reserve = population(*read_documents(consensuses, descriptors), load_or_empty(config.metrics.geoip_file))
    settings = config.detect.settings
    result = evaluate(base, reserve, settings, list(range(1, arguments.seeds + 1)), arguments.periods,
                      arguments.incidents_every,
                      progress=lambda seed, index: print(f"  seed {seed}: period {index}", file=sys.stderr))
    print(f"Replays: {arguments.seeds} x {arguments.periods} hourly periods from {consensuses[0].name} "
          f"({len(base)} relays; {len(reserve)} more real relays can arrive); warm-up {settings.warmup_periods} "
          f"periods; {result.periods} periods judged; incident trials: "
          + ", ".join(f"{kind} {count}" for kind, count in sorted(result.trials.items())))
    print("Detected: trials caught within 2 periods, and the mean period of detection (0 = the incident's own).\n")
    print(result.table())
    if arguments.depictor:
        real = replay_depictor(arguments.depictor, settings)
        print(f"\nReal history: {arguments.depictor.name}, {real.periods} hours")
        print("| series | judged series-periods | alarms outside documented incidents | per 1000 |")
        print("|---|---|---|---|")
        for family, judged in sorted(real.judged.items()):
            alarms = real.alarms_outside.get(family, 0)
            print(f"| {family} | {judged} | {alarms} | {1000 * alarms / max(judged, 1):.2f} |")
        alarms = sum(real.alarms_outside.values())
        print(f"All series together: {alarms} alarms outside the incidents in {real.periods} hours "
              f"({1000 * alarms / real.periods:.1f} per 1000 hours); {real.alarms_in_gap_months} of them in "
              f"2015-11..2016-06, the months of documented collection gaps")
        for incident, first in sorted(real.first_alarm.items()):
            print(f"{incident}: first alarm {first}Z, {len(set(real.caught[incident]))} series fired")
        missed = set(("Heartbleed rejections", "LizardNSA Sybil flood")) - set(real.first_alarm)
        for incident in sorted(missed):
            print(f"{incident}: NOT detected")
    print(f"\nCPU: {time.process_time() - started:.1f} s")
    return EXIT_OK
