"""The at-risk evaluation's input (``agent.evaluation.atrisk``): per-relay history as runs, from two sources.

What: a ``Series`` holds the snapshot times and segments, and each relay's
state as runs of consecutive snapshots (listed, with the same flags). Two
loaders build it:

- ``load``: the alireza-tor-nodes series (hourly Onionoo lists of running
  relays with Guard/Exit): target ``guard`` only; tuned on segment 1 before
  2025-01-01, held out on the rest of segment 1 and on segment 2;
- ``load_consensuses``: consecutive consensuses (a directory, a file, a
  CollecTor ``.tar``/``.tar.xz``, several of them) read as backfill reads
  them (``agent.evaluation.history.ConsensusHistory``: grouped by
  valid-after, one period each, the consensus trust chooses): targets
  ``guard``, ``stable``, ``hsdir`` and ``fast``; tuned on the first
  ``split_fraction`` of the time, held out on the rest.

Gaps: a snapshot column is a period present in the input, so a missing
period (a gap in the archive) is skipped, never "not listed": a relay listed
before and after it has no dropout (as the alireza series' missing hours,
and as the live learner skips hours the agent was down). A relay listed
before a gap and missing after it has its onset at the first period after
it. A gap of more than ``max_gap`` periods starts a new segment: features
never look across it and the segment gets its own warm-up.

Why runs: a year of hourly history is ~70 M relay-hours but ~0.5 M runs,
and the evaluation expands them into relays x snapshots blocks as it goes.
"""

from __future__ import annotations

import calendar
import csv
import gzip
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from agent.metrics import atrisk

SERIES = Path(__file__).resolve().parents[3] / "shared" / "timeseries" / "alireza-tor-nodes"
SPLIT = "2025-01-01T00:00:00Z"  # alireza: tuning before, held out from
SPLIT_FRACTION = 0.5  # consensuses: tuning on the first half of the time, held out on the rest
MAX_GAP = 24  # consensuses: more missing periods than this start a new segment
#: Parts (name, segment or None for every segment, side of the split: "before", "after" or "all").
Plan = tuple[tuple[str, int | None, str], ...]
ALIREZA_PLAN: Plan = (("tune", 1, "before"), ("held-out", 1, "after"), ("segment 2", 2, "all"))
CONSENSUS_PLAN: Plan = (("tune", None, "before"), ("held-out", None, "after"))


@dataclass
class Series:
    """The history as arrays: snapshot times (hours) and segments, and the relays' state runs.

    ``flags``: target name -> per run, whether the relay had that flag (the
    targets are "dropout" and these, in order). Dropout's features are
    computed with the first flag (Guard), as ``FITTED`` was fitted.
    """

    hours: np.ndarray
    segment: np.ndarray
    relay: np.ndarray
    start: np.ndarray
    stop: np.ndarray  # inclusive, as in the alireza file
    flags: dict[str, np.ndarray]
    relays: int
    plan: Plan = ALIREZA_PLAN
    split: int | None = None  # the default split snapshot (None: the first from ``SPLIT``)
    fingerprints: list[str] | None = None  # relay index -> fingerprint, where known
    source: str = ""

    @property
    def targets(self) -> tuple[str, ...]:
        return ("dropout", *self.flags)


