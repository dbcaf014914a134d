"""Family hygiene: MyFamily declarations tor ignores, and operators whose relays declare no family at all.

tor puts two relays in one family only when each lists the other (dir-spec
3.1.x, tor's ``nodes_in_same_family``): a one-sided line is silently ignored,
so the operator believes their relays will never share a circuit while tor
may put them in one. Relays with the same contact line and no mutual family
are the other way this happens. Both are told per operator (info), and
counted per operator for the ``tor_operator`` series.

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

The tor 0.4.9 family-id mechanism (``family-cert`` in server descriptors,
``family-ids`` in microdescriptors) is not judged: neither stem 1.8 nor
``agent.parse.fastdesc`` keeps those lines, and no document in tests/data or
the shared corpus carries one.

The core functions live in ``agent.model.family``, shared with the
``tor_operator`` series.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from agent.checks.registry import Context, check
from agent.model.family import broken_pairs, operator_families
from agent.model.findings import Hit

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
    broken = broken_pairs(descriptors)
    grouped = {group.operator_id: group for group in operator_families(descriptors) if group.not_mutual}
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
    for group in operator_families(descriptors):
        if group.undeclared:
            yield Hit({"operator": group.operator_id},
                      f"operator {_label(group.contact)!r} has {len(group.relays)} relays; "
                      f"{len(group.undeclared)} of them share no mutual family with the others, so tor may put "
                      f"them in one circuit: {_names(group.undeclared, nicknames)}",
                      {"relays": len(group.relays), "undeclared": len(group.undeclared)})
