"""Every /api/v1 route declared once: path, parameters and the schema of its answer (see agent.web.openapi).

``routes(settings)`` gives them with the page limits of this config; the
handlers are agent.web.api's, by route name.
"""

from __future__ import annotations

from agent.model.findings import SEVERITIES
from agent.web.openapi import Param, Route
from agent.web.settings import ApiConfig

PREFIX = "/api/v1"
FLAGS = ("Authority", "BadExit", "Exit", "Fast", "Guard", "HSDir", "MiddleOnly", "NoEdConsensus", "Running",
         "Stable", "StaleDesc", "Sybil", "V2Dir", "Valid")
#: A tor version as the consensus gives it, or its beginning up to a component: 0.4, 0.4.2.6, 0.4.3.2-alpha.
VERSION_PATTERN = r"^[0-9]{1,4}(\.[0-9]{1,4}){0,3}(-[0-9A-Za-z]{1,20}){0,3}$"

NUMBER = {"type": ["number", "null"]}
TIME = {"type": ["integer", "null"], "description": "Unix seconds (UTC)"}
FINGERPRINT = {"type": "string", "pattern": "^[0-9A-F]{40}$"}


def _object(properties: dict, required: bool = True) -> dict:
    return {"type": "object", "properties": properties, **({"required": list(properties)} if required else {})}


FINDING = _object({
    "id": {"type": "string", "description": "the check or detector that raised it"},
    "severity": {"type": "string", "enum": list(SEVERITIES)},
    "summary": {"type": "string"}, "description": {"type": "string"},
    "subjects": {"type": "object", "additionalProperties": {"type": "string"}},
    "silenced": {"type": "boolean"}, "first_seen": {"type": "integer"}, "last_seen": {"type": "integer"},
    "notified": {"type": "boolean", "description": "a firing notice was sent"},
})
FINDINGS = {"type": "array", "items": FINDING}
HEALTH = _object({
    "healthy": {"type": "boolean"}, "status": {"type": "string", "enum": ["ok", "unhealthy"]},
    "reason": {"type": "string"}, "last_success": TIME, "last_period": TIME,
    "period_seconds": {"type": ["integer", "null"]}, "age_seconds": {"type": ["integer", "null"]},
})
SERIES_SUMMARY = _object({
    "days": {"type": "integer"}, "samples": {"type": "integer"},
    "in_consensus_share": NUMBER, "weight_min": NUMBER, "weight_max": NUMBER, "weight_mean": NUMBER,
    "weight_last": NUMBER,
})
TEXT_OR_NULL = {"type": ["string", "null"]}
RELAY = _object({"fingerprint": FINGERPRINT, "flags": {"type": "array", "items": {"type": "string"}},
                 "weight": NUMBER, "weight_fraction": NUMBER, "nickname": TEXT_OR_NULL,
                 "country": {**TEXT_OR_NULL, "description": "two letters, upper case (GeoIP)"},
                 "version": {**TEXT_OR_NULL, "description": "the tor version in the consensus"},
                 "contact": {**TEXT_OR_NULL, "description": "the contact line (at most 200 characters)"},
                 "operator": {**TEXT_OR_NULL, "description": "the verified operator's domain (AROI)"}})


def _values(*names: str) -> dict:
    return {name: NUMBER for name in names}


