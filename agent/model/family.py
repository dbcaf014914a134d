"""Family declarations as tor reads them: mutual ``$FINGERPRINT`` entries, shared family IDs, and operators
grouped by contact line.

Shared by the family checks (``agent.checks.family``, where the rules are
explained), the AROI family check, the subscriptions and the ``tor_operator``
family series. tor 0.4.9 puts two relays in one family when each lists the
other (MyFamily; a one-sided line is ignored) or when both carry a valid
``family-cert`` for the same family key (proposal 321, "happy families").
``agent.parse.familycert`` decodes and verifies the certs into ``FamilyCert``;
whether one has expired depends on the period, so it is judged here.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

#: A family entry naming a fingerprint: "$" and 40 hex digits, then nothing, "=nick" or "~nick".
_ENTRY = re.compile(r"\$([0-9A-Fa-f]{40})(?:[=~].*)?\Z", re.DOTALL)
MIN_CONTACT_ALNUM = 4
GENERIC_CONTACTS = frozenset({
    "none", "n/a", "na", "null", "nobody", "unknown", "anonymous", "anon", "private", "noname", "no contact",
    "none given", "not available", "tor", "tor relay", "relay", "admin", "root", "-", "?", "email", "e-mail",
})
_GENERIC_PARTS = ("nobody at example dot com", "nobody@example.com", "random person <")


#: Why a family-cert does not count, in the order agent.parse.familycert judges them; EXPIRED depends on the period.
MALFORMED, NOT_FAMILY, OTHER_IDENTITY, BAD_SIGNATURE, EXPIRED = (
    "malformed", "not a family cert", "certifies another identity", "signature does not verify", "expired")
CERT_PROBLEMS = (MALFORMED, NOT_FAMILY, OTHER_IDENTITY, BAD_SIGNATURE, EXPIRED)
#: A valid cert expiring within this long is told (tor writes 30-day certs with every descriptor: one this old
#: means the relay has not published a descriptor for over three weeks).
EXPIRING_SECONDS = 7 * 86400
EXPIRING_KIND = "expiring"  # not a problem yet: cert_problems's key for a valid cert expiring soon


@dataclass(frozen=True)
class FamilyCert:
    """One ``family-cert`` object of a server descriptor, as ``agent.parse.familycert`` read it.

    ``family_id`` is the family key as tor prints it (``FamilyId``: base64 without padding), None when the
    cert is too broken to name one; ``expires`` is unix seconds (tor writes whole hours), None when unreadable.
    ``problem`` is a CERT_PROBLEMS kind that holds at any time (EXPIRED is judged by ``problem_at``).
    """

    family_id: str | None
    expires: int | None
    problem: str | None = None
    detail: str = ""  # what exactly, for people: "type 4", "no signing-key extension"

    def problem_at(self, now: int | None) -> str | None:
        """Why the cert does not count at ``now`` (unix seconds; None: expiry not judged), or None if it counts."""
        if self.problem is not None:
            return self.problem
        if now is not None and self.expires is not None and now > self.expires:  # tor: expired once past it
            return EXPIRED
        return None

    def describe(self, now: int | None) -> str:
        """As findings say it: "family-cert: signature does not verify", "family-cert: expired 2026-11-01T00Z"."""
        problem = self.problem_at(now)
        if problem is None:
            return f"family-cert: valid until {_hour(self.expires)}"
        if problem == EXPIRED:
            return f"family-cert: expired {_hour(self.expires)}"
        return f"family-cert: {problem}" + (f" ({self.detail})" if self.detail else "")


def _hour(moment: int | None) -> str:
    if moment is None:
        return "unknown"
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%HZ")


def family_certs(descriptor: Any) -> tuple[FamilyCert, ...]:
    """The descriptor's family-certs (stem's descriptors and ones without the line: none)."""
    found = getattr(descriptor, "family_certs", None) or ()
    return tuple(cert for cert in found if isinstance(cert, FamilyCert))


def family_ids(descriptor: Any, now: int | None) -> frozenset[str]:
    """The family IDs the descriptor's valid family-certs give it at ``now``."""
    return frozenset(cert.family_id for cert in family_certs(descriptor)
                     if cert.family_id is not None and cert.problem_at(now) is None)


