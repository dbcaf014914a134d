"""The AROI proof cache: every proof checked, which are due again, and which listed relays left the consensus.

Proofs are kept per (domain, method) in a JSON file (``state_dir/aroi-proofs.json``)
so a restart does not fetch every operator's proof again. A readable proof is
checked again after ``refresh_hours``, one that could not be read after
``retry_hours``. Contact lines are the relays' to write, so the cache is
bounded: domains no relay has claimed for a week are dropped, and past
``max_entries`` the least recently claimed go first. Every method takes one
lock: the verifier's threads and the daemon share the cache.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import defaultdict
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from agent.aroi.settings import AroiConfig
from agent.model.aroi import DomainProof, ProofBook
from agent.model.ciiss import PROOF_TYPES, ContactFields
from agent.model.files import set_aside, write_atomically

log = logging.getLogger(__name__)

VERSION = 1  # the JSON layout; a file of another version is set aside and the proofs are checked again
MAX_ENTRIES = 20_000  # (domain, method) pairs; the public network has about 1,000 operator domains
FORGET_SECONDS = 7 * 86400  # a domain no relay has claimed for this long is forgotten

Key = tuple[str, str]


class Due(NamedTuple):
    """A proof to check: the domain, the method, and the fingerprints (upper case) of the relays claiming it."""

    domain: str
    method: str
    fingerprints: tuple[str, ...]


class ProofCache:
    """The proofs checked so far, loaded from ``path`` on construction and written back by ``save``."""

    def __init__(self, path: Path, max_entries: int = MAX_ENTRIES):
        if max_entries < 1:
            raise ValueError(f"ProofCache max_entries: must be at least 1, got {max_entries}")
        self.path, self.max_entries = Path(path), max_entries
        self._lock = threading.RLock()
        self._save_lock = threading.Lock()  # saves in the order they were made
        self._proofs: dict[Key, DomainProof] = {}
        self._last_claimed: dict[Key, int] = {}
        self._absent_since: dict[str, int] = {}
        self._book: ProofBook | None = None
        self._load()

    def __len__(self) -> int:
        with self._lock:
            return len(self._proofs)

    def book(self) -> ProofBook:
        """An immutable snapshot of the proofs and absences, safe to hand to another thread."""
        with self._lock:
            if self._book is None:
                self._book = ProofBook(dict(self._proofs),
                                       dict(self._absent_since))
            return self._book

    def put(self, proof: DomainProof) -> None:
        """Keeps ``proof`` in place of the one before it for its (domain, method)."""
        key = (proof.domain, proof.method)
        with self._lock:
            self._proofs[key] = proof
            self._last_claimed[key] = max(self._last_claimed.get(key, proof.checked_at), proof.checked_at)
            self._book = None
            if len(self._proofs) > self.max_entries:
                self._evict(keep=key)

    def due(self, claims: Mapping[str, ContactFields], now: int, settings: AroiConfig,
            everything: bool = False) -> list[Due]:
        """The (domain, method) pairs the complete claims among ``claims`` (fingerprint -> contact) need checked.

        Due: never checked; a readable proof ``refresh_hours`` old; an unreadable
        one ``retry_hours`` old; a proof dated after ``now`` (the clock went back);
        a readable dns-rsa proof, ``retry_hours`` old, that neither lists nor refutes
        a claiming relay (a new relay's record has not been looked up); with ``everything``, every
        claimed pair. Never checked first, then the oldest.
        """
        claimers = claimers_of(claims)
        found = []
        with self._lock:
            for key, fingerprints in claimers.items():
                proof = self._proofs.get(key)
                if (everything or proof is None or _expired(proof, now, settings)
                        or _unlooked(proof, fingerprints, now, settings)):
                    found.append((proof.checked_at if proof else None, Due(*key, tuple(sorted(fingerprints)))))
        found.sort(key=lambda item: (item[0] is not None, item[0] or 0, item[1].domain, item[1].method))
        return [item for _, item in found]

    def note_consensus(self, fingerprints: Collection[str], time: int) -> None:
        """Records, for each relay a readable proof lists, since when it is absent from the consensus.

        A listed relay missing from ``fingerprints`` keeps the first ``time`` it
        was found missing; one present again is cleared.
        """
        present = {fingerprint.upper() for fingerprint in fingerprints}
        with self._lock:
            listed = self._listed()
            changed = False
            for fingerprint in listed - present:
                if self._absent_since.get(fingerprint, time + 1) > time:
                    self._absent_since[fingerprint] = time
                    changed = True
            for fingerprint in present & self._absent_since.keys():
                del self._absent_since[fingerprint]
                changed = True
            if changed:
                self._book = None

    def prune(self, claims: Mapping[str, ContactFields], now: int) -> None:
        """Notes which proofs ``claims`` still claim, drops those unclaimed for a week and absences no proof lists."""
        claimed = claimers_of(claims).keys()
        with self._lock:
            for key in claimed & self._proofs.keys():
                self._last_claimed[key] = max(self._last_claimed.get(key, now), now)
            for key in [key for key in self._proofs if self._last_claimed.get(key, 0) <= now - FORGET_SECONDS]:
                self._drop(key)
            listed = self._listed()
            for fingerprint in [fingerprint for fingerprint in self._absent_since if fingerprint not in listed]:
                del self._absent_since[fingerprint]
            self._book = None

    def save(self) -> None:
        """Writes the cache to its file, atomically."""
        with self._save_lock:
            with self._lock:
                document = {
                    "version": VERSION,
                    "proofs": [_encode(proof, self._last_claimed.get(key, proof.checked_at))
                               for key, proof in sorted(self._proofs.items())],
                    "absent_since": dict(sorted(self._absent_since.items())),
                }
            data = json.dumps(document, separators=(",", ":")).encode()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, data)

    def _listed(self) -> set[str]:
        return set().union(*(proof.listed for proof in self._proofs.values() if proof.readable))

    def _drop(self, key: Key) -> None:
        self._proofs.pop(key, None)
        self._last_claimed.pop(key, None)
        self._book = None

    def _evict(self, keep: Key | None = None) -> None:
        """Drops the least recently claimed entries, down to 95% of the bound (so a flood does not sort per put)."""
        target = self.max_entries - self.max_entries // 20
        # Proofs that list nobody (unreadable, refused, or verifying none of their claimers) go first: a flood
        # of fresh hostile domains, all claimed this round, must not push out operators checked last round.
        order = sorted((key for key in self._proofs if key != keep),
                       key=lambda key: (bool(self._proofs[key].listed), self._last_claimed.get(key, 0),
                                        self._proofs[key].checked_at, key))
        for key in order[:max(0, len(self._proofs) - target)]:
            self._drop(key)

    def _load(self) -> None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as error:
            self._set_aside(error)
            return
        try:
            proofs, absent = _decode(json.loads(data))
        except (ValueError, TypeError, KeyError, RecursionError) as error:
            self._set_aside(error)
            return
        for proof, last_claimed in proofs:
            key = (proof.domain, proof.method)
            self._proofs[key], self._last_claimed[key] = proof, last_claimed
        self._absent_since.update(absent)
        if len(self._proofs) > self.max_entries:
            self._evict()

    def _set_aside(self, error: object) -> None:
        """Moves an unusable file out of the way (``set_aside`` logs it); the cache starts empty."""
        try:
            set_aside(self.path, error, "AROI proofs are checked afresh")
        except OSError as failure:
            log.warning("AROI proof cache %s is unreadable (%s) and cannot be set aside (%s); it starts empty",
                        self.path, error, failure)


def claimers_of(claims: Mapping[str, ContactFields]) -> dict[Key, set[str]]:
    """(domain, method) -> the fingerprints (upper case) whose contact line makes that complete claim."""
    found: defaultdict[Key, set[str]] = defaultdict(set)
    for fingerprint, contact in claims.items():
        domain = contact.claims_domain
        if domain is not None and contact.proof is not None:
            found[(domain, contact.proof)].add(fingerprint.upper())
    return dict(found)


def _expired(proof: DomainProof, now: int, settings: AroiConfig) -> bool:
    hours = settings.refresh_hours if proof.readable else settings.retry_hours
    return not 0 <= now - proof.checked_at < hours * 3600


def _unlooked(proof: DomainProof, fingerprints: Collection[str], now: int, settings: AroiConfig) -> bool:
    """A readable dns-rsa proof with claiming relays not looked up yet, checked at least retry_hours ago: a name
    server that drops some lookups (or more than MAX_LOOKUPS claimers) must not have its domain checked every
    round."""
    if proof.method != "dns-rsa" or not proof.readable or now - proof.checked_at < settings.retry_hours * 3600:
        return False  # an unreadable dns-rsa proof waits for retry_hours, whatever relays joined
    return any(fingerprint not in proof.listed and fingerprint not in proof.refuted for fingerprint in fingerprints)


def _encode(proof: DomainProof, last_claimed: int) -> dict[str, Any]:
    return {
        "domain": proof.domain, "method": proof.method, "checked_at": proof.checked_at,
        "listed": sorted(proof.listed), "refuted": sorted(proof.refuted), "error": proof.error,
        "refused": proof.refused, "dnssec": proof.dnssec, "emails": sorted(proof.emails),
        "last_claimed": last_claimed,
    }


def _decode(document: object) -> tuple[list[tuple[DomainProof, int]], dict[str, int]]:
    """The proofs (each with when it was last claimed) and absences of a cache file; ValueError naming the problem."""
    if not isinstance(document, dict):
        raise ValueError(f"expected a JSON object, got {type(document).__name__}")
    if document.get("version") != VERSION:
        raise ValueError(f"layout version {document.get('version')!r}, this agent reads version {VERSION}")
    entries = document.get("proofs")
    if not isinstance(entries, list):
        raise ValueError("proofs: expected a list")
    proofs = [_proof(entry, f"proofs[{index}]") for index, entry in enumerate(entries)]
    absent = document.get("absent_since")
    if not isinstance(absent, dict) or not all(_is_int(value) for value in absent.values()):
        raise ValueError("absent_since: expected an object of fingerprint -> Unix seconds")
    return proofs, dict(absent)


def _proof(entry: object, where: str) -> tuple[DomainProof, int]:
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")

    def field(name: str, kinds: tuple[type, ...], check=lambda value: True) -> Any:
        value = entry.get(name)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds) or not check(value):
            raise ValueError(f"{where}.{name}: {str(value)[:60]!r} is not what a proof holds there")
        return value

    def strings(name: str) -> frozenset[str]:
        return frozenset(field(name, (list,), lambda value: all(isinstance(item, str) for item in value)))

    proof = DomainProof(
        domain=field("domain", (str,)), method=field("method", (str,), lambda value: value in PROOF_TYPES),
        checked_at=field("checked_at", (int,), _is_int), listed=strings("listed"), refuted=strings("refuted"),
        error=field("error", (str, type(None))), refused=field("refused", (bool,)),
        dnssec=field("dnssec", (str, type(None))), emails=strings("emails"))
    return proof, field("last_claimed", (int,), _is_int)


#: The last second the agent reads as a time (2199-12-31T23:59:59Z, as agent.parse.grammar): a tampered file's
#: larger number would make datetime raise inside a check.
LAST_SECOND = 7_258_118_399


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= LAST_SECOND
