"""Authenticated relay operator IDs (AROI): relays claiming a verified operator that does not list them, proofs
vouching for relays long gone, and family declarations at odds with verified operators.

All three read ``context.proofs`` (the proofs as the verifier last checked them, ``agent.model.aroi``) and
never fetch. An empty ProofBook (proofs not checked, e.g. backfill) gives no finding: without proofs there is
nothing verified to compare against. Relays are those of the newest accepted consensus, each with its newest
server descriptor; a relay without a descriptor this period has no contact line to judge.

A *verified operator* is a domain with a readable proof listing at least one relay (``ProofBook.domains``). A
claim for a domain that verifies nobody is only an unverified claim, and a proof that could not be read says
nothing either way: neither makes an impersonation.

Families are tor's effective families as ``agent.model.family`` reads them (mutual ``$FINGERPRINT`` entries
and tor 0.4.9 family IDs, i.e. valid ``family-cert`` objects for one family key, joined transitively); a relay
with neither is a family of its own. So an operator relying on a FamilyId alone, without MyFamily lines, is
one family here, as it is to tor; a relay whose family-cert does not count is judged without it.
"""

from __future__ import annotations

import calendar
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from agent.checks.registry import Context, check
from agent.model.aroi import Outcome, ProofBook
from agent.model.ciiss import ContactFields, parse_contact
from agent.model.entries import entries_of
from agent.model.family import declared, effective_families, family_ids
from agent.model.findings import Hit

#: Relays named in one description at most; the rest are counted ("and N more").
LISTED = 5
#: Fingerprints named in a stale proof's description at most.
STALE_LISTED = 10
DAY = 86400


@check("TorRelayImpersonatesOperator", "warning",
       "A relay claims a verified operator's domain, whose proof does not list it")
def relay_impersonates_operator(context: Context):
    proofs = context.proofs
    verified = proofs.domains()
    if not verified:
        return
    for fingerprint, descriptor in sorted(_in_consensus(context).items()):
        contact = _contact(descriptor.contact)
        domain = contact.claims_domain
        if domain not in verified:
            continue
        verdict = proofs.verdict(fingerprint, contact)
        if verdict.outcome is not Outcome.NOT_LISTED or verdict.checked_at is None:
            continue  # listed, unreadable (unknown, not impersonation), or not looked up yet
        # A genuine operator's new relay is not in a proof checked before it existed: until the next refresh the
        # proof may just predate it. The relay's start (published - uptime) marks when it existed at the latest;
        # the published time alone would not do: tor republishes every 18 hours, so an impersonator would go quiet
        # after each republication until the next proof refresh, and its alert would resolve and fire again.
        if verdict.checked_at < _started(descriptor):
            continue
        method = verdict.method
        where = (f"https://{domain}/.well-known/tor-relay/rsa-fingerprint.txt" if method == "uri-rsa"
                 else f"a TXT record at {fingerprint}.{domain}")
        others = len(proofs.listed_by(domain))
        yield Hit({"relay": fingerprint, "domain": domain},
                  f"{_name(descriptor)} (${fingerprint}) claims operator {domain} in its contact line "
                  f"(proof:{method}), but {domain}'s {method} proof, checked {_when(verdict.checked_at)}, does not "
                  f"list it (its proofs list {others} other relays). If the relay is {domain}'s, its operator "
                  f"should add the fingerprint ({where}); if not, the relay should correct its ContactInfo: it "
                  f"presents itself as run by an operator that does not vouch for it",
                  {"listed": others, "checked_at": verdict.checked_at})


@check("TorOperatorProofStale", "info",
       "A verified operator's proof lists relays that have been gone from the consensus for long")
def operator_proof_stale(context: Context):
    proofs = context.proofs
    if not proofs.absent_since:
        return
    days = context.thresholds.operator_proof_absent_days
    limit = _unix(context.now) - days * DAY
    consensus = context.snapshot.latest_consensus()
    present = entries_of(consensus) if consensus is not None else {}
    for domain in sorted(proofs.domains()):
        listed = proofs.listed_by(domain)
        since = {fp: proofs.absent_since[fp] for fp in listed
                 if fp in proofs.absent_since and fp not in present and proofs.absent_since[fp] < limit}
        if not since:
            continue
        stale = sorted(since)
        methods = ", ".join(sorted(f"{method} (checked {_when(proof.checked_at)})"
                                   for (name, method), proof in proofs.proofs.items()
                                   if name == domain and proof.readable and proof.listed & since.keys()))
        shown = ", ".join(f"${fp}" for fp in stale[:STALE_LISTED])
        more = f" and {len(stale) - STALE_LISTED} more" if len(stale) > STALE_LISTED else ""
        yield Hit({"domain": domain},
                  f"{domain}'s proof {methods} lists {len(stale)} of its {len(listed)} relays that have been absent "
                  f"from the consensus for over {days:g} days (the longest since {_when(min(since.values()))}): "
                  f"{shown}{more}. The proof still vouches for relays the operator no longer runs: whoever holds "
                  f"one of those keys later is shown as run by {domain}. The operator should remove them",
                  {"absent": len(stale), "listed": len(listed)})


@check("TorOperatorFamilyInconsistent", "info",
       "A verified operator's relays are not one family, or one family holds relays of two verified operators")
