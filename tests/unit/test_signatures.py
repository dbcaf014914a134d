"""Per-signature verification of both consensus flavours, held against stem for sha1."""

import dataclasses
from datetime import datetime

import pytest
from stem.descriptor.networkstatus import NetworkStatusDocumentV3

from agent.model.authorities import default_authorities
from agent.model.network_status import NetworkStatus
from agent.model.snapshot import DocKind, SignatureCheck, SignatureReport
from agent.parse.documents import _strip_annotations, parse_document
from agent.parse.signatures import MISMATCH, UNVERIFIED, check_signatures, trust_certificates, trust_of, vote_trust


@pytest.fixture(scope="module")
def trusted(certificates):
    keys, rejected = trust_certificates(certificates)
    assert rejected == []
    return keys


def test_every_certificate_checks_out(trusted):
    assert len(trusted) == 9


def test_ns_consensus_sha1_signatures_all_verify(consensus, trusted):
    report = check_signatures(consensus, trusted)
    assert {check.algorithm for check in report.checks} == {"sha1"}
    assert len(report.valid_identities) == 8 == len(consensus.signatures)


def test_microdesc_consensus_sha256_signatures_all_verify(microdesc_consensus, trusted):
    report = check_signatures(microdesc_consensus, trusted)
    assert {check.algorithm for check in report.checks} == {"sha256"}
    assert len(report.valid_identities) == 8


def test_agrees_with_stem_on_the_ns_flavour(consensus_bytes, consensus, certificates, trusted):
    whole = NetworkStatusDocumentV3(_strip_annotations(consensus_bytes))  # stem's own document, entries and all
    whole.validate_signatures(certificates)  # stem: raises if fewer than half verify
    ours = check_signatures(consensus, trusted)
    assert len(ours.valid_identities) >= len(consensus.signatures) / 2


def test_one_changed_byte_invalidates_every_signature(consensus, trusted):
    tampered = consensus.raw.replace(b"s Exit Fast", b"s Exit Fass", 1)
    assert tampered != consensus.raw
    report = check_signatures(NetworkStatus(consensus.header, consensus.entries, tampered), trusted)
    assert report.valid_identities == frozenset()
    assert {check.reason for check in report.checks} == {"signature does not match the document"}


def test_missing_certificate_and_expired_certificate(consensus, trusted):
    longclaw = "23D15D965BC35114467363C165C4F724B64B4F66"
    fewer = {key: value for key, value in trusted.items() if key[0] != longclaw}
    report = check_signatures(consensus, fewer)
    failed = [check for check in report.checks if not check.valid]
    assert [(c.identity, c.reason) for c in failed] == [(longclaw, "no trusted key certificate for this signing key")]

    expired = {key: dataclasses.replace(value, expires=datetime(2022, 1, 1)) for key, value in trusted.items()}
    report = check_signatures(consensus, expired)
    assert report.valid_identities == frozenset()
    assert all(check.reason.startswith("key certificate expired 2022-01-01") for check in report.checks)


def test_a_vote_has_no_bytes_to_check(consensus, trusted):
    vote = NetworkStatus(consensus.header, consensus.entries, None)  # as a parsed vote: no bytes kept
    with pytest.raises(ValueError, match="no bytes kept"):
        check_signatures(vote, trusted)


def _stand_in(real, fingerprint=None, raw=None):
    """A certificate-like object: stem's KeyCertificate cannot be edited in place."""

    class StandIn:
        identity_key = real.identity_key
        signing_key = real.signing_key
        crosscert = real.crosscert
        certification = real.certification
        published = real.published
        expires = real.expires

        def get_bytes(self):
            return raw if raw is not None else real.get_bytes()

    StandIn.fingerprint = fingerprint or real.fingerprint
    return StandIn()


def test_forged_certificates_are_not_trusted(certificates):
    real, other = certificates[0], certificates[1]
    trusted, rejected = trust_certificates([_stand_in(real, fingerprint=other.fingerprint)])
    assert trusted == {}
    assert rejected == [f"certificate {other.fingerprint}: identity key does not match fingerprint"]

    altered = real.get_bytes().replace(b"dir-key-expires 20", b"dir-key-expires 30")
    trusted, rejected = trust_certificates([_stand_in(real, raw=altered)])
    assert trusted == {}
    assert rejected == [f"certificate {real.fingerprint}: certification signature does not verify"]


