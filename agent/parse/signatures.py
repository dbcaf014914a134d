"""Verifies consensus signatures against authority key certificates, per signature.

Tor signs a directory document by RSA-encrypting the digest of its signed
portion with PKCS#1 v1.5 padding and *no* ASN.1 DigestInfo (dir-spec 1.3), so
we recover the padded digest and compare. The ns consensus uses sha1, the
microdesc consensus sha256; stem 1.8 only checks sha1 and only as an
all-or-nothing count, so both flavours are checked here, one signature at a
time, which is what quorum and missing-signature findings need. A test holds
the sha1 results against stem's own ``validate_signatures``.

A certificate is only trusted after its own checks: its identity key hashes to
its fingerprint and its certification signature (by that identity key)
verifies; an expired certificate does not count at the document's valid-after.

Trust in a whole consensus (``trust_of``) comes from the configured
authorities' v3 identities, never from the document's own ``dir-source``
lines: it is *verified* when more than half of the configured authorities
signed it validly, as a client requires; *rejected* when a signature provably
does not match it, or when no configured authority signs it at all (a
document that vouches for itself); otherwise (certificates missing or expired
for too many signers) *unverified*. Signatures by identities that are not
configured are listed, never counted.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from agent.model.snapshot import SignatureCheck, SignatureReport, quorum

_HASHES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256}
#: Authorities have cross-certified their signing keys since tor 0.2.0 (2008).
CROSSCERT_REQUIRED_FROM = datetime(2009, 1, 1)
MISMATCH = "signature does not match the document"
VERIFIED, UNVERIFIED, REJECTED = "verified", "unverified", "rejected"


@dataclass(frozen=True)
class TrustedKey:
    """A signing key from a certificate that passed its own checks."""

    identity: str
    key_digest: str
    public_key: rsa.RSAPublicKey
    expires: datetime


def signed_portion(raw: bytes, start: bytes, end: bytes) -> bytes:
    """Bytes from ``start`` through the end of the first ``end`` after it."""
    begin = raw.find(start)
    if begin < 0:
        raise ValueError(f"no {start.decode()!r} in the document")
    stop = raw.find(end, begin)
    if stop < 0:
        raise ValueError(f"no {end.decode()!r} in the document")
    return raw[begin:stop + len(end)]


def _load_key(pem: str) -> rsa.RSAPublicKey:
    return serialization.load_pem_public_key(pem.encode())


def _key_digest(key: rsa.RSAPublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return hashlib.sha1(der).hexdigest().upper()


def _recover(key: rsa.RSAPublicKey, signature_block: str) -> bytes | None:
    """The digest a Tor signature block carries, or None if it does not decode."""
    body = "".join(line for line in signature_block.strip().splitlines() if not line.startswith("-----"))
    try:
        signature = base64.b64decode(body)
        width = (key.key_size + 7) // 8
        signature = signature.rjust(width, b"\0")
        return key.recover_data_from_signature(signature, padding.PKCS1v15(), None)
    except (ValueError, InvalidSignature):
        return None


def trust_certificates(certificates) -> tuple[dict[tuple[str, str], TrustedKey], list[str]]:
    """Checks each stem KeyCertificate; returns trusted keys by (identity, key digest) and rejections.

    A certificate that cannot be checked is rejected with a reason; it never
    raises, so one odd certificate cannot stop a cycle.
    """
    trusted, rejected = {}, []
    for certificate in certificates:
        try:
            key = _check_certificate(certificate)
        except Exception as error:  # malformed keys, missing lines, odd whitespace
            key = f"cannot be checked ({type(error).__name__}: {str(error)[:100]})"
        if isinstance(key, str):
            rejected.append(f"certificate {certificate.fingerprint}: {key}")
        else:
            trusted[(key.identity, key.key_digest)] = key
    return trusted, rejected


def _check_certificate(certificate) -> TrustedKey | str:
    """The certificate's signing key if every check passes, else why not (dir-spec 3.1)."""
    identity_key = _load_key(certificate.identity_key)
    signing_key = _load_key(certificate.signing_key)
    if _key_digest(identity_key) != certificate.fingerprint:
        return "identity key does not match fingerprint"
    identity_der = identity_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    # The signing key signs the identity key's digest, so a signing key cannot be re-used under
    # another identity. Certificates from before tor 0.2.0 (2008) have no cross-certificate.
    if certificate.crosscert is None:
        if certificate.published >= CROSSCERT_REQUIRED_FROM:
            return "no cross-certificate (dir-key-crosscert)"
    elif _recover(signing_key, certificate.crosscert) != hashlib.sha1(identity_der).digest():
        return "cross-certificate (dir-key-crosscert) does not verify"
    content = signed_portion(certificate.get_bytes(), b"dir-key-certificate-version", b"\ndir-key-certification")
    content += certificate.get_bytes()[len(content):].split(b"\n", 1)[0] + b"\n"
    if _recover(identity_key, certificate.certification) != hashlib.sha1(content).digest():
        return "certification signature does not verify"
    return TrustedKey(certificate.fingerprint, _key_digest(signing_key), signing_key, certificate.expires)