def operator_family_inconsistent(context: Context):
    proofs = context.proofs
    if not proofs.domains():
        return
    relays = _in_consensus(context)
    by_domain = _verified_relays(relays, proofs)
    if not by_domain:
        return
    minimum = context.thresholds.operator_family_min_relays
    newest = _newest(context.snapshot.server_descriptors)
    now = _unix(context.now)
    ids = {fingerprint: family_ids(descriptor, now) for fingerprint, descriptor in newest.items()}
    family = effective_families({fingerprint: declared(descriptor) for fingerprint, descriptor in newest.items()}, ids)
    family_sizes = Counter(family.values())
    for domain, members in sorted(by_domain.items()):
        if len(members) < minimum:
            continue
        sizes = Counter(family[fp] for fp in members)
        if len(sizes) < 2:
            continue
        largest = min(sizes, key=lambda root: (-sizes[root], root))
        outside = [fp for fp in members if family[fp] != largest]
        bare = [fp for fp in members if not declared(relays[fp]) and not family_ids(relays[fp], now)]
        no_line = f"; {len(bare)} declare no family at all" if bare else ""
        yield Hit({"domain": domain},
                  f"{domain} verifies {len(members)} relays in the consensus, but they fall into {len(sizes)} "
                  f"families{no_line}; the largest holds {sizes[largest]} of them, outside it: "
                  f"{_names(outside, relays)}. "
                  f"tor requires an operator of more than one relay to declare them all as one family (MyFamily, "
                  f"listed both ways, or one FamilyId), else a client may pick two of them for one circuit",
                  {"relays": len(members), "families": len(sizes), "undeclared": len(bare)})
    operators: dict[str, dict[str, list[str]]] = {}
    for domain, members in by_domain.items():
        for fingerprint in members:
            operators.setdefault(family[fingerprint], {}).setdefault(domain, []).append(fingerprint)
    for root, domains in sorted(operators.items()):
        total = sum(len(members) for members in domains.values())
        if len(domains) < 2 or total < minimum:
            continue
        parts = "; ".join(f"{domain} ({len(members)}: {_names(members, relays)})"
                          for domain, members in sorted(domains.items()))
        yield Hit({"family": root},
                  f"the family of ${root} ({family_sizes[root]} relays) holds verified relays of {len(domains)} "
                  f"operators: {parts}. A family says its relays are run by one operator: either these domains are one "
                  f"operator's, or these relays' MyFamily lines join relays of different operators",
                  {"domains": len(domains), "relays": total})


def _in_consensus(context: Context) -> dict[str, Any]:
    """Fingerprint -> newest server descriptor, for the relays of the newest accepted consensus that have one."""
    consensus = context.snapshot.latest_consensus()
    if consensus is None:
        return {}
    entries = entries_of(consensus)
    return {fp: descriptor for fp, descriptor in _newest(context.snapshot.server_descriptors).items()
            if fp in entries}


def _verified_relays(relays: Mapping[str, Any], proofs: ProofBook) -> dict[str, list[str]]:
    """Verified domain -> the fingerprints (sorted) its proofs verify among ``relays``."""
    found: dict[str, list[str]] = {}
    for fingerprint, descriptor in sorted(relays.items()):
        domain = proofs.verdict(fingerprint, _contact(descriptor.contact)).verified_domain
        if domain is not None:
            found.setdefault(domain, []).append(fingerprint)
    return found


@lru_cache(maxsize=8192)
def _contact(contact: str | bytes | None) -> ContactFields:
    """parse_contact, once per distinct line: operators share lines, and two checks read every relay's."""
    return parse_contact(contact)


def _newest(descriptors: Iterable[Any]) -> dict[str, Any]:
    """Fingerprint (upper case) -> its newest descriptor (ties: the larger contact line, so input order never
    matters)."""
    newest: dict[str, Any] = {}
    for descriptor in descriptors:
        fingerprint = str(getattr(descriptor, "fingerprint", "") or "").upper() if descriptor is not None else ""
        if fingerprint and (fingerprint not in newest or _order(descriptor) > _order(newest[fingerprint])):
            newest[fingerprint] = descriptor
    return newest


def _order(descriptor: Any) -> tuple[str, str]:
    contact = getattr(descriptor, "contact", None) or b""
    return (str(getattr(descriptor, "published", "") or ""),
            contact.decode("utf-8", "replace") if isinstance(contact, bytes) else str(contact))


def _started(descriptor: Any) -> int:
    """When the relay's tor started, as its descriptor says (published - uptime), in Unix seconds."""
    uptime = getattr(descriptor, "uptime", None)
    return _unix(descriptor.published) - (max(uptime, 0) if isinstance(uptime, int) else 0)


def _unix(moment: datetime) -> int:
    """Unix seconds of a naive UTC datetime (stem's and the context's)."""
    return calendar.timegm(moment.timetuple())


def _when(unix: int) -> str:
    """A proof's time for a description; a time no calendar holds (a tampered cache) is shown, not raised on."""
    try:
        return datetime.fromtimestamp(unix, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, OSError, ValueError):
        return f"(an impossible time: {unix})"


def _name(descriptor: Any) -> str:
    return str(getattr(descriptor, "nickname", None) or "?")


def _names(fingerprints: Iterable[str], relays: Mapping[str, Any]) -> str:
    """A bounded, readable list: "nick ($FP), ... and N more"."""
    ordered = sorted(fingerprints)
    shown = ", ".join(f"{_name(relays[fp]) if fp in relays else '?'} (${fp})" for fp in ordered[:LISTED])
    return shown + (f" and {len(ordered) - LISTED} more" if len(ordered) > LISTED else "")
