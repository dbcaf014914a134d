"""Every consensus-health check, in report order within a severity: adding one is a function plus an entry here."""

from __future__ import annotations

from agent.checks import aroi, authority, bandwidth, consensus, family, probes, shared_random, votes
from agent.checks.registry import Check

CHECKS: tuple[Check, ...] = (
    aroi.relay_impersonates_operator,
    aroi.operator_proof_stale,
    aroi.operator_family_inconsistent,
    authority.unreachable,
    authority.latency,
    authority.clock_skew,
    authority.consensus_stale,
    authority.certificate_expiring,
    authority.version_outdated,
    authority.fingerprint_mismatch,
    bandwidth.not_measuring,
    bandwidth.started_measuring,
    bandwidth.unmeasured,
    bandwidth.out_of_sync,
    bandwidth.bandwidth_file_stale,
    bandwidth.bandwidth_file_coverage,
    consensus.consensus_stale,
    consensus.not_accepted,
    consensus.signature_missing,
    consensus.votes_differ,
    consensus.method_unsupported,
    consensus.shared_random_missing,
    consensus.microdesc_problem,
    consensus.authority_missing,
    consensus.unexpected_authority,
    consensus.quorum_lost,
    consensus.vote_missing,
    consensus.time_impossible,
    family.family_not_mutual,
    family.family_undeclared,
    family.family_cert_invalid,
    family.family_cert_expiring,
    probes.orport_unreachable,
    probes.vote_not_propagated,
    shared_random.commit_mismatch,
    shared_random.commit_duplicated,
    shared_random.no_reveal,
    shared_random.reveal_missing,
    shared_random.reveal_mismatch,
    shared_random.reveal_invalid,
    votes.recommended_versions,
    votes.unknown_parameters,
    votes.conflicting_parameters,
    votes.flag_counts,
    votes.missing_authority_descriptor,
    votes.badexit_out_of_sync,
    votes.protocols_differ,
)


def _unique(checks: tuple[Check, ...]) -> tuple[Check, ...]:
    """The tuple itself, once every ID is known to be unique (a duplicate would merge two checks' alerts)."""
    seen: set[str] = set()
    for registered in checks:
        if registered.id in seen:
            raise ValueError(f"check {registered.id} is listed twice in CHECKS")
        seen.add(registered.id)
    return checks


CHECKS = _unique(CHECKS)
