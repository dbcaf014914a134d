"""Per-relay metrics (measurement tor_relay, one series per fingerprint)."""

from __future__ import annotations

import statistics

import numpy as np

from agent.metrics.network import PreviousRelays
from agent.metrics.points import Point, point
from agent.metrics.relays import KNOWN_FLAGS, RelayTable
from agent.metrics.versions import RECOMMENDED


def relay_points(table: RelayTable, previous: PreviousRelays | None, time: int) -> list[Point]:
    """One point per relay in the consensus, plus in_consensus=0 for relays that left."""
    total_weight = float(table.weight.sum()) or 1.0
    # A flag tor adds later shows in tor_network_flag; per relay we keep the
    # catalogued list so every field stays documented.
    flag_fields = {flag: f"flag_{flag.lower()}" for flag in KNOWN_FLAGS}
    points = []
    for index, fingerprint in enumerate(table.fingerprints):
        fields = {"in_consensus": 1.0}
        for flag, name in flag_fields.items():
            fields[name] = float(table.flags[flag][index])
        values = table.measured[index]
        advertised = table.advertised_bytes[index]
        fields.update({
            "weight": float(table.weight[index]),
            "weight_fraction": float(table.weight[index]) / total_weight,
            "authorities_listing": int(table.listed_by[index]),
            "bwauths_measuring": len(values) if values else 0,
            "measured_median": float(statistics.median(values)) if values else None,
            "version_recommended": table.version_status[index] == RECOMMENDED,
            "advertised_bandwidth_bytes": None if np.isnan(advertised) else float(advertised),
        })
        points.append(point("tor_relay", {"fingerprint": fingerprint}, fields, time))
    if previous is not None:
        present = set(table.fingerprints)
        points += [point("tor_relay", {"fingerprint": fp}, {"in_consensus": 0}, time)
                   for fp in sorted(previous) if fp not in present]
    return points
