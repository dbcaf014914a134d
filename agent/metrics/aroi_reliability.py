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

import numpy as np

from agent.metrics.relays import RelayTable
from agent.metrics.reliability import weighted_means
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
    code_of: dict[str, int] = {}
    codes = np.full(len(table), -1, np.int64)
    for index, (fingerprint, contact) in enumerate(zip(table.fingerprints, table.contacts)):
        domain = contact.claims_domain and proofs.verdict(fingerprint, contact).verified_domain
        if domain:
            codes[index] = code_of.setdefault(domain, len(code_of))
    relays = np.bincount(codes[codes >= 0], minlength=len(code_of))
    means = weighted_means(codes, running_30d, table.weight, len(code_of))
    scores = {domain: float(means[code]) for domain, code in code_of.items()
              if relays[code] >= min_relays and not math.isnan(means[code])}
    points = [point("tor_aroi_operator", {"domain": domain}, {FIELD: score}, time) for domain, score in
              sorted(scores.items())]
    if scores:
        champion = min(scores, key=lambda domain: (-scores[domain], domain))
        points.append(point("tor_aroi_champion", {"category": CATEGORY, "domain": champion},
                            {"score": scores[champion]}, time))
    return points

