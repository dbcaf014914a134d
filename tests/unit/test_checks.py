"""Every check fires on a document that shows its problem and stays silent on healthy input."""

import dataclasses
from datetime import datetime, timedelta

import pytest
from stem.descriptor.networkstatus import NetworkStatusDocumentV3
from stem.descriptor.router_status_entry import RouterStatusEntryV3

from agent.checks.catalog import CHECKS
from agent.checks.registry import Context
from agent.checks.run import run_checks
from agent.config.loader import load_config
from agent.model.authorities import Authority, from_consensus
from agent.model.findings import Silence
from agent.model.snapshot import AuthorityView, DocKind, FetchRecord, Outcome, SignatureCheck, SignatureReport, Snapshot
from tests.conftest import parse_data

THRESHOLDS = load_config(None, environ={}).checks.thresholds
NOW = datetime(2016, 9, 20, 13, 20)


@pytest.fixture(scope="module")
def consensus():
    return parse_data("consensus", "2016-09-20-13-00-00-consensus.xz")


@pytest.fixture(scope="module")
def vote():
    return parse_data("vote", "2016-09-20-13-00-00-vote-maatuska.xz")


def report_for(authorities, valid=None):
    valid = {a.v3ident for a in authorities} if valid is None else valid
    return SignatureReport(tuple(SignatureCheck(a.v3ident, "sha1", a.v3ident in valid) for a in authorities))


def snapshot(consensus, authorities=None, votes=None, records=(), valid=None, microdesc=True, served=True):
    """Every watched authority serves ``consensus`` (signed as ``valid`` says) unless told otherwise."""
    authorities = authorities or from_consensus(consensus)
    views = {}
    for authority in authorities:
        view = AuthorityView(authority)
        if served:
            view.consensus = consensus
            view.consensus_signatures = report_for(authorities, valid)
            if microdesc:
                view.microdesc_consensus = consensus
                view.microdesc_signatures = view.consensus_signatures
        view.vote = (votes or {}).get(authority.nickname)
        views[authority.nickname] = view
    return Snapshot("test", NOW, NOW, authorities, views, list(records))


def findings(snap, check_id, now=NOW, bandwidth_authorities=frozenset(), **thresholds):
    context = Context(snap, now, dataclasses.replace(THRESHOLDS, **thresholds), frozenset(bandwidth_authorities))
    return [f for f in run_checks(context) if f.check == check_id]


def record(authority, kind=DocKind.CONSENSUS, **fields):
    values = {"outcome": Outcome.OK, "status": 200, "latency_seconds": 0.1, "clock_skew_seconds": 0.0, **fields}
    return FetchRecord(authority, kind, "http://x", NOW, **values)


def created_vote(flags="Fast Running Valid", measured=True, **attr):
    routers = [RouterStatusEntryV3.create({"r": f"relay{i} {'A' * 27} {'B' * 27} 2016-09-20 12:00:00 1.2.3.{i} 9001 0",
                                           "s": flags, "w": "Bandwidth=10" + (" Measured=5" if measured else "")})
               for i in range(1, 5)]
    return NetworkStatusDocumentV3.create({"vote-status": "vote", **attr}, routers=routers)


# --- authority checks ---------------------------------------------------------------------------------

def test_unreachable(consensus):
    failed = record("moria1", outcome=Outcome.FAILED, status=503, error="HTTP 503 Directory busy")
    hits = findings(snapshot(consensus, records=[failed]), "TorAuthorityUnreachable")
    assert [(f.subjects, f.description) for f in hits] == [
        ({"authority": "moria1", "document": "consensus"},
         "moria1 did not serve its consensus: HTTP 503 Directory busy")]
    assert findings(snapshot(consensus, records=[record("moria1")]), "TorAuthorityUnreachable") == []
    skipped = record("tor26", DocKind.VOTE, outcome=Outcome.SKIPPED, status=None,
                     error="not attempted: tor26 did not answer the key-certificates request")
    hits = findings(snapshot(consensus, records=[skipped]), "TorAuthorityUnreachable")
    assert hits[0].description == ("tor26 did not serve its vote: not attempted: tor26 did not answer the "
                                   "key-certificates request")


