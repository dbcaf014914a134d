"""Authenticated relay operator ID (AROI) metrics: claims, verdicts, verified operators and their leaderboards.

Per period: how many relays make a complete CIISS claim for an operator
domain and what the proofs said of them (``tor_aroi``, by outcome, contact
status and proof type); per verified operator (a domain whose proof lists at
least one of the relays claiming it) its relays, weight and spread
(``tor_aroi_operator``); and the champion of each of Allium's leaderboard
categories (``tor_aroi_champion``, Allium's ``lib/aroileaders.py``). Only
relays the proof lists count for an operator: a relay claiming the domain
that is not listed (an impersonator, or a relay the operator forgot) is
counted in ``claimed_unverified`` instead.

Bounded series: operators are written for the ``top_n`` by consensus weight
and for each category's champion, so at most ``top_n`` plus one per category.
Allium's reliability category (operators with 25+ relays, by uptime) needs
the reliability learner's scores, which come after the metrics: the learner
writes it (``agent.metrics.aroi_reliability``). Its 5-year variants and the
"bandwidth served" ones need history the agent does not keep; not computed.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from agent.metrics.claims import claim_points
from agent.metrics.geoip import UNKNOWN
from agent.metrics.relays import NO_DESCRIPTOR, RelayTable
from agent.model.aroi import Outcome, ProofBook, Verdict
from agent.model.ciiss import (
    COMPLETE,
    NO_CONTACT,
    NO_DOMAIN,
    NO_PROOF,
    NO_VERSION,
    NOT_CIISS,
    PROOF_TYPES,
    ContactFields,
    parse_contact,
)
from agent.model.points import Point, point

#: The contact statuses, worst first (``ContactFields.status``).
STATUSES = (NO_CONTACT, NOT_CIISS, NO_VERSION, NO_DOMAIN, NO_PROOF, COMPLETE)
#: The ``proof`` tag: a known proof type, another value of the proof field, or no proof field.
PROOF_TAGS = (*PROOF_TYPES, "other", "none")
#: The 27 member states of the European Union (europa.eu, "EU countries", since 2020-02-01); the same set as
#: Allium's ``eu_countries`` (lib/aroileaders.py).
EU_COUNTRIES = frozenset({"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE", "IT",
                          "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE"})
#: Allium's static rare-country set for its Frontier Builders (lib/aroileaders.py ``rare_countries``); its weighted
#: rarity score (network-share tiers, geopolitical and regional factors) is not reproduced.
FRONTIER_COUNTRIES = frozenset({"MN", "TN", "UY", "KZ", "MD", "LK", "MK", "MT"})
#: Leaderboard category -> the tor_aroi_operator field it ranks by (higher is better).
CATEGORIES = {
    "bandwidth": "advertised_bandwidth_bytes",
    "consensus_weight": "weight_fraction",
    "exit_weight": "exit_weight_fraction",
    "guard_weight": "guard_weight_fraction",
    "exit_relays": "exit_relays",
    "guard_relays": "guard_relays",
    "countries": "countries",
    "non_linux": "non_linux_relays",
    "non_eu": "non_eu_weight_fraction",
    "frontier": "frontier_relays",
    "ipv6": "ipv6_relays",
}
_NO_CONTACT = parse_contact(None)


def aroi_points(table: RelayTable, proofs: ProofBook | None, top_n: int, time: int) -> list[Point]:
    """Every tor_aroi* point of one consensus; ``proofs`` None (not verified, e.g. backfill): no claim is checked."""
    contacts = table.contacts or [_NO_CONTACT] * len(table)
    if len(contacts) != len(table):
        raise ValueError(f"relay table: {len(contacts)} contacts for {len(table)} relays")
    statuses = [contact.status for contact in contacts]
    verdicts = [_verdict(fingerprint, contact, status, proofs)
                for fingerprint, contact, status in zip(table.fingerprints, contacts, statuses)]
    total = float(table.weight.sum())
    points = _network_points(table, contacts, statuses, verdicts, total, time)
    operators = operator_fields(table, contacts, verdicts, total)
    champions = champions_of(operators)
    ranked = sorted(operators, key=lambda domain: (-operators[domain]["weight_fraction"], domain))
    written = dict.fromkeys(ranked[:max(top_n, 0)] + [domain for domain, _ in champions.values()])
    points += [point("tor_aroi_operator", {"domain": domain}, operators[domain], time) for domain in written]
    points += [point("tor_aroi_champion", {"category": category, "domain": domain}, {"score": score}, time)
               for category, (domain, score) in champions.items()]
    return points + claim_points(table, contacts, top_n, time)


def _verdict(fingerprint: str, contact: ContactFields, status: str, proofs: ProofBook | None) -> Verdict:
    if status != COMPLETE:
        return Verdict(Outcome.INCOMPLETE, contact.domain, contact.proof, status)
    if proofs is None:
        return Verdict(Outcome.NOT_CHECKED, contact.domain, contact.proof, "proofs are not verified in this run")
    return proofs.verdict(fingerprint, contact)


def _ratio(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _network_points(table: RelayTable, contacts: list[ContactFields], statuses: list[str], verdicts: list[Verdict],
                    total: float, time: int) -> list[Point]:
    """tor_aroi (the network's claims and verdicts) and its splits by outcome, contact status and proof type."""
    outcomes = [verdict.outcome.value for verdict in verdicts]
    verified = np.array([verdict.outcome is Outcome.VERIFIED for verdict in verdicts], bool)
    claimed = {contact.domain for contact, status in zip(contacts, statuses) if status == COMPLETE}
    verified_domains = {verdict.domain for verdict in verdicts if verdict.outcome is Outcome.VERIFIED}
    points = [point("tor_aroi", {}, {
        "relays_with_contact": sum(status != NO_CONTACT for status in statuses),
        "ciiss_relays": sum(status not in (NO_CONTACT, NOT_CIISS) for status in statuses),
        "complete_claims": statuses.count(COMPLETE),
        "claimed_domains": len(claimed),
        "verified_relays": int(verified.sum()),
        "verified_domains": len(verified_domains),
        "verified_weight_fraction": _ratio(float(table.weight[verified].sum()), total),
    }, time)]
    for measurement, tag, labels, values in (("tor_aroi_outcome", "outcome", outcomes, [o.value for o in Outcome]),
                                             ("tor_aroi_contact", "status", statuses, STATUSES)):
        for value in values:
            mask = np.array([label == value for label in labels], bool)
            points.append(point(measurement, {tag: value}, {
                "relays": int(mask.sum()), "weight_fraction": _ratio(float(table.weight[mask].sum()), total)}, time))
    proof_tags = [_proof_tag(contact) for contact in contacts]
    for proof in PROOF_TAGS:
        # Over the relays whose contact line has AROI fields: "none" is a claim without a proof field.
        members = [index for index, (tag, status) in enumerate(zip(proof_tags, statuses))
                   if tag == proof and status not in (NO_CONTACT, NOT_CIISS)]
        listed = [index for index in members if verified[index]]
        points.append(point("tor_aroi_proof", {"proof": proof}, {
            "relays": len(members),
            "complete_claims": sum(statuses[index] == COMPLETE for index in members),
            "verified_relays": len(listed),
            "verified_domains": len({verdicts[index].domain for index in listed}),
        }, time))
    return points


def _proof_tag(contact: ContactFields) -> str:
    if contact.proof is None:
        return "none"
    return contact.proof if contact.proof in PROOF_TYPES else "other"


def operator_fields(table: RelayTable, contacts: list[ContactFields], verdicts: list[Verdict],
                    total: float) -> dict[str, dict[str, float | None]]:
    """Verified domain -> its tor_aroi_operator fields, over the relays its proof lists (Outcome.VERIFIED)."""
    members: dict[str, list[int]] = defaultdict(list)
    claims: Counter[str] = Counter()
    for index, (contact, verdict) in enumerate(zip(contacts, verdicts)):
        if verdict.outcome is Outcome.VERIFIED and verdict.domain is not None:
            members[verdict.domain].append(index)
        elif verdict.outcome is not Outcome.INCOMPLETE and contact.domain is not None:
            claims[contact.domain] += 1
    guards, exits = table.flags["Guard"], table.exit_role
    operators = {}
    for domain, indices in members.items():
        rows = np.array(indices, np.int64)
        weights = table.weight[rows]
        countries = [table.country[index].upper() for index in indices]
        platforms = [table.platform[index] for index in indices if table.platform[index] != NO_DESCRIPTOR]
        advertised = table.advertised_bytes[rows]
        non_eu = np.array([country != UNKNOWN and country not in EU_COUNTRIES for country in countries], bool)
        non_linux = sum(platform != "Linux" for platform in platforms)
        ipv6 = int(table.ipv6_orport[rows].sum())
        methods = Counter(verdicts[index].method for index in indices)
        operators[domain] = {
            "relays": len(indices),
            "weight_fraction": _ratio(float(weights.sum()), total),
            "advertised_bandwidth_bytes": float(np.nansum(advertised)) if (~np.isnan(advertised)).any() else None,
            "exit_weight_fraction": _ratio(float(weights[exits[rows]].sum()), total),
            "guard_weight_fraction": _ratio(float(weights[guards[rows]].sum()), total),
            "exit_relays": int(exits[rows].sum()),
            "guard_relays": int(guards[rows].sum()),
            "countries": len(set(countries) - {UNKNOWN}),
            "platforms": len(set(platforms)),
            "non_linux_relays": non_linux,
            "non_linux_fraction": non_linux / len(platforms) if platforms else None,
            "non_eu_weight_fraction": _ratio(float(weights[non_eu].sum()), total),
            "frontier_relays": sum(country in FRONTIER_COUNTRIES for country in countries),
            "ipv6_relays": ipv6,
            "ipv6_fraction": ipv6 / len(indices),
            "uri_rsa_relays": methods["uri-rsa"],
            "dns_rsa_relays": methods["dns-rsa"],
            "claimed_unverified": claims[domain],
        }
    return operators


def champions_of(operators: dict[str, dict[str, float | None]]) -> dict[str, tuple[str, float]]:
    """Category -> (champion domain, its score): the highest value of the category's field, ties to the first
    domain by name. A category where no operator scores above 0 has no champion."""
    champions = {}
    for category, field_name in CATEGORIES.items():
        scored = [(float(score), domain) for domain, fields in operators.items()
                  if (score := fields.get(field_name)) is not None and score > 0]
        if scored:
            score, domain = min(scored, key=lambda item: (-item[0], item[1]))
            champions[category] = (domain, score)
    return champions
