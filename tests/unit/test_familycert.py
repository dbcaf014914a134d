"""tor 0.4.9 family certs: decoded and verified (agent.parse.familycert), kept by the fast descriptor parser.

Real data: tests/data/server-descriptors-family-cert-tor-0.4.9, two relays of our private network (tor 0.4.9.11)
configured with one ``FamilyId`` and its secret key file, no MyFamily line. Other certs are made here with our
own Ed25519 keys (tests/unit/familycerts.py), including every way one can be wrong.
"""

from __future__ import annotations

import base64

import pytest
import stem.descriptor
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.model.family import (
    BAD_SIGNATURE,
    EXPIRED,
    MALFORMED,
    NOT_FAMILY,
    OTHER_IDENTITY,
    FamilyCert,
    family_ids,
)
from agent.parse.familycert import family_id, read_family_cert, read_family_object
from agent.parse.fastdesc import parse_server_descriptors
from tests.unit.familycerts import (
    REAL,
    REAL_EXPIRES,
    REAL_FAMILY_ID,
    REAL_RELAY1,
    REAL_RELAY2,
    armoured,
    b64,
    extension,
    make_cert,
    raw,
)

FAMILY, RELAY, OTHER = (Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32) for n in (1, 2, 3))
HOURS = 500_000  # 2027-01-14 08:00 UTC
NOW = 499_000 * 3600  # 2026-12-04 16:00 UTC, before HOURS


def judged(der: bytes, identity: bytes | None = None) -> FamilyCert:
    return read_family_cert(der, b64(raw(RELAY)) if identity is None else b64(identity))


# --- the real descriptors ---------------------------------------------------------------------------

def test_tor_049_descriptors_carry_one_valid_family_id_for_both_relays():
    relay1, relay2 = parse_server_descriptors(REAL.read_bytes())
    assert (relay1.fingerprint, relay2.fingerprint) == (REAL_RELAY1, REAL_RELAY2)
    assert relay1.family == relay2.family == set()  # no MyFamily line: the family ID is all they have
    for relay in (relay1, relay2):
        [cert] = relay.family_certs
        assert cert == FamilyCert(REAL_FAMILY_ID, REAL_EXPIRES)
        assert family_ids(relay, NOW) == {REAL_FAMILY_ID}
        assert cert.describe(NOW) == "family-cert: valid until 2027-01-05T18Z"
        assert family_ids(relay, REAL_EXPIRES + 1) == set()  # tor: expired once past the hour
        assert cert.describe(REAL_EXPIRES + 1) == "family-cert: expired 2027-01-05T18Z"


def test_stem_reads_the_same_identity_keys():
    ours = parse_server_descriptors(REAL.read_bytes())
    theirs = list(stem.descriptor.parse_file(str(REAL), "server-descriptor 1.0", validate=True))
    assert [d.ed25519_master_key for d in ours] == [d.ed25519_master_key for d in theirs]
    assert all(any(line.startswith("family-cert") for line in d.get_unrecognized_lines()) for d in theirs)


def test_the_real_cert_certifies_the_descriptors_identity_and_no_other():
    text = REAL.read_text()
    start = text.index("family-cert\n") + len("family-cert\n")
    obj = text[start:text.index("-----END FAMILY CERT-----") + len("-----END FAMILY CERT-----")]
    relay1 = parse_server_descriptors(REAL.read_bytes())[0]
    assert read_family_object(obj, relay1.ed25519_master_key).problem is None
    relay2_key = parse_server_descriptors(REAL.read_bytes())[1].ed25519_master_key
    assert read_family_object(obj, relay2_key).problem == OTHER_IDENTITY
    assert read_family_object(obj, relay1.ed25519_master_key + "=").problem is None  # padding is no difference


# --- certs of our own -------------------------------------------------------------------------------

def test_a_cert_we_make_is_read_as_tor_prints_the_family_id():
    cert = judged(make_cert(FAMILY, raw(RELAY), HOURS))
    assert cert == FamilyCert(base64.b64encode(raw(FAMILY)).decode().rstrip("="), HOURS * 3600)
    assert cert.family_id == family_id(raw(FAMILY)) and "=" not in cert.family_id
    assert cert.problem_at(NOW) is None and cert.problem_at(HOURS * 3600) is None
    assert cert.problem_at(HOURS * 3600 + 1) == EXPIRED
    unknown = make_cert(FAMILY, raw(RELAY), HOURS, extensions=[extension(9, b"x" * 5), extension(4, raw(FAMILY))])
    assert judged(unknown).problem is None  # an unknown extension that does not affect validation is skipped


