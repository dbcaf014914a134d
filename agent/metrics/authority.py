"""Per-authority metrics: what we saw fetching (vantage-tagged) and what its vote says."""

from __future__ import annotations

import numpy as np

from agent.model.entries import ABSENT, RouterEntries, entries_of, take
from agent.model.points import Point, point
from agent.model.snapshot import DocKind, FetchRecord, Outcome, Snapshot
from agent.model.time import unix

#: flavour tag -> (AuthorityView document attribute, its signature report attribute)
_FLAVOURS = {"ns": ("consensus", "consensus_signatures"),
             "microdesc": ("microdesc_consensus", "microdesc_signatures")}


def authority_points(snapshot: Snapshot, consensus, time: int) -> list[Point]:
    """tor_authority* points for every watched authority."""
    points = fetch_points(snapshot, time)
    points += _served_points(snapshot, consensus, time)
    voted = {source.v3ident.upper() for source in consensus.directory_authorities if not source.is_legacy}
    consensus_entries = entries_of(consensus)
    for authority in snapshot.authorities:
        view = snapshot.views.get(authority.nickname)
        vote = view.vote if view is not None else None
        fields = {"voted": authority.v3ident in voted}
        if vote is not None:
            fields.update(_vote_fields(vote, consensus_entries))
        points.append(point("tor_authority", {"authority": authority.nickname}, fields, time))
        if vote is not None:
            points += _flag_agreement(authority.nickname, vote, consensus_entries, time)
    return points


def fetch_points(snapshot: Snapshot, time: int) -> list[Point]:
    """What each fetch and probe of ours saw (vantage-tagged): written even without a consensus.

    A fetch not attempted because its authority answered nothing this period
    (its first request was refused, or hung to the deadline) is written as
    not answered (zeros), so that authority's series go to 0 rather than
    stop; one skipped only because the deadline came after its authority
    answered something is left out.
    """
    points = _probe_points(snapshot, time)
    answering = {record.authority for record in snapshot.records if record.answered}
    for record in _batches_joined(snapshot.records):
        if record.outcome is Outcome.SKIPPED and record.authority in answering:
            continue
        points.append(point("tor_authority_fetch",
                            {"authority": record.authority, "document": record.kind.value, "vantage": snapshot.vantage},
                            {"answered": record.answered, "ok": record.outcome in (Outcome.OK, Outcome.ABSENT),
                             "latency_seconds": record.latency_seconds, "bytes": record.bytes,
                             "wire_bytes": record.wire_bytes, "clock_skew_seconds": record.clock_skew_seconds},
                            time))
    return points


def _batches_joined(records: list[FetchRecord]) -> list[FetchRecord]:
    """The records, an authority's extra-info requests (one per batch of digests) joined into one: one series
    point per authority and document. Joined: answered if any was, ok if all attempted were, latency and bytes
    summed, the first skew; a lone request stays as it is."""
    batches: dict[str, list[FetchRecord]] = {}
    for record in records:
        if record.kind is DocKind.EXTRA_INFOS:
            batches.setdefault(record.authority, []).append(record)
    joined = [record for record in records if record.kind is not DocKind.EXTRA_INFOS]
    for authority, batch in batches.items():
        # Batches the deadline left for the next period are no failure of the authority's.
        group = [record for record in batch if record.outcome is not Outcome.SKIPPED] or batch[:1]
        if len(group) == 1:
            joined.append(group[0])
            continue
        answered = [record for record in group if record.answered]
        all_ok = all(record.outcome in (Outcome.OK, Outcome.ABSENT) for record in group)
        joined.append(FetchRecord(
            authority, DocKind.EXTRA_INFOS, group[0].url, group[0].started_at,
            outcome=Outcome.OK if all_ok else Outcome.SKIPPED if not answered else Outcome.FAILED,
            status=answered[-1].status if answered else None,
            latency_seconds=sum(record.latency_seconds or 0.0 for record in group),
            bytes=sum(record.bytes for record in group), wire_bytes=sum(record.wire_bytes for record in group),
            clock_skew_seconds=next((r.clock_skew_seconds for r in answered if r.clock_skew_seconds is not None),
                                    None)))
    return joined


