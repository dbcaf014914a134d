"""Network-wide metrics of one consensus: flags, roles, versions, places, churn, concentration."""

from __future__ import annotations

from collections import defaultdict
from itertools import compress, count, repeat

import numpy as np

from agent.metrics.relays import RelayTable
from agent.model import versions
from agent.model.points import Point, point
from agent.model.relays import PreviousRelays

ROLES = ("guard", "middle", "exit")
CONCENTRATION_TOP = (1, 5, 10)


def network_points(consensus, table: RelayTable, previous: PreviousRelays | None, time: int) -> list[Point]:
    """Every tor_network* point for one consensus (churn only when ``previous`` is known)."""
    total_weight = float(table.weight.sum())
    joined, left = _churn(table.fingerprints, previous)
    points = [point("tor_network", {}, {
        "relays": len(table),
        "weight_total": total_weight,
        "advertised_bandwidth_bytes": float(np.nansum(table.advertised_bytes)),
        "descriptors_ratio": _ratio(int(np.count_nonzero(~np.isnan(table.advertised_bytes))), len(table)),
        "ipv6_orport_relays": int(table.ipv6_orport.sum()),
        "ipv6_exit_relays": int((table.ipv6_exit & table.exit_role).sum()),
        "signatures": len(consensus.signatures),
        "votes": sum(1 for source in consensus.directory_authorities if not source.is_legacy),
        "consensus_method": consensus.consensus_method,
        "joined_relays": joined,
        "left_relays": left,
    }, time)]
    points += _flag_points(table, previous, total_weight, time)
    points += _role_points(consensus, table, time)
    points += _group_points("tor_network_version", "status", table.version_status, table, total_weight, time,
                            always=versions.STATUSES)
    points += _group_points("tor_network_version_series", "series", table.version_series, table, total_weight, time)
    points += _group_points("tor_network_platform", "os", table.platform, table, total_weight, time)
    points += _group_points("tor_network_country", "country", table.country, table, total_weight, time)
    points += concentration_points(table, time)
    points += [point("tor_network_bandwidth_weight", {"param": name}, {"value": value / 10000.0}, time)
               for name, value in sorted(bandwidth_weights(consensus).items())]
    return points


#: tor reads bandwidth-weights as int32 (ns_parse.c); the parser refuses others.
_WEIGHT_RANGE = (-2 ** 31, 2 ** 31 - 1)


def bandwidth_weights(consensus) -> dict[str, int]:
    """The consensus's bandwidth-weights, without any outside int32 (a document made otherwise, e.g. by stem in
    tests, could carry one, which would overflow a float)."""
    low, high = _WEIGHT_RANGE
    return {name: value for name, value in (consensus.bandwidth_weights or {}).items() if low <= value <= high}


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _churn(fingerprints: list[str], previous: PreviousRelays | None) -> tuple[int | None, int | None]:
    """(relays that joined, relays that left) since the previous period (None, None without one)."""
    if previous is None:
        return None, None
    now = set(fingerprints)
    return len(now - previous.keys()), len(previous.keys() - now)


def _flag_points(table: RelayTable, previous: PreviousRelays | None, total_weight: float, time: int) -> list[Point]:
    """Per flag: relays with it, their weight share and (with ``previous``) how many gained and lost it."""
    flags = list(table.flags)
    has = np.array([table.flags[flag] for flag in flags], bool).reshape(len(flags), len(table))  # flag x relay
    relays, weights = has.sum(axis=1).tolist(), (has @ table.weight).tolist()
    fields = [{"relays": holding, "weight_fraction": _ratio(weight, total_weight)}
              for holding, weight in zip(relays, weights)]
    if previous is not None:
        # The previous flags of each relay now, and the present flags of each relay then (absent: no flags).
        had = _flag_matrix(list(map(previous.get, table.fingerprints, repeat(_NONE))), flags)
        present = dict(zip(table.fingerprints, range(len(table))))
        rows_now = np.fromiter(map(present.get, previous, repeat(-1)), np.int64, len(previous))
        has_still = has[:, np.maximum(rows_now, 0)] & (rows_now >= 0) if len(table) else \
            np.zeros((len(flags), len(previous)), bool)
        before = _flag_matrix(list(previous.values()), flags)
        for item, joined, left in zip(fields, (has & ~had).sum(axis=1).tolist(),
                                      (before & ~has_still).sum(axis=1).tolist()):
            item.update(joined=joined, left=left)
    return [point("tor_network_flag", {"flag": flag}, item, time) for flag, item in zip(flags, fields)]


_NONE: frozenset = frozenset()