def routes(settings: ApiConfig) -> tuple[Route, ...]:
    limit = Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": settings.max_page_limit,
                                     "default": settings.page_limit}, "how many items at most")
    return (
        Route("network", f"{PREFIX}/network", "Current network figures and active findings",
              "The newest consensus's figures from the store (relays, weight, bandwidth, churn, signatures, relays "
              "per flag) and the consensus-health findings active now.",
              _object({"time": TIME, "figures": {"type": "object", "additionalProperties": NUMBER},
                       "flags": {"type": "object", "additionalProperties": NUMBER}, "findings": FINDINGS}),
              errors=(503,)),
        Route("relays", f"{PREFIX}/relays", "Search the relays of the newest period",
              "Relays of the newest recorded consensus, by fingerprint order, a page at a time: pass the answer's "
              "next_cursor as cursor for the next page. Filters combine (all must hold). Nickname, country, "
              "version, contact and operator come from the relay directory of the newest live period "
              "(directory_period); null where it does not know the relay.",
              _object({"period": TIME, "directory_period": TIME,
                       "total": {"type": "integer", "description": "relays matching, all pages"},
                       "relays": {"type": "array", "items": RELAY},
                       "next_cursor": {"type": ["string", "null"]}}),
              params=(
                  Param("fingerprint", "query", {"type": "string", "pattern": "^[$]?[0-9A-Fa-f]{1,40}$"},
                        "a fingerprint or its beginning (hex digits)"),
                  Param("nickname", "query", {"type": "string", "pattern": "^[A-Za-z0-9]{1,19}$"},
                        "a nickname or its beginning, any case (moria matches moria1 and Moria2)"),
                  Param("contact", "query", {"type": "string", "minLength": 2, "maxLength": 100},
                        "text the contact line contains, any case (ASCII letters); % and _ are literal"),
                  Param("country", "query", {"type": "string", "pattern": "^[A-Za-z]{2}$"},
                        "the relay's country, two letters (GeoIP), any case"),
                  Param("version", "query", {"type": "string", "pattern": VERSION_PATTERN},
                        "a tor version: that version and those continuing it after a . or - (0.4.2 matches "
                        "0.4.2.6 and 0.4.2.6-dev, not 0.4.20.1)"),
                  Param("operator", "query", {"type": "string", "minLength": 1, "maxLength": 253},
                        "a verified operator's domain (AROI): the relays whose contact claims it and whose proof "
                        "lists them"),
                  Param("flag", "query", {"type": "string", "enum": list(FLAGS)}, "relays with this flag"),
                  limit,
                  Param("cursor", "query", {"type": "string", "pattern": "^[A-Z2-7]{32}$"},
                        "the next_cursor of the previous page (opaque)"),
              ), errors=(503,)),
        Route("relay", f"{PREFIX}/relays/{{fingerprint}}", "One relay: flags, weight, 7 days, active alerts",
              "The relay's flags in the newest period, its consensus weight, a summary of its store series over "
              "the last 7 days, and the public alerts about it that are active.",
              _object({"fingerprint": FINGERPRINT, "in_consensus": {"type": "boolean"}, "period": TIME,
                       "flags": {"type": "array", "items": {"type": "string"}}, "weight": NUMBER,
                       "weight_fraction": NUMBER, "series": SERIES_SUMMARY, "alerts": FINDINGS}),
              params=(Param("fingerprint", "path", {"type": "string", "pattern": "^[$]?[0-9A-Fa-f]{40}$"},
                            "the relay's fingerprint, 40 hex digits", required=True),),
              errors=(404, 503)),
        Route("operators", f"{PREFIX}/operators", "Operator leaderboards",
              "Verified operators (AROI) by domain, and operators by contact line or family, largest consensus "
              "weight share first.",
              _object({"time": TIME,
                       "verified": {"type": "array", "items": _object(
                           {"domain": {"type": "string"}, **_values("relays", "weight_fraction", "exit_relays",
                                                                    "guard_relays", "countries")})},
                       "operators": {"type": "array", "items": _object(
                           {"group": {"type": "string"}, "operator": {"type": "string"},
                            "operator_id": {"type": "string"},
                            **_values("relays", "weight_fraction", "guard_relays", "exit_relays")})}}),
              params=(Param("group", "query", {"type": "string", "enum": ["contact", "family"]},
                            "only operators grouped by contact line or by family"), limit),
              errors=(503,)),
        Route("authorities", f"{PREFIX}/authorities", "Per-authority health",
              "Each directory authority's vote, the consensus it serves and how its documents were fetched.",
              _object({"time": TIME, "authorities": {"type": "array", "items": _object({
                  "authority": {"type": "string"},
                  "healthy": {"type": "boolean", "description": "voted, and served an accepted consensus"},
                  "vote": {"type": "object", "additionalProperties": NUMBER},
                  "consensus": {"type": "array", "items": _object(
                      {"flavour": {"type": "string"}, "vantage": {"type": "string"},
                       **_values("served", "accepted", "lag_seconds", "signatures", "valid_signatures")})},
                  "fetches": {"type": "array", "items": _object(
                      {"document": {"type": "string"}, "vantage": {"type": "string"},
                       **_values("ok", "latency_seconds", "clock_skew_seconds")})}})}}),
              errors=(503,)),
        Route("findings", f"{PREFIX}/findings", "Active findings and alerts",
              "Consensus-health findings and detector alerts active now, most severe first. Alerts of "
              "subscriptions are private: only their number is given.",
              _object({"findings": FINDINGS, "subscription_alerts": {"type": "integer"}}),
              params=(Param("severity", "query", {"type": "string", "enum": list(SEVERITIES)},
                            "only findings of this severity"),), errors=(503,)),
        Route("anomalies", f"{PREFIX}/anomalies", "Anomaly detectors' latest judgement",
              "Per detector and series: the anomaly score, the observed and expected values and whether the "
              "period was judged anomalous (docs/anomalies.md); highest score first.",
              _object({"time": TIME, "anomalies": {"type": "array", "items": _object(
                  {"detector": {"type": "string"}, "series": {"type": "string"},
                   **_values("score", "observed", "expected", "expected_low", "expected_high", "anomalous",
                             "warming")})}}),
              params=(Param("detector", "query", {"type": "string", "minLength": 1, "maxLength": 100},
                            "only this detector"),
                      Param("anomalous", "query", {"type": "boolean"}, "only series judged anomalous (true)")),
              errors=(503,)),
        Route("healthz", "/healthz", "Liveness of the agent",
              "200 while the last recorded period is at most two voting periods old, else 503 with the reason.",
              HEALTH, tag="operations", open=True, extra_responses={503: "The agent is not keeping up; see reason."}),
        Route("metrics", "/metrics", "The agent's own metrics (Prometheus text format)",
              "Counters, the last cycle's summary, deliveries waiting and active alerts, for a Prometheus scrape.",
              {"type": "string"}, tag="operations", media="text/plain", open=True),
        Route("openapi", f"{PREFIX}/openapi.json", "This document", "The OpenAPI 3.1 document of this API.",
              {"type": "object"}, tag="meta", open=True),
        Route("docs", f"{PREFIX}/docs", "The reference page", "This API's reference as a plain HTML page.",
              {"type": "string"}, tag="meta", media="text/html", open=True),
    )
