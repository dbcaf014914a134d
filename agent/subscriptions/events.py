"""What can be wrong with a relay an operator watches, as pure functions of a period and its history.

The alert kinds follow Tor Weather (down after a wait, flag lost, version
out of date, low observed bandwidth) plus what operators cannot see for themselves: how many
authorities list the relay and how many bandwidth authorities measure it, and
whether its descriptor reports overload (as Relay Search shows it).
How long a condition must last before anyone is told is the alert engine's
``wait_seconds``; a relay whose descriptor says it hibernates is not down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from stem.version import Version

from agent.model.aroi import ProofBook
from agent.model.ciiss import parse_contact
from agent.model.entries import ABSENT, entries_of
from agent.model.extrainfo import FD_EXHAUSTED_KEPT_SECONDS, ExtraInfo, reported
from agent.model.family import id_siblings, lost_ids
from agent.model.relays import OVERLOAD_KEPT_SECONDS
from agent.model.time import unix

_HEX40 = re.compile(r"^[0-9A-F]{40}$")
#: Flags the authorities give only after enough uptime: a relay that just
#: restarted lacks them by design (HSDir needs 96 h of uptime on the live
#: network), so losing one right after a restart is not worth a message.
UPTIME_FLAGS = frozenset({"Guard", "HSDir", "Stable"})
UPTIME_GRACE_SECONDS = 96 * 3600
#: Observed bandwidth is the most a relay sustained for 10 s in the past day
#: (dir-spec 2.1.1): a relay up for less than a day has not had the time to
#: show what it can do.
BANDWIDTH_GRACE_SECONDS = 24 * 3600


@dataclass(frozen=True)
class RelayStatus:
    """One watched relay in one period."""

    fingerprint: str
    nickname: str | None
    in_consensus: bool
    flags: frozenset[str]
    weight: int | None
    version: str | None
    hibernating: bool
    listed_by: int  # votes listing it
    votes: int  # votes we have
    measured_by: int  # bandwidth authorities' votes with a Measured= for it
    bandwidth_votes: int  # votes with any Measured= at all
    uptime_seconds: int | None = None  # from its newest server descriptor
    observed_bandwidth: int | None = None  # bytes/s, from its newest server descriptor
    overload_general: datetime | None = None  # the overload-general time of its newest descriptor (naive UTC)
    fd_exhausted: datetime | None = None  # the overload-fd-exhausted time of its newest extra-info held (naive UTC)
    # TorRelayFamilyBroken: relays it lists that do not list it back, and relays listing it that it does not
    # list (both with a descriptor this period); None when its own descriptor is not here (unknown).
    family_lists_unreturned: tuple[str, ...] | None = None
    family_listed_unreturned: tuple[str, ...] | None = None
    # Its family IDs as remembered for the next period (held now, or lost while siblings keep them; None: its
    # descriptor is not here), and why each lost one is lost (agent.model.family).
    family_ids: tuple[str, ...] | None = None
    family_ids_lost: tuple[str, ...] = ()
    risk_warnings: tuple[Any, ...] = ()  # its agent.metrics.atrisk.RiskWarning this period


@dataclass(frozen=True)
class Condition:
    id: str
    severity: str
    summary: str
    description: str
    wait_seconds: int = 0
    flag: str | None = None
    overload_since: int | None = None  # TorRelayOverloaded: the line's time, kept with the alert (watch.py)


def family_fingerprints(descriptor) -> set[str]:
    """The fingerprints a descriptor's family line names ($FP, $FP=nick, $FP~nick); nicknames are ignored."""
    found = set()
    for entry in getattr(descriptor, "family", None) or ():
        candidate = re.split(r"[=~]", entry.lstrip("$"))[0].upper()
        if _HEX40.match(candidate):
            found.add(candidate)
    return found


def effective_family(fingerprint: str, descriptors: dict, now: int | None = None) -> set[str]:
    """The relay, every relay that lists it and that it lists (tor's mutual-declaration rule), and every relay
    sharing a family ID with it (tor 0.4.9; certs judged at ``now``, None: expiry not judged)."""
    mine = descriptors.get(fingerprint)
    if mine is None:
        return {fingerprint}
    return {fingerprint} | id_siblings(fingerprint, descriptors, now) | {
        other for other in family_fingerprints(mine)
        if other in descriptors and fingerprint in family_fingerprints(descriptors[other])}


