"""The AROI dashboard: verification of operators' claims, the category champions and Allium's leaderboards.

Reads the tor_aroi* measurements (``agent.metrics.aroi``): how many relays
claim an operator domain and what the proofs said, an "achievement wheel" of
each category's champion, and one leaderboard per category of Allium's
``aroileaders.py`` that the agent computes (its reliability categories are
not: docs/metrics.md, tor_aroi_champion).
"""

from __future__ import annotations

from agent.dashboards.lookback import latest
from agent.dashboards.panels import FINDINGS, Dashboard, Panel, Series, s
from agent.metrics.aroi import CATEGORIES

#: Category -> (leaderboard title after Allium's names, unit of its field).
LEADERBOARDS = {
    "bandwidth": ("Bandwidth capacity contributed (advertised)", "Bps"),
    "consensus_weight": ("Consensus weight leaders", "percentunit"),
    "exit_weight": ("Exit authority champions: exit consensus weight", "percentunit"),
    "guard_weight": ("Guard authority champions: guard consensus weight", "percentunit"),
    "exit_relays": ("Exit operators: exit relays", "short"),
    "guard_relays": ("Guard operators: guard relays", "short"),
    "countries": ("Most diverse: countries", "short"),
    "non_linux": ("Platform diversity heroes: non-Linux relays", "short"),
    "non_eu": ("Non-EU leaders: consensus weight outside the EU", "percentunit"),
    "frontier": ("Frontier builders: relays in rare countries", "short"),
    "ipv6": ("IPv6 leaders: relays with an IPv6 ORPort", "short"),
}
TOP = 10  # places on a leaderboard

_WRITTEN = ("Operators are written for the top metrics.operators_top_n (200) by consensus weight and for each "
            "category's champion, so a board is complete where its leaders are among those.")


def leaderboard(category: str) -> Panel:
    """The top operators of one category: the newest value of its tor_aroi_operator field, per domain."""
    field_name = CATEGORIES[category]
    title, unit = LEADERBOARDS[category]
    return Panel(f"{title} (top {TOP})", "bargauge", (Series(
        "tor_aroi_operator", field_name, ("domain",), (), "{{domain}}",
        promql=f"topk({TOP}, {latest(f'tor_aroi_operator_{field_name}')})",
        influxql=f'SELECT last("{field_name}") FROM "tor_aroi_operator" WHERE $timeFilter GROUP BY "domain"'),),
                 unit=unit, width=8, height=10,
                 description=f"Verified operators (domains whose proof lists their relays) by {field_name} "
                             f"(docs/metrics.md, tor_aroi_operator). {_WRITTEN} InfluxQL cannot rank series: the "
                             "InfluxDB flavour shows every operator written in the time range.")


WHEEL = Panel(
    "Achievement wheel: the champion of each category", "piechart", (Series(
        "tor_aroi_champion", "score", ("category", "domain"), (), "{{category}}: {{domain}}",
        promql=latest("tor_aroi_champion_score") + " * 0 + 1",
        influxql='SELECT last("score") * 0 + 1 FROM "tor_aroi_champion" WHERE $timeFilter GROUP BY "category", '
                 '"domain"'),), width=12, height=10,
    description="Grafana has no wheel panel: this pie gives every category an equal slice (the slice size means "
                "nothing), labelled with its champion, the verified operator with the highest value of the "
                "category's field (ties to the first domain by name; a category no operator scores in is left "
                "out). PromQL shows the newest period's champions; InfluxQL every champion of the time range "
                "(the table beside it has the newest per category).")

CHAMPIONS = Panel(
    "Champions and their scores", "table", (Series(
        "tor_aroi_champion", "score", ("category", "domain"), (), "{{category}}: {{domain}}",
        promql=latest("tor_aroi_champion_score"),
        influxql='SELECT last("score") AS "score", "domain" FROM "tor_aroi_champion" WHERE $timeFilter '
                 'GROUP BY "category"'),), width=12, height=10,
    description="Each category's champion and its score in the unit of the category's field: bytes/s for "
                "bandwidth, a share of the total consensus weight for the weight categories, relays or countries "
                "for the others (docs/metrics.md, tor_aroi_champion).")

