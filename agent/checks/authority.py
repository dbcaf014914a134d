"""Checks of each authority as we reached it: reachability, latency, clock, freshness, keys, version."""

from __future__ import annotations

import statistics
from datetime import timedelta

from agent.checks.registry import Context, check
from agent.model.entries import RouterEntry, entries_of
from agent.model.findings import Hit
from agent.model.snapshot import DocKind, Outcome
from agent.model.versions import parse_version

_WATCHED_DOCUMENTS = (DocKind.CONSENSUS, DocKind.VOTE, DocKind.MICRODESC_CONSENSUS)


@check("TorAuthorityUnreachable", "warning", "A directory authority did not serve a document",
       doctor="AUTHORITY_UNAVAILABLE")
def unreachable(context: Context):
    # DocTor says ERROR for one authority; one authority down does not stop the network, so this is
    # a warning here and TorConsensusNotAccepted / TorConsensusStale carry the critical cases.
    first_failure = {}
    for record in context.snapshot.records:
        if record.outcome is Outcome.FAILED:
            first_failure.setdefault(record.authority, record)
    for record in context.snapshot.records:
        # Skipped counts too: after a refused first request the rest is not even tried.
        if record.kind in _WATCHED_DOCUMENTS and record.outcome in (Outcome.FAILED, Outcome.SKIPPED):
            cause = record.error
            root = first_failure.get(record.authority)
            if record.outcome is Outcome.SKIPPED and root is not None:
                cause = f"{root.error} (on its {root.kind.value} request; not attempted after that)"
            yield Hit({"authority": record.authority, "document": record.kind.value},
                      f"{record.authority} did not serve its {record.kind.value}: {cause}",
                      {"status": record.status, "error": cause})


@check("TorAuthorityLatencyHigh", "info", "A directory authority answers far slower than the others",
       doctor="LATENCY")
def latency(context: Context):
    times = {r.authority: r.latency_seconds for r in context.snapshot.records
             if r.kind is DocKind.CONSENSUS and r.outcome is Outcome.OK and r.latency_seconds is not None}
    if len(times) < 3:
        return
    median = statistics.median(times.values())
    factor = context.thresholds.latency_factor
    for authority, seconds in sorted(times.items()):
        if seconds > factor * median and seconds > 1.0:
            yield Hit({"authority": authority},
                      f"{authority} took {seconds:.1f} s for the consensus, more than {factor:g}x the median "
                      f"of {median:.2f} s (all: {', '.join(f'{a} {t:.2f} s' for a, t in sorted(times.items()))})",
                      {"latency_seconds": round(seconds, 3), "median_seconds": round(median, 3)})


@check("TorAuthorityClockSkew", "info", "A directory authority's clock is off", doctor="CLOCK_SKEW")
def clock_skew(context: Context):
    limit = context.thresholds.clock_skew_seconds
    for record in context.snapshot.records:
        if record.kind is DocKind.CONSENSUS and record.clock_skew_seconds is not None \
                and abs(record.clock_skew_seconds) > limit:
            yield Hit({"authority": record.authority},
                      f"the clock of {record.authority} is {record.clock_skew_seconds:+.0f} s off "
                      f"(limit {limit:g} s; seen from {context.snapshot.vantage})",
                      {"clock_skew_seconds": record.clock_skew_seconds})


def switchover_grace(period: timedelta) -> timedelta:
    """How long after a period starts an authority may still serve the previous period's documents.

    Authorities switch to the new consensus at its valid-after, one document
    flavour after the other; a fetch in those moments (the agent polls a few
    seconds after the boundary) sees the old one. A tenth of the period, at
    least 5 s: 6 min on the live network, 5 s on a private one voting every 10 s.
    """
    return max(timedelta(seconds=5), period / 10)


@check("TorAuthorityConsensusStale", "warning", "A directory authority serves an old consensus",
       doctor="MISSING_LATEST_CONSENSUS")
