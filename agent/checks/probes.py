"""Checks on what the cross-check probes saw: authority ORPorts and vote propagation."""

from __future__ import annotations

from agent.checks.registry import Context, check
from agent.model.findings import Hit


@check("TorAuthorityOrPortUnreachable", "warning", "An authority's ORPort does not accept connections",
       doctor="UNABLE_TO_REACH_ORPORT")
def orport_unreachable(context: Context):
    for probe in sorted(context.snapshot.orport_probes, key=lambda p: (p.authority, p.endpoint)):
        if not probe.reachable:
            yield Hit({"authority": probe.authority, "endpoint": probe.endpoint},
                      f"cannot connect to the ORPort of {probe.authority} at {probe.endpoint}: {probe.error}",
                      {"error": probe.error})


@check("TorVoteNotPropagated", "warning", "An authority does not hold another authority's current vote")
def vote_not_propagated(context: Context):
    # Only a definite "not here" (HTTP 404) counts: an authority that could not be
    # asked is already reported as unreachable, and a rotated period proves nothing.
    missing = [h for h in context.snapshot.vote_holdings if h.held is False and not _propagating(context, h.author)]
    for holding in sorted(missing, key=lambda h: (h.holder, h.author)):
        holders = sum(1 for h in context.snapshot.vote_holdings if h.author == holding.author and h.held)
        yield Hit({"authority": holding.holder, "peer": holding.author},
                  f"{holding.holder} does not serve the current vote of {holding.author} "
                  f"(digest {holding.digest}); {holders} authorities do",
                  {"digest": holding.digest, "held_by": holders})


def _propagating(context: Context, author: str) -> bool:
    """True while the author's vote may still be on its way: younger than its voting-delay (VoteSeconds plus
    DistSeconds), the time tor gives authorities to push votes and fetch the missing ones.

    On the live network votes are 50 minutes old when the agent probes; on a private network voting every
    10 s the probe can meet a vote published a second earlier.
    """
    vote = next((view.vote for view in context.snapshot.views.values() if view.authority.nickname == author), None)
    published = getattr(vote, "published", None)
    delays = (getattr(vote, "vote_delay", None), getattr(vote, "dist_delay", None))
    if published is None or None in delays:
        return False
    return (context.now - published).total_seconds() < sum(delays)