def test_cross_certificate_binds_signing_key_to_identity(certificates):
    real, other = certificates[0], certificates[1]
    swapped = _stand_in(real)
    swapped.crosscert = other.crosscert  # another authority's cross-certificate
    trusted, rejected = trust_certificates([swapped])
    assert trusted == {} and rejected == [f"certificate {real.fingerprint}: cross-certificate (dir-key-crosscert) "
                                          "does not verify"]
    missing = _stand_in(real)
    missing.crosscert = None
    assert trust_certificates([missing])[1] == [
        f"certificate {real.fingerprint}: no cross-certificate (dir-key-crosscert)"]


def test_odd_certificates_are_rejected_not_raised(certificates):
    broken = _stand_in(certificates[0], raw=b"no certificate here")
    trusted, rejected = trust_certificates([broken])
    assert trusted == {} and "cannot be checked" in rejected[0]


# -- trust: only the configured authorities' signatures count ------------------------------------------------------

CONFIGURED = frozenset(authority.v3ident for authority in default_authorities())


def test_the_real_consensus_verifies_with_the_configured_authorities_alone(consensus, trusted):
    verdict = trust_of(check_signatures(consensus, trusted), CONFIGURED)
    assert verdict.verified and verdict.valid == 5  # of 8 valid: moria1, tor26 and Faravahar have new keys since
    assert verdict.unknown_signers == ("14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4",
                                       "D586D18309DED4CD6D57C18FDB97EFA96D330566",
                                       "EFCBE720AB3A82B99F9E953CD5BF50F7EEFC7B97")
    fewer = CONFIGURED - {"ED03BB616EB2F60BEC80151114BB25CEF515B226"}  # 4 of 8 configured: 5 needed
    assert trust_of(check_signatures(consensus, trusted), fewer).verdict == UNVERIFIED


def _report(*checks):
    return SignatureReport(tuple(SignatureCheck(identity, "sha1", valid, reason) for identity, valid, reason in checks))


def test_signatures_by_unknown_identities_never_count_however_many():
    known, strangers = sorted(CONFIGURED), [f"{index:040X}" for index in range(20)]
    many = _report(*((identity, True, None) for identity in strangers), (known[0], True, None))
    verdict = trust_of(many, CONFIGURED)
    assert verdict.verdict == UNVERIFIED and verdict.valid == 1 and len(verdict.unknown_signers) == 20
    alone = trust_of(_report((strangers[0], True, None)), CONFIGURED)
    assert alone.rejected and alone.reason.startswith(f"signed by no configured authority, only by {strangers[0]}")
    assert trust_of(_report(), CONFIGURED).rejected  # no signature at all


def test_a_mismatch_rejects_unless_a_quorum_verifies_and_missing_certificates_leave_it_unverified():
    known = sorted(CONFIGURED)
    missing = "no trusted key certificate for this signing key"
    assert trust_of(_report(*((identity, False, missing) for identity in known)), CONFIGURED).verdict == UNVERIFIED
    tampered = _report((known[0], False, MISMATCH), *((identity, False, missing) for identity in known[1:]))
    assert trust_of(tampered, CONFIGURED).rejected
    quorum_and_one_bad = _report((known[0], False, MISMATCH), *((identity, True, None) for identity in known[1:6]))
    assert trust_of(quorum_and_one_bad, CONFIGURED).verified


def test_a_real_vote_verifies_with_the_certificate_it_carries_and_a_changed_byte_rejects_it():
    from tests.conftest import read_data

    raw = read_data("2016-09-20-13-00-00-vote-maatuska.xz")
    assert vote_trust(raw, parse_document(DocKind.VOTE, raw, "vote")).verified
    tampered = raw.replace(b"s Fast", b"s Exit Fast", 1)
    verdict = vote_trust(tampered, parse_document(DocKind.VOTE, tampered, "vote"))
    assert verdict.rejected and verdict.reason.startswith(MISMATCH)