def test_latency(consensus):
    slow = [record(n, latency_seconds=t) for n, t in (("a", 0.2), ("b", 0.3), ("c", 0.25), ("d", 3.0))]
    hits = findings(snapshot(consensus, records=slow), "TorAuthorityLatencyHigh")
    assert [f.subjects for f in hits] == [{"authority": "d"}] and hits[0].values["median_seconds"] == 0.275
    even = [record(n, latency_seconds=0.3) for n in "abcd"]
    assert findings(snapshot(consensus, records=even), "TorAuthorityLatencyHigh") == []


def test_clock_skew(consensus):
    hits = findings(snapshot(consensus, records=[record("gabelmoo", clock_skew_seconds=-42.0)]),
                    "TorAuthorityClockSkew")
    assert hits[0].description.startswith("the clock of gabelmoo is -42 s off (limit 10 s")
    assert findings(snapshot(consensus, records=[record("gabelmoo", clock_skew_seconds=4.0)]),
                    "TorAuthorityClockSkew") == []


def test_authority_consensus_stale_and_critical_above_three(consensus):
    snap = snapshot(consensus)
    assert findings(snap, "TorAuthorityConsensusStale") == []
    late = findings(snap, "TorAuthorityConsensusStale", now=consensus.valid_after + timedelta(hours=2))
    assert len(late) == len(snap.views) > 3 and {f.severity for f in late} == {"critical"}
    two = snapshot(consensus, authorities=from_consensus(consensus)[:2])
    late_two = findings(two, "TorAuthorityConsensusStale", now=NOW + timedelta(hours=2))
    assert {f.severity for f in late_two} == {"warning"}


def test_an_authority_switching_to_the_new_consensus_is_not_stale_for_the_first_moments(consensus):
    """Authorities switch at valid-after; a fetch seconds later may still get the previous period's consensus."""
    snap = snapshot(consensus)
    next_period = consensus.fresh_until  # one hour after valid-after
    assert findings(snap, "TorAuthorityConsensusStale", now=next_period + timedelta(seconds=10)) == []
    assert findings(snap, "TorAuthorityConsensusStale", now=next_period + timedelta(minutes=5)) == []
    late = findings(snap, "TorAuthorityConsensusStale", now=next_period + timedelta(minutes=7))
    assert len(late) == len(snap.views)  # a tenth of the hour on: stale


def test_flavours_of_consecutive_periods_are_a_switch_in_progress_only_just_after_the_boundary(consensus):
    later = parse_data("consensus", "2016-09-20-13-00-00-consensus.xz")  # a fresh copy to edit
    later.valid_after, later.fresh_until = consensus.fresh_until, consensus.fresh_until + timedelta(hours=1)
    snap = snapshot(consensus)
    for view in snap.views.values():
        view.microdesc_consensus = later  # the microdesc flavour switched first
    assert findings(snap, "TorMicrodescConsensusProblem", now=later.valid_after + timedelta(seconds=3)) == []
    hits = findings(snap, "TorMicrodescConsensusProblem", now=later.valid_after + timedelta(minutes=20))
    assert len(hits) == len(snap.views) and "but the ns consensus of 13:00:00" in hits[0].description


def test_certificate_expiring(consensus, vote):
    snap = snapshot(consensus, votes={"maatuska": vote})
    expires = vote.directory_authorities[0].key_certificate.expires
    soon = findings(snap, "TorAuthorityCertificateExpiring", now=expires - timedelta(days=10))
    assert [f.severity for f in soon] == ["warning"]
    later = findings(snap, "TorAuthorityCertificateExpiring", now=expires - timedelta(days=18))
    assert [f.severity for f in later] == ["info"]
    assert findings(snap, "TorAuthorityCertificateExpiring", now=expires - timedelta(days=40)) == []


