"""Every point of one period: Snapshot (+ the previous period's relays) -> points. See catalogue.csv."""

from __future__ import annotations

from agent.metrics.authority import authority_points, fetch_points
from agent.metrics.eligibility import margin_columns
from agent.metrics.geoip import GeoIP
from agent.metrics.network import network_points
from agent.metrics.operator import operator_points
from agent.metrics.overload import overload_fields, overload_network_points, overload_of
from agent.metrics.paths import path_points, path_probabilities, relay_fields
from agent.metrics.relay import relay_points
from agent.metrics.relays import RelayTable, table_of
from agent.metrics.thresholds import VoteStats
from agent.model.entries import entries_of
from agent.model.family import CERT_PROBLEMS, EXPIRING_KIND, operator_families
from agent.model.points import Point, point
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
    chances = path_probabilities(consensus)  # per relay, in the table's order (both follow the consensus)
    overload = overload_of(table, snapshot.server_descriptors, time, snapshot.extra_infos)
    operators = operator_points(table, operators_top_n, time)
    votes = snapshot.votes()
    return (_merged(network_points(consensus, table, previous, time)
                    + overload_network_points(table, overload, time)
                    + operators
                    + family_points(snapshot.server_descriptors, operators, time)
                    + path_points(consensus, table, operators_top_n, time, chances, per_relay=False))
            + authority_points(snapshot, consensus, time)
            + relay_points(table, previous, time, {
                **relay_fields(chances),
                **overload_fields(overload),
                # NaN where a margin is unknown: left out of that relay's point. Each vote's own stats lines give the
                # WFU, time known and MTBF margins (votes of tor 0.4.7 and later have them).
                **margin_columns(entries_of(consensus), votes, snapshot.server_descriptors,
                                 [VoteStats(vote) for vote in votes])}))


def family_points(descriptors: list, operators: list[Point], time: int) -> list[Point]:
    """Family hygiene per operator (contact line) that ``operator_points`` writes (``agent.model.family``),
    family-certs judged at the period's time.

    A period without descriptors writes nothing rather than zeros.
    """
    written = {p.tags["operator_id"]: p.tags for p in operators if p.tags.get("group") == "contact"}
    return [point("tor_operator", written[group.operator_id],
                  {"family_not_mutual": group.family_not_mutual, "family_undeclared": group.family_undeclared,
                   "family_cert_relays": len(group.certified),
                   "family_cert_invalid": len(group.with_problem(*CERT_PROBLEMS)),
                   "family_cert_expiring": len(group.with_problem(EXPIRING_KIND))}, time)
            for group in operator_families(descriptors, time) if group.operator_id in written]


def _merged(points: list[Point]) -> list[Point]:
    """One point per series: the fields of points with the same measurement and tags (one period) combined.

    Operators and countries get fields from two modules (their relays' weight
    and their path-selection probabilities); the store would merge them too,
    but every point here is then one row of one series.
    """
    combined: dict[tuple, Point] = {}
    for each in points:
        key = (each.measurement, tuple(sorted(each.tags.items())))
        if key in combined:
            combined[key] = Point(each.measurement, each.tags, {**combined[key].fields, **each.fields}, each.time)
        else:
            combined[key] = each
    return list(combined.values())


def relays_of(consensus) -> PreviousRelays:
    """What the next period needs from this one: each relay's flags."""
    entries = entries_of(consensus)
    return dict(zip(entries.fingerprints, entries.flag_sets()))