def contact_of(descriptor) -> str:
    contact = getattr(descriptor, "contact", None) or b""
    return (contact.decode("utf-8", "replace") if isinstance(contact, bytes) else str(contact)).strip()


def relays_with_contact(contact: str, descriptors: dict) -> set[str]:
    return {fp for fp, descriptor in descriptors.items() if contact_of(descriptor) == contact.strip()}


def verified_operators(descriptors: dict, proofs: ProofBook) -> dict[str, set[str]]:
    """Each verified operator domain -> the relays whose contact line claims it and whose claim its proof
    verifies (AROI); read once a period for every operator subscription."""
    contacts: dict = {}
    found: dict[str, set[str]] = {}
    for fingerprint, descriptor in descriptors.items():
        raw = getattr(descriptor, "contact", None)
        if raw not in contacts:
            contacts[raw] = parse_contact(raw)
        domain = contacts[raw].claims_domain and proofs.verdict(fingerprint, contacts[raw]).verified_domain
        if domain:
            found.setdefault(domain, set()).add(fingerprint)
    return found


def bandwidth_votes(votes: list) -> list:
    """The votes of bandwidth authorities this period: those with any Measured= at all."""
    return [vote for vote in votes if (entries_of(vote).measured != ABSENT).any()]


def relay_status(fingerprint: str, consensus, descriptors: dict, votes: list, measuring: list,
                 known_nickname: str | None = None, risk_warnings: tuple = (), now: int | None = None,
                 family_ids_before: tuple[str, ...] = (), extra_info: ExtraInfo | None = None) -> RelayStatus:
    """One relay's period; ``measuring`` is ``bandwidth_votes(votes)``, computed once per period; ``now`` the
    period's time (family-certs' expiry) and ``family_ids_before`` its family IDs as remembered last period."""
    router = consensus.routers.get(fingerprint)
    descriptor = descriptors.get(fingerprint)
    return RelayStatus(
        fingerprint=fingerprint,
        nickname=router.nickname if router is not None else getattr(descriptor, "nickname", known_nickname),
        in_consensus=router is not None,
        flags=frozenset(router.flags) if router is not None else frozenset(),
        weight=router.bandwidth if router is not None else None,
        version=str(router.version) if router is not None and router.version is not None else None,
        hibernating=bool(getattr(descriptor, "hibernating", False)),
        listed_by=sum(1 for v in votes if fingerprint in v.routers),
        votes=len(votes),
        measured_by=sum(1 for v in measuring
                        if fingerprint in v.routers and v.routers[fingerprint].measured is not None),
        bandwidth_votes=len(measuring),
        uptime_seconds=getattr(descriptor, "uptime", None),
        observed_bandwidth=getattr(descriptor, "observed_bandwidth", None),
        overload_general=getattr(descriptor, "overload_general", None),  # agent.parse.fastdesc's (not stem's)
        fd_exhausted=extra_info.fd_exhausted if extra_info is not None else None,  # the snapshot's extra_infos
        **_family_mismatch(fingerprint, descriptors),
        **_family_ids(fingerprint, descriptors, now, family_ids_before),
        risk_warnings=risk_warnings,
    )


#: The last period's descriptors and who lists whom in them: relay_status runs once per watched relay, and the
#: reverse direction needs every family line (thousands on the live network), so it is read once per period.
_LISTERS: list = [(), {}]


