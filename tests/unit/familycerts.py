"""Family certs made here with our own Ed25519 keys, in tor's layout (cert-spec section 2), for the family tests."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

#: Two relays of our private network (tor 0.4.9.11) configured with one FamilyId, no MyFamily line.
REAL = Path(__file__).parents[1] / "data" / "server-descriptors-family-cert-tor-0.4.9"
REAL_FAMILY_ID = "SfLpQ5mTC4CsAXbGf1LP3bxzvDLSSeeGJNwt7vwAMCQ"
REAL_EXPIRES = 499770 * 3600  # 2027-01-05 18:00 UTC: 30 days after the descriptors were published
REAL_RELAY1 = "9848BC711A7D04DC01311EF3662FEA245E8D1EB9"
REAL_RELAY2 = "0979F93458EB4B8449493A387BB8253A8A3CC035"


def raw(key) -> bytes:
    """The 32 bytes of an Ed25519 public key (or a private key's public half)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def b64(data: bytes) -> str:
    """Base64 without padding, as tor writes keys (master-key-ed25519, FamilyId)."""
    return base64.b64encode(data).decode().rstrip("=")


def extension(kind: int, data: bytes, flags: int = 0) -> bytes:
    return len(data).to_bytes(2, "big") + bytes([kind, flags]) + data


def make_cert(family: Ed25519PrivateKey, identity: bytes, expires_hours: int, *, cert_type: int = 0x0C,
              version: int = 1, key_type: int = 1, extensions: list[bytes] | None = None,
              signer: Ed25519PrivateKey | None = None) -> bytes:
    """A family cert: ``family`` certifies ``identity`` (32 bytes) until ``expires_hours`` after the epoch.

    ``extensions`` replaces the signing-key extension (type 4, the family key); ``signer`` signs instead of
    the family key (a forgery).
    """
    if extensions is None:
        extensions = [extension(4, raw(family))]
    body = (bytes([version, cert_type]) + expires_hours.to_bytes(4, "big") + bytes([key_type]) + identity
            + bytes([len(extensions)]) + b"".join(extensions))
    return body + (signer or family).sign(body)


def armoured(der: bytes) -> str:
    """The ``family-cert`` item as tor writes it into a descriptor (64-character base64 lines)."""
    text = base64.b64encode(der).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return "family-cert\n-----BEGIN FAMILY CERT-----\n" + "\n".join(lines) + "\n-----END FAMILY CERT-----"