def consensus_stale(context: Context):
    stale = []
    for view in context.snapshot.views.values():
        served = view.consensus
        if served is None:
            continue
        period = served.fresh_until - served.valid_after
        age = context.now - served.valid_after
        if age > period + switchover_grace(period):
            stale.append((view.authority.nickname, served.valid_after, age))
    # DocTor: ERROR when more than three authorities are stale at once.
    severity = "critical" if len(stale) > context.thresholds.stale_authorities_critical else None
    for nickname, valid_after, age in stale:
        yield Hit({"authority": nickname},
                  f"{nickname} serves the consensus of {valid_after:%Y-%m-%d %H:%M:%S}, "
                  f"{age.total_seconds() / 60:.0f} min old ({len(stale)} authorities stale)",
                  {"valid_after": valid_after.isoformat(), "age_seconds": int(age.total_seconds())}, severity)


@check("TorAuthorityCertificateExpiring", "warning", "A directory authority's signing key certificate expires soon",
       doctor="CERTIFICATE_ABOUT_TO_EXPIRE")
def certificate_expiring(context: Context):
    warn = timedelta(days=context.thresholds.certificate_warning_days)
    note = timedelta(days=context.thresholds.certificate_info_days)
    for view in context.snapshot.views.values():
        vote = view.vote
        certificate = vote.directory_authorities[0].key_certificate if vote and vote.directory_authorities else None
        if certificate is None:
            continue
        left = certificate.expires - context.now
        if left <= note:
            yield Hit({"authority": view.authority.nickname},
                      f"the key certificate of {view.authority.nickname} expires {certificate.expires:%Y-%m-%d %H:%M} "
                      f"UTC, in {left.days} days",
                      {"expires": certificate.expires.isoformat(), "days_left": left.days},
                      None if left <= warn else "info")


def authority_relays(context: Context) -> dict[str, RouterEntry]:
    """The relay entry of each watched authority in the newest consensus (by fingerprint, else address)."""
    consensus = context.snapshot.latest_consensus()
    if consensus is None:
        return {}
    entries = entries_of(consensus)
    by_address = entries.rows_by_address()
    found = {}
    for authority in context.snapshot.authorities:
        router = entries.get(authority.fingerprint) if authority.fingerprint else None
        if router is None and (authority.address, authority.or_port) in by_address:
            router = entries.entry(by_address[(authority.address, authority.or_port)])
        if router is not None:
            found[authority.nickname] = router
    return found


@check("TorAuthorityVersionOutdated", "warning", "A directory authority runs a tor older than every recommended one",
       doctor="TOR_OUT_OF_DATE")
def version_outdated(context: Context):
    consensus = context.snapshot.latest_consensus()
    recommended = [parse_version(str(v)) for v in (consensus.server_versions if consensus else [])]
    recommended = [v for v in recommended if v]
    if not recommended:
        return
    oldest = min(recommended)
    for nickname, router in sorted(authority_relays(context).items()):
        mine = parse_version(str(router.version)) if router.version else None
        # Only too old counts: a newer (e.g. -dev) build is fine (DocTor #7725, #8393).
        if mine is not None and mine < oldest:
            yield Hit({"authority": nickname},
                      f"{nickname} runs tor {router.version}, older than every recommended server version "
                      f"(oldest: {'.'.join(map(str, oldest[:4]))})", {"version": str(router.version)})


@check("TorAuthorityFingerprintMismatch", "warning",
       "The relay at a directory authority's address has another fingerprint than configured",
       doctor="FINGERPRINT_MISMATCH")
def fingerprint_mismatch(context: Context):
    consensus = context.snapshot.latest_consensus()
    if consensus is None:
        return
    entries = entries_of(consensus)
    by_address = entries.rows_by_address()
    for authority in context.snapshot.authorities:
        row = by_address.get((authority.address, authority.or_port))
        router = entries.entry(row) if row is not None else None
        if authority.fingerprint and router is not None and router.fingerprint != authority.fingerprint:
            yield Hit({"authority": authority.nickname},
                      f"the relay at {authority.address}:{authority.or_port} is {router.fingerprint}, "
                      f"not {authority.fingerprint} as configured for {authority.nickname}",
                      {"expected": authority.fingerprint, "found": router.fingerprint})