def _family_mismatch(fingerprint: str, descriptors: dict) -> dict[str, tuple[str, ...] | None]:
    """RelayStatus's family fields: tor's mutual-declaration rule (dir-spec) seen from one relay.

    Only relays whose descriptor is here are judged (a listed relay that is offline proves nothing); nickname
    entries and the relay itself are ignored. A remembered descriptor (a period whose fetch failed) carries
    the mismatch as last judged (``family_mismatch``; None: unknown). agent.checks.family applies the same
    rules network-wide.
    """
    mine = descriptors.get(fingerprint)
    remembered = getattr(mine, "family_mismatch", None)
    if remembered is not None:
        return {"family_lists_unreturned": remembered[0], "family_listed_unreturned": remembered[1]}
    if mine is None or not hasattr(mine, "family"):
        return {}
    current = tuple(descriptors.values())
    if len(current) != len(_LISTERS[0]) or any(a is not b for a, b in zip(current, _LISTERS[0])):
        listers: dict[str, set[str]] = {}
        for other, descriptor in descriptors.items():
            for listed in family_fingerprints(descriptor):
                listers.setdefault(listed, set()).add(other)
        _LISTERS[:] = [current, listers]  # holding the descriptors keeps their ids from being reused
    lists = family_fingerprints(mine) - {fingerprint}
    return {"family_lists_unreturned": tuple(sorted(other for other in lists if other in descriptors
                                                    and fingerprint not in family_fingerprints(descriptors[other]))),
            "family_listed_unreturned": tuple(sorted(_LISTERS[1].get(fingerprint, set()) - lists - {fingerprint}))}


def _family_ids(fingerprint: str, descriptors: dict, now: int | None,
                before: tuple[str, ...]) -> dict[str, tuple[str, ...] | None]:
    """RelayStatus's family ID fields; a remembered descriptor carries them as last judged."""
    mine = descriptors.get(fingerprint)
    if hasattr(mine, "family_ids_lost"):  # remembered (KnownDescriptor)
        return {"family_ids": mine.family_ids, "family_ids_lost": mine.family_ids_lost}
    if mine is None or not hasattr(mine, "family"):
        return {}
    held, lost = lost_ids(fingerprint, mine, descriptors, now, before)
    return {"family_ids": held, "family_ids_lost": lost}


#: Every subscription alert: ID -> (severity, the static summary its messages carry). Descriptions are built below.
ALERTS: dict[str, tuple[str, str]] = {
    "TorRelayDown": ("warning", "A relay you watch is down"),
    "TorRelayFlagLost": ("warning", "A relay you watch lost a flag"),
    "TorRelayVersionObsolete": ("warning", "A relay you watch runs an obsolete tor"),
    "TorRelayVersionNotRecommended": ("info", "A relay you watch runs a tor that is not recommended"),
    "TorRelayWeightDropped": ("info", "A relay you watch lost much of its consensus weight"),
    "TorRelayLowBandwidth": ("info", "A relay you watch has low bandwidth"),
    "TorRelayFewAuthorities": ("warning", "Few authorities list a relay you watch"),
    "TorRelayFewBandwidthAuthorities": ("info", "Few bandwidth authorities measure a relay you watch"),
    "TorRelayOverloaded": ("info", "A relay you watch reports overload"),
    "TorRelayFamilyBroken": ("info", "A relay you watch has a family declaration that is not mutual or lost its "
                                     "family ID"),
    "TorRelayAtRisk": ("info", "A relay you watch will probably drop out of the consensus within a day"),
}


def _condition(alert_id: str, description: str, **details) -> Condition:
    severity, summary = ALERTS[alert_id]
    return Condition(alert_id, severity, summary, description, **details)


def conditions(status: RelayStatus, history: list[tuple[int, int | None, frozenset]], consensus, settings,
               now: int, period_seconds: int = 3600) -> list[Condition]:
    """Everything wrong with one relay now. ``history`` is (valid_after, weight, flags), oldest first."""
    name = f"{status.nickname or '?'} ({status.fingerprint})"
    if not status.in_consensus or "Running" not in status.flags:
        if status.hibernating:
            return []  # it said it would sleep: not an outage (Tor Weather's is_up_or_hibernating)
        where = "is not in the consensus" if not status.in_consensus else "is in the consensus but not Running"
        return [_condition("TorRelayDown", f"{name} {where}", wait_seconds=int(settings.down_hours * 3600))]
    found = []
    expected = frozenset().union(*(flags for _, _, flags in history)) if history else frozenset()
    lost = (expected & set(settings.flags)) - status.flags - {"Running"}
    if status.uptime_seconds is not None and status.uptime_seconds < UPTIME_GRACE_SECONDS:
        lost -= UPTIME_FLAGS
    for flag in sorted(lost):
        found.append(_condition("TorRelayFlagLost", f"{name} no longer has the {flag} flag it had recently",
                                flag=flag))
    found += _version(status, name, consensus)
    found += _weight(status, name, history, settings, now)
    found += _low_bandwidth(status, name, settings)
    found += _votes(status, name, settings, period_seconds)
    found += _overloaded(status, name, now)
    found += _family_broken(status, name, period_seconds)
    found += _at_risk(status, name)
    return found


