"""Every point of one period: Snapshot (+ the previous period's relays) -> points. See catalogue.csv."""

from __future__ import annotations

from agent.metrics.authority import authority_points, fetch_points
from agent.metrics.geoip import GeoIP
from agent.metrics.network import network_points
from agent.metrics.operator import operator_points
from agent.metrics.relay import relay_points
from agent.metrics.relays import RelayTable, table_of
from agent.model.entries import entries_of
from agent.model.points import Point
from agent.model.relays import PreviousRelays
from agent.model.snapshot import Snapshot
from agent.model.time import unix


def snapshot_points(snapshot: Snapshot, previous: PreviousRelays | None, geoip: GeoIP,
                    operators_top_n: int = 200, table: RelayTable | None = None) -> list[Point]:
    """Every point of one voting period, stamped with the newest accepted consensus's valid-after.

    Without an accepted consensus there is no period to stamp: only the fetch
    records become points, at the fetch time, so an outage still shows.
    """
    consensus = snapshot.latest_consensus()
    if consensus is None:
        return fetch_points(snapshot, unix(snapshot.started_at))
    time = unix(consensus.valid_after)
    if table is None:
        table = table_of(snapshot, consensus, geoip)
    return (network_points(consensus, table, previous, time)
            + authority_points(snapshot, consensus, time)
            + relay_points(table, previous, time)
            + operator_points(table, operators_top_n, time))


def relays_of(consensus) -> PreviousRelays:
    """What the next period needs from this one: each relay's flags."""
    entries = entries_of(consensus)
    return dict(zip(entries.fingerprints, entries.flag_sets()))