def _hour(text: str) -> float:
    return calendar.timegm(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").timetuple()) / 3600.0


def load(directory: Path = SERIES, max_snapshots: int | None = None) -> Series:
    """Reads alireza's snapshots.csv and relay_runs.csv.gz (optionally only the first ``max_snapshots``)."""
    hours, segment = [], []
    with open(directory / "snapshots.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            hours.append(_hour(row["ts_utc"]))
            segment.append(int(row["segment"]))
    count = len(hours) if max_snapshots is None else min(max_snapshots, len(hours))
    with gzip.open(directory / "relay_runs.csv.gz", "rt", newline="") as handle:
        reader = csv.reader(handle)
        next(reader)
        runs = np.array([(int(r[0]), int(r[1]), int(r[2]), int(r[3])) for r in reader], np.int64).reshape(-1, 4)
    runs = runs[runs[:, 1] < count]
    runs[:, 2] = np.minimum(runs[:, 2], count - 1)
    times = np.array(hours[:count])
    return Series(times, np.array(segment[:count]), runs[:, 0], runs[:, 1], runs[:, 2],
                  {"guard": (runs[:, 3] & 1).astype(bool)}, int(runs[:, 0].max()) + 1 if len(runs) else 0,
                  ALIREZA_PLAN, int(np.searchsorted(times, _hour(SPLIT))), source=f"{directory} (alireza-tor-nodes)")


def load_consensuses(paths: Sequence[Path], config: Any = None, max_gap: int = MAX_GAP,
                     split_fraction: float = SPLIT_FRACTION, progress: bool = False) -> Series:
    """The consensuses in ``paths`` as a Series (targets dropout, guard, stable, hsdir, fast).

    ``config``: whose authorities trust comes from (None: the agent's
    defaults, the live network's); a consensus no configured authority signs
    is rejected, as backfill rejects it. ``split_fraction``: the default split
    is the first period at or after that fraction of the time span.
    """
    from agent.evaluation.history import ConsensusHistory

    history = ConsensusHistory.open(list(paths), config)
    flags = tuple(atrisk.FLAG_TARGETS.values())
    index_of: dict[str, int] = {}
    hours: list[float] = []
    periods: list[float] = []
    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for done, (_, _, consensus) in enumerate(history.consensuses(0, len(history))):
        entries = consensus.routers
        ids = np.fromiter((index_of.setdefault(f, len(index_of)) for f in entries.fingerprints), np.int64,
                          len(entries.fingerprints))
        line_bits = np.array([sum(1 << bit for bit, flag in enumerate(flags) if flag in line)
                              for line in entries.flag_lines], np.uint8)
        bits = line_bits[np.asarray(entries.flag_code)] if len(ids) else np.zeros(0, np.uint8)
        hours.append(calendar.timegm(consensus.valid_after.timetuple()) / 3600.0)
        periods.append((consensus.fresh_until - consensus.valid_after).total_seconds() / 3600.0)
        pairs.append((ids, bits))
        if progress and done % 50 == 49:
            print(f"atrisk: {done + 1}/{len(history)} consensuses read", file=sys.stderr)
    times = np.array(hours)
    segment = segments_of(times, np.array(periods), max_gap)
    empty = [(np.zeros(0, np.int64), np.zeros(0, np.uint8))]
    column = np.concatenate([np.full(len(ids), c, np.int64) for c, (ids, _) in enumerate(pairs or empty)])
    relay = np.concatenate([ids for ids, _ in pairs or empty])
    bits = np.concatenate([b for _, b in pairs or empty])
    relay, start, stop, run_bits = runs_of(relay, column, bits, segment)
    split = int(np.searchsorted(times, times[0] + split_fraction * (times[-1] - times[0]))) if len(times) else 0
    names = list(index_of)
    return Series(times, segment, relay, start, stop,
                  {target: ((run_bits >> bit) & 1).astype(bool) for bit, target in enumerate(atrisk.FLAG_TARGETS)},
                  len(names), CONSENSUS_PLAN, split, names, history.describe())


def segments_of(hours: np.ndarray, periods: np.ndarray, max_gap: int = MAX_GAP) -> np.ndarray:
    """Per period, its segment (1, 2, ...): a new one after more than ``max_gap`` missing periods.

    The periods missing between two consensuses are counted in the earlier
    one's own period (fresh-until minus valid-after: 1 h live, 10 s in the
    private network); a shorter gap is skipped within the segment.
    """
    if not len(hours):
        return np.zeros(0, np.int64)
    step = np.where(periods[:-1] > 0, periods[:-1], np.median(periods) or 1.0)
    missing = np.rint(np.diff(hours) / step) - 1
    return 1 + np.concatenate([[0], np.cumsum(missing > max_gap)]).astype(np.int64)


def runs_of(relay: np.ndarray, column: np.ndarray, bits: np.ndarray,
            segment: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(relay, start, stop inclusive, bits) runs from one row per relay and period it is listed in: a run ends
    where the relay is not listed in the next period, its flags change, or a segment ends."""
    order = np.lexsort((column, relay))
    relay, column, bits = relay[order], column[order], bits[order]
    new = np.ones(len(relay), bool)
    if len(relay) > 1:
        new[1:] = ((relay[1:] != relay[:-1]) | (column[1:] != column[:-1] + 1) | (bits[1:] != bits[:-1])
                   | (segment[column[1:]] != segment[column[:-1]]))
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, len(relay) - 1) if len(first) else first
    return relay[first], column[first], column[last], bits[first]