@pytest.mark.parametrize("der, problem, described", [
    (make_cert(FAMILY, raw(RELAY), HOURS, signer=OTHER), BAD_SIGNATURE, "family-cert: signature does not verify"),
    (make_cert(FAMILY, raw(OTHER), HOURS), OTHER_IDENTITY,
     f"family-cert: certifies another identity (ed25519 identity {b64(raw(OTHER))})"),
    (make_cert(FAMILY, raw(RELAY), HOURS, cert_type=4), NOT_FAMILY, "family-cert: not a family cert (type 4)"),
    (make_cert(FAMILY, raw(RELAY), HOURS, key_type=3), NOT_FAMILY,
     "family-cert: not a family cert (certified key type 3)"),
    (make_cert(FAMILY, raw(RELAY), HOURS, version=2), MALFORMED, "family-cert: malformed (version 2)"),
    (make_cert(FAMILY, raw(RELAY), HOURS, extensions=[]), MALFORMED,
     "family-cert: malformed (no signing-key extension (the family key))"),
    (make_cert(FAMILY, raw(RELAY), HOURS, extensions=[extension(4, raw(FAMILY)), extension(9, b"", flags=1)]),
     MALFORMED, "family-cert: malformed (unknown extension 9 that affects validation)"),
    (make_cert(FAMILY, raw(RELAY), HOURS, extensions=[extension(4, raw(FAMILY)[:31])]), MALFORMED,
     "family-cert: malformed (a signing-key extension that is not one 32-byte key)"),
    (make_cert(FAMILY, raw(RELAY), HOURS, extensions=[extension(4, raw(FAMILY)), extension(4, raw(FAMILY))]),
     MALFORMED, "family-cert: malformed (a signing-key extension that is not one 32-byte key)"),
    (make_cert(FAMILY, raw(RELAY), HOURS)[:100], MALFORMED, "family-cert: malformed (100 bytes, fewer than 104)"),
    (make_cert(FAMILY, raw(RELAY), HOURS)[:40] + b"\x05" + bytes(63 + 64), MALFORMED,
     "family-cert: malformed (extensions run into the signature)"),
], ids=["forged", "other-identity", "type-4", "key-type-3", "version-2", "no-family-key", "critical-unknown",
        "short-key", "two-keys", "truncated", "overrun"])
def test_a_cert_that_does_not_count_says_why(der, problem, described):
    cert = judged(der)
    assert cert.problem == problem and cert.problem_at(NOW) == problem
    assert cert.describe(NOW) == described


def test_a_cert_read_for_a_descriptor_without_identity_certifies_nobody():
    cert = read_family_cert(make_cert(FAMILY, raw(RELAY), HOURS), None)
    assert cert.problem == OTHER_IDENTITY and "no master-key-ed25519" in cert.detail


def test_objects_that_are_not_base64_or_not_an_object_are_malformed():
    assert read_family_object("-----BEGIN FAMILY CERT-----\nAAA=A\n-----END FAMILY CERT-----", "x").detail == \
        "not base64"
    assert read_family_object("", "x").detail == "no FAMILY CERT object"


# --- in a descriptor --------------------------------------------------------------------------------

def _relay1_with(replacement: str) -> bytes:
    """The real relay1 descriptor with its family-cert item replaced (its signature no longer matches; the fast
    parser does not check signatures, stem's validation does)."""
    text = REAL.read_text().split("router relay2")[0]
    start = text.index("family-cert\n")
    end = text.index("-----END FAMILY CERT-----") + len("-----END FAMILY CERT-----")
    return (text[:start] + replacement + text[end:]).encode()


def test_a_bad_cert_costs_only_itself():
    original = REAL.read_text()
    item = original[original.index("family-cert\n"):original.index("-----END FAMILY CERT-----") + 25]
    identity = base64.b64decode(REAL.read_text().split("master-key-ed25519 ")[1].split("\n")[0] + "=")
    forged = armoured(make_cert(FAMILY, identity, HOURS, signer=OTHER))
    [relay1] = parse_server_descriptors(_relay1_with(forged + "\n" + item))
    assert [cert.problem for cert in relay1.family_certs] == [BAD_SIGNATURE, None]
    assert family_ids(relay1, NOW) == {REAL_FAMILY_ID}
    [mine] = parse_server_descriptors(_relay1_with(armoured(make_cert(FAMILY, identity, HOURS))))
    assert family_ids(mine, NOW) == {b64(raw(FAMILY))}


@pytest.mark.parametrize("replacement, contact", [
    ("family-cert\n-----BEGIN FAMILY CERT-----\n!!!\n-----END FAMILY CERT-----", None),
    ("family-cert", None),
    ("family-cert\n-----BEGIN FAMILY CERT-----\nAAAA", None),
    # Another line never takes a FAMILY CERT object: the contact stays what it says.
    ("contact x\n-----BEGIN FAMILY CERT-----\nAAAA\n-----END FAMILY CERT-----\nfamily-cert", b"x"),
])
def test_a_malformed_family_cert_item_never_refuses_the_descriptor(replacement, contact):
    raw_descriptor = _relay1_with(replacement)
    if contact is not None:
        raw_descriptor = raw_descriptor.replace(b"\ncontact allium-agent testnet operator <relay1@example.invalid>",
                                                b"")
    [relay1] = parse_server_descriptors(raw_descriptor)
    assert [(cert.problem, cert.family_id) for cert in relay1.family_certs] == [(MALFORMED, None)]
    assert family_ids(relay1, NOW) == set() and relay1.fingerprint == REAL_RELAY1
    if contact is not None:
        assert relay1.contact == contact


def test_descriptors_without_the_lines_have_no_certs_and_no_identity():
    text = REAL.read_text().split("router relay2")[0]
    bare = "\n".join(line for line in text.split("\n") if not line.startswith("master-key-ed25519"))
    start = bare.index("family-cert\n")
    bare = bare[:start] + bare[bare.index("-----END FAMILY CERT-----") + 26:]
    [relay1] = parse_server_descriptors(bare.encode())
    assert relay1.family_certs == () and relay1.ed25519_master_key is None
