"""The network series the learned baselines watch, computed from a period's facts.

Names read like PromQL selectors (``relays{flag="Guard"}``) and become the
``series`` tag of ``tor_anomaly``. Per-country churn and per-version counts
are kept to the largest countries and versions so the number of series
stays bounded (a version wave shows as the old versions' sudden drop).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from agent.detect.baseline import FLOW, LEVEL, UP, SeriesSpec
from agent.detect.facts import FLAG_BITS, PeriodFacts
from agent.detect.relays import RelayChanges

WATCHED_FLAGS = ("Running", "Valid", "Fast", "Stable", "Guard", "Exit", "HSDir", "BadExit")
TOP_COUNTRIES = 15
TOP_VERSIONS = 10

#: family -> how it is modelled. Floors: counts move by a few relays an hour on their own, weights and
#: bandwidths by a few per cent; a latency by a few hundred milliseconds.
SPECS = {
    "relays": SeriesSpec(LEVEL, floor_absolute=5, floor_relative=0.003),
    "relays_version": SeriesSpec(LEVEL, floor_absolute=5, floor_relative=0.01),
    "weight_total": SeriesSpec(LEVEL, floor_relative=0.02),
    "advertised_bandwidth": SeriesSpec(LEVEL, floor_relative=0.02),
    "joined": SeriesSpec(FLOW, UP, floor_absolute=5),
    "left": SeriesSpec(FLOW, UP, floor_absolute=5),
    "authority_vote_relays": SeriesSpec(LEVEL, floor_absolute=5, floor_relative=0.005),
    "authority_measured_relays": SeriesSpec(LEVEL, floor_absolute=5, floor_relative=0.01),
    "authority_total_measured_weight": SeriesSpec(LEVEL, floor_relative=0.02),
    "authority_consensus_latency_seconds": SeriesSpec(FLOW, UP, floor_absolute=0.5),
}
#: Series whose anomaly means lost capacity or a failing measurer: a warning rather than info.
WARNING_SERIES = frozenset({"relays", "left"})
WARNING_FAMILIES = frozenset({"authority_measured_relays"})


def family_of(name: str) -> str:
    return name.split("{", 1)[0]


def network_series(facts: PeriodFacts, changes: RelayChanges) -> dict[str, float]:
    """Series name -> value for this period (churn series only when the previous period is known)."""
    relays = facts.relays
    values = {"relays": float(len(relays)), "weight_total": float(relays.weight.sum())}
    if not np.isnan(relays.advertised).all():
        values["advertised_bandwidth"] = float(np.nansum(relays.advertised))
    for flag in WATCHED_FLAGS:
        values[f'relays{{flag="{flag}"}}'] = float(np.count_nonzero(relays.flags & FLAG_BITS[flag]))
    for version, count in Counter(v for v in relays.version if v).most_common(TOP_VERSIONS):
        values[f'relays_version{{version="{version}"}}'] = float(count)
    if changes.previous_known:
        values["joined"], values["left"] = float(len(changes.joined)), float(len(changes.left))
        joined_flags = relays.flags[changes.joined]
        for flag in WATCHED_FLAGS:
            bit = FLAG_BITS[flag]
            values[f'joined{{flag="{flag}"}}'] = float(np.count_nonzero(joined_flags & bit))
            values[f'left{{flag="{flag}"}}'] = float(np.count_nonzero(changes.left_flags & bit))
        top = [code for code, _ in Counter(relays.country).most_common(TOP_COUNTRIES) if code != "??"]
        joined_by = Counter(relays.country[i] for i in changes.joined)
        left_by = Counter(changes.left_country)
        for code in top:
            values[f'joined{{country="{code}"}}'] = float(joined_by.get(code, 0))
            values[f'left{{country="{code}"}}'] = float(left_by.get(code, 0))
    for nickname, measured in sorted(facts.authorities.items()):
        for name, value in measured.items():
            values[f'authority_{name}{{authority="{nickname}"}}'] = value
    return values


def severity_of(name: str) -> str:
    return "warning" if name in WARNING_SERIES or family_of(name) in WARNING_FAMILIES else "info"


def label_of(name: str) -> tuple[str, str] | None:
    """The one label of a series name (``joined{country="de"}`` -> ("country", "de")), or None."""
    if "{" not in name:
        return None
    key, _, value = name.split("{", 1)[1].rstrip("}").partition("=")
    return key, value.strip('"')


def spec_for(name: str) -> SeriesSpec:
    return SPECS[family_of(name)]