def test_version_outdated_and_fingerprint_mismatch(consensus):
    oldest = min(consensus.server_versions)
    old = next(r for r in consensus.routers.values() if r.version and r.version < oldest)
    current = next(r for r in consensus.routers.values()
                   if r.version and str(r.version) in map(str, consensus.server_versions))
    authority = Authority("oldauth", "F" * 40, old.address, 80, old.or_port, old.fingerprint)
    hits = findings(snapshot(consensus, authorities=[authority]), "TorAuthorityVersionOutdated")
    assert hits and f"runs tor {old.version}" in hits[0].description
    fine = Authority("newauth", "F" * 40, current.address, 80, current.or_port, current.fingerprint)
    assert findings(snapshot(consensus, authorities=[fine]), "TorAuthorityVersionOutdated") == []
    wrong = dataclasses.replace(fine, fingerprint="0" * 40)
    assert findings(snapshot(consensus, authorities=[wrong]), "TorAuthorityFingerprintMismatch")[0].values == {
        "expected": "0" * 40, "found": current.fingerprint}
    assert findings(snapshot(consensus, authorities=[fine]), "TorAuthorityFingerprintMismatch") == []


# --- consensus checks ---------------------------------------------------------------------------------

def test_consensus_stale_and_quorum_lost(consensus):
    snap = snapshot(consensus)
    assert findings(snap, "TorConsensusStale") == [] and findings(snap, "TorAuthorityQuorumLost") == []
    expired = findings(snap, "TorConsensusStale", now=consensus.valid_until + timedelta(minutes=1))
    assert expired[0].severity == "critical"
    assert "no authority serves a consensus that is still valid" in expired[0].description
    authorities = from_consensus(consensus)
    alone = snapshot(consensus, authorities=authorities)
    for view in list(alone.views.values())[1:]:
        view.consensus = view.vote = view.microdesc_consensus = None
    hit = findings(alone, "TorAuthorityQuorumLost")[0]
    assert hit.values["answering"] == [authorities[0].nickname] and hit.values["needed"] == len(authorities) // 2 + 1


def test_not_accepted_and_signature_missing(consensus):
    authorities = from_consensus(consensus)
    few = snapshot(consensus, valid={a.v3ident for a in authorities[:3]})
    hits = findings(few, "TorConsensusNotAccepted")
    assert len(hits) == 2 * len(authorities)  # both flavours from every authority
    assert f"has 3 valid signatures of {len(authorities) // 2 + 1} needed" in hits[0].description
    one_short = snapshot(consensus, valid={a.v3ident for a in authorities[1:]})
    assert findings(one_short, "TorConsensusNotAccepted") == []
    missing = findings(one_short, "TorConsensusSignatureMissing")
    assert [f.subjects for f in missing] == [{"authority": authorities[0].nickname}]
    assert findings(snapshot(consensus), "TorConsensusSignatureMissing") == []


def test_votes_differ(consensus):
    other = NetworkStatusDocumentV3.create({"vote-status": "consensus", "valid-after": "2016-09-20 13:00:00",
                                            "fresh-until": "2016-09-20 14:00:00", "valid-until": "2016-09-20 16:00:00"})
    snap = snapshot(consensus)
    assert findings(snap, "TorConsensusVotesDiffer") == []
    next(iter(snap.views.values())).consensus = other
    differ = findings(snap, "TorConsensusVotesDiffer")
    assert "fresh consensuses were built from different sets of votes" in differ[0].description


def test_method_unsupported_and_protocols_differ(consensus):
    old = created_vote(**{"consensus-methods": "9 10 11"})
    snap = snapshot(consensus, votes={"moria1": old})
    assert "does not support consensus method" in findings(snap, "TorConsensusMethodUnsupported")[0].description
    fine = created_vote(**{"consensus-methods": " ".join(str(m) for m in range(1, 30))})
    assert findings(snapshot(consensus, votes={"moria1": fine}), "TorConsensusMethodUnsupported") == []
    assert findings(snap, "TorProtocolsDiffer") == []  # 2016: neither document has protocol lines
    modern = parse_data("consensus", "2020-02-29-10-00-00-consensus.xz")
    differing = created_vote()
    differing.recommended_client_protocols = {"Cons": [1, 2], "Link": [4]}  # stem's .create() cannot place this line
    hits = findings(snapshot(modern, votes={from_consensus(modern)[0].nickname: differing}), "TorProtocolsDiffer")
    assert hits and hits[0].subjects["line"] == "recommended-client-protocols"