def _version(status: RelayStatus, name: str, consensus) -> list[Condition]:
    recommended = [Version(str(v)) for v in consensus.server_versions or []]
    if not recommended or status.version is None:
        return []
    version = Version(status.version)
    if any(version == r for r in recommended):
        return []
    if version < min(recommended):
        return [_condition("TorRelayVersionObsolete",
                           f"{name} runs tor {status.version}, older than every recommended version "
                           f"(oldest recommended: {min(recommended)})")]
    return [_condition("TorRelayVersionNotRecommended",
                       f"{name} runs tor {status.version}, which is not on the recommended list")]


def _weight(status: RelayStatus, name: str, history, settings, now: int) -> list[Condition]:
    cutoff = now - settings.weight_drop_hours * 3600
    before = [weight for valid_after, weight, _ in history if valid_after <= cutoff and weight]
    if not before or status.weight is None:
        return []
    then = before[-1]
    if status.weight < then * (1 - settings.weight_drop_percent / 100):
        drop = 100 * (1 - status.weight / then)
        return [_condition("TorRelayWeightDropped", f"{name} has consensus weight {status.weight}, down {drop:.0f} % "
                           f"from {then} {settings.weight_drop_hours:g} h ago")]
    return []


def _low_bandwidth(status: RelayStatus, name: str, settings) -> list[Condition]:
    """Tor Weather's low-bandwidth notice: observed bandwidth under ``low_bandwidth_kbytes``, told at once (as
    Tor Weather did: the value changes only with a new descriptor), not while hibernating or up less than a day."""
    threshold = settings.low_bandwidth_kbytes * 1000
    observed, uptime = status.observed_bandwidth, status.uptime_seconds
    if (not threshold or observed is None or observed >= threshold or status.hibernating
            or uptime is None or uptime < BANDWIDTH_GRACE_SECONDS):
        return []
    return [_condition("TorRelayLowBandwidth",
                       f"{name} observed {observed / 1000:.10g} kB/s at most in the past day, under the "
                       f"{settings.low_bandwidth_kbytes:.10g} kB/s threshold")]


def _votes(status: RelayStatus, name: str, settings, period_seconds: int) -> list[Condition]:
    # Votes and consensus come from slightly different moments, and a relay that just came
    # back is not in every vote yet: only two periods in a row count.
    wait = 2 * period_seconds
    found = []
    # Relative to the votes we have: a vote we failed to fetch is our blind spot, not the relay's problem.
    needed = settings.min_authorities or status.votes // 2 + 1
    if status.votes and status.listed_by < needed:
        found.append(_condition("TorRelayFewAuthorities",
                                f"{name} is listed by {status.listed_by} of {status.votes} authorities' votes "
                                f"(wanted {needed}): the others cannot reach it or reject it", wait_seconds=wait))
    wanted = settings.min_bandwidth_authorities
    if status.bandwidth_votes >= wanted and status.measured_by < wanted:
        found.append(_condition("TorRelayFewBandwidthAuthorities",
                                f"{name} is measured by {status.measured_by} of {status.bandwidth_votes} bandwidth "
                                f"authorities (tor uses measurements only from {wanted})", wait_seconds=wait))
    return found


