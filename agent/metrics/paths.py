"""Path-selection probabilities: how likely a client is to pick each relay as its guard, middle or exit.

A client weights each candidate relay by its consensus weight (``w
Bandwidth=``) times the consensus's ``bandwidth-weights`` entry for the
relay's class and the position being filled (dir-spec 3.4.1 "bandwidth-weights",
path-spec "Weighting node selection", tor's ``compute_weighted_bandwidths`` in
node_select.c). A relay's probability for a position is its weighted
bandwidth over the sum for all candidates of that position: Onionoo's
``guard_probability``, ``middle_probability`` and ``exit_probability``, and
what Relay Search shows. Operators' and countries' probabilities are sums
over their relays: the chance that a client's pick for that position is one
of theirs. docs/paths.md gives the formulas and every decision below with its
reference.

Classes (dir-spec 3.8.3): D = Guard and exit, G = Guard only, E = exit only,
M = neither, where "exit" means Exit and not BadExit. Positions read:

    guard:  G * Wgg, D * Wgd                              (candidates: Guard)
    middle: G * Wmg, M * Wmm, E * Wme, D * Wmd            (candidates: all)
    exit:   E * Wee, D * Wed                              (candidates: Exit, not BadExit)

and only relays with Running and Valid are candidates at all.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.metrics.network import bandwidth_weights
from agent.metrics.relays import RelayTable
from agent.model.entries import ABSENT, entries_of
from agent.model.points import Point, PointColumns, point

POSITIONS = ("guard", "middle", "exit")
FIELDS = {position: f"{position}_probability" for position in POSITIONS}

#: Per position, the weight applied to each relay class (G, M, E, D); a class absent here is not a candidate
#: for the position (tor's guard rule does have Wgm, and its exit rule Wem and Weg, but only for bridges and for
#: relays without the flag picked for an odd port: the positions as Onionoo defines them never meet those).
POSITION_WEIGHTS: dict[str, dict[str, str]] = {
    "guard": {"G": "Wgg", "D": "Wgd"},
    "middle": {"G": "Wmg", "M": "Wmm", "E": "Wme", "D": "Wmd"},
    "exit": {"E": "Wee", "D": "Wed"},
}
REQUIRED_WEIGHTS = tuple(sorted({name for weights in POSITION_WEIGHTS.values() for name in weights.values()}))

#: tor uses 30,000 bytes/s for an entry without a ``w Bandwidth=`` ("chosen arbitrarily", node_select.c). No
#: consensus since tor 0.2.0 lacks one; stem's ``.create()`` entries do.
MISSING_BANDWIDTH_BYTES = 30_000
#: tor turns a consensus weight (kilobytes/s) into bytes with ``kb_to_bytes``, which gives INT32_MAX for any
#: weight above INT32_MAX // 1000 (none is near: the largest on the live network are ~500,000).
_INT32_MAX = 2 ** 31 - 1


@dataclass(frozen=True)
class Probabilities:
    """Per relay of a consensus (its order), the probability of each position; 0 where not a candidate.

    ``weighted`` is False when the consensus gave no usable bandwidth-weights
    and every weight was taken as 1 (path-spec: "clients proceed ... setting
    the weights to the default value of 10000").
    """

    guard: np.ndarray
    middle: np.ndarray
    exit: np.ndarray
    weighted: bool

    def of(self, position: str) -> np.ndarray:
        return {"guard": self.guard, "middle": self.middle, "exit": self.exit}[position]

    def __len__(self) -> int:
        return len(self.guard)


def position_weights(consensus: Any) -> dict[str, int] | None:
    """The eight weights the positions read, or None when one is missing or negative.

    tor (node_select.c) falls back to unweighted selection when a weight it
    needs is absent or negative; values outside int32 (which tor's parser
    refuses) count as absent (``network.bandwidth_weights``). The weights are
    not divided by ``bwweightscale``: one scale for all weights cancels out
    when each position is normalised.
    """
    weights = bandwidth_weights(consensus)
    if any(weights.get(name, -1) < 0 for name in REQUIRED_WEIGHTS):
        return None
    return {name: weights[name] for name in REQUIRED_WEIGHTS}


def client_bandwidth(bandwidth: np.ndarray) -> np.ndarray:
    """Consensus weights (``ABSENT`` where no ``w`` line) as tor's client reads them: bytes/s, as floats."""
    column = np.asarray(bandwidth, np.int64)
    kilobytes = np.clip(column, 0, _INT32_MAX // 1000 + 1)  # clipped first: * 1000 must not wrap around int64
    in_bytes = np.where(kilobytes > _INT32_MAX // 1000, _INT32_MAX, kilobytes * 1000)
    return np.where(column == ABSENT, MISSING_BANDWIDTH_BYTES, in_bytes).astype(float)


def probabilities(flags: Mapping[str, np.ndarray], bandwidth: np.ndarray,
                  weights: Mapping[str, int] | None) -> Probabilities:
    """Each relay's probability per position, from its flags, its consensus weight and the consensus's weights.

    ``flags`` maps Running, Valid, Guard, Exit and BadExit to boolean columns
    (a flag missing from it is held by no relay); ``bandwidth`` is the ``w
    Bandwidth=`` column (``ABSENT`` where missing); ``weights`` is
    ``position_weights()``'s answer (None: every weight 1). Where the
    candidates of a position all weigh 0, tor picks among them uniformly
    (``choose_array_element_by_weight``), and so do these probabilities; a
    position without any candidate has probability 0 everywhere.
    """
    count = len(bandwidth)

    def flag(name: str) -> np.ndarray:
        column = flags.get(name)
        return np.zeros(count, bool) if column is None else np.asarray(column, bool)

    selectable = flag("Running") & flag("Valid")
    exits = flag("Exit") & ~flag("BadExit")  # BadExit: never an exit, weighted as a non-exit elsewhere (dir-spec)
    guards = flag("Guard")
    classes = {"G": guards & ~exits, "M": ~guards & ~exits, "E": exits & ~guards, "D": guards & exits}
    relay_bandwidth = client_bandwidth(bandwidth)
    columns = {}
    for position, by_class in POSITION_WEIGHTS.items():
        factor = np.zeros(count)
        candidates = np.zeros(count, bool)
        for relay_class, name in by_class.items():
            factor[classes[relay_class]] = float(weights[name]) if weights is not None else 1.0
            candidates |= classes[relay_class]
        candidates &= selectable
        columns[position] = _normalised(np.where(candidates, factor * relay_bandwidth, 0.0), candidates)
    return Probabilities(columns["guard"], columns["middle"], columns["exit"], weights is not None)


def _normalised(weighted: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    total = float(weighted.sum())
    if total > 0:
        return weighted / total
    chosen = int(candidates.sum())
    return candidates / chosen if chosen else np.zeros(len(weighted))


def path_probabilities(consensus: Any) -> Probabilities:
    """The probabilities of the relays of ``consensus`` (ns or microdesc flavour), in its entries' order."""
    entries = entries_of(consensus)
    flags = {name: entries.has_flag(name) for name in ("Running", "Valid", "Guard", "Exit", "BadExit")}
    return probabilities(flags, entries.bandwidth, position_weights(consensus))


# -- sums per group --------------------------------------------------------------------------------------------

def group_probabilities(keys: Sequence[Hashable | None], chances: Probabilities) -> dict[Hashable, np.ndarray]:
    """Key -> [guard, middle, exit] summed over the relays with that key (relays whose key is None are left out)."""
    return group_sums(keys, [chances.of(position) for position in POSITIONS])


def group_sums(keys: Sequence[Hashable | None], columns: Sequence[np.ndarray]) -> dict[Hashable, np.ndarray]:
    """Key -> each column summed over the relays with that key, in one pass (a None key is no group)."""
    present = np.fromiter((key is not None for key in keys), bool, len(keys))
    if not present.any():
        return {}
    kept = [key for key in keys if key is not None]
    codes = dict(zip(dict.fromkeys(kept), range(len(kept))))
    rows = np.fromiter(map(codes.__getitem__, kept), np.int64, len(kept))
    sums = np.array([np.bincount(rows, weights=np.asarray(column, float)[present], minlength=len(codes))
                     for column in columns]).reshape(len(columns), len(codes))  # column x group
    return {key: sums[:, code] for key, code in codes.items()}


def operator_keys(table: RelayTable) -> dict[str, list[tuple[str, Any] | None]]:
    """Per grouping, each relay's (operator_id, operator) tags, as ``operator.operator_points`` writes them."""
    return {
        "contact": [(key, label) if key is not None else None
                    for key, label in zip(table.operator_id, table.operator_label)],
        "family": [(key[:12], key) if key else None for key in table.family_id],
    }


def ranked_operators(keys: Sequence[tuple[str, Any] | None], weight: np.ndarray, chances: Probabilities,
                     top_n: int) -> dict[Any, np.ndarray]:
    """The operators with series of their own: the top ``top_n`` by weight (those ``operator_points`` writes)
    and the top ``top_n`` by each position's probability, with their [guard, middle, exit] sums.

    Ranking by probability as well keeps an operator of few but well-placed
    relays (say, exits only, when exit weight is scarce) from being missed.
    """
    sums = group_probabilities(keys, chances)
    if not sums:
        return {}
    weights = group_sums(keys, [weight])
    chosen: dict[Hashable, None] = {}
    by_weight = sorted(weights, key=lambda key: -float(weights[key][0]))
    chosen.update(dict.fromkeys(by_weight[:top_n]))
    for index in range(len(POSITIONS)):
        ranked = sorted(sums, key=lambda key: -float(sums[key][index]))
        chosen.update(dict.fromkeys(key for key in ranked[:top_n] if sums[key][index] > 0))
    return {key: sums[key] for key in chosen}


# -- points ----------------------------------------------------------------------------------------------------

def path_points(consensus: Any, table: RelayTable, top_n: int, time: int,
                chances: Probabilities | None = None, per_relay: bool = True) -> list[Point]:
    """Path-selection probabilities as points: per relay (tor_relay), per operator (tor_operator) and per country
    (tor_network_country), each with the fields guard_probability, middle_probability and exit_probability.

    ``table`` is the period's relay table (``relays.table_of``), built from
    the same ``consensus`` (same relays, same order). With ``per_relay``
    False the tor_relay points are left to the caller, which can add
    ``relay_fields(chances)`` to ``relay.relay_points``'s own (one tor_relay
    point per relay instead of two).
    """
    if chances is None:
        chances = path_probabilities(consensus)
    if len(chances) != len(table):
        raise ValueError(f"the relay table has {len(table)} relays, the consensus {len(chances)}")
    points = relay_path_points(table, chances, time) if per_relay else []
    return points + operator_path_points(table, chances, top_n, time) + country_path_points(table, chances, time)


def relay_fields(chances: Probabilities) -> dict[str, np.ndarray]:
    """The per-relay columns: field name -> probability per relay (0 where it is no candidate)."""
    return {FIELDS[position]: chances.of(position) for position in POSITIONS}


def relay_path_points(table: RelayTable, chances: Probabilities, time: int) -> list[Any]:
    """One tor_relay point per relay with its three probabilities."""
    return list(PointColumns("tor_relay", "fingerprint", table.fingerprints, relay_fields(chances), time).points())


def operator_path_points(table: RelayTable, chances: Probabilities, top_n: int, time: int) -> list[Point]:
    """tor_operator points (tags as ``operator.operator_points``) with each operator's summed probabilities."""
    points = []
    for group, keys in operator_keys(table).items():
        for (key, label), sums in ranked_operators(keys, table.weight, chances, top_n).items():
            points.append(point("tor_operator", {"group": group, "operator_id": key, "operator": label},
                                dict(zip(FIELDS.values(), sums.tolist())), time))
    return points


def country_path_points(table: RelayTable, chances: Probabilities, time: int) -> list[Point]:
    """tor_network_country points with each country's summed probabilities (every country with a relay)."""
    sums = group_probabilities(table.country, chances)
    return [point("tor_network_country", {"country": str(country)}, dict(zip(FIELDS.values(), values.tolist())), time)
            for country, values in sorted(sums.items(), key=lambda item: str(item[0]))]