def test_shared_random(consensus):
    modern = parse_data("consensus", "2020-02-29-10-00-00-consensus.xz")
    assert findings(snapshot(modern), "TorSharedRandomMissing") == []
    assert findings(snapshot(consensus), "TorSharedRandomMissing") == []  # 2016: method 22, before shared random
    without = parse_data("consensus", "2020-02-29-10-00-00-consensus.xz")  # a fresh copy to edit
    without.shared_randomness_current_value = without.shared_randomness_previous_value = None
    hits = findings(snapshot(without), "TorSharedRandomMissing")
    assert sorted(f.subjects["value"] for f in hits) == ["current", "previous"]


def test_microdesc_problem(consensus):
    assert findings(snapshot(consensus), "TorMicrodescConsensusProblem") == []
    hits = findings(snapshot(consensus, microdesc=False), "TorMicrodescConsensusProblem")
    assert hits and "no usable microdesc consensus" in hits[0].description


def test_authorities_missing_from_and_unexpected_in_the_consensus(consensus):
    modern = parse_data("consensus", "2020-02-29-10-00-00-consensus.xz")
    unexpected = findings(snapshot(modern), "TorUnexpectedAuthority")
    assert {f.description.split(" ")[0] for f in unexpected} == {"bastet", "Serge"}  # bastet joined in 2020
    ghost = Authority("ghost", "E" * 40, "192.0.2.1", 80, 443, "E" * 40)
    hits = findings(snapshot(modern, authorities=from_consensus(modern) + [ghost]), "TorAuthorityMissingFromConsensus")
    assert [f.subjects for f in hits] == [{"authority": "ghost"}]


def test_consensus_time_impossible(consensus):
    # More in tests/unit/test_isolation.py: such a consensus is refused and never becomes the period.
    snap = snapshot(consensus, microdesc=False)  # judged as of its fetch (started_at)
    assert findings(snap, "TorConsensusTimeImpossible") == []
    early = dataclasses.replace(snap, started_at=consensus.valid_after - timedelta(days=2))
    ahead = findings(early, "TorConsensusTimeImpossible")
    assert len(ahead) == len(snap.views) and {f.severity for f in ahead} == {"critical"}
    assert "valid-after is 2.0 days ahead of the clock" in ahead[0].description
    late = dataclasses.replace(snap, started_at=consensus.valid_until + timedelta(days=2))
    assert "valid-until is 2.0 days past" in findings(late, "TorConsensusTimeImpossible")[0].description


# --- vote checks --------------------------------------------------------------------------------------

def test_recommended_versions_and_parameters(consensus, vote):
    snap = snapshot(consensus, votes={"maatuska": vote})
    assert findings(snap, "TorRecommendedVersionsDiffer") == []
    assert findings(snap, "TorConsensusParameterConflict") == []
    name, value = sorted(consensus.params.items())[0]
    odd = created_vote(**{"server-versions": "0.2.9.1", "params": f"{name}={value + 1} madeup=1"})
    odd_snap = snapshot(consensus, votes={"maatuska": odd})
    versions = findings(odd_snap, "TorRecommendedVersionsDiffer")
    assert [f.subjects["role"] for f in versions] == ["server"] and "+0.2.9.1" in versions[0].description
    conflict = findings(odd_snap, "TorConsensusParameterConflict")
    assert [(f.subjects["parameter"], f.values) for f in conflict] == [(name, {"vote": value + 1, "consensus": value})]
    assert [f.subjects["parameter"] for f in findings(odd_snap, "TorConsensusParameterUnknown")] == ["madeup"]