def cert_problems(descriptor: Any, now: int | None) -> dict[str, str]:
    """Problem kind -> how the first cert with it is described, for the certs that do not count at ``now``,
    and EXPIRING_KIND for a valid cert expiring within EXPIRING_SECONDS."""
    found: dict[str, str] = {}
    for cert in family_certs(descriptor):
        problem = cert.problem_at(now)
        if problem is None and now is not None and cert.expires is not None \
                and cert.expires - now < EXPIRING_SECONDS:
            found.setdefault(EXPIRING_KIND, f"family-cert: expires {_hour(cert.expires)}")
        elif problem is not None:
            found.setdefault(problem, cert.describe(now))
    return found


def declared(descriptor: Any) -> frozenset[str]:
    """The fingerprints a descriptor's family line names ($FP, $FP=nick, $FP~nick, any case), itself excluded."""
    found = set()
    for entry in getattr(descriptor, "family", None) or ():
        match = _ENTRY.match(entry)  # a nickname entry does not match: ambiguous since the Named flag went
        if match:
            found.add(match.group(1).upper())
    found.discard(str(getattr(descriptor, "fingerprint", "") or "").upper())
    return frozenset(found)


def broken_pairs(descriptors: Iterable[Any], now: int | None = None) -> frozenset[tuple[str, str]]:
    """(lister, listed): the lister names the listed relay, which has a descriptor but does not name it back,
    and the two share no family ID valid at ``now`` (which makes them one family anyway)."""
    newest = _newest(descriptors)
    return _broken({fingerprint: declared(descriptor) for fingerprint, descriptor in newest.items()},
                   {fingerprint: family_ids(descriptor, now) for fingerprint, descriptor in newest.items()})


def _broken(families: Mapping[str, frozenset[str]],
            ids: Mapping[str, frozenset[str]]) -> frozenset[tuple[str, str]]:
    return frozenset((fingerprint, other) for fingerprint, members in families.items() for other in members
                     if other in families and fingerprint not in families[other]
                     and not ids.get(fingerprint, frozenset()) & ids.get(other, frozenset()))


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
    undeclared: tuple[str, ...]  # relays sharing no family (MyFamily or family ID) with another of the group, sorted
    certified: tuple[str, ...] = ()  # relays with a valid family ID, sorted
    cert_problems: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (kind, relays) per kind of cert_problems, sorted

    @property
    def family_not_mutual(self) -> int:
        return len(self.not_mutual)

    @property
    def family_undeclared(self) -> int:
        return len(self.undeclared)

    def with_problem(self, *kinds: str) -> tuple[str, ...]:
        """The group's relays with a cert problem of one of ``kinds``, sorted."""
        return tuple(sorted({fp for kind, relays in self.cert_problems if kind in kinds for fp in relays}))


def operator_families(descriptors: Iterable[Any], now: int | None = None) -> list[OperatorFamily]:
    """Per distinctive contact line: its non-mutual declarations, undeclared relays and family-cert hygiene at
    ``now`` (unix seconds; None: certs never expire), sorted by operator_id.

    The ``tor_operator`` family fields (group contact) come from here; every distinctive contact is returned,
    also with zero counts. The family checks and the series ask for the same period's descriptors: the answer
    for the last list asked about is kept, not computed again.
    """
    if isinstance(descriptors, list) and _LAST[0] is descriptors and _LAST[1] == (len(descriptors), now):
        return list(_LAST[2])
    found = _operator_families(descriptors, now)
    if isinstance(descriptors, list):
        _LAST[:] = [descriptors, (len(descriptors), now), tuple(found)]  # holding the list keeps its id from reuse
    return found


#: The last list of descriptors operator_families answered for, (its length, the time), and the answer.
_LAST: list[Any] = [None, (0, None), ()]


def _operator_families(descriptors: Iterable[Any], now: int | None) -> list[OperatorFamily]:
    newest = _newest(descriptors)
    families = {fingerprint: declared(descriptor) for fingerprint, descriptor in newest.items()}
    ids = {fingerprint: family_ids(descriptor, now) for fingerprint, descriptor in newest.items()}
    broken = _broken(families, ids)
    component = effective_families(families, ids)
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
        problems: dict[str, list[str]] = {}
        for fingerprint in sorted(members):
            for kind in cert_problems(newest[fingerprint], now):
                problems.setdefault(kind, []).append(fingerprint)
        result.append(OperatorFamily(contact, operator_key(contact), tuple(sorted(members)), pairs, alone,
                                     tuple(sorted(fp for fp in members if ids[fp])),
                                     tuple(sorted((kind, tuple(relays)) for kind, relays in problems.items()))))
    return sorted(result, key=lambda group: group.operator_id)