AROI = Dashboard("allium-aroi", "Authenticated relay operators (AROI)",
                 "Operators' CIISS claims and their proofs (uri-rsa, dns-rsa), the category champions and Allium's "
                 "AROI leaderboards over verified operators.", (
    Panel("Verification", "row"),
    Panel("Relays with a complete AROI claim", "stat", (s("tor_aroi", "complete_claims"),), width=6, height=5),
    Panel("Verified relays", "stat", (s("tor_aroi", "verified_relays"),), width=6, height=5),
    Panel("Verified operators (domains)", "stat", (s("tor_aroi", "verified_domains"),), width=6, height=5),
    Panel("Consensus weight of verified relays", "stat", (s("tor_aroi", "verified_weight_fraction"),),
          unit="percentunit", width=6, height=5),
    Panel("Relays by verification outcome", "timeseries", (s("tor_aroi_outcome", "relays", "outcome"),),
          description="verified: the domain's proof lists the relay; not_listed: the proof was read and does not; "
                      "fetch_failed, refused: the proof could not be read or was refused; not_checked: not yet "
                      "(backfilled periods are never checked); incomplete: no complete claim."),
    Panel("Share of consensus weight verified", "timeseries",
          (s("tor_aroi", "verified_weight_fraction", legend="verified"),
           s("tor_aroi_outcome", "weight_fraction", legend="not listed", outcome="not_listed")),
          unit="percentunit"),
    Panel("Claims by proof type", "piechart", (s("tor_aroi_proof", "relays", "proof"),), width=8,
          description="Relays whose contact line has AROI fields, by its proof field (other: not uri-rsa or "
                      "dns-rsa; none: no proof field)."),
    Panel("Verified relays by proof type", "bargauge", (s("tor_aroi_proof", "verified_relays", "proof"),), width=8),
    Panel("Contact lines by CIISS status", "piechart", (s("tor_aroi_contact", "relays", "status"),), width=8,
          description="As Allium sorts them: no contact, no AROI field, no or another ciissversion, no domain, no "
                      "known proof, complete."),
    Panel("Achievement wheel", "row"),
    WHEEL,
    CHAMPIONS,
    Panel("Leaderboards", "row"),
    *(leaderboard(category) for category in CATEGORIES),
    Panel("Relays claiming a verified domain that its proof does not list", "bargauge", (Series(
        "tor_aroi_operator", "claimed_unverified", ("domain",), (), "{{domain}}",
        promql=f"topk({TOP}, {latest('tor_aroi_operator_claimed_unverified')} > 0)",
        influxql='SELECT last("claimed_unverified") FROM "tor_aroi_operator" WHERE $timeFilter AND '
                 '"claimed_unverified" > 0 GROUP BY "domain"'),), width=8, height=10,
          description="Relays making a complete claim for a verified operator's domain without being verified: "
                      "impersonators, relays the operator has not listed yet, or claims not checked yet. They do "
                      "not count for the operator."),
    Panel("Claims beside the AROI", "row"),
    Panel("Claimed OS against the platform seen", "table", (s("tor_aroi_os", "relays", "claimed", "seen"),),
          width=12, height=8,
          description="Relays whose CIISS contact line claims an OS (os:), by the family claimed and the one their "
                      "descriptor's platform line shows. Claims are not verified: rows where the two differ are "
                      "the ones to look at."),
    Panel("Claimed hosters (top 10 by weight)", "bargauge", (Series(
        "tor_aroi_hoster", "weight_fraction", ("hoster",), (), "{{hoster}}",
        promql=f"topk({TOP}, {latest('tor_aroi_hoster_weight_fraction')})"),), unit="percentunit", width=12,
          height=8, description="Consensus weight of the relays naming each hoster in CIISS hoster: (a claim). Only "
                                "the top metrics.operators_top_n hosters by weight are written."),
), annotations=FINDINGS)
