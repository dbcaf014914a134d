"""Runs the registry for one period and turns findings into points (tor_health)."""

from __future__ import annotations

from datetime import datetime, timezone

from agent.checks.registry import REGISTRY, SEVERITIES, Context, Finding, run_checks
from agent.config import Config
from agent.entries import ABSENT, entries_of
from agent.metrics.points import Point, point
from agent.snapshot import Snapshot

#: A bandwidth authority is remembered this many periods after its last Measured= vote.
BWAUTH_MEMORY_PERIODS = 24


def evaluate(snapshot: Snapshot, config: Config, state=None) -> list[Finding]:
    """Findings for a snapshot; with a state, learns which authorities measure bandwidth.

    A live snapshot is judged against the clock; an archived one as of the
    middle of its own period, so history is not reported as stale.
    """
    consensus = snapshot.latest_consensus()
    if snapshot.archived and consensus is not None:
        now = consensus.valid_after + (consensus.fresh_until - consensus.valid_after) / 2
    else:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
    remembered = state.get("bandwidth_authorities", {}) if state is not None else {}
    if consensus is not None and remembered:
        horizon = (consensus.fresh_until - consensus.valid_after).total_seconds() * BWAUTH_MEMORY_PERIODS
        remembered = {name: seen for name, seen in remembered.items()
                      if consensus.valid_after.timestamp() - seen <= horizon}
    context = Context(snapshot, now, config.checks.thresholds, frozenset(remembered))
    findings = run_checks(context, config.checks.silences, config.checks.disabled)
    if state is not None and consensus is not None:
        for view in snapshot.views.values():
            if view.vote is not None and (entries_of(view.vote).measured != ABSENT).any():
                remembered[view.authority.nickname] = consensus.valid_after.timestamp()
        state.put(bandwidth_authorities=remembered)
    return findings


def health_points(findings: list[Finding], time: int) -> list[Point]:
    """Active findings per check and severity (0 for quiet checks, so alert rules see a series)."""
    counts: dict[tuple[str, str], list[int]] = {}
    for registered in REGISTRY:
        for severity in SEVERITIES:
            counts[(registered.id, severity)] = [0, 0]
    for finding in findings:
        counts[(finding.check, finding.severity)][1 if finding.silenced_by else 0] += 1
    return [point("tor_health", {"check": check_id, "severity": severity}, {"active": active, "silenced": silenced},
                  time) for (check_id, severity), (active, silenced) in counts.items()]
