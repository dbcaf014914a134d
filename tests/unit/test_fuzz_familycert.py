"""Properties of the family-cert decoder (agent.parse.familycert), on generated certs and bytes.

Any bytes and any text are read without raising, and never as a cert that counts; a cert made from any keys,
expiry and harmless extra extensions reads back as its family key and expiry; changing any one byte of it makes
it not count; a descriptor whose family-cert item is any object-like text still parses, the cert costing only
itself. CI runs a bounded, reproducible slice; ``ALLIUM_FUZZ_EXAMPLES=5000`` runs a long one.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.model.family import CERT_PROBLEMS, FamilyCert, family_ids
from agent.parse.familycert import read_family_cert, read_family_object
from agent.parse.fastdesc import parse_server_descriptors
from tests.unit.familycerts import REAL, REAL_FAMILY_ID, REAL_RELAY1, b64, extension, make_cert, raw

EXAMPLES = int(os.environ.get("ALLIUM_FUZZ_EXAMPLES", "100"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="ALLIUM_FUZZ_EXAMPLES" not in os.environ,
                database=None, suppress_health_check=[HealthCheck.too_slow])
NOW = 499_000 * 3600

keys = st.binary(min_size=32, max_size=32).map(Ed25519PrivateKey.from_private_bytes)
# Extensions a reader must skip: unknown types (not 4) without the affects-validation flag.
harmless = st.builds(lambda kind, data, flags: extension(kind, data, flags & ~1),
                     st.integers(0, 255).filter(lambda kind: kind != 4), st.binary(max_size=40), st.integers(0, 255))


def _sane(cert: FamilyCert) -> None:
    assert isinstance(cert, FamilyCert)
    assert cert.problem is None or cert.problem in CERT_PROBLEMS
    assert cert.family_id is None or len(cert.family_id) == 43
    assert cert.describe(NOW).startswith("family-cert: ")


@FUZZ
@given(st.binary(max_size=300), st.one_of(st.none(), st.text(max_size=50)))
def test_any_bytes_are_read_never_raising_and_never_counting(der, identity):
    cert = read_family_cert(der, identity)
    _sane(cert)
    assert cert.problem is not None  # forging an Ed25519 signature by chance does not happen


@FUZZ
@given(st.text(max_size=400))
def test_any_text_as_an_object_is_read_never_raising(text):
    cert = read_family_object(text, b64(bytes(32)))
    _sane(cert)
    assert cert.problem is not None


@FUZZ
@given(keys, keys, st.integers(0, 2 ** 32 - 1), st.lists(harmless, max_size=3), st.integers(0, 3))
def test_a_made_cert_reads_back_and_any_changed_byte_voids_it(family, relay, hours, extras, where):
    extensions = list(extras)
    extensions.insert(min(where, len(extensions)), extension(4, raw(family)))
    der = make_cert(family, raw(relay), hours, extensions=extensions)
    cert = read_family_cert(der, b64(raw(relay)))
    assert cert == FamilyCert(b64(raw(family)), hours * 3600)
    assert cert.problem_at(hours * 3600) is None and cert.problem_at(hours * 3600 + 1) == "expired"
    for index in range(len(der)):
        changed = der[:index] + bytes([der[index] ^ 0x01]) + der[index + 1:]
        assert read_family_cert(changed, b64(raw(relay))).problem is not None, index


object_lines = st.lists(st.one_of(
    st.from_regex(r"[A-Z0-9+/=-]{0,70}", fullmatch=True),  # no line a keyword could start: keywords are lower case
    st.sampled_from(["-----BEGIN FAMILY CERT-----", "-----END FAMILY CERT-----", "", " ", "===="])), max_size=8)


@FUZZ
@given(object_lines, st.booleans())
def test_a_descriptor_with_any_object_after_family_cert_still_parses(lines, keep_real):
    text = REAL.read_text().split("router relay2")[0]
    start = text.index("family-cert\n")
    end = text.index("-----END FAMILY CERT-----") + len("-----END FAMILY CERT-----")
    item = "family-cert\n" + "\n".join(lines) + ("\n" + text[start:end] if keep_real else "")
    [relay1] = parse_server_descriptors((text[:start] + item + text[end:]).encode())
    assert relay1.fingerprint == REAL_RELAY1 and relay1.family_certs
    for cert in relay1.family_certs:
        _sane(cert)
    assert family_ids(relay1, NOW) == ({REAL_FAMILY_ID} if keep_real else set())
