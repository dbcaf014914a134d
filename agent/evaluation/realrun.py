"""Replays a history through ``Detector(settings).update(facts)``, the daemon's own call, in parts if asked.

One replay is one Detector fed every period of the history in order; the
first ``warmup_periods`` periods it learns are not judged. With ``jobs`` N
the periods are cut into N parts run in worker processes, each a replay of
its own that first learns ``LEAD_IN`` periods before its part (a warm-up
lead-in, not judged; the first part starts at the start and is judged after
its warm-up like a single replay), so one detector state does not have to
cross the parts. The judged periods of the parts, in order, are the replay's.
A part's first periods therefore differ a little from one long replay's (a
fortnight of learning rather than all before), which the docs say.

On the hourly population series a period costs about 12 ms of CPU on an
idle core (7 rebuilding the relay list from the runs, 5 in the detectors),
so the whole alireza series is 3-4 minutes there, much more on a busy
machine. The progress bar (tqdm, on stderr, with its ETA) is backfill's.
"""

from __future__ import annotations

import multiprocessing
import queue as queues
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from agent.detect.engine import Detector
from agent.detect.settings import DetectSettings
from agent.evaluation.history import History
from agent.evaluation.scoring import Judged, alarms_of

#: Periods a part after the first learns before its own (two weeks of hours): at least the warm-up.
LEAD_IN = 336


@dataclass(frozen=True)
class Part:
    replay_from: int  # the first period replayed
    judge_from: int | None  # the first period judged; None: those after the replay's warm-up
    stop: int  # the period after the last


@dataclass
class Replayed:
    periods: list[Judged] = field(default_factory=list)  # judged periods, in time order
    updates: int = 0  # Detector.update calls (lead-ins and warm-ups included)
    skipped: int = 0  # periods the detector skipped (not newer than the last it learned)
    parts: int = 1  # replays it was cut into
    lead_in: int = 0  # periods each part after the first learned before its own


def plan(start: int, stop: int, jobs: int, lead_in: int = LEAD_IN) -> list[Part]:
    """Up to ``jobs`` parts of [start, stop), each at least ``lead_in`` periods long, the later ones led in."""
    count = max(1, min(jobs, (stop - start) // max(lead_in, 1)))
    bounds = [start + (stop - start) * number // count for number in range(count + 1)]
    return [Part(begin if number == 0 else max(start, begin - lead_in), None if number == 0 else begin, end)
            for number, (begin, end) in enumerate(zip(bounds, bounds[1:]))]


def replay_part(history: History, settings: DetectSettings, part: Part, geoip: Any = None,
                progress: Callable[[int], object] | None = None) -> Replayed:
    """One part replayed by a fresh Detector; ``progress(n)`` is told of the periods done (by index)."""
    detector, done, learned = Detector(settings), Replayed(), 0
    position = part.replay_from
    for index, facts in history.facts(part.replay_from, part.stop, geoip):
        result = detector.update(facts)
        done.updates += 1
        if progress is not None:
            progress(index + 1 - position)
        position = index + 1
        if result.skipped:
            done.skipped += 1
            continue
        learned += 1
        judged = index >= part.judge_from if part.judge_from is not None else learned > settings.warmup_periods
        if judged:
            done.periods.append(Judged(facts.time, alarms_of(result)))
    if progress is not None and part.stop > position:
        progress(part.stop - position)
    return done


def replay(history: History, settings: DetectSettings, start: int = 0, stop: int | None = None, jobs: int = 1,
           geoip_file: str | None = None, progress: bool = True, lead_in: int = LEAD_IN) -> Replayed:
    """Replays periods ``start``..``stop`` of ``history`` (all by default) in ``jobs`` processes."""
    stop = len(history) if stop is None else min(stop, len(history))
    start = max(0, min(start, stop))
    lead_in = max(lead_in, settings.warmup_periods)
    parts = plan(start, stop, jobs, lead_in)
    total = sum(part.stop - part.replay_from for part in parts)
    with tqdm(total=total, unit="period", desc=history.series, disable=not progress, smoothing=0.1) as bar:
        if len(parts) == 1:
            results = [replay_part(history, settings, parts[0], _geoip(geoip_file), bar.update)]
        else:
            results = _in_processes(history, settings, parts, geoip_file, bar.update)
    whole = merged(results)
    whole.lead_in = lead_in if len(parts) > 1 else 0
    return whole


def merged(results: list[Replayed]) -> Replayed:
    """The parts' judged periods in order (a time two parts both judged, at a boundary, counted once)."""
    whole = Replayed(parts=len(results))
    for result in results:
        whole.updates += result.updates
        whole.skipped += result.skipped
        for period in result.periods:
            if not whole.periods or period.time > whole.periods[-1].time:
                whole.periods.append(period)
    return whole


def _in_processes(history: History, settings: DetectSettings, parts: list[Part], geoip_file: str | None,
                  progress: Callable[[int], object]) -> list[Replayed]:
    context = multiprocessing.get_context("spawn")  # not fork: this process may hold threads and open files
    told: Any = context.Queue()
    pool = ProcessPoolExecutor(len(parts), mp_context=context, initializer=_start_worker, initargs=(told,))
    try:
        futures = [pool.submit(_work, history, settings, part, geoip_file) for part in parts]
        while True:
            _, pending = wait(futures, timeout=0.25, return_when=FIRST_EXCEPTION)
            _drain(told, progress)
            if not pending or any(future.done() and future.exception() for future in futures):
                break
        return [future.result() for future in futures]  # raises a part's error
    finally:  # on an error or Ctrl-C, parts not started are dropped
        pool.shutdown(wait=True, cancel_futures=True)
        _drain(told, progress)


def _drain(told: Any, progress: Callable[[int], object]) -> None:
    while True:
        try:
            progress(told.get_nowait())
        except queues.Empty:
            return


_WORKER: dict[str, Any] = {}


def _start_worker(told: Any) -> None:
    _WORKER["told"] = told


def _work(history: History, settings: DetectSettings, part: Part, geoip_file: str | None) -> Replayed:
    """A part in a worker process, telling its progress every 25 periods."""
    told, pending = _WORKER["told"], [0]

    def tick(count: int) -> None:
        pending[0] += count
        if pending[0] >= 25:
            told.put(pending[0])
            pending[0] = 0

    try:
        return replay_part(history, settings, part, _geoip(geoip_file), tick)
    finally:
        if pending[0]:
            told.put(pending[0])


_GEOIP: dict[str | None, Any] = {}


def _geoip(path: str | None) -> Any:
    """The GeoIP database (once per process); None without a path (the population loader then says "??")."""
    if path is None:
        return None
    if path not in _GEOIP:
        from agent.metrics.geoip import load_or_empty

        _GEOIP[path] = load_or_empty(path)
    return _GEOIP[path]
