"""The performance benchmarks (issue 10), one command, one table:

    .venv/bin/python benchmarks/run.py [--repeat 3] [--memory-cycles 1000] [--no-write]
    .venv/bin/python benchmarks/run.py --startup [--tree /tmp/before] [--startup-repeat 7] [--testnet-config PATH]

- cycle: one full-size voting period from the real documents in
  ../shared/tordata, in-process: parse -> signatures -> metrics -> checks ->
  detection -> line protocol. Documents: the real consensus of 2016-09-20
  13:00 (7,213 relays) and maatuska's real vote of that hour, parsed nine
  times as nine authorities' votes (no offline set holds nine real votes of
  one hour); the real 2022-11-19 microdesc consensus with the nine real key
  certificates of that time (its signatures are verified); the 587 real
  server descriptors of 2020-02-29 10:05, parsed twelve times (7,044: a live
  period fetches about 7,000; only 587 real ones of one hour exist offline).
  The first cycle of a fresh process is reported (cold: ``allium-agent
  once``), and the best of the later ones (warm: the daemon).
- baseline: the same cycle, every document through stem's validating
  parser, in the same run; the ratio of the baseline to ours.
- backfill: real full consensuses the way a backfill worker replays a
  period (parse, metrics, checks, line protocol; CPU per stage): the seven
  of different years three times, and the one real next hour (2020-02-29
  11:00 after 10:00). Then the ``backfill`` command itself over 96 or 1,440
  hours made of real consensuses, in one process and in two (wall clock,
  and CPU including the worker processes), and into a real VictoriaMetrics;
  and ``backfill --detect`` over the same hours right after the run without
  it (anomaly detection learning every period into a fresh state), with the
  ratio of the two times.
- write: points per second into a real VictoriaMetrics on 127.0.0.1,
  through the agent's store (the influxdb-client writer).
- memory: RSS after each of ``--memory-cycles`` consecutive cycles in one
  process (one detector, as the daemon), the documents changing every
  cycle: the seven real consensuses in time order with the two real votes,
  restamped to consecutive hours (``benchmarks/memory.py``); the mean of
  each hundred cycles, the trend over the second half, and the process's
  peak RSS over all of them.
- startup (``--startup``, a mode of its own; issue 22): wall time of
  ``config check``, ``status``, ``query``, ``check --from`` a real consensus
  and ``once`` on the private Tor network, each a fresh process, and what
  each imports (``benchmarks/startup.py``); ``--tree`` adds other
  checkouts (a worktree of the commit before) to the same table.

CPU seconds are process time; each variant runs in its own process so its
peak RSS is its own. No test asserts on these numbers.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TORDATA = ROOT.parent / "shared" / "tordata"
CONSENSUS = TORDATA / "consensus" / "2016-09-20-13-00-00-consensus"
VOTE = TORDATA / "votes" / ("2016-09-20-13-00-00-vote-49015F787433103580E3B66A1707A00E60F2D15B-"
                            "60ADC6BEC262AE921A1037D54C8A3976367DBE87")
MICRODESC = TORDATA / "tor-datadir" / "safe_tor" / "cached-microdesc-consensus"
CERTS = TORDATA / "tor-datadir" / "safe_tor" / "cached-certs.lf"
DESCRIPTORS = TORDATA / "server-descriptors" / "2020-02-29-10-05-00-server-descriptors"
VOTES, DESCRIPTOR_COPIES = 9, 12


def read_inputs() -> dict:
    return {"consensus": CONSENSUS.read_bytes(), "vote": VOTE.read_bytes(), "microdesc": MICRODESC.read_bytes(),
            "certs": CERTS.read_bytes(), "descriptors": DESCRIPTORS.read_bytes()}


def parse_stem(inputs: dict) -> dict:
    """Every document through stem's validating parsers (the baseline), held as the agent holds documents.

    Each network status is wrapped once in our NetworkStatus (its entries as
    columns, its bytes kept), as the agent's own parse gives them, so the
    later stages cost the same for both.
    """
    import stem.descriptor
    from stem.descriptor.networkstatus import NetworkStatusDocumentV3

    from agent.model.entries import RouterEntries
    from agent.model.network_status import NetworkStatus
    from agent.parse.documents import _strip_annotations

    def documents(raw, kind):
        return list(stem.descriptor.parse_file(io.BytesIO(raw), kind, validate=True))

    def network_status(raw, keep_bytes):
        raw = _strip_annotations(raw)
        parsed = NetworkStatusDocumentV3(raw, validate=True)
        return NetworkStatus(parsed, RouterEntries.from_entries(parsed.routers), raw if keep_bytes else None)

    return {"consensus": network_status(inputs["consensus"], True),
            "votes": [network_status(inputs["vote"], False) for _ in range(VOTES)],
            "microdesc": network_status(inputs["microdesc"], True),
            "certs": documents(inputs["certs"], "dir-key-certificate-3 1.0"),
            "descriptors": [d for _ in range(DESCRIPTOR_COPIES)
                            for d in documents(inputs["descriptors"], "server-descriptor 1.0")]}


def parse_ours(inputs: dict) -> dict:
    """The agent's own parsing path (agent.parse.documents), as collect uses it."""
    from agent.model.snapshot import DocKind
    from agent.parse.documents import parse_document

    return {"consensus": parse_document(DocKind.CONSENSUS, inputs["consensus"], "bench"),
            "votes": [parse_document(DocKind.VOTE, inputs["vote"], "bench") for _ in range(VOTES)],
            "microdesc": parse_document(DocKind.MICRODESC_CONSENSUS, inputs["microdesc"], "bench"),
            "certs": parse_document(DocKind.KEY_CERTIFICATES, inputs["certs"], "bench"),
            "descriptors": [d for _ in range(DESCRIPTOR_COPIES)
                            for d in parse_document(DocKind.SERVER_DESCRIPTORS, inputs["descriptors"], "bench")]}


