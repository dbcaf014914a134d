"""Family declarations as tor reads them: mutual ``$FINGERPRINT`` entries, and operators grouped by contact line.

Shared by the family checks (``agent.checks.family``, where the rules are
explained) and the ``tor_operator`` family series: tor puts two relays in
one family only when each lists the other, so a one-sided line is ignored.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: A family entry naming a fingerprint: "$" and 40 hex digits, then nothing, "=nick" or "~nick".
_ENTRY = re.compile(r"\$([0-9A-Fa-f]{40})(?:[=~].*)?\Z", re.DOTALL)
MIN_CONTACT_ALNUM = 4
GENERIC_CONTACTS = frozenset({
    "none", "n/a", "na", "null", "nobody", "unknown", "anonymous", "anon", "private", "noname", "no contact",
    "none given", "not available", "tor", "tor relay", "relay", "admin", "root", "-", "?", "email", "e-mail",
})
_GENERIC_PARTS = ("nobody at example dot com", "nobody@example.com", "random person <")


def declared(descriptor: Any) -> frozenset[str]:
    """The fingerprints a descriptor's family line names ($FP, $FP=nick, $FP~nick, any case), itself excluded."""
    found = set()
    for entry in getattr(descriptor, "family", None) or ():
        match = _ENTRY.match(entry)  # a nickname entry does not match: ambiguous since the Named flag went
        if match:
            found.add(match.group(1).upper())
    found.discard(str(getattr(descriptor, "fingerprint", "") or "").upper())
    return frozenset(found)


def broken_pairs(descriptors: Iterable[Any]) -> frozenset[tuple[str, str]]:
    """(lister, listed): the lister names the listed relay, which has a descriptor but does not name it back."""
    return _broken({fingerprint: declared(descriptor) for fingerprint, descriptor in _newest(descriptors).items()})


def _broken(families: Mapping[str, frozenset[str]]) -> frozenset[tuple[str, str]]:
    return frozenset((fingerprint, other) for fingerprint, members in families.items() for other in members
                     if other in families and fingerprint not in families[other])


def normalised_contact(contact: Any) -> str | None:
    """The contact line as ``agent.metrics.relays`` keys operators: printable, spaces collapsed, lower case."""
    if not contact:
        return None
    raw = contact.decode("utf-8", "replace") if isinstance(contact, bytes) else str(contact)
    text = re.sub(r"\s+", " ", "".join(ch for ch in raw if ch.isprintable())).strip().lower()
    return text or None


def operator_key(contact: str) -> str:
    """``agent.metrics.relays.operator_id`` of a normalised contact: the first 12 hex of its sha256."""
    return hashlib.sha256(contact.encode()).hexdigest()[:12]


def distinctive(contact: str | None) -> bool:
    """Whether a normalised contact line can stand for one operator (not empty, not generic)."""
    if not contact or sum(ch.isalnum() for ch in contact) < MIN_CONTACT_ALNUM:
        return False
    return contact not in GENERIC_CONTACTS and not any(part in contact for part in _GENERIC_PARTS)


@dataclass(frozen=True)
class OperatorFamily:
    """One contact group's family hygiene in one period."""

    contact: str  # normalised
    operator_id: str  # the tor_operator tag
    relays: tuple[str, ...]  # fingerprints, sorted
    not_mutual: tuple[tuple[str, str], ...]  # broken (lister, listed) pairs with the lister in this group, sorted
    undeclared: tuple[str, ...]  # relays sharing no mutual family with another relay of the group, sorted

    @property
    def family_not_mutual(self) -> int:
        return len(self.not_mutual)

    @property
    def family_undeclared(self) -> int:
        return len(self.undeclared)


def operator_families(descriptors: Iterable[Any]) -> list[OperatorFamily]:
    """Per distinctive contact line: its non-mutual declarations and undeclared relays (sorted by operator_id).

    The ``tor_operator`` fields ``family_not_mutual`` and ``family_undeclared`` (group contact) come from here;
    every distinctive contact is returned, also with zero counts. The two family checks and the series ask
    for the same period's descriptors: the answer for the last list asked about is kept, not computed again.
    """
    if isinstance(descriptors, list) and _LAST[0] is descriptors and _LAST[1] == len(descriptors):
        return list(_LAST[2])
    found = _operator_families(descriptors)
    if isinstance(descriptors, list):
        _LAST[:] = [descriptors, len(descriptors), tuple(found)]  # holding the list keeps its id from reuse
    return found


#: The last list of descriptors operator_families answered for, its length, and the answer.
_LAST: list[Any] = [None, 0, ()]


def _operator_families(descriptors: Iterable[Any]) -> list[OperatorFamily]:
    newest = _newest(descriptors)
    families = {fingerprint: declared(descriptor) for fingerprint, descriptor in newest.items()}
    broken = _broken(families)
    component = effective_families(families)
    groups: dict[str, set[str]] = {}
    for fingerprint, descriptor in newest.items():
        contact = normalised_contact(getattr(descriptor, "contact", None))
        if contact is not None and distinctive(contact):
            groups.setdefault(contact, set()).add(fingerprint)
    by_lister: dict[str, list[tuple[str, str]]] = {}
    for pair in broken:
        by_lister.setdefault(pair[0], []).append(pair)
    result = []
    for contact, members in groups.items():
        sizes = Counter(component[fingerprint] for fingerprint in members)
        alone = tuple(sorted(fp for fp in members if sizes[component[fp]] == 1)) if len(members) > 1 else ()
        pairs = tuple(sorted(pair for fingerprint in members for pair in by_lister.get(fingerprint, ())))
        result.append(OperatorFamily(contact, operator_key(contact), tuple(sorted(members)), pairs, alone))
    return sorted(result, key=lambda group: group.operator_id)


def _newest(descriptors: Iterable[Any]) -> dict[str, Any]:
    """Fingerprint (upper case) -> its descriptor; a fingerprint seen twice keeps its newest descriptor."""
    newest: dict[str, object] = {}
    for descriptor in descriptors:
        fingerprint = str(getattr(descriptor, "fingerprint", "") or "").upper() if descriptor is not None else ""
        if not fingerprint:
            continue
        kept = newest.get(fingerprint)
        if kept is None or _order(descriptor) > _order(kept):
            newest[fingerprint] = descriptor
    return newest


def _order(descriptor: Any) -> tuple[Any, ...]:
    """Newest first; ties broken by content, so the order of the input never matters."""
    return (str(getattr(descriptor, "published", "") or ""), sorted(declared(descriptor)),
            normalised_contact(getattr(descriptor, "contact", None)) or "")


def effective_families(families: Mapping[str, Iterable[str]]) -> dict[str, str]:
    """Fingerprint -> the smallest fingerprint of its effective family (mutual pairs, joined transitively)."""
    parent = {fingerprint: fingerprint for fingerprint in families}

    def root(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for fingerprint, members in families.items():
        for other in members:
            if other in families and fingerprint in families[other]:
                low, high = sorted((root(fingerprint), root(other)))
                parent[high] = low
    return {fingerprint: root(fingerprint) for fingerprint in families}
