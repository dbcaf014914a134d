"""tor 0.4.9's family certificates (proposal 321, "happy families"): decoded and verified, never raising.

A relay configured with ``FamilyId`` and the family's secret key publishes,
for each family key, a ``family-cert`` item in its server descriptor (dir-spec
"server-descriptor-format"; any number of times, no arguments) followed by a
``-----BEGIN FAMILY CERT-----`` object: an Ed25519 certificate (cert-spec
section 2) in which the family key certifies the relay's ed25519 identity:

    VERSION 1 byte (1) | CERT_TYPE 1 byte (0x0C, family-v-identity) |
    EXPIRATION 4 bytes, hours since the epoch | CERT_KEY_TYPE 1 byte (1, ed25519) |
    CERTIFIED_KEY 32 bytes (the relay's identity, = master-key-ed25519) |
    N_EXTENSIONS 1 byte | per extension: length 2 bytes, type 1 byte, flags 1 byte, data |
    SIGNATURE 64 bytes, Ed25519 by the family key over everything before it

The family key travels in extension type 4 ("signed-with-ed25519-key", 32
bytes); tor prints it base64 without padding as the ``FamilyId``, and that is
the family ID here. A cert counts only when it is a version 1 family cert,
its signature verifies with that key, it certifies this descriptor's
``master-key-ed25519``, and (judged per period, ``agent.model.family``) it
has not expired. An unknown extension flagged "affects validation" (flags
bit 1) makes the cert malformed, as cert-spec says. Anything wrong costs
only that cert: ``read_family_cert`` records why (``FamilyCert.problem``).
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.model.family import BAD_SIGNATURE, MALFORMED, NOT_FAMILY, OTHER_IDENTITY, FamilyCert

BEGIN, END = "-----BEGIN FAMILY CERT-----", "-----END FAMILY CERT-----"
CERT_TYPE_FAMILY = 0x0C
KEY_TYPE_ED25519 = 1
EXTENSION_SIGNING_KEY = 4
AFFECTS_VALIDATION = 1
HEADER = 1 + 1 + 4 + 1 + 32 + 1  # up to and including N_EXTENSIONS
SIGNATURE = 64
_OBJECT = re.compile(rf"\s*{BEGIN}\n([A-Za-z0-9+/=\n]*){END}\s*")


def family_id(key: bytes) -> str:
    """A family key as tor prints it (``FamilyId``): base64 without padding."""
    return base64.b64encode(key).decode().rstrip("=")


def read_family_object(text: str, identity: str | None) -> FamilyCert:
    """The cert of one ``family-cert`` object (its BEGIN/END lines included) for a descriptor whose
    ``master-key-ed25519`` is ``identity`` (base64, padding optional; None when it has none)."""
    match = _OBJECT.fullmatch(text)
    if match is None:
        return FamilyCert(None, None, MALFORMED, "no FAMILY CERT object")
    try:
        der = base64.b64decode(match[1].replace("\n", ""), validate=True)
    except (binascii.Error, ValueError):
        return FamilyCert(None, None, MALFORMED, "not base64")
    return read_family_cert(der, identity)


@lru_cache(maxsize=16384)
def read_family_cert(der: bytes, identity: str | None) -> FamilyCert:
    """The cert ``der`` (decoded bytes) judged for ``identity``; cached, as a relay republishes the same cert
    for days and a period reads thousands (one Ed25519 verification is about 0.1 ms)."""
    if len(der) < HEADER + SIGNATURE:
        return FamilyCert(None, None, MALFORMED, f"{len(der)} bytes, fewer than {HEADER + SIGNATURE}")
    expires = int.from_bytes(der[2:6], "big") * 3600
    if der[0] != 1:
        return FamilyCert(None, expires, MALFORMED, f"version {der[0]}")
    if der[1] != CERT_TYPE_FAMILY:
        return FamilyCert(None, expires, NOT_FAMILY, f"type {der[1]}")
    if der[6] != KEY_TYPE_ED25519:
        return FamilyCert(None, expires, NOT_FAMILY, f"certified key type {der[6]}")
    key, problem = _signing_key(der)
    if key is None:
        return FamilyCert(None, expires, MALFORMED, problem)
    found = family_id(key)
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(der[-SIGNATURE:], der[:-SIGNATURE])
    except (InvalidSignature, ValueError):
        return FamilyCert(found, expires, BAD_SIGNATURE)
    if identity is None or _key_bytes(identity) != der[7:39]:
        detail = "the descriptor has no master-key-ed25519" if identity is None \
            else f"ed25519 identity {family_id(der[7:39])}"
        return FamilyCert(found, expires, OTHER_IDENTITY, detail)
    return FamilyCert(found, expires)


def _signing_key(der: bytes) -> tuple[bytes | None, str]:
    """The family key of the signed-with-ed25519-key extension, or None and why the extensions are malformed."""
    position, end, key = HEADER, len(der) - SIGNATURE, None
    for _ in range(der[HEADER - 1]):
        if position + 4 > end:
            return None, "extensions run into the signature"
        length, kind, flags = int.from_bytes(der[position:position + 2], "big"), der[position + 2], der[position + 3]
        data = der[position + 4:position + 4 + length]
        position += 4 + length
        if position > end:
            return None, "extensions run into the signature"
        if kind == EXTENSION_SIGNING_KEY:
            if length != 32 or key is not None:
                return None, "a signing-key extension that is not one 32-byte key"
            key = data
        elif flags & AFFECTS_VALIDATION:
            return None, f"unknown extension {kind} that affects validation"
    if position != end:
        return None, f"{end - position} bytes between the extensions and the signature"
    if key is None:
        return None, "no signing-key extension (the family key)"
    return key, ""


def _key_bytes(text: str) -> bytes | None:
    """An ed25519 key written in base64 with or without padding, or None if it is not one."""
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == 32 else None
