"""Benchmark: one period of every detector over a full-size network (7,000+ real relays).

    .venv/bin/python benchmarks/detect_update.py [--periods 300]

The network is the real 2020-02-29 10:00 consensus (6,433 relays, with the
real server descriptors of that hour) plus real relays from two other real
consensuses, to pass 7,000; the replay then churns it as the live network
churns (agent.evaluation.replay). Reported: CPU and wall time per update after
the warm-up (mean, p95, max), the state file's size and save/load time,
and peak RSS. Run on demand; no test asserts on these numbers.
"""

from __future__ import annotations

import argparse
import io
import pickle
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config.loader import load_config  # noqa: E402
from agent.detect.engine import Detector  # noqa: E402
from agent.evaluation.replay import Replay, concat, population, read_documents  # noqa: E402
from agent.metrics.geoip import load_or_empty  # noqa: E402

TORDATA = Path(__file__).resolve().parents[2] / "shared" / "tordata"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--periods", type=int, default=300)
    parser.add_argument("--relays", type=int, default=7200)
    arguments = parser.parse_args()
    documents = read_documents(
        [TORDATA / "consensus" / name for name in ("2020-02-29-10-00-00-consensus", "2020-03-05-10-00-00-consensus",
                                                   "2017-04-15-00-00-00-consensus")],
        [TORDATA / "server-descriptors" / "2020-02-29-10-05-00-server-descriptors"])
    base, reserve = population(*documents, load_or_empty("/usr/share/tor/geoip"))
    extra = max(0, arguments.relays - len(base))
    network = concat([base, reserve.take(np.arange(extra))])
    reserve = reserve.take(np.arange(extra, len(reserve)))
    settings = load_config(None, environ={}).detect.settings
    replay, detector = Replay(network, reserve, seed=1), Detector(settings)
    cpu, wall, sizes = [], [], []
    for index in range(arguments.periods):
        facts = replay.period_facts(index, None)
        sizes.append(len(facts.relays))
        started_cpu, started_wall = time.process_time(), time.perf_counter()
        detector.update(facts)
        if index >= settings.warmup_periods:
            cpu.append(time.process_time() - started_cpu)
            wall.append(time.perf_counter() - started_wall)
    buffer = io.BytesIO()
    started = time.perf_counter()
    pickle.dump(detector, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    saved = time.perf_counter() - started
    loads = []
    for _ in range(3):  # the first load of a process also imports River's modules the state refers to
        started = time.perf_counter()
        pickle.loads(buffer.getvalue())
        loads.append(time.perf_counter() - started)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"network: {min(sizes)}-{max(sizes)} relays per period (real relays, replayed churn); "
          f"{len(detector.series)} baseline series; {len(detector.relays)} relays in memory")
    print("| measure | value |\n|---|---|")
    print(f"| update, CPU per period (mean / p95 / max), {len(cpu)} periods after warm-up | "
          f"{1000 * statistics.mean(cpu):.1f} / {1000 * sorted(cpu)[int(0.95 * len(cpu))]:.1f} / "
          f"{1000 * max(cpu):.1f} ms |")
    print(f"| update, wall per period (mean) | {1000 * statistics.mean(wall):.1f} ms |")
    print(f"| state: pickle size / save / load (first in the process, then warm) | "
          f"{len(buffer.getvalue()) / 1e6:.2f} MB / {1000 * saved:.0f} ms / {1000 * loads[0]:.0f} ms, "
          f"{1000 * min(loads[1:]):.0f} ms |")
    print(f"| peak RSS of this process (documents parsed, replay, detectors) | {rss_mb:.0f} MB |")


if __name__ == "__main__":
    main()