# --- family IDs as a family subscription sees them (agent.subscriptions.events, TorRelayFamilyBroken) ---------
#
# A family subscription covers the relays sharing the watched relay's IDs, and TorRelayFamilyBroken also fires
# for a watched relay that held an ID its siblings keep, but whose cert for it no longer counts or is gone. What a
# relay held is remembered from period to period (agent.subscriptions.watch); an ID lost while the siblings keep
# it stays remembered, so the alert lasts until the relay holds it again or no other relay does.

#: The last period's descriptors, the time, and each family ID's holders in them: relay_status runs once per
#: watched relay, and the holders need every descriptor (thousands on the live network), so once per period.
_HOLDERS: list[Any] = [(), None, {}]


def holders(descriptors: Mapping[str, Any], now: int | None) -> dict[str, frozenset[str]]:
    """Family ID -> the relays whose descriptor here carries a valid cert for it at ``now``."""
    current = tuple(descriptors.values())
    if now != _HOLDERS[1] or len(current) != len(_HOLDERS[0]) \
            or any(a is not b for a, b in zip(current, _HOLDERS[0])):
        found: dict[str, set[str]] = {}
        for fingerprint, descriptor in descriptors.items():
            for family_id in family_ids(descriptor, now):
                found.setdefault(family_id, set()).add(fingerprint)
        _HOLDERS[:] = [current, now, {key: frozenset(value) for key, value in found.items()}]
    answer: dict[str, frozenset[str]] = _HOLDERS[2]
    return answer


def id_siblings(fingerprint: str, descriptors: Mapping[str, Any], now: int | None) -> set[str]:
    """The relays sharing a valid family ID with the relay (itself excluded); none without its descriptor."""
    mine = descriptors.get(fingerprint)
    if mine is None:
        return set()
    held = holders(descriptors, now)
    return {other for family_id in family_ids(mine, now) for other in held.get(family_id, ())} - {fingerprint}


def lost_ids(fingerprint: str, descriptor: Any, descriptors: Mapping[str, Any], now: int | None,
             before: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the IDs to remember for the relay, why each lost one is lost) at ``now``.

    Lost: an ID the relay held before (``before``) or has a cert for that does not count, that it does not
    hold now, while another relay with a descriptor here does. Remembered: what it holds now and what it lost.
    """
    mine = family_ids(descriptor, now)
    broken = {cert.family_id: cert.describe(now) for cert in family_certs(descriptor)
              if cert.family_id is not None and cert.problem_at(now) is not None}
    held = holders(descriptors, now)
    lost = []
    for family_id in sorted((set(before) | set(broken)) - mine):
        siblings = held.get(family_id, frozenset()) - {fingerprint}
        if siblings:
            how = f"its {broken[family_id]}" if family_id in broken else "its family-cert for it is gone"
            lost.append((family_id, f"family ID {family_id}: {how}, while {len(siblings)} other relays keep it"))
    return tuple(sorted(mine | {family_id for family_id, _ in lost})), tuple(why for _, why in lost)


def relay_cert_problems(descriptors: Iterable[Any], now: int | None) -> dict[str, dict[str, str]]:
    """Fingerprint -> ``cert_problems`` of its newest descriptor, for the relays with any (expiring included)."""
    found = {fingerprint: cert_problems(descriptor, now) for fingerprint, descriptor in _newest(descriptors).items()}
    return {fingerprint: problems for fingerprint, problems in found.items() if problems}


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


def effective_families(families: Mapping[str, Iterable[str]],
                       ids: Mapping[str, Iterable[str]] | None = None) -> dict[str, str]:
    """Fingerprint -> the smallest fingerprint of its effective family: mutual pairs and relays sharing a family
    ID (``ids``: each relay's valid family IDs), joined transitively."""
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
    first: dict[str, str] = {}  # family ID -> the first relay seen holding it
    for fingerprint, held in (ids or {}).items():
        for family_id in held if fingerprint in parent else ():
            other = first.setdefault(family_id, fingerprint)
            low, high = sorted((root(fingerprint), root(other)))
            parent[high] = low
    return {fingerprint: root(fingerprint) for fingerprint in families}