def cycle(inputs: dict, parser: str, config, geoip, detector) -> dict[str, float]:
    """One period end to end; CPU seconds per stage."""
    from datetime import datetime, timezone

    from agent.checks.run import health_points
    from agent.detect.facts import facts_of
    from agent.metrics.period import snapshot_points
    from agent.metrics.relays import table_of
    from agent.model.authorities import default_authorities
    from agent.model.snapshot import AuthorityView, SignatureCheck, SignatureReport, Snapshot
    from agent.model.time import unix
    from agent.parse.signatures import check_signatures, trust_certificates
    from agent.pipeline.judge import Memory, judge_checks
    from agent.store.lineprotocol import encode_all

    stages, clock = {}, time.process_time()

    def lap(name):
        nonlocal clock
        now = time.process_time()
        stages[name] = now - clock
        clock = now

    parsed = (parse_stem if parser == "stem" else parse_ours)(inputs)
    lap("parse")
    trusted, _ = trust_certificates(parsed["certs"])
    micro_report = check_signatures(parsed["microdesc"], trusted)
    lap("signatures")
    authorities = list(default_authorities())
    consensus = parsed["consensus"]
    # The 2016 consensus predates the certificates we have: its signatures are taken as valid.
    report = SignatureReport(tuple(SignatureCheck(a.v3ident, "sha1", True) for a in authorities))
    views = {a.nickname: AuthorityView(a, consensus=consensus, consensus_signatures=report,
                                       microdesc_consensus=parsed["microdesc"], microdesc_signatures=micro_report,
                                       vote=vote, key_certificates=parsed["certs"])
             for a, vote in zip(authorities, parsed["votes"])}
    now = datetime.now(timezone.utc)
    snapshot = Snapshot("bench", now, now, authorities, views, [], server_descriptors=parsed["descriptors"])
    table = table_of(snapshot, consensus, geoip)
    points = snapshot_points(snapshot, None, geoip, config.metrics.operators_top_n, table)
    lap("metrics")
    findings, _ = judge_checks(snapshot, Memory(), config)
    points += health_points(findings, unix(consensus.valid_after))
    lap("checks")
    result = detector.update(facts_of(snapshot, consensus, table))
    points += result.points
    lap("detection")
    lines = encode_all(points)
    lap("line protocol")
    stages["total"] = sum(stages.values())
    stages["point_count"] = len(lines)
    return stages


