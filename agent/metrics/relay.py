"""Per-relay metrics (measurement tor_relay, one series per fingerprint), built as columns."""

from __future__ import annotations

import numpy as np

from agent.metrics.relays import KNOWN_FLAGS, RelayTable
from agent.model.points import PointColumns
from agent.model.relays import PreviousRelays
from agent.model.versions import RECOMMENDED


def relay_points(table: RelayTable, previous: PreviousRelays | None, time: int,
                 more: dict[str, np.ndarray] | None = None) -> list:
    """One point per relay in the consensus, plus in_consensus=0 for relays that left.

    ``more`` adds per-relay columns computed elsewhere (path-selection
    probabilities), so each relay stays one point.
    """
    total_weight = float(table.weight.sum()) or 1.0
    # A flag tor adds later shows in tor_network_flag; per relay we keep the
    # catalogued list so every field stays documented.
    fields = {"in_consensus": np.ones(len(table))}
    fields.update({f"flag_{flag.lower()}": table.flags[flag] for flag in KNOWN_FLAGS})
    fields.update({
        "weight": table.weight,
        "weight_fraction": table.weight / total_weight,
        "authorities_listing": table.listed_by,
        "bwauths_measuring": table.measured_count,
        "measured_median": table.measured_median,
        "version_recommended": np.array([status == RECOMMENDED for status in table.version_status], bool),
        "advertised_bandwidth_bytes": table.advertised_bytes,
    })
    fields.update(more or {})
    points: list = PointColumns("tor_relay", "fingerprint", table.fingerprints, fields, time).points()
    if previous is not None:
        gone = sorted(previous.keys() - set(table.fingerprints))
        points += PointColumns("tor_relay", "fingerprint", gone, {"in_consensus": np.zeros(len(gone))}, time).points()
    return points

