"""Checks of the consensus itself: would clients accept it, who signed, which votes, shared random."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

from agent.checks.authority import authority_relays, switchover_grace
from agent.checks.registry import Context, check
from agent.model.entries import entries_of
from agent.model.findings import Hit
from agent.model.snapshot import DocKind, FetchRecord, quorum

SHARED_RANDOM_METHOD = 23
#: tor's REASONABLY_LIVE_TIME: clients still use a consensus this long after its valid-until.
VALID_UNTIL_SLACK = timedelta(hours=24)
#: tor refuses a voting interval above a day, so a longer period is no real consensus's.
LONGEST_PERIOD = timedelta(hours=24)
#: How a consensus refused for its times is marked on its fetch record (``FetchRecord.error``).
TIME_REFUSED = "refused for impossible times: "
CONSENSUS_KINDS = (DocKind.CONSENSUS, DocKind.MICRODESC_CONSENSUS)


def _names(context: Context) -> dict[str, str]:
    return {authority.v3ident: authority.nickname for authority in context.snapshot.authorities}


@check("TorConsensusStale", "critical", "No directory authority serves a valid consensus",
       doctor="MISSING_LATEST_CONSENSUS")
def consensus_stale(context: Context):
    if context.snapshot.archived:
        return  # nothing was served: the period came from files
    served = [view.consensus for view in context.snapshot.views.values() if view.consensus is not None]
    valid = [consensus for consensus in served if consensus.valid_until > context.now]
    if not valid:
        newest = max((consensus.valid_after for consensus in served), default=None)
        yield Hit({}, "no authority serves a consensus that is still valid; newest seen: "
                      f"{newest:%Y-%m-%d %H:%M:%S}" if newest else "no authority serves any consensus",
                  {"newest_valid_after": newest.isoformat() if newest else None})


@check("TorConsensusNotAccepted", "critical", "A consensus lacks the signatures clients require")
def not_accepted(context: Context):
    names = _names(context)
    needed = quorum(len(names))
    for view in context.snapshot.views.values():
        for flavour, document, report in (("ns", view.consensus, view.consensus_signatures),
                                          ("microdesc", view.microdesc_consensus, view.microdesc_signatures)):
            if document is None or context.snapshot.accepted(report):
                continue
            valid = sorted(names[i] for i in (report.valid_identities if report else ()) if i in names)
            missing = sorted(name for ident, name in names.items() if name not in valid)
            yield Hit({"authority": view.authority.nickname, "flavour": flavour},
                      f"the {flavour} consensus {view.authority.nickname} serves ({document.valid_after:%H:%M:%S}) has "
                      f"{len(valid)} valid signatures of {needed} needed; missing: {', '.join(missing) or 'none'}",
                      {"valid": valid, "needed": needed, "missing": missing})


@check("TorConsensusSignatureMissing", "info", "A directory authority did not sign the consensus",
       doctor="MISSING_SIGNATURE")
def signature_missing(context: Context):
    latest = context.snapshot.latest_consensus()
    if latest is None:
        return
    report = context.snapshot.signatures_of(latest)
    if report is None:
        return  # an archived consensus no certificate in the input could verify
    for ident, name in sorted(_names(context).items(), key=lambda item: item[1]):
        if ident not in report.valid_identities:
            yield Hit({"authority": name}, f"{name} has no valid signature on the consensus of "
                                           f"{latest.valid_after:%Y-%m-%d %H:%M:%S}", {})


@check("TorConsensusVotesDiffer", "info", "Authorities serve consensuses built from different votes",
       doctor="MISSING_VOTES")
def votes_differ(context: Context):
    fresh = {view.authority.nickname: view.consensus for view in context.snapshot.views.values()
             if view.consensus is not None and view.consensus.fresh_until > context.now}
    sets = {name: frozenset(s.nickname for s in c.directory_authorities if not s.is_legacy)
            for name, c in fresh.items()}
    if len(set(sets.values())) > 1:
        detail = "; ".join(f"{name}: {', '.join(sorted(voters))}" for name, voters in sorted(sets.items()))
        yield Hit({}, f"fresh consensuses were built from different sets of votes ({detail})", {})


@check("TorConsensusMethodUnsupported", "warning", "A vote does not support the consensus method in use",
       doctor="CONSENSUS_METHOD_UNSUPPORTED")
def method_unsupported(context: Context):
    latest = context.snapshot.latest_consensus()
    for view in context.snapshot.views.values():
        methods = list(view.vote.consensus_methods or ()) if view.vote is not None else []
        if latest is not None and view.vote is not None and latest.consensus_method not in methods:
            supported = f"{min(methods)}-{max(methods)}" if methods else "none"  # a vote may list none
            yield Hit({"authority": view.authority.nickname},
                      f"{view.authority.nickname} does not support consensus method {latest.consensus_method} "
                      f"(it supports {supported})", {})


@check("TorSharedRandomMissing", "critical", "The consensus lacks a shared random value",
       doctor="CURRENT_/PREVIOUS_SHARED_RANDOM_MISSING")
def shared_random_missing(context: Context):
    latest = context.snapshot.latest_consensus()
    # Shared randomness exists from consensus method 23 (tor 0.2.9, late 2016) on.
    if latest is None or (latest.consensus_method or 0) < SHARED_RANDOM_METHOD:
        return
    for which, value in (("current", latest.shared_randomness_current_value),
                         ("previous", latest.shared_randomness_previous_value)):
        if not value:
            yield Hit({"value": which}, f"the consensus of {latest.valid_after:%Y-%m-%d %H:%M:%S} has no "
                                        f"shared-rand-{which}-value", {})


@check("TorMicrodescConsensusProblem", "warning",
       "A directory authority's microdesc consensus is missing or does not match its ns consensus")
def microdesc_problem(context: Context):
    for view in context.snapshot.views.values():
        ns, micro = view.consensus, view.microdesc_consensus
        if ns is None:
            continue
        nickname = view.authority.nickname
        if micro is None:
            yield Hit({"authority": nickname},
                      f"{nickname} serves an ns consensus but no usable microdesc consensus", {})
        elif micro.valid_after != ns.valid_after and not _switching(context, ns, micro):
            yield Hit({"authority": nickname},
                      f"{nickname} serves the microdesc consensus of {micro.valid_after:%H:%M:%S} "
                      f"but the ns consensus of {ns.valid_after:%H:%M:%S}", {})


def _switching(context: Context, ns, micro) -> bool:
    """True if the two flavours are consecutive periods fetched just after the boundary (one switched first)."""
    older, newer = sorted((ns, micro), key=lambda consensus: consensus.valid_after)
    period = older.fresh_until - older.valid_after
    return older.fresh_until == newer.valid_after and context.now - newer.valid_after <= switchover_grace(period)


@check("TorAuthorityMissingFromConsensus", "warning",
       "A directory authority is not listed with the Authority flag in the consensus", doctor="MISSING_AUTHORITIES")
def authority_missing(context: Context):
    if context.snapshot.latest_consensus() is None:
        return
    listed = {name for name, router in authority_relays(context).items() if "Authority" in router.flags}
    for authority in context.snapshot.authorities:
        if authority.nickname not in listed:
            yield Hit({"authority": authority.nickname},
                      f"{authority.nickname} has no relay entry with the Authority flag in the consensus", {})


@check("TorUnexpectedAuthority", "info", "A relay has the Authority flag but is not a watched authority",
       doctor="EXTRA_AUTHORITIES")
def unexpected_authority(context: Context):
    latest = context.snapshot.latest_consensus()
    if latest is None:
        return
    known = {router.fingerprint for router in authority_relays(context).values()}
    entries = entries_of(latest)
    for router in map(entries.entry, np.flatnonzero(entries.has_flag("Authority")).tolist()):
        if router.fingerprint not in known:
            yield Hit({"relay": router.fingerprint},
                      f"{router.nickname} ({router.fingerprint}) has the Authority flag "
                      "but is not in the authority list",
                      {})


@check("TorAuthorityQuorumLost", "critical", "Too few directory authorities answer to make a consensus")
def quorum_lost(context: Context):
    if context.snapshot.archived:
        return
    names = sorted(_names(context).values())
    answering = sorted(view.authority.nickname for view in context.snapshot.views.values()
                       if view.consensus is not None or view.vote is not None)
    needed = quorum(len(names))
    if len(answering) < needed:
        yield Hit({}, f"only {len(answering)} of {len(names)} authorities answered ({', '.join(answering) or 'none'}); "
                      f"a consensus needs {needed} signatures; not answering: "
                      f"{', '.join(n for n in names if n not in answering)}",
                  {"answering": answering, "needed": needed})


@check("TorAuthorityVoteMissing", "warning", "The consensus was built without a directory authority's vote")
def vote_missing(context: Context):
    latest = context.snapshot.latest_consensus()
    if latest is None:
        return
    voted = {source.v3ident.upper() for source in latest.directory_authorities if not source.is_legacy}
    for authority in context.snapshot.authorities:
        if authority.v3ident not in voted:
            yield Hit({"authority": authority.nickname},
                      f"the consensus of {latest.valid_after:%Y-%m-%d %H:%M:%S} was built without a vote from "
                      f"{authority.nickname} ({len(voted)} votes)", {"votes": len(voted)})


def time_problem(consensus: Any, now: datetime, tolerance_seconds: float) -> str | None:
    """Why a live consensus cannot be the current one as of ``now`` (naive UTC), or None if it can.

    Its valid-after may be ahead of the clock by ``tolerance_seconds`` at
    most, its valid-until at most ``VALID_UNTIL_SLACK`` behind, and its
    period must be a real voting interval: a validly signed consensus
    outside that would move the agent's period to a time that never comes
    (or came long ago).
    """
    valid_after, fresh_until, valid_until = consensus.valid_after, consensus.fresh_until, consensus.valid_until
    dates = f"valid-after {valid_after:%Y-%m-%d %H:%M:%S}, fresh-until {fresh_until:%Y-%m-%d %H:%M:%S}, " \
            f"valid-until {valid_until:%Y-%m-%d %H:%M:%S}"
    if not valid_after < fresh_until <= valid_until:
        return f"its times are out of order ({dates})"
    if fresh_until - valid_after > LONGEST_PERIOD:
        return f"its period of {fresh_until - valid_after} is longer than a day ({dates})"
    if valid_after > now + timedelta(seconds=tolerance_seconds):
        return (f"its valid-after is {_span(valid_after - now)} ahead of the clock ({now:%Y-%m-%d %H:%M:%S}; "
                f"tolerance {tolerance_seconds:g} s; {dates})")
    if valid_until < now - VALID_UNTIL_SLACK:
        return f"its valid-until is {_span(now - valid_until)} past ({now:%Y-%m-%d %H:%M:%S}; {dates})"
    return None


def _span(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    return f"{seconds / 86400:.1f} days" if seconds >= 86400 else f"{seconds:.0f} s"


def time_refused(record: FetchRecord) -> bool:
    """Was this fetch's consensus refused for its times (by ``agent.pipeline.judge.admissible``)?"""
    return record.rejected and record.kind in CONSENSUS_KINDS and (record.error or "").startswith(TIME_REFUSED)


@check("TorConsensusTimeImpossible", "critical",
       "A directory authority serves a consensus dated impossibly far from the present")
def time_impossible(context: Context):
    if context.snapshot.archived:
        return  # history is replayed as of its own time
    for record in context.snapshot.records:
        if time_refused(record):
            yield _time_hit(record.authority, record.kind, (record.error or "").removeprefix(TIME_REFUSED))
    # A snapshot judged without being screened first (``check``): as of its fetch, as the screening does.
    fetched = context.snapshot.started_at
    now = fetched.astimezone(timezone.utc).replace(tzinfo=None) if fetched.tzinfo is not None else fetched
    tolerance = context.thresholds.consensus_ahead_seconds
    for view in context.snapshot.views.values():
        for kind, document in zip(CONSENSUS_KINDS, (view.consensus, view.microdesc_consensus)):
            problem = None if document is None else time_problem(document, now, tolerance)
            if problem is not None:
                yield _time_hit(view.authority.nickname, kind, problem)


def _time_hit(authority: str, kind: DocKind, problem: str) -> Hit:
    return Hit({"authority": authority, "document": kind.value},
               f"the {kind.value} {authority} serves is refused: {problem}; it is not taken as the period's "
               "consensus and the agent's state does not move to it", {"problem": problem})