def child_cycle(parser: str, repeat: int) -> dict:
    """Runs in its own process: the first (cold) cycle, the best of ``repeat`` - 1 more (warm), peak RSS.

    Cold: a fresh process, as ``allium-agent once`` each period. Warm: the
    daemon (``run``) after its first period, with the same documents again.
    """
    from agent.detect.engine import Detector

    config, geoip = _setup()
    inputs = read_inputs()
    runs = []
    for _ in range(repeat):
        detector = Detector(config.detect.settings)
        runs.append(cycle(inputs, parser, config, geoip, detector))
        gc.collect()
    warm = min(runs[1:] or runs, key=lambda run: run["total"])
    return {"cold": runs[0], "warm": warm,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def child_memory(cycles: int, census: str = "") -> dict:
    """Consecutive cycles of changing real documents in one process (one detector, as the daemon)."""
    from benchmarks.memory import child_memory as rotating

    fixed = {"microdesc": MICRODESC.read_bytes(), "certs": CERTS.read_bytes()}  # its signatures are verified
    return rotating(cycles, cycle, _setup, fixed, census)


def child_backfill(repeat: int) -> dict:
    """Real full consensuses the way a backfill worker replays them: parse, metrics, checks, line protocol (CPU).

    As backfill does, with the collector paused and each consensus's entries
    looked up among the previous one's (an ``EntryMemory``).
    - the seven real files of different years, ``repeat`` times in turn:
      little repeats from one to the next, the worst case;
    - the one real pair of consecutive hours: 2020-02-29 11:00 right after
      10:00, from a clean start each time (nothing remembered but 10:00),
      as a real backfill reads consecutive hours.
    Churn is counted against the file before, as backfill does.
    """
    from agent.parse import fastparse
    from agent.parse.documents import collector_paused
    from agent.parse.entrymemory import EntryMemory

    config, geoip = _setup()
    files = sorted(p for p in (TORDATA / "consensus").iterdir() if p.is_file())
    raws = [path.read_bytes() for path in files]
    stages = dict.fromkeys(("parse", "metrics", "checks", "line protocol"), 0.0)
    done, relays = 0, 0
    with collector_paused():
        previous, memory = None, EntryMemory()
        for _ in range(repeat):
            for raw in raws:
                previous, count = _replay_consensus(raw, previous, config, geoip, stages, memory)
                done, relays = done + 1, relays + count
    next_hour = []
    for _ in range(repeat):
        for cache in fastparse._R_CACHES.values():
            cache.clear()
        with collector_paused():
            hour_stages, memory = dict.fromkeys(stages, 0.0), EntryMemory()
            previous, _ = _replay_consensus((TORDATA / "consensus" / "2020-02-29-10-00-00-consensus").read_bytes(),
                                            None, config, geoip, dict(hour_stages), memory)
            _replay_consensus((TORDATA / "consensus" / "2020-02-29-11-00-00-consensus").read_bytes(), previous,
                              config, geoip, hour_stages, memory)
            next_hour.append(hour_stages)
    hour = min(next_hour, key=lambda item: sum(item.values()))
    seconds = sum(stages.values())
    return {"consensuses": done, "files": len(files), "relays_mean": relays / done, "cpu_seconds": seconds,
            "per_second": done / seconds, "per_second_without_checks": done / (seconds - stages["checks"]),
            "stage_ms": {name: 1000 * value / done for name, value in stages.items()},
            "next_hour_ms": 1000 * sum(hour.values()),
            "next_hour_stage_ms": {name: 1000 * value for name, value in hour.items()},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _setup(config_path: Path | None = None):
    """The config (defaults, or the file at ``config_path``) and its GeoIP database."""
    from agent.config.loader import load_config
    from agent.metrics.geoip import load_or_empty

    config = load_config(config_path, environ={})
    return config, load_or_empty(config.metrics.geoip_file)


def _replay_consensus(raw: bytes, previous, config, geoip, stages: dict, memory=None):
    """One consensus through parse, metrics, checks and line protocol; adds CPU per stage to ``stages``.
    Returns (its relays for the next one's churn, its relay count)."""
    from agent.checks.run import health_points
    from agent.metrics.period import relays_of, snapshot_points
    from agent.model.snapshot import DocKind, Snapshot
    from agent.model.time import unix
    from agent.parse.documents import parse_document
    from agent.pipeline.judge import Memory, judge_checks
    from agent.store.lineprotocol import encode_all

    clock = time.process_time()
    consensus = parse_document(DocKind.CONSENSUS, raw, "bench", memory=memory)
    now = consensus.valid_after
    snapshot = Snapshot("bench", now, now, [], {}, [], archived_consensus=consensus)
    stages["parse"] += time.process_time() - clock
    clock = time.process_time()
    points = snapshot_points(snapshot, previous, geoip, config.metrics.operators_top_n)
    relays = relays_of(consensus)
    stages["metrics"] += time.process_time() - clock
    clock = time.process_time()
    points += health_points(judge_checks(snapshot, Memory(), config)[0], unix(now))
    stages["checks"] += time.process_time() - clock
    clock = time.process_time()
    encode_all(points)
    stages["line protocol"] += time.process_time() - clock
    return relays, len(consensus.routers)


def child_backfill_jobs(periods: int, jobs: int, hours: str = "different", sink: str = "outbox",
                        detect: str = "") -> dict:
    """``allium-agent backfill`` itself (outbox, state) over ``periods`` hours, wall-clock.

    Each hour is a real full consensus with its valid-after moved to that hour
    (no certificates in the input, so they are taken as unverified archives,
    as backfill does without certificates). ``hours``:
    - ``different``: the seven real consensuses in turn, so consecutive hours
      are different real networks: the worst case for churn and for what can
      be remembered from the hour before;
    - ``consecutive``: the one real pair of consecutive hours (2020-02-29
      10:00 and 11:00) in turn, so each hour differs from the one before as
      a real next hour does (a real backfill reads consecutive hours).
    ``sink``: ``outbox`` (no TSDB: every period stays in the outbox) or
    ``victoria`` (a real VictoriaMetrics on 127.0.0.1 takes them, sharing
    this machine's cores; its CPU time is reported too).
    ``detect``: ``detect`` runs ``backfill --detect`` (anomaly detection
    learns every period, in time order, in the main process, into a fresh
    ``detectors.pickle``), so that the River import and the state's saves
    are counted too.
    """
    import re
    import shutil
    import tempfile
    from datetime import datetime, timedelta

    from agent.loop.backfill import backfill
    from agent.pipeline.state import State
    from agent.store.store import Store
    from tests.integration.victoria import VictoriaMetrics

    directory = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    victoria = None
    try:
        files = sorted(p for p in (TORDATA / "consensus").iterdir() if p.is_file())
        if hours == "consecutive":
            files = [TORDATA / "consensus" / f"2020-02-29-{hour}-00-00-consensus" for hour in (10, 11)]
        raws = [path.read_bytes() for path in files]
        start = datetime(2021, 1, 1)
        for hour in range(periods):
            moment = start + timedelta(hours=hour)
            stamp = {b"valid-after": moment, b"fresh-until": moment + timedelta(hours=1),
                     b"valid-until": moment + timedelta(hours=3)}
            raw = re.sub(rb"^(valid-after|fresh-until|valid-until) [0-9-]+ [0-9:]+$",
                         lambda m, stamp=stamp: m[1] + b" " + stamp[m[1]].strftime("%Y-%m-%d %H:%M:%S").encode(),
                         raws[hour % len(raws)], count=3, flags=re.M)
            (directory / f"{moment:%Y-%m-%d-%H-%M-%S}-consensus").write_bytes(raw)
        victoria = VictoriaMetrics(directory / "victoria").start() if sink == "victoria" else None
        # a period's record is about 230 kB: room for a year of hours in the outbox (no TSDB takes them)
        store_url = f"store: {{url: '{victoria.url}'}}\n" if victoria else "store: {outbox_max_bytes: 8589934592}\n"
        (directory / "agent.yaml").write_text(f"state_dir: {directory / 'state'}\n{store_url}")
        config, geoip = _setup(directory / "agent.yaml")
        state, store = State(config.state_dir), Store.from_config(config)
        victoria_cpu = _process_cpu_seconds(victoria.process.pid) if victoria else 0.0
        started, cpu, workers_cpu = time.perf_counter(), time.process_time(), _children_cpu_seconds()
        result = backfill([directory], config, state, store, geoip, progress=False, jobs=jobs,
                          detect=detect == "detect")
        if victoria:
            victoria.flush()
        seconds = time.perf_counter() - started
        main_cpu, workers_cpu = time.process_time() - cpu, _children_cpu_seconds() - workers_cpu
        store.close()
        state.close()
        return {"periods": result.periods_written, "jobs": jobs, "hours": hours, "sink": sink, "seconds": seconds,
                "per_second": result.periods_written / seconds, "main_cpu_seconds": main_cpu,
                "workers_cpu_seconds": workers_cpu,
                "per_cpu_second": result.periods_written / (main_cpu + workers_cpu),
                "lines_written": result.lines_written, "periods_learned": result.periods_learned,
                "anomalies": result.anomalies,
                "victoria_cpu_seconds": _process_cpu_seconds(victoria.process.pid) - victoria_cpu if victoria else 0,
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}
    finally:
        if victoria:
            victoria.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _cpu(run: dict) -> float:
    """CPU seconds of a ``backfill_jobs`` run, its worker processes included."""
    return run["main_cpu_seconds"] + run["workers_cpu_seconds"]


def _children_cpu_seconds() -> float:
    """User and system CPU of this process's ended children (backfill's worker processes, once shut down)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_seconds(pid: int) -> float:
    """User and system CPU of another process (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def child_write(points_wanted: int) -> dict:
    """Points per second into a real VictoriaMetrics on loopback, through the agent's Store."""
    import shutil
    import tempfile

    from agent.model.points import point
    from agent.model.retry import RetryPolicy
    from agent.store.influx import InfluxWriter
    from agent.store.lineprotocol import encode_all
    from tests.integration.victoria import VictoriaMetrics

    directory = Path(tempfile.mkdtemp(prefix="bench-vm-"))
    victoria = VictoriaMetrics(directory).start()
    try:
        relays = [f"{index:040X}" for index in range(points_wanted // 10)]
        base = 1_600_000_000
        lines = encode_all(point("tor_relay", {"fingerprint": fingerprint},
                                 {"weight": float(index), "in_consensus": 1.0}, base + 3600 * period)
                           for period in range(10) for index, fingerprint in enumerate(relays))
        writer = InfluxWriter(victoria.url, "tor", "tor", "", 30, 5000, RetryPolicy(1, 0, 0))
        started = time.perf_counter()
        writer.write(lines)
        seconds = time.perf_counter() - started
        writer.close()
        return {"points": len(lines), "seconds": seconds, "per_second": len(lines) / seconds}
    finally:
        victoria.stop()
        shutil.rmtree(directory, ignore_errors=True)


def run_child(*arguments) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", *map(str, arguments)], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description="allium-agent performance benchmarks")
    parser.add_argument("--repeat", type=int, default=3,
                        help="cycles per variant: the first is reported as cold, the best of the rest as warm "
                             "(default 3)")
    parser.add_argument("--memory-cycles", type=int, default=1000, help="consecutive cycles for the memory check")
    parser.add_argument("--write-points", type=int, default=200_000)
    parser.add_argument("--no-write", action="store_true", help="skip the VictoriaMetrics write benchmark")
    parser.add_argument("--startup", action="store_true",
                        help="only the start-up table: short commands' wall time (benchmarks/startup.py)")
    parser.add_argument("--tree", action="append", type=Path, default=[],
                        help="with --startup: another checkout of the agent to run too (repeatable)")
    parser.add_argument("--startup-repeat", type=int, default=7, help="with --startup: runs of each command")
    parser.add_argument("--testnet-config", type=Path,
                        help="with --startup: the agent config of a running private network (default: start one)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.startup:
        from benchmarks.startup import measure, rows

        print("\n".join(rows(measure([ROOT, *arguments.tree], arguments.startup_repeat, arguments.testnet_config))))
        return
    if arguments.child:
        kind, *rest = arguments.child
        result = {"cycle": lambda: child_cycle(rest[0], int(rest[1])),
                  "memory": lambda: child_memory(int(rest[0]), *rest[1:]),
                  "backfill": lambda: child_backfill(int(rest[0])), "write": lambda: child_write(int(rest[0])),
                  "backfill_jobs": lambda: child_backfill_jobs(int(rest[0]), int(rest[1]), *rest[2:])}[kind]()
        print(json.dumps(result))
        return
    ours = run_child("cycle", "ours", arguments.repeat)
    stem = run_child("cycle", "stem", arguments.repeat)
    backfill = run_child("backfill", 3)
    print("| benchmark | stage | ours: first cycle (cold) | ours: best later cycle (warm) | "
          "stem validating (baseline), warm |\n|---|---|---|---|---|")
    for stage in ("parse", "signatures", "metrics", "checks", "detection", "line protocol", "total"):
        print(f"| cycle | {stage} (CPU s) | {ours['cold'][stage]:.3f} | {ours['warm'][stage]:.3f} | "
              f"{stem['warm'][stage]:.3f} |")
    print(f"| cycle | speed-up over the baseline | {stem['warm']['total'] / ours['cold']['total']:.1f}x | "
          f"{stem['warm']['total'] / ours['warm']['total']:.1f}x | |")
    print(f"| cycle | peak RSS of the process (MB) | {ours['peak_rss_mb']:.0f} ({arguments.repeat} cycles) | | "
          f"{stem['peak_rss_mb']:.0f} |")
    print(f"| cycle | points | {ours['cold']['point_count']:.0f} | | {stem['warm']['point_count']:.0f} |")
    stages = ", ".join(f"{name} {value:.1f}" for name, value in backfill["stage_ms"].items())
    hour_stages = ", ".join(f"{name} {value:.1f}" for name, value in backfill["next_hour_stage_ms"].items())
    print(f"| backfill | consensuses per CPU second, unrelated real consensuses | {backfill['per_second']:.1f} "
          f"({backfill['per_second_without_checks']:.1f} without the checks; {backfill['consensuses']} consensuses "
          f"of {backfill['relays_mean']:.0f} relays on average from {backfill['files']} real files of different "
          f"years; ms per consensus: {stages}) | | |")
    print(f"| backfill | consensuses per CPU second, the real next hour (2020-02-29 11:00 right after 10:00) | "
          f"{1000 / backfill['next_hour_ms']:.1f} ({backfill['next_hour_ms']:.1f} ms: {hour_stages}) | | |")
    plain = {}
    for hours, jobs, periods, detect in (
            ("consecutive", 1, 96, ""), ("consecutive", 1, 96, "detect"), ("consecutive", 2, 96, ""),
            ("consecutive", 2, 1440, ""), ("consecutive", 2, 1440, "detect"),  # each --detect right after its pair
            ("different", 1, 96, ""), ("different", 2, 96, "")):
        run = run_child("backfill_jobs", periods, jobs, hours, "outbox", *([detect] if detect else []))
        if not detect:
            plain[hours, jobs, periods] = run
        without = plain.get((hours, jobs, periods))
        learned = (f"; {run['periods_learned']} periods learned, {run['anomalies']} anomalies; "
                   f"{without['per_second'] / run['per_second']:.2f}x the wall-clock time and "
                   f"{_cpu(run) / _cpu(without):.2f}x the CPU of the run without `--detect` above"
                   if detect and without else "")
        print(f"| backfill | `backfill{' --detect' if detect else ''}` itself, {hours} hours, {jobs} "
              f"process{'es' if jobs > 1 else ''}: periods per second (wall clock) | {run['per_second']:.1f} "
              f"({run['periods']} hours in {run['seconds']:.1f} s; {run['per_cpu_second']:.1f} per CPU second, "
              f"workers included; main process CPU {run['main_cpu_seconds']:.1f} s; peak RSS "
              f"{max(run['peak_rss_mb'], run['worker_peak_rss_mb']):.0f} MB{learned}) | | |")
    if not arguments.no_write:
        run = run_child("backfill_jobs", 96, 2, "consecutive", "victoria")
        print(f"| backfill | `backfill` into a real VictoriaMetrics on this machine, consecutive hours, 2 processes: "
              f"periods per second (wall clock) | {run['per_second']:.1f} ({run['periods']} hours, "
              f"{run['lines_written']:,} lines in {run['seconds']:.1f} s; VictoriaMetrics's CPU "
              f"{run['victoria_cpu_seconds']:.1f} s) | | |")
    if not arguments.no_write:
        write = run_child("write", arguments.write_points)
        print(f"| write | points per second into VictoriaMetrics | {write['per_second']:,.0f} "
              f"({write['points']:,} points in {write['seconds']:.2f} s) | | |")
    if arguments.memory_cycles:
        from benchmarks.memory import rows

        print("\n".join(rows(run_child("memory", arguments.memory_cycles))))


if __name__ == "__main__":
    main()