def test_flag_counts(consensus, vote):
    assert findings(snapshot(consensus, votes={"maatuska": vote}), "TorAuthorityFlagCountDiffers") == []
    stingy = created_vote(flags="Fast Running Valid")  # 4 relays, none Guard or Stable
    hits = findings(snapshot(consensus, votes={"maatuska": stingy}), "TorAuthorityFlagCountDiffers")
    assert {f.subjects["flag"] for f in hits} >= {"Fast", "Valid"}  # 4 vs thousands in the consensus


def test_missing_authority_descriptor(consensus, vote):
    snap = snapshot(consensus, votes={"maatuska": vote})
    assert findings(snap, "TorAuthorityMissingRelayDescriptor") == []
    small = snapshot(consensus, votes={"maatuska": created_vote()})
    assert len(findings(small, "TorAuthorityMissingRelayDescriptor")) == len(from_consensus(consensus))


def test_badexit_out_of_sync(consensus):
    fingerprint = next(iter(consensus.routers))
    entry = consensus.routers[fingerprint]
    flagged = RouterStatusEntryV3.create({"r": f"{entry.nickname} {_b64(fingerprint)} {'B' * 27} 2016-09-20 12:00:00 "
                                               f"{entry.address} {entry.or_port} 0", "s": "BadExit Running Valid"})
    unflagged = RouterStatusEntryV3.create({"r": f"{entry.nickname} {_b64(fingerprint)} {'B' * 27} 2016-09-20 12:00:00 "
                                                 f"{entry.address} {entry.or_port} 0", "s": "Running Valid"})
    known = {"known-flags": "BadExit Running Valid"}
    votes = {"moria1": NetworkStatusDocumentV3.create({"vote-status": "vote", **known}, routers=[flagged]),
             "tor26": NetworkStatusDocumentV3.create({"vote-status": "vote", **known}, routers=[unflagged])}
    hits = findings(snapshot(consensus, votes=votes), "TorBadExitOutOfSync")
    assert [f.subjects for f in hits] == [{"authority": "tor26"}]
    agree = {"moria1": votes["moria1"], "tor26": votes["moria1"]}
    assert findings(snapshot(consensus, votes=agree), "TorBadExitOutOfSync") == []


def _b64(fingerprint: str) -> str:
    import base64

    return base64.b64encode(bytes.fromhex(fingerprint)).decode().rstrip("=")


# --- bandwidth checks ---------------------------------------------------------------------------------

def test_bandwidth_authorities(consensus, vote):
    measuring = snapshot(consensus, votes={"maatuska": vote})
    assert findings(measuring, "TorBandwidthAuthorityNotMeasuring", bandwidth_authorities={"maatuska"}) == []
    silent = snapshot(consensus, votes={"maatuska": created_vote(measured=False)})
    hits = findings(silent, "TorBandwidthAuthorityNotMeasuring", bandwidth_authorities={"maatuska"})
    assert [f.subjects for f in hits] == [{"authority": "maatuska"}] and hits[0].severity == "info"
    both = snapshot(consensus, votes={"maatuska": created_vote(measured=False), "moria1": created_vote(measured=False)})
    assert {f.severity for f in findings(both, "TorBandwidthAuthorityNotMeasuring",
                                          bandwidth_authorities={"maatuska", "moria1"})} == {"critical"}
    started = findings(measuring, "TorBandwidthAuthorityStarted", bandwidth_authorities={"moria1"})
    assert [f.subjects for f in started] == [{"authority": "maatuska"}]
    assert findings(measuring, "TorBandwidthAuthorityStarted") == []  # nothing learned yet


def test_unmeasured_and_out_of_sync(consensus, vote):
    relays = [fp for fp, r in consensus.routers.items() if "Authority" not in r.flags]
    measured = sum(1 for fp in relays if fp in vote.routers and vote.routers[fp].measured is not None)
    expected = (len(relays) - measured) >= 0.05 * len(relays)
    hits = findings(snapshot(consensus, votes={"maatuska": vote}), "TorBandwidthAuthorityUnmeasured")
    assert bool(hits) == expected
    assert findings(snapshot(consensus, votes={"maatuska": vote}), "TorBandwidthAuthorityUnmeasured",
                    unmeasured_ratio=1.0) == []
    apart = snapshot(consensus, votes={"maatuska": vote, "moria1": created_vote()})
    hits = findings(apart, "TorBandwidthAuthoritiesOutOfSync")
    assert {f.subjects["authority"] for f in hits} == {"maatuska", "moria1"}
    assert findings(snapshot(consensus, votes={"maatuska": vote, "moria1": vote}),
                    "TorBandwidthAuthoritiesOutOfSync") == []


