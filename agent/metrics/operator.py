"""Per-operator metrics for the largest operators, by contact line and by family.

Only the top operators by weight are written, so the operator tag stays
bounded (``metrics.operators_top_n``); everyone else is still counted in the
network concentration metrics.
"""

from __future__ import annotations

from collections import defaultdict

from agent.metrics.relays import RelayTable
from agent.model.points import Point, point


def operator_points(table: RelayTable, top_n: int, time: int) -> list[Point]:
    total_weight = float(table.weight.sum()) or 1.0
    points = []
    if not any(table.operator_id) and not any(table.family_id):
        return points  # no descriptors (e.g. an archive without them): no operators to rank
    groupings = {
        "contact": list(zip(table.operator_id, table.operator_label)),
        "family": [(key[:12], key) if key else (None, None) for key in table.family_id],
    }
    for group, keys in groupings.items():
        members: dict[tuple[str, str], list[int]] = defaultdict(list)
        for index, (key, label) in enumerate(keys):
            if key is not None:
                members[(key, label)].append(index)
        ranked = sorted(members.items(), key=lambda item: -float(table.weight[item[1]].sum()))
        for (key, label), indices in ranked[:top_n]:
            points.append(point("tor_operator", {"group": group, "operator_id": key, "operator": label}, {
                "relays": len(indices),
                "weight_fraction": float(table.weight[indices].sum()) / total_weight,
                "guard_relays": int(table.flags["Guard"][indices].sum()),
                "exit_relays": int(table.exit_role[indices].sum()),
                "countries": len({table.country[index] for index in indices}),
                "platforms": len({table.platform[index] for index in indices}),
            }, time))
    return points
