"""What one period yields, live or replayed: its points and check findings, nothing stored.

Kept apart from ``agent.cycle`` so that backfill's worker processes do not
import the anomaly detectors (River and SciPy take about a second to load).
"""

from __future__ import annotations

from agent.checks.evaluate import evaluate, health_points
from agent.config import Config
from agent.geoip import GeoIP
from agent.metrics import snapshot_points
from agent.metrics.authority import unix
from agent.metrics.relays import table_of
from agent.snapshot import Snapshot
from agent.state import State


def period_time_of(snapshot: Snapshot) -> int:
    """The time a period's points carry: its consensus's valid-after, or when we fetched without one."""
    consensus = snapshot.latest_consensus()
    return unix(consensus.valid_after) if consensus is not None else unix(snapshot.started_at)


def period_points(snapshot: Snapshot, config: Config, geoip: GeoIP, previous, state: State | None = None):
    """(points, check findings, relay table) of a snapshot: metrics and checks, nothing stored.

    Without an accepted consensus the checks still run: unreachable authorities
    and a lost quorum are exactly what must be reported then.
    """
    consensus = snapshot.latest_consensus()
    table = table_of(snapshot, consensus, geoip) if consensus is not None else None
    points = snapshot_points(snapshot, previous, geoip, config.metrics.operators_top_n, table)
    findings = evaluate(snapshot, config, state)
    points += health_points(findings, period_time_of(snapshot))
    return points, findings, table
