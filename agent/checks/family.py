"""Family hygiene: MyFamily declarations tor ignores, operators whose relays declare no family at all, and
family-certs (tor 0.4.9 family IDs) that do not count or soon will not.

tor 0.4.9 puts two relays in one family when each lists the other (MyFamily,
dir-spec; tor's ``nodes_in_same_family``) or when both carry a valid
``family-cert`` for the same family key (proposal 321). A one-sided MyFamily
line is silently ignored, so the operator believes their relays will never
share a circuit while tor may put them in one. Relays with the same contact
line and no family in common are the other way this happens. Both are told
per operator (info), and counted per operator for the ``tor_operator`` series.
A pair sharing a valid family ID is one family whatever its MyFamily lines
say: it is never reported as one-sided, nor as undeclared.

Rules, as ``agent.metrics.relays`` applies them for effective families:
only ``$FINGERPRINT`` entries count (``=nick`` / ``~nick`` suffixes dropped,
hex compared upper case); nickname entries are ambiguous and ignored; a relay
listing itself is harmless and ignored. A listed relay without a descriptor
this period proves nothing (it may be offline, or the entry a typo): only
pairs where both descriptors are here are judged.

Contact groups: the contact line normalised as ``agent.metrics.relays`` does
(printable, spaces collapsed, lower case; operator key = sha256 prefix), so
the findings' operator subject is the ``operator_id`` tag of
``tor_operator``. Skipped: empty lines, lines with fewer than
``MIN_CONTACT_ALNUM`` letters or digits, and generic ones (``GENERIC_CONTACTS``,
e.g. torrc's sample "Random Person <nobody AT example dot com>"), which
strangers share. A group is "undeclared" when it has at least two relays and
at least one of them shares no mutual family with any other relay of the
group: such a relay may share a circuit with its siblings. Two disjoint
families under one contact are not counted (it can be deliberate).

Family IDs come from the server descriptors' ``family-cert`` objects, which
``agent.parse.fastdesc`` keeps and ``agent.parse.familycert`` verifies (an
Ed25519 cert by the family key over the relay's ed25519 identity). A cert
counts when its signature verifies, it certifies the descriptor's
``master-key-ed25519``, and it has not expired at the check's time. One that
does not count is told per problem kind and operator (``TorFamilyCertInvalid``,
warning: that relay's family ID is void, so tor may put it in one circuit
with its siblings); a valid one expiring within 7 days is told per operator
(``TorFamilyCertExpiring``, info: tor writes a fresh 30-day cert with every
descriptor, so this means the relay has not published one for three weeks).
Relays without a distinctive contact line are told one by one. The
microdescriptors' ``family-ids`` lines are not read: they are the
authorities' copy of the same IDs.

The core functions live in ``agent.model.family``, shared with the
``tor_operator`` series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.checks.registry import Context, check
from agent.model.family import (
    CERT_PROBLEMS,
    EXPIRING_KIND,
    broken_pairs,
    distinctive,
    normalised_contact,
    operator_families,
    operator_key,
    relay_cert_problems,
)
from agent.model.findings import Hit
from agent.model.time import unix

#: Relays named in one description at most; the rest are counted ("and N more").
LISTED = 5


def _names(fingerprints: Iterable[str], nicknames: Mapping[str, str]) -> str:
    """A bounded, readable list: "nick ($FP), ... and N more"."""
    ordered = sorted(fingerprints)
    shown = ", ".join(f"{nicknames.get(fp, '?')} (${fp})" for fp in ordered[:LISTED])
    return shown + (f" and {len(ordered) - LISTED} more" if len(ordered) > LISTED else "")


def _label(contact: str) -> str:
    return contact[:64] + ("…" if len(contact) > 64 else "")


@check("TorFamilyNotMutual", "info", "A relay's family line names relays that do not name it back")
def family_not_mutual(context: Context):
    descriptors = context.snapshot.server_descriptors
    nicknames = {str(d.fingerprint).upper(): str(getattr(d, "nickname", "?")) for d in descriptors
                 if d is not None and getattr(d, "fingerprint", None)}
    now = unix(context.now)
    broken = broken_pairs(descriptors, now)
    grouped = {group.operator_id: group for group in operator_families(descriptors, now) if group.not_mutual}
    covered = {lister for group in grouped.values() for lister, _ in group.not_mutual}
    for operator_id, group in sorted(grouped.items()):
        listers = sorted({lister for lister, _ in group.not_mutual})
        yield Hit({"operator": operator_id},
                  f"operator {_label(group.contact)!r}: {len(group.not_mutual)} family entries are one-sided, so "
                  f"tor ignores them; {_names(listers, nicknames)} list relays that do not list them back: "
                  f"{_names({listed for _, listed in group.not_mutual}, nicknames)}",
                  {"not_mutual": len(group.not_mutual), "relays": len(listers)})
    alone: dict[str, set[str]] = {}
    for lister, listed in broken:  # relays without a distinctive contact: one finding per relay
        if lister not in covered:
            alone.setdefault(lister, set()).add(listed)
    for lister, listed_relays in sorted(alone.items()):
        yield Hit({"relay": lister},
                  f"{nicknames.get(lister, '?')} (${lister}) lists {len(listed_relays)} relays that do not list it "
                  f"back, so tor ignores those entries: {_names(listed_relays, nicknames)}",
                  {"not_mutual": len(listed_relays), "relays": 1})


@check("TorFamilyUndeclared", "info", "Relays of one operator (same contact line) declare no family together")
def family_undeclared(context: Context):
    descriptors = context.snapshot.server_descriptors
    nicknames = {str(d.fingerprint).upper(): str(getattr(d, "nickname", "?")) for d in descriptors
                 if d is not None and getattr(d, "fingerprint", None)}
    for group in operator_families(descriptors, unix(context.now)):
        if group.undeclared:
            yield Hit({"operator": group.operator_id},
                      f"operator {_label(group.contact)!r} has {len(group.relays)} relays; "
                      f"{len(group.undeclared)} of them share no mutual family with the others, so tor may put "
                      f"them in one circuit: {_names(group.undeclared, nicknames)}",
                      {"relays": len(group.relays), "undeclared": len(group.undeclared)})


@check("TorFamilyCertInvalid", "warning", "A relay's family-cert does not count: it does not verify or has expired")
def family_cert_invalid(context: Context):
    """One finding per problem kind and operator (or relay, without a distinctive contact line)."""
    yield from _cert_hits(context, CERT_PROBLEMS, "so tor does not count that family ID for them and may put them "
                          "in one circuit with the relays sharing it: check their FamilyId line and the family's "
                          "secret key file in their KeyDirectory, and that they publish fresh descriptors")


@check("TorFamilyCertExpiring", "info", "A relay's family-cert expires within 7 days")
def family_cert_expiring(context: Context):
    """One finding per operator (or relay): tor writes a 30-day cert with every descriptor it publishes."""
    yield from _cert_hits(context, (EXPIRING_KIND,), "and tor writes a fresh one with every descriptor: these "
                          "relays have not published a descriptor for about three weeks")


def _cert_hits(context: Context, kinds: tuple[str, ...], why: str):
    descriptors = context.snapshot.server_descriptors
    problems = relay_cert_problems(descriptors, unix(context.now))
    if not problems:
        return
    nicknames = {str(d.fingerprint).upper(): str(getattr(d, "nickname", "?")) for d in descriptors
                 if d is not None and getattr(d, "fingerprint", None)}
    contacts = {str(d.fingerprint).upper(): normalised_contact(getattr(d, "contact", None)) for d in descriptors
                if d is not None and getattr(d, "fingerprint", None)}
    for kind in kinds:
        groups: dict[tuple[str, str], dict[str, str]] = {}
        for fingerprint, found in sorted(problems.items()):
            if kind in found:
                contact = contacts.get(fingerprint)
                key = ("operator", contact) if contact is not None and distinctive(contact) else ("relay", fingerprint)
                groups.setdefault(key, {})[fingerprint] = found[kind]
        for (subject, name), relays in sorted(groups.items()):
            subjects = {subject: operator_key(name) if subject == "operator" else name}
            if len(kinds) > 1:
                subjects["problem"] = kind
            who = f"operator {_label(name)!r}: " if subject == "operator" else ""
            example = next(iter(relays.values()))
            yield Hit(subjects, f"{who}{_names(relays, nicknames)}: {example}, {why}", {"relays": len(relays)})
