"""Authenticated relay operator IDs (AROI): what the proofs said, and each relay's verdict.

A relay is run by a verified operator when its contact line makes a complete
CIISS claim (``agent.model.ciiss``) for a domain and that domain's proof
lists the relay: the fingerprint file at
``https://DOMAIN/.well-known/tor-relay/rsa-fingerprint.txt`` (uri-rsa), or a
``we-run-this-tor-relay`` TXT record at ``FINGERPRINT.DOMAIN`` (dns-rsa).
The verifier (``agent.aroi``) fetches proofs and keeps them in a ``ProofBook``;
metrics, checks and subscriptions read verdicts from it and never fetch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum

from agent.model.ciiss import COMPLETE, ContactFields, parse_contact


class Outcome(str, Enum):
    """A relay's AROI verdict, as tags and tables name it."""

    VERIFIED = "verified"  # the domain's proof lists the relay
    NOT_LISTED = "not_listed"  # the proof was read and does not list the relay
    FETCH_FAILED = "fetch_failed"  # the proof could not be read (HTTP error, TLS, timeout, DNS failure)
    REFUSED = "refused"  # the domain's server did what a proof must not (redirect off the domain, huge file,
    #                      an address the configuration does not allow): not read
    NOT_CHECKED = "not_checked"  # a complete claim whose proof has not been checked yet
    INCOMPLETE = "incomplete"  # the contact line makes no complete claim (``ContactFields.status`` says why)


#: Outcomes where the operator's domain answered something: the claim was judged.
JUDGED = (Outcome.VERIFIED, Outcome.NOT_LISTED)


@dataclass(frozen=True)
class DomainProof:
    """What one proof check of a domain found (one fetch for uri-rsa, one TXT lookup per relay for dns-rsa)."""

    domain: str
    method: str  # "uri-rsa" or "dns-rsa"
    checked_at: int  # Unix seconds
    listed: frozenset[str] = frozenset()  # fingerprints the proof lists (dns-rsa: whose TXT record says so)
    refuted: frozenset[str] = frozenset()  # dns-rsa: fingerprints whose lookup answered without the record
    error: str | None = None  # why the proof could not be read; None when it was
    refused: bool = False  # the error is a refusal of hostile behaviour, not a failure (Outcome.REFUSED)
    dnssec: str | None = None  # dns-rsa: "secure" (the resolver set AD) or "insecure"; None for uri-rsa
    emails: frozenset[str] = frozenset()  # CIISS email: addresses of the relays this proof verified

    @property
    def readable(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Verdict:
    """One relay's AROI verdict: the outcome, for which domain and proof type, why, and when it was checked."""

    outcome: Outcome
    domain: str | None = None
    method: str | None = None
    reason: str = ""
    checked_at: int | None = None

    @property
    def verified_domain(self) -> str | None:
        return self.domain if self.outcome is Outcome.VERIFIED else None


@dataclass(frozen=True)
class ProofBook:
    """Every proof checked so far, by (domain, method), and for how long listed relays have been absent.

    Its mappings are copies no one changes (plain dicts, so the book pickles); the cache makes a new book
    for every change.
    """

    proofs: Mapping[tuple[str, str], DomainProof] = field(default_factory=dict)
    # fingerprint -> the first period (Unix seconds) a proof listed it while the consensus did not
    absent_since: Mapping[str, int] = field(default_factory=dict)

    def verdict(self, fingerprint: str, contact: ContactFields) -> Verdict:
        """The relay's verdict for its contact line's claim, from the proofs as they stand."""
        if contact.status != COMPLETE:
            return Verdict(Outcome.INCOMPLETE, contact.domain, contact.proof, contact.status)
        domain, method = contact.domain, contact.proof
        assert domain is not None and method is not None  # COMPLETE says so
        proof = self.proofs.get((domain, method))
        if proof is None:
            return Verdict(Outcome.NOT_CHECKED, domain, method, "not checked yet")
        fingerprint = fingerprint.upper()
        if fingerprint in proof.listed:
            return Verdict(Outcome.VERIFIED, domain, method, "listed", proof.checked_at)
        if proof.error is not None:
            outcome = Outcome.REFUSED if proof.refused else Outcome.FETCH_FAILED
            return Verdict(outcome, domain, method, proof.error, proof.checked_at)
        if method == "uri-rsa" or fingerprint in proof.refuted:
            return Verdict(Outcome.NOT_LISTED, domain, method, f"the {method} proof does not list it",
                           proof.checked_at)
        return Verdict(Outcome.NOT_CHECKED, domain, method, "not looked up yet", proof.checked_at)

    def domains(self) -> frozenset[str]:
        """Domains with a readable proof that lists at least one relay."""
        return frozenset(proof.domain for proof in self.proofs.values() if proof.readable and proof.listed)

    def emails_of(self, domain: str) -> frozenset[str]:
        """The addresses a verified operator's relays name in their CIISS email: fields."""
        return frozenset().union(*(proof.emails for (name, _), proof in self.proofs.items() if name == domain))

    def listed_by(self, domain: str) -> frozenset[str]:
        """Every fingerprint a readable proof of ``domain`` lists."""
        return frozenset().union(*(proof.listed for (name, _), proof in self.proofs.items()
                                   if name == domain and proof.readable))


EMPTY = ProofBook()


def normalised_domain(text: str) -> str | None:
    """An operator domain as CIISS url fields give it (``example.org``, ``https://Example.org/``), normalised
    as the parser normalises them; None when it is not a domain."""
    text = (text or "").strip()
    if not text or len(text) > 300 or any(character.isspace() for character in text):
        return None
    return parse_contact(f"url:{text}").domain
