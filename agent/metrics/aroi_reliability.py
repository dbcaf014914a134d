"""Allium's reliability leaderboard for verified operators: the Running share over 30 days of their relays.

Allium ranks operators with at least 25 relays by their relays' average
uptime ("Reliability Masters"); here the uptime is the reliability
learner's ``running_30d`` (the share of the last 30 days' periods each relay
was in the consensus with Running), weighted by consensus weight as the
learner weights operators. Only relays whose AROI claim is verified count
for a domain. Written by the reliability learner, which holds the scores,
for the domains with enough relays, plus the category's champion.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from agent.metrics.relays import RelayTable
from agent.model.aroi import ProofBook
from agent.model.points import Point, point

#: Allium's rule for its reliability categories: operators with at least this many relays.
MIN_RELAYS = 25
CATEGORY = "reliability"
FIELD = "running_30d"


def aroi_reliability_points(table: RelayTable, running_30d: np.ndarray, proofs: ProofBook | None,
                            time: int, min_relays: int = MIN_RELAYS) -> list[Point]:
    """``tor_aroi_operator{domain}`` running_30d for verified operators with ``min_relays`` relays, and the
    ``tor_aroi_champion{category=reliability}`` point; ``running_30d`` is per relay of ``table`` (NaN: unknown)."""
    if proofs is None or not proofs.proofs or not table.contacts:
        return []
    members: dict[str, list[int]] = defaultdict(list)
    for index, (fingerprint, contact) in enumerate(zip(table.fingerprints, table.contacts)):
        domain = contact.claims_domain and proofs.verdict(fingerprint, contact).verified_domain
        if domain:
            members[domain].append(index)
    scores = {}
    for domain, indices in members.items():
        if len(indices) >= min_relays:
            score = _weighted_mean(running_30d[indices], table.weight[indices])
            if not math.isnan(score):
                scores[domain] = score
    points = [point("tor_aroi_operator", {"domain": domain}, {FIELD: score}, time) for domain, score in
              sorted(scores.items())]
    if scores:
        champion = min(scores, key=lambda domain: (-scores[domain], domain))
        points.append(point("tor_aroi_champion", {"category": CATEGORY, "domain": champion},
                            {"score": scores[champion]}, time))
    return points


def _weighted_mean(values: np.ndarray, weights: np.ndarray) -> float:
    """Mean of the known values weighted by consensus weight (a plain mean where those weights are all 0)."""
    known = ~np.isnan(values)
    if not known.any():
        return math.nan
    value, weight = values[known], np.maximum(weights[known], 0)
    return float((value * weight).sum() / weight.sum()) if weight.sum() > 0 else float(value.mean())