def test_bandwidth_file_stale(consensus):
    bandwidth_file = parse_data("bandwidth-file", "bandwidth-file-v1.4")
    snap = snapshot(consensus)
    next(iter(snap.views.values())).bandwidth_file = bandwidth_file
    assert findings(snap, "TorBandwidthFileStale", now=bandwidth_file.timestamp + timedelta(hours=2)) == []
    hits = findings(snap, "TorBandwidthFileStale", now=bandwidth_file.timestamp + timedelta(hours=60))
    assert hits and "is 60 h old" in hits[0].description


# --- the registry ------------------------------------------------------------------------------------

def test_every_registered_check_is_exercised_here():

    from pathlib import Path

    source = "".join(path.read_text() for path in Path(__file__).parent.glob("test_checks*.py"))
    assert [c.id for c in CHECKS if f'"{c.id}"' not in source] == []


def test_silences_expire_and_can_target_one_authority(consensus):
    failed = [record(n, outcome=Outcome.FAILED, error="connection refused") for n in ("moria1", "tor26")]
    context = Context(snapshot(consensus, records=failed), NOW, THRESHOLDS)
    silence = Silence("TorAuthorityUnreachable", NOW + timedelta(days=1), "maintenance", authority="moria1")
    found = [f for f in run_checks(context, (silence,)) if f.check == "TorAuthorityUnreachable"]
    assert {f.subjects["authority"]: f.silenced_by for f in found} == {
        "moria1": "maintenance (until 2016-09-21 13:20 UTC)", "tor26": None}
    expired = Silence("TorAuthorityUnreachable", NOW - timedelta(minutes=1), "old")
    assert all(f.silenced_by is None for f in run_checks(context, (expired,)))
    disabled = run_checks(context, disabled=frozenset({"TorAuthorityUnreachable"}))
    assert not any(f.check == "TorAuthorityUnreachable" for f in disabled)


def test_findings_become_health_points_per_check_and_severity(consensus):
    from agent.checks.run import health_points
    from agent.metrics.catalogue import problems

    failed = [record(n, outcome=Outcome.FAILED, error="connection refused") for n in ("moria1", "tor26")]
    context = Context(snapshot(consensus, records=failed), NOW, THRESHOLDS)
    silence = Silence("TorAuthorityUnreachable", NOW + timedelta(days=1), "maintenance", authority="moria1")
    points = health_points(run_checks(context, (silence,)), 1474376400)
    assert problems(points) == []
    assert len(points) == 3 * len(CHECKS)  # every check, every severity, zeros included
    unreachable = next(p for p in points if p.tags == {"check": "TorAuthorityUnreachable", "severity": "warning"})
    assert unreachable.fields == {"active": 1.0, "silenced": 1.0}


def test_checks_doc_is_generated_from_the_registry():
    from pathlib import Path

    from agent.checks.docs import render

    assert (Path(__file__).parents[2] / "docs" / "checks.md").read_text() == render(), \
        "run: python -m agent.checks.docs > docs/checks.md"
    assert "NO TEST FIRES THIS" not in render()


def test_vote_missing(consensus):
    assert findings(snapshot(consensus), "TorAuthorityVoteMissing") == []
    absent = Authority("absent", "C" * 40, "192.0.2.7", 80, 443)
    hits = findings(snapshot(consensus, authorities=from_consensus(consensus) + [absent]), "TorAuthorityVoteMissing")
    assert [f.subjects for f in hits] == [{"authority": "absent"}]
    assert "was built without a vote from absent" in hits[0].description
