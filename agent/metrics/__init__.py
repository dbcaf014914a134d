"""Pure: Snapshot (+ the previous period's relays) -> points. See catalogue.csv."""

from __future__ import annotations

from agent.entries import entries_of
from agent.geoip import GeoIP
from agent.metrics.authority import authority_points, fetch_points, unix
from agent.metrics.network import PreviousRelays, network_points
from agent.metrics.operator import operator_points
from agent.metrics.points import Point
from agent.metrics.relay import relay_points
from agent.metrics.relays import RelayTable, table_of
from agent.snapshot import Snapshot

__all__ = ["Point", "PreviousRelays", "snapshot_points", "relays_of"]


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
