"""The data routes' answers (agent.web.api_schema declares them), from agent.web.api_data's sources.

Each handler takes the Sources and the checked parameters and returns the
200 body; it raises ``NotFound``, BadParameter or
StoreUnavailable for the error answers.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import replace
from typing import Any

from agent.aroi.service import read_book
from agent.model.aroi import normalised_domain
from agent.pipeline.state import DirectoryEntry, DirectorySearch
from agent.web.api_data import SERIES_DAYS, Sources, StoreUnavailable, fields, grouped, number, public_findings
from agent.web.openapi import BadParameter

NETWORK_FIELDS = ("relays", "weight_total", "advertised_bandwidth_bytes", "descriptors_ratio", "signatures",
                  "votes", "consensus_method", "joined_relays", "left_relays", "overloaded_relays",
                  "ipv6_orport_relays")


class NotFound(Exception):
    pass


def network(sources: Sources, params: dict) -> dict:
    rows = sources.instant(f'{{__name__=~"tor_network_({fields(NETWORK_FIELDS)})"}}')
    figures, newest = grouped(rows, (), "tor_network_")
    flags, flag_time = grouped(sources.instant("tor_network_flag_relays"), ("flag",), "tor_network_flag_")
    return {"time": newest or flag_time, "figures": figures.get((), {}),
            "flags": {flag: values.get("relays") for (flag,), values in sorted(flags.items())},
            "findings": public_findings(sources)[0]}


def encode_cursor(fingerprint: str) -> str:
    """The position after ``fingerprint``: its 20 bytes in base32, so any 32 base32 letters are a position."""
    return base64.b32encode(bytes.fromhex(fingerprint)).decode()


def decode_cursor(text: str) -> str:
    try:
        return base64.b32decode(text).hex().upper()
    except (ValueError, binascii.Error):
        raise BadParameter("cursor", "not a cursor this API gave (pass next_cursor as it came)") from None


def relays(sources: Sources, params: dict) -> dict:
    period, known = sources.newest_relays()
    directory_period = sources.directory_period()
    matching = sorted(known)
    if params.get("fingerprint"):
        start = params["fingerprint"].lstrip("$").upper()
        matching = [fp for fp in matching if fp.startswith(start)]
    if params.get("flag"):
        matching = [fp for fp in matching if params["flag"] in known[fp]]
    search = DirectorySearch(nickname=params.get("nickname"), contact=params.get("contact"),
                             country=params.get("country"), version=params.get("version"))
    operator = normalised_domain(params["operator"]) if params.get("operator") else None
    if params.get("operator") and not operator:
        matching = []
    elif operator and directory_period is None:
        # No directory yet (an agent upgraded since its last live period): the relays the domain's proof lists.
        listed = read_book(sources.config.state_dir).listed_by(operator)
        matching = [fp for fp in matching if fp in listed]
    elif operator:
        search = replace(search, operator=operator)
    if search.active:
        found = sources.directory(search)
        matching = [fp for fp in matching if fp in found]
    total = len(matching)
    if params.get("cursor"):
        after = decode_cursor(params["cursor"])
        matching = [fp for fp in matching if fp > after]
    page = matching[:params["limit"]]
    weights = _weights(sources, page)
    described = sources.directory(fingerprints=page) if page else {}
    return {"period": period, "directory_period": directory_period, "total": total,
            "relays": [{"fingerprint": fp, "flags": sorted(known[fp]), **weights.get(fp, _NO_WEIGHT),
                        **_described(described.get(fp))} for fp in page],
            "next_cursor": encode_cursor(page[-1]) if len(matching) > len(page) else None}


def _described(entry: DirectoryEntry | None) -> dict:
    if entry is None:
        return dict.fromkeys(("nickname", "country", "version", "contact", "operator"))
    return {"nickname": entry.nickname, "country": entry.country, "version": entry.version,
            "contact": entry.contact, "operator": entry.operator}


_NO_WEIGHT = {"weight": None, "weight_fraction": None}


def _weights(sources: Sources, page: list[str]) -> dict[str, dict]:
    if not page:
        return {}
    try:
        rows = sources.instant(f'{{__name__=~"tor_relay_(weight|weight_fraction)",fingerprint=~"{"|".join(page)}"}}')
    except StoreUnavailable:  # the state's relays and flags are still worth answering; weights are then null
        return {}
    found, _ = grouped(rows, ("fingerprint",), "tor_relay_")
    return {fp: {"weight": values.get("weight"), "weight_fraction": values.get("weight_fraction")}
            for (fp,), values in found.items()}


def relay(sources: Sources, params: dict) -> dict:
    fingerprint = params["fingerprint"].lstrip("$").upper()
    period, known = sources.newest_relays()
    summary = _series_summary(sources, fingerprint)
    if fingerprint not in known and not summary["samples"] and summary["in_consensus_share"] is None:
        raise NotFound(f"fingerprint: no relay {fingerprint} in the newest period or the last {SERIES_DAYS} days")
    now = _weights(sources, [fingerprint]).get(fingerprint, _NO_WEIGHT)
    alerts = [item for item in public_findings(sources)[0] if item["subjects"].get("relay") == fingerprint]
    return {"fingerprint": fingerprint, "in_consensus": fingerprint in known, "period": period,
            "flags": sorted(known.get(fingerprint, ())), **now, "series": summary, "alerts": alerts}


def _series_summary(sources: Sources, fingerprint: str) -> dict:
    """The relay's raw samples over the last SERIES_DAYS days, summarised by the store (``*_over_time``)."""
    window = f"[{SERIES_DAYS}d]"
    weight = f'tor_relay_weight{{fingerprint="{fingerprint}"}}{window}'

    def one(promql: str) -> float | None:
        rows = sources.instant(promql)
        return rows[0][2] if rows else None

    samples = one(f"count_over_time({weight})")
    return {"days": SERIES_DAYS, "samples": int(samples or 0),
            "in_consensus_share": one(f'avg_over_time(tor_relay_in_consensus{{fingerprint="{fingerprint}"}}{window})'),
            "weight_min": one(f"min_over_time({weight})"), "weight_max": one(f"max_over_time({weight})"),
            "weight_mean": one(f"avg_over_time({weight})"), "weight_last": one(f"last_over_time({weight})")}