def _overloaded(status: RelayStatus, name: str, now: int) -> list[Condition]:
    """Relay Search's "overloaded": an ``overload-general`` line from the 72 h before ``now`` (the period's
    valid-after); or an ``overload-fd-exhausted`` line of its newest extra-info held, in the same 72 h (tor keeps
    that line 72 h too). One alert either way, naming each cause. Info, not warning: the state lasts 72 h by
    design, and warning's 4-hourly reminders would be 18 mails for one event. It resolves when newer
    descriptors drop the lines or the 72 h pass. ``overload-ratelimits`` alerts nobody: it is usually the
    operator's own BandwidthRate at work (a series only, ``tor_relay_overload_ratelimits``)."""
    general = status.overload_general if reported(status.overload_general, now, OVERLOAD_KEPT_SECONDS) else None
    fd = status.fd_exhausted if reported(status.fd_exhausted, now, FD_EXHAUSTED_KEPT_SECONDS) else None
    if general is None and fd is None:
        return []
    texts = []
    if general is not None:
        until = datetime.fromtimestamp(unix(general) + OVERLOAD_KEPT_SECONDS, timezone.utc)
        texts.append(f"{name} reported overload at {general:%Y-%m-%d %H:%M} UTC (overload-general in its server "
                     "descriptor): its out-of-memory handler ran, it dropped circuit handshakes (ntor onionskins) "
                     "or it ran out of local TCP ports (older tors: too many DNS timeouts). tor reports an event "
                     f"for 72 h, so this ends by {until:%Y-%m-%d %H:%M} UTC unless it happens again.")
    if fd is not None:
        until = datetime.fromtimestamp(unix(fd) + FD_EXHAUSTED_KEPT_SECONDS, timezone.utc)
        texts.append(f"{name} ran out of file descriptors at {fd:%Y-%m-%d %H:%M} UTC (overload-fd-exhausted in its "
                     "extra-info descriptor): it could not open more connections; raise the limit on open files "
                     f"(ulimit -n, LimitNOFILE). This ends by {until:%Y-%m-%d %H:%M} UTC unless it happens again.")
    # Only overload-general's time is kept with the alert (watch.py reads it back as that line's).
    return [_condition("TorRelayOverloaded",
                       " ".join(texts) + " See https://support.torproject.org/relays/performance/overloaded/",
                       overload_since=unix(general) if general is not None else None)]


def _at_risk(status: RelayStatus, name: str) -> list[Condition]:
    """Only warnings marked offered: their kind reached agent.metrics.atrisk's precision bar on held-out history
    (today: dropping out of the consensus within a day; docs/relays.md, At-risk warnings)."""
    return [_condition("TorRelayAtRisk", f"{name}: {warning.reason}")
            for warning in status.risk_warnings if warning.offered and warning.kind == "dropout"]


def _family_broken(status: RelayStatus, name: str, period_seconds: int) -> list[Condition]:
    """tor joins two relays in a family only when each lists the other: a one-sided entry is ignored, and the
    operator's relays may share a circuit. Told after two periods (relays of a family publish their new lines
    one by one); resolved when both sides list each other or the entry goes."""
    lists, listed = status.family_lists_unreturned or (), status.family_listed_unreturned or ()
    if not lists and not listed and not status.family_ids_lost:
        return []
    parts, texts = [], []
    if lists:
        parts.append(f"it lists {_few(lists)}, which do not list it back")
    if listed:
        parts.append(f"{_few(listed)} list it, but it does not list them")
    if parts:
        texts.append(f"{name}'s family is not mutual: {'; '.join(parts)}. tor treats only relays that list each "
                     "other (MyFamily) as one family and ignores the rest, so they may share a circuit: list them "
                     "on both sides if they are yours, or remove the entry")
    if status.family_ids_lost:
        texts.append(f"{name} is out of its family: {'; '.join(status.family_ids_lost[:5])}. tor counts a relay "
                     "in a family ID's family only while its family-cert for that key verifies and has not "
                     "expired, so it may share a circuit with them: give it the family's secret key file and "
                     "FamilyId line again (tor --keygen-family), or remove the ID from the others if it left")
    return [_condition("TorRelayFamilyBroken", ". ".join(texts), wait_seconds=2 * period_seconds)]


def _few(fingerprints: tuple[str, ...], shown: int = 5) -> str:
    """A bounded list of fingerprints: "$A, $B and 3 more"."""
    named = ", ".join(f"${fp}" for fp in fingerprints[:shown])
    return named + (f" and {len(fingerprints) - shown} more" if len(fingerprints) > shown else "")
