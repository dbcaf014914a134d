"""Checks of each authority's vote against the consensus: versions, parameters, flags, protocols."""

from __future__ import annotations

import numpy as np

from agent.checks.authority import authority_relays
from agent.checks.registry import Context, check
from agent.model.entries import entries_of
from agent.model.findings import Hit


def _votes(context: Context):
    """(nickname, vote) for every vote we have, with the newest consensus (or nothing without one)."""
    latest = context.snapshot.latest_consensus()
    if latest is None:
        return None, []
    return latest, [(view.authority.nickname, view.vote) for view in context.snapshot.views.values() if view.vote]


def _difference(theirs, ours) -> str:
    added = sorted(set(map(str, theirs)) - set(map(str, ours)))
    removed = sorted(set(map(str, ours)) - set(map(str, theirs)))
    return " ".join([f"+{item}" for item in added] + [f"-{item}" for item in removed])


@check("TorRecommendedVersionsDiffer", "info", "An authority recommends other tor versions than the consensus",
       doctor="DIFFERENT_RECOMMENDED_VERSION")
def recommended_versions(context: Context):
    latest, votes = _votes(context)
    for nickname, vote in votes:
        for role, theirs, ours in (("client", vote.client_versions, latest.client_versions),
                                   ("server", vote.server_versions, latest.server_versions)):
            if theirs and set(map(str, theirs)) != set(map(str, ours)):
                yield Hit({"authority": nickname, "role": role},
                          f"{nickname} recommends other {role} versions than the consensus: "
                          f"{_difference(theirs, ours)}",
                          {"difference": _difference(theirs, ours)})


@check("TorConsensusParameterUnknown", "info", "An authority votes a consensus parameter tor does not document",
       doctor="UNKNOWN_CONSENSUS_PARAMETERS")
def unknown_parameters(context: Context):
    known = set(context.thresholds.known_parameters)
    _, votes = _votes(context)
    for nickname, vote in votes:
        for name in sorted(vote.params):
            if name not in known and not name.startswith("bwauth"):
                yield Hit({"authority": nickname, "parameter": name},
                          f"{nickname} votes {name}={vote.params[name]}, a parameter not in checks.known_parameters",
                          {})


@check("TorConsensusParameterConflict", "info",
       "An authority votes another value for a parameter than the consensus has",
       doctor="MISMATCH_CONSENSUS_PARAMETERS")
def conflicting_parameters(context: Context):
    latest, votes = _votes(context)
    for nickname, vote in votes:
        for name, value in sorted(vote.params.items()):
            agreed = latest.params.get(name)
            if agreed is not None and agreed != value:
                yield Hit({"authority": nickname, "parameter": name},
                          f"{nickname} votes {name}={value}; the consensus has {name}={agreed}",
                          {"vote": value, "consensus": agreed})


@check("TorAuthorityFlagCountDiffers", "info",
       "An authority gives a flag to far more or fewer relays than the consensus",
       doctor="FLAG_COUNT_DIFFERS")
def flag_counts(context: Context):
    latest, votes = _votes(context)
    if not votes:
        return
    # Only flags every vote votes on are compared: a flag some authorities do not vote on
    # (MiddleOnly, BadExit...) differs by design (DocTor #40035).
    shared = set.intersection(*(set(vote.known_flags) for _, vote in votes)) - set(context.thresholds.flag_count_skip)
    in_consensus = entries_of(latest).flag_counts()
    high, low = context.thresholds.flag_count_high, context.thresholds.flag_count_low
    for nickname, vote in votes:
        in_vote = entries_of(vote).flag_counts()
        for flag in sorted(shared):
            agreed = in_consensus.get(flag, 0)
            if agreed and not (low * agreed <= in_vote.get(flag, 0) <= high * agreed):
                yield Hit({"authority": nickname, "flag": flag},
                          f"{nickname} gives {flag} to {in_vote.get(flag, 0)} relays; the consensus to {agreed}",
                          {"vote": in_vote.get(flag, 0), "consensus": agreed})


@check("TorAuthorityMissingRelayDescriptor", "warning", "An authority's vote lacks another authority's relay",
       doctor="MISSING_AUTHORITY_DESC")
def missing_authority_descriptor(context: Context):
    relays = authority_relays(context)
    _, votes = _votes(context)
    for nickname, vote in votes:
        for peer, router in sorted(relays.items()):
            if router.fingerprint not in vote.routers:
                yield Hit({"authority": nickname, "peer": peer},
                          f"the vote of {nickname} has no entry for {peer} ({router.fingerprint}): "
                          "it does not accept that authority's descriptor (key mismatch?)", {})


@check("TorBadExitOutOfSync", "info", "Authorities disagree on which relays are BadExit", doctor="BADEXIT_OUT_OF_SYNC")
def badexit_out_of_sync(context: Context):
    latest, votes = _votes(context)
    voting = [(nickname, vote) for nickname, vote in votes if "BadExit" in vote.known_flags]
    if len(voting) < 2:
        return
    flagged_by: dict[str, set[str]] = {}
    for nickname, vote in voting:
        entries = entries_of(vote)
        for row in np.flatnonzero(entries.has_flag("BadExit")).tolist():
            flagged_by.setdefault(entries.fingerprints[row], set()).add(nickname)
    for nickname, vote in voting:
        # Only relays this authority lists without the flag and that are in the consensus disagree.
        unflagged = [fp for fp, by in flagged_by.items()
                     if nickname not in by and fp in vote.routers and fp in latest.routers]
        if unflagged:
            yield Hit({"authority": nickname},
                      f"{nickname} lists {len(unflagged)} relays without BadExit that other authorities flag "
                      f"(e.g. {', '.join(sorted(unflagged)[:3])})", {"relays": len(unflagged)})


@check("TorProtocolsDiffer", "info", "An authority recommends or requires other protocols than the consensus")
def protocols_differ(context: Context):
    latest, votes = _votes(context)
    for nickname, vote in votes:
        for name in ("recommended_client_protocols", "recommended_relay_protocols",
                     "required_client_protocols", "required_relay_protocols"):
            theirs, ours = getattr(vote, name, None), getattr(latest, name, None)
            if theirs and ours is not None and theirs != ours:
                yield Hit({"authority": nickname, "line": name.replace("_", "-")},
                          f"{nickname} votes {name.replace('_', '-')} {_protocols(theirs)}; "
                          f"the consensus has {_protocols(ours)}", {})


def _protocols(value: dict) -> str:
    return " ".join(f"{name}={','.join(map(str, versions))}" for name, versions in sorted(value.items()))
