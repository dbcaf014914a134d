"""Bandwidth-authority checks. Who is a bandwidth authority is learned from the votes
(whose votes carried Measured= recently), never from a hard-coded list."""

from __future__ import annotations

from statistics import mean

from agent.checks.registry import Context, check
from agent.model.entries import ABSENT, entries_of, take
from agent.model.findings import Hit


def measuring(context: Context) -> dict[str, int]:
    """Nickname -> Measured= entries, for every vote that has any."""
    counts = {}
    for view in context.snapshot.views.values():
        if view.vote is not None:
            measured = int((entries_of(view.vote).measured != ABSENT).sum())
            if measured:
                counts[view.authority.nickname] = measured
    return counts


@check("TorBandwidthAuthorityNotMeasuring", "info", "A bandwidth authority's vote has no measurements",
       doctor="MISSING_BANDWIDTH_SCANNERS")
def not_measuring(context: Context):
    voted = {view.authority.nickname for view in context.snapshot.views.values() if view.vote is not None}
    silent = sorted(nickname for nickname in context.bandwidth_authorities
                    if nickname in voted and nickname not in measuring(context))
    # DocTor: ERROR when more than one bandwidth authority stops at once.
    severity = "critical" if len(silent) > 1 else None
    for nickname in silent:
        yield Hit({"authority": nickname}, f"{nickname} measured relays recently but its vote has no Measured= "
                                           f"values ({len(silent)} bandwidth authorities silent)", {}, severity)


@check("TorBandwidthAuthorityStarted", "info", "An authority started voting measured bandwidths",
       doctor="EXTRA_BANDWIDTH_SCANNERS")
def started_measuring(context: Context):
    if not context.bandwidth_authorities:
        return  # nothing learned yet: every bandwidth authority would look new
    for nickname in sorted(set(measuring(context)) - context.bandwidth_authorities):
        yield Hit({"authority": nickname}, f"{nickname} now votes Measured= values; it did not recently", {})


@check("TorBandwidthAuthorityUnmeasured", "info", "A bandwidth authority leaves many consensus relays unmeasured",
       doctor="TOO_MANY_UNMEASURED_RELAYS")
def unmeasured(context: Context):
    latest = context.snapshot.latest_consensus()
    if latest is None:
        return
    limit = context.thresholds.unmeasured_ratio
    measurers = measuring(context)
    # Authorities are left out: tor votes their measurement as MeasuredButAuthority=, not Measured=.
    consensus = entries_of(latest)
    relays = ~consensus.has_flag("Authority")
    for view in context.snapshot.views.values():
        if view.vote is None or view.authority.nickname not in measurers:
            continue
        vote = entries_of(view.vote)
        rows = consensus.indices_in(vote)
        measured = take(vote.measured, rows, ABSENT)
        missing = int((relays & (measured == ABSENT)).sum())
        total = int(relays.sum())
        if total and missing >= limit * total:
            yield Hit({"authority": view.authority.nickname},
                      f"{view.authority.nickname} has no measurement for {missing} of {total} "
                      f"consensus relays ({100 * missing / total:.1f} %, limit {100 * limit:g} %)",
                      {"unmeasured": missing})


@check("TorBandwidthAuthoritiesOutOfSync", "info", "Bandwidth authorities measure very different numbers of relays",
       doctor="BANDWIDTH_AUTHORITIES_OUT_OF_SYNC")
def out_of_sync(context: Context):
    counts = measuring(context)
    if len(counts) < 2:
        return
    average = mean(counts.values())
    limit = context.thresholds.bwauth_sync_ratio
    for nickname, count in sorted(counts.items()):
        if abs(count - average) > limit * average:
            yield Hit({"authority": nickname},
                      f"{nickname} measured {count} relays, {100 * (count - average) / average:+.0f} % from the mean "
                      f"of {average:.0f} ({', '.join(f'{n} {c}' for n, c in sorted(counts.items()))})",
                      {"measured": count, "mean": round(average)})


@check("TorBandwidthFileStale", "warning", "A bandwidth authority's bandwidth file is old")
def bandwidth_file_stale(context: Context):
    # tor ignores a bandwidth file older than three days (dir-spec); warn well before.
    limit_hours = context.thresholds.bandwidth_file_max_age_hours
    for view in context.snapshot.views.values():
        bandwidth_file = view.bandwidth_file
        if bandwidth_file is None or bandwidth_file.timestamp is None:
            continue
        age_hours = (context.now - bandwidth_file.timestamp).total_seconds() / 3600
        if age_hours > limit_hours:
            yield Hit({"authority": view.authority.nickname},
                      f"the bandwidth file of {view.authority.nickname} is {age_hours:.0f} h old "
                      f"(limit {limit_hours:g} h; tor ignores it after 72 h)", {"age_hours": round(age_hours, 1)})


@check("TorBandwidthFileCoverageLow", "warning", "A bandwidth file measures too few of the consensus relays")
def bandwidth_file_coverage(context: Context):
    # sbws itself refuses to publish below 60 % (minimum_percent_eligible_relays).
    latest = context.snapshot.latest_consensus()
    if latest is None or not latest.routers:
        return
    limit = context.thresholds.bandwidth_file_min_coverage
    for view in context.snapshot.views.values():
        if view.bandwidth_file is None:
            continue
        covered = len(set(view.bandwidth_file.measurements) & set(latest.routers))
        if covered < limit * len(latest.routers):
            yield Hit({"authority": view.authority.nickname},
                      f"the bandwidth file of {view.authority.nickname} measures {covered} of the "
                      f"{len(latest.routers)} consensus relays ({100 * covered / len(latest.routers):.1f} %, "
                      f"limit {100 * limit:g} %)", {"covered": covered, "relays": len(latest.routers)})