def _flag_matrix(flag_sets: list[frozenset], flags: list[str]) -> np.ndarray:
    """flag x set: which of ``flag_sets`` hold each flag (each distinct set is looked at once)."""
    codes = dict(zip(dict.fromkeys(flag_sets), count()))
    rows = np.fromiter(map(codes.__getitem__, flag_sets), np.int64, len(flag_sets))
    holds = np.array([[flag in flag_set for flag_set in codes] for flag in flags], bool).reshape(len(flags), len(codes))
    return holds[:, rows]


def role_masks(table: RelayTable) -> dict[str, np.ndarray]:
    """guard (Guard, not exit), exit (Exit and not BadExit), middle (the rest)."""
    exits = table.exit_role
    guards = table.flags["Guard"] & ~exits
    return {"guard": guards, "middle": ~guards & ~exits, "exit": exits}


def role_weight_fractions(consensus, table: RelayTable) -> dict[str, float] | None:
    """Share of consensus weight clients give each position, from the bandwidth weights.

    dir-spec 3.8.3: guard = Wgg*G + Wgd*D, middle = Wmg*G + Wmm*M + Wme*E + Wmd*D,
    exit = Wee*E + Wed*D, where G, M, E, D are the weights of guard-only,
    neither, exit-only and guard+exit relays.
    """
    weights = bandwidth_weights(consensus)
    if not weights:
        return None
    exits, guards = table.exit_role, table.flags["Guard"]
    sums = {
        "G": float(table.weight[guards & ~exits].sum()), "D": float(table.weight[guards & exits].sum()),
        "E": float(table.weight[exits & ~guards].sum()), "M": float(table.weight[~guards & ~exits].sum()),
    }
    w = defaultdict(int, weights)
    by_role = {
        "guard": w["Wgg"] * sums["G"] + w["Wgd"] * sums["D"],
        "middle": w["Wmg"] * sums["G"] + w["Wmm"] * sums["M"] + w["Wme"] * sums["E"] + w["Wmd"] * sums["D"],
        "exit": w["Wee"] * sums["E"] + w["Wed"] * sums["D"],
    }
    total = sum(by_role.values())
    return {role: _ratio(value, total) for role, value in by_role.items()}


def _role_points(consensus, table: RelayTable, time: int) -> list[Point]:
    fractions = role_weight_fractions(consensus, table) or {}
    points = []
    for role, mask in role_masks(table).items():
        points.append(point("tor_network_role", {"role": role}, {
            "relays": int(mask.sum()),
            "weight_fraction": fractions.get(role),
            "advertised_bandwidth_bytes": float(np.nansum(table.advertised_bytes[mask])),
        }, time))
    return points


def _group_points(measurement: str, tag: str, labels: list[str], table: RelayTable, total_weight: float,
                  time: int, always: tuple[str, ...] = ()) -> list[Point]:
    groups, relays, weight = group_sums(labels, table.weight, always)
    return [point(measurement, {tag: label}, {"relays": int(relays[index]),
                                              "weight_fraction": _ratio(float(weight[index]), total_weight)}, time)
            for label, index in sorted(groups.items())]


def group_sums(labels: list, weights: np.ndarray, always: tuple = ()) -> tuple[dict, np.ndarray, np.ndarray]:
    """Label -> group index, and per group the members and their summed weight (``always`` groups kept at 0)."""
    distinct = dict.fromkeys(always)
    distinct.update(dict.fromkeys(labels))
    groups = dict(zip(distinct, range(len(distinct))))
    codes = np.fromiter(map(groups.__getitem__, labels), np.int64, len(labels))
    return (groups, np.bincount(codes, minlength=len(groups)),
            np.bincount(codes, weights=weights, minlength=len(groups)) if len(labels) else np.zeros(len(groups)))


def concentration_points(table: RelayTable, time: int) -> list[Point]:
    """Herfindahl index and top-N shares of consensus weight by country, operator and family.

    A relay without contact (or family) counts as an operator (family) of its own,
    so anonymous relays do not pool into one giant fake operator.
    """
    groupings = {"country": table.country, "operator": table.operator_id, "family": table.family_id}
    total = float(table.weight.sum())
    points = []
    for by, keys in groupings.items():
        sums = _group_weights(keys, table.weight)
        shares = np.sort(sums / total)[::-1] if total else np.zeros(0)
        fields = {"hhi": float(np.sum(shares ** 2)), "groups": len(sums)}
        fields.update({f"top{n}_fraction": float(shares[:n].sum()) for n in CONCENTRATION_TOP})
        points.append(point("tor_network_concentration", {"by": by}, fields, time))
    return points


def _group_weights(keys: list, weights: np.ndarray) -> np.ndarray:
    """The summed weight of each group of relays sharing a key; a relay whose key is None is a group alone."""
    alone = np.equal(np.array(keys, object), None)
    if not alone.any():
        return group_sums(keys, weights)[2]
    grouped = group_sums(list(compress(keys, ~alone)), weights[~alone])[2]
    return np.concatenate([grouped, weights[alone]])
