"""``allium-agent once``: one period fetched, judged and recorded, without alerts (those are the daemon's)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from agent.aroi.service import read_book
from agent.config.loader import Config
from agent.loop.collect import collect
from agent.metrics.geoip import GeoIP
from agent.model.snapshot import Snapshot
from agent.pipeline.extrainfos import remembered_extra_infos
from agent.pipeline.judge import admissible, judge
from agent.pipeline.record import Detectors, memory_of, record
from agent.pipeline.state import State
from agent.store.store import SaveResult, Store


@dataclass(frozen=True)
class CycleResult:
    """What ``once`` reports: the snapshot, what was saved, the findings."""

    snapshot: Snapshot
    saved: SaveResult
    findings: list


def run_cycle(config: Config, state: State, store: Store, geoip: GeoIP) -> CycleResult:
    """``once``: fetches one period, judges it and records it (no alerts: those are the daemon's)."""
    return once_from(collect(config, extra_infos=remembered_extra_infos(state)), config, state, store, geoip)


def once_from(snapshot: Snapshot, config: Config, state: State, store: Store, geoip: GeoIP) -> CycleResult:
    """One collected (or archived) snapshot through judge and record."""
    detectors = Detectors(config) if config.detect.enabled else None
    snapshot, _ = admissible(snapshot, config.checks.thresholds)  # the memory is read for the period judged
    memory = memory_of(snapshot, state, detectors, learners=None if snapshot.archived else config)
    if not snapshot.archived:  # the proofs as `run` or `aroi verify` last checked them; once checks none itself
        memory = replace(memory, proofs=read_book(config.state_dir))
    result = judge(snapshot, memory, config, geoip)
    saved = record(result, store, state, memory, detectors=detectors)
    # The snapshot as judged: what judging refused or rejected is marked on its records.
    return CycleResult(result.snapshot or snapshot, saved, result.findings)