def check_signatures(document, trusted: dict[tuple[str, str], TrustedKey]) -> SignatureReport:
    """Verifies every ``directory-signature`` of a parsed consensus against its bytes, ``document.raw``.

    ``document`` is a ``NetworkStatus`` of a consensus flavour (a vote keeps
    no bytes: ValueError).
    """
    raw = getattr(document, "raw", None)
    if raw is None:
        raise ValueError("no bytes kept with the document (a vote, or not parsed here): signatures unchecked")
    return _checked(raw, document, trusted)


def _checked(raw: bytes, document, trusted: dict[tuple[str, str], TrustedKey]) -> SignatureReport:
    digests = _Digests(raw)
    checks = []
    for signature in document.signatures:
        algorithm = signature.method or "sha1"
        checks.append(_check_one(signature, algorithm, digests, trusted, document.valid_after))
    return SignatureReport(tuple(checks))


class _Digests(dict):
    """Algorithm -> digest of the signed portion of ``raw``, each computed when a signature is first checked
    with it (finding and hashing it twice in a 2.4 MB consensus costs 3-4 ms: backfill of archives without
    certificates checks none)."""

    def __init__(self, raw: bytes):
        super().__init__()
        self.raw, self.content = raw, None

    def __missing__(self, algorithm: str) -> bytes:
        if self.content is None:
            self.content = signed_portion(self.raw, b"network-status-version", b"\ndirectory-signature ")
        digest = self[algorithm] = _HASHES[algorithm](self.content).digest()
        return digest


def _check_one(signature, algorithm, digests, trusted, valid_after) -> SignatureCheck:
    identity = signature.identity.upper()
    if algorithm not in _HASHES:
        return SignatureCheck(identity, algorithm, False, f"unknown digest algorithm {algorithm}")
    key = trusted.get((identity, signature.key_digest.upper()))
    if key is None:
        return SignatureCheck(identity, algorithm, False, "no trusted key certificate for this signing key")
    if key.expires < valid_after:
        return SignatureCheck(identity, algorithm, False, f"key certificate expired {key.expires:%Y-%m-%d %H:%M}")
    if _recover(key.public_key, signature.signature) != digests[algorithm]:
        return SignatureCheck(identity, algorithm, False, MISMATCH)
    return SignatureCheck(identity, algorithm, True)



@dataclass(frozen=True)
class Trust:
    """What a document's signatures establish: ``verdict`` (VERIFIED, UNVERIFIED or REJECTED) and why."""

    verdict: str
    reason: str
    valid: int = 0  # valid signatures by trusted identities
    unknown_signers: tuple[str, ...] = ()  # signing identities not among the trusted ones (never counted)

    @property
    def verified(self) -> bool:
        return self.verdict == VERIFIED

    @property
    def rejected(self) -> bool:
        return self.verdict == REJECTED


def trust_of(report: SignatureReport, authorities: frozenset[str]) -> Trust:
    """The verdict on a consensus whose signatures are ``report``, trusting only the v3 identities ``authorities``.

    See the module docstring for the rule; ``authorities`` are the configured
    ones (``authorities.bootstrap``), whatever the document lists.
    """
    needed = quorum(len(authorities))
    valid = report.valid_identities & authorities
    signers = {check.identity for check in report.checks}
    unknown = tuple(sorted(signers - authorities))
    counted = f"{len(valid)} valid signatures by the {len(authorities)} configured authorities, {needed} needed"
    if len(valid) >= needed:
        return Trust(VERIFIED, counted, len(valid), unknown)
    mismatched = sorted({check.identity for check in report.checks if check.reason == MISMATCH})
    if mismatched:
        return Trust(REJECTED, f"the signature of {', '.join(mismatched)} does not match the document ({counted})",
                     len(valid), unknown)
    if not signers & authorities:
        return Trust(REJECTED, f"signed by no configured authority, only by {', '.join(unknown) or 'nobody'} "
                               "(trust comes from authorities.bootstrap, not from the document)", 0, unknown)
    return Trust(UNVERIFIED, f"{counted}: no trusted, unexpired key certificate for the other signers",
                 len(valid), unknown)


def vote_trust(raw: bytes, vote) -> Trust:
    """The verdict on a vote: its author's signature checked with the key certificate the vote carries.

    ``raw`` is the vote's bytes (a parsed vote keeps none). Verified if the
    certificate passes its own checks and the signature by its identity
    matches; rejected if either provably fails; unverified if the vote carries
    no certificate for its signature.
    """
    certificates = [source.key_certificate for source in vote.directory_authorities if source.key_certificate]
    trusted, refused = trust_certificates(certificates)
    if refused:
        return Trust(REJECTED, f"its key {refused[0]}")
    authors = frozenset(source.v3ident.upper() for source in vote.directory_authorities)
    report = _checked(raw, vote, trusted)
    if report.valid_identities & authors:
        return Trust(VERIFIED, "signed by its author, whose key certificate it carries", 1)
    if report.valid_identities:
        return Trust(REJECTED, f"signed by {', '.join(sorted(report.valid_identities))}, not by its author "
                               f"{', '.join(sorted(authors))}")
    if any(check.reason == MISMATCH for check in report.checks):
        return Trust(REJECTED, f"{MISMATCH} (checked with the key certificate it carries)")
    reasons = sorted({check.reason or "" for check in report.checks})
    return Trust(UNVERIFIED, "its signature cannot be checked: " + ("; ".join(reasons) or "no signature"))