def _probe_points(snapshot: Snapshot, time: int) -> list[Point]:
    """Per authority: ORPort reachability and how many of the others' votes it holds."""
    fields: dict[str, dict] = {}
    for probe in snapshot.orport_probes:
        entry = fields.setdefault(probe.authority, {"orport_endpoints": 0, "orport_reachable": 0})
        entry["orport_endpoints"] += 1
        entry["orport_reachable"] += probe.reachable
    for holding in snapshot.vote_holdings:
        if holding.held is not None and holding.holder != holding.author:
            entry = fields.setdefault(holding.holder, {})
            entry["votes_asked"] = entry.get("votes_asked", 0) + 1
            entry["votes_held"] = entry.get("votes_held", 0) + holding.held
    return [point("tor_authority_probe", {"authority": nickname, "vantage": snapshot.vantage}, values, time)
            for nickname, values in sorted(fields.items())]


def _served_points(snapshot: Snapshot, consensus, time: int) -> list[Point]:
    """The consensus of each flavour each authority served us, against the newest one."""
    if snapshot.archived:
        return []  # nothing was served to us: the period came from an archive
    fetched_at = unix(snapshot.finished_at)
    latest = unix(consensus.valid_after)
    points = []
    for view in snapshot.views.values():
        for flavour, (document_attribute, report_attribute) in _FLAVOURS.items():
            served = getattr(view, document_attribute)
            report = getattr(view, report_attribute)
            fields = {"served": served is not None}
            if served is not None:
                valid_after = unix(served.valid_after)
                fields.update({
                    "valid_after_seconds": valid_after,
                    "lag_seconds": latest - valid_after,
                    "age_seconds": fetched_at - valid_after,
                    "signatures": len(served.signatures),
                    "valid_signatures": len(report.valid_identities) if report else 0,
                    "accepted": snapshot.accepted(report),
                })
            points.append(point("tor_authority_consensus", {"authority": view.authority.nickname, "flavour": flavour,
                                                            "vantage": snapshot.vantage}, fields, time))
    return points


def _vote_fields(vote, consensus: RouterEntries) -> dict:
    entries = entries_of(vote)
    has_measured = entries.measured != ABSENT
    running = entries.has_flag("Running")
    measured = entries.measured[has_measured]
    measured_in_consensus = int((has_measured & (entries.indices_in(consensus) >= 0)).sum())
    certificate = vote.directory_authorities[0].key_certificate if vote.directory_authorities else None
    methods = list(vote.consensus_methods or [])
    return {
        "vote_relays": len(entries),
        "vote_running": int(running.sum()),
        "measured_relays": len(measured),
        "measured_ratio": measured_in_consensus / len(consensus) if len(consensus) else 0.0,
        # Tor Metrics' totalcw: the sum of Measured= over Running relays in the vote.
        "total_measured_weight": float(entries.measured[has_measured & running].sum(dtype=float)),  # no wrap-around
        "measured_median": float(np.median(measured)) if len(measured) else None,
        "consensus_methods": len(methods),
        "max_consensus_method": max(methods) if methods else None,
        "key_expiry_seconds": unix(certificate.expires) - unix(vote.valid_after) if certificate else None,
    }


def _flag_agreement(nickname: str, vote, consensus: RouterEntries, time: int) -> list[Point]:
    """Per flag the vote knows: relays flagged only in the vote, in both, only in the consensus.

    Only relays present in both documents are compared for the overlap, as
    depictor's flag table does; a relay the vote lacks is not a disagreement.
    Flags are bits (one mask per distinct flag line), counted with numpy.
    """
    entries = entries_of(vote)
    flags = sorted(vote.known_flags)
    bits = {flag: 1 << index for index, flag in enumerate(flags)}
    voted = entries.flag_masks(bits)
    rows = entries.indices_in(consensus)
    common = rows >= 0
    agreed = take(consensus.flag_masks(bits), rows, 0)
    points = []
    for flag in flags:
        in_vote, in_consensus = (voted & bits[flag]) != 0, (agreed & bits[flag]) != 0
        points.append(point("tor_authority_flag", {"authority": nickname, "flag": flag}, {
            "relays": int(in_vote.sum()),
            "only_in_vote": int((in_vote & ~in_consensus & common).sum()),
            "in_both": int((in_vote & in_consensus & common).sum()),
            "only_in_consensus": int((in_consensus & ~in_vote & common).sum()),
        }, time))
    return points