def _by_weight(item: dict) -> tuple:
    return (-(item.get("weight_fraction") or 0), str(item.get("domain") or item.get("operator_id")))


def operators(sources: Sources, params: dict) -> dict:
    verified_fields = ("relays", "weight_fraction", "exit_relays", "guard_relays", "countries")
    verified, verified_time = grouped(sources.instant(
        f'{{__name__=~"tor_aroi_operator_({fields(verified_fields)})"}}'), ("domain",), "tor_aroi_operator_")
    group = f',group="{params["group"]}"' if params.get("group") else ""
    operator_fields = ("relays", "weight_fraction", "guard_relays", "exit_relays")
    others, others_time = grouped(sources.instant(
        f'{{__name__=~"tor_operator_({fields(operator_fields)})"{group}}}'), ("group", "operator", "operator_id"),
        "tor_operator_")
    limit = params["limit"]
    return {
        "time": max(filter(None, (verified_time, others_time)), default=None),
        "verified": sorted(({"domain": domain, **{f: values.get(f) for f in verified_fields}}
                            for (domain,), values in verified.items()), key=_by_weight)[:limit],
        "operators": sorted(({"group": g, "operator": name, "operator_id": oid,
                              **{f: values.get(f) for f in operator_fields}}
                             for (g, name, oid), values in others.items()), key=_by_weight)[:limit]}


def authorities(sources: Sources, params: dict) -> dict:
    vote_fields = ("voted", "vote_relays", "vote_running", "measured_relays", "measured_ratio",
                   "max_consensus_method", "key_expiry_seconds")
    votes, vote_time = grouped(sources.instant(f'{{__name__=~"tor_authority_({fields(vote_fields)})"}}'),
                               ("authority",), "tor_authority_")
    consensus_fields = ("served", "accepted", "lag_seconds", "signatures", "valid_signatures")
    served, served_time = grouped(sources.instant(
        f'{{__name__=~"tor_authority_consensus_({fields(consensus_fields)})"}}'),
        ("authority", "flavour", "vantage"), "tor_authority_consensus_")
    fetch_fields = ("ok", "latency_seconds", "clock_skew_seconds")
    fetched, fetch_time = grouped(sources.instant(
        f'{{__name__=~"tor_authority_fetch_({fields(fetch_fields)})"}}'),
        ("authority", "document", "vantage"), "tor_authority_fetch_")
    names = sorted({key[0] for key in (*votes, *served, *fetched) if key[0]})
    answer = []
    for name in names:
        consensus = [{"flavour": flavour, "vantage": vantage, **{f: values.get(f) for f in consensus_fields}}
                     for (who, flavour, vantage), values in sorted(served.items()) if who == name]
        fetches = [{"document": document, "vantage": vantage, **{f: values.get(f) for f in fetch_fields}}
                   for (who, document, vantage), values in sorted(fetched.items()) if who == name]
        vote = votes.get((name,), {})
        healthy = vote.get("voted") == 1 and bool(consensus) and all(c["accepted"] == 1 for c in consensus)
        answer.append({"authority": name, "healthy": healthy, "vote": vote, "consensus": consensus,
                       "fetches": fetches})
    return {"time": max(filter(None, (vote_time, served_time, fetch_time)), default=None), "authorities": answer}


def findings(sources: Sources, params: dict) -> dict:
    public, private = public_findings(sources)
    if params.get("severity"):
        public = [item for item in public if item["severity"] == params["severity"]]
    return {"findings": public, "subscription_alerts": private}


def anomalies(sources: Sources, params: dict) -> dict:
    names = ("score", "observed", "expected", "expected_low", "expected_high", "anomalous", "warming")
    detector = params.get("detector")
    selector = f',detector="{_promql_string(detector)}"' if detector else ""
    found, newest = grouped(sources.instant(f'{{__name__=~"tor_anomaly_({fields(names)})"{selector}}}'),
                            ("detector", "series"), "tor_anomaly_")
    items: list[dict[str, Any]] = [{"detector": d, "series": s, **{f: values.get(f) for f in names}}
                                   for (d, s), values in found.items()]
    if params.get("anomalous"):
        items = [item for item in items if (item["anomalous"] or 0) > 0]
    items.sort(key=lambda item: (-(item["score"] or 0), item["detector"], item["series"]))
    return {"time": newest, "anomalies": items}


def _promql_string(text: str) -> str:
    """Text inside a PromQL double-quoted string: backslashes and quotes escaped, no line breaks."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")


HANDLERS = {"network": network, "relays": relays, "relay": relay, "operators": operators,
            "authorities": authorities, "findings": findings, "anomalies": anomalies}
__all__ = ["HANDLERS", "NotFound", "number"]
