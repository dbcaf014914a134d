"""DNS for AROI proofs: proof hosts' addresses, and the dns-rsa TXT record of each relay.

Every lookup goes through dnspython to the configured resolver (``aroi.resolver``)
or, when none is set, to the system's (/etc/resolv.conf), never through the
C library: the answer's flags (AD, for DNSSEC) and its kind (NXDOMAIN, no data,
SERVFAIL, no answer) decide the outcome, and a deadline bounds each lookup.
Queries set DO and AD so that a validating resolver says whether it validated.
Nothing is cached between calls.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.name
import dns.rdatatype
import dns.resolver

from agent.aroi.settings import AroiConfig
from agent.model.aroi import DomainProof

METHOD = "dns-rsa"
PROOF_TEXT = b"we-run-this-tor-relay"
#: The most TXT lookups one check of a domain makes. Each is a query to the operator's name servers, and the
#: fingerprints are those of relays whose contact line names the domain, which anyone running relays can write:
#: the cap bounds the queries one claimed domain costs us (and its name servers) per check. The largest real
#: operators run a few hundred relays; fingerprints beyond the cap (in sorted order) stay unchecked.
MAX_LOOKUPS = 1000
#: Lookups of one check run this many at a time, so that hundreds of them fit in timeout_seconds.
LOOKUP_THREADS = 8
_EDNS_PAYLOAD = 1232  # DNS flag day 2020: a payload that needs no IP fragmentation

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class ResolveError(Exception):
    """A name could not be resolved; the message is a short classified text ("dns: ...")."""


@dataclass(frozen=True)
class _Lookup:
    """What one query got: ``kind`` is answer, nxdomain, timeout, servfail, unreachable or error."""

    kind: str
    records: tuple = ()  # rdata of the answer's RRset (empty for no data)
    secure: bool = False  # the response had the AD flag
    detail: str = ""

    @property
    def answered(self) -> bool:
        return self.kind in ("answer", "nxdomain")


def new_resolver(settings: AroiConfig) -> dns.resolver.Resolver:
    """A stub resolver for ``settings.resolver`` (or the system's), with DO and AD set and no cache."""
    if settings.resolver is None:
        try:
            resolver = dns.resolver.Resolver()
        except dns.exception.DNSException as error:
            raise ResolveError(f"dns: no system resolver: {error}") from None
    else:
        host, port = settings.resolver
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ResolveError(f"dns: resolver {host!r} is not an IP address") from None
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host]
        resolver.port = port
    resolver.cache = None
    resolver.retry_servfail = False
    resolver.use_edns(0, dns.flags.DO, _EDNS_PAYLOAD)
    resolver.set_flags(dns.flags.RD | dns.flags.AD)
    return resolver


def _where(settings: AroiConfig, resolver: dns.resolver.Resolver) -> str:
    if settings.resolver is not None:
        host, port = settings.resolver
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return ", ".join(f"{server}:{resolver.port}" for server in resolver.nameservers) or "(none)"


def _query(resolver: dns.resolver.Resolver, name: dns.name.Name, rdtype: dns.rdatatype.RdataType,
           deadline: float) -> _Lookup:
    """One lookup, classified; never raises for what the resolver or the name's servers do."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return _Lookup("timeout")
    try:
        answer = resolver.resolve(name, rdtype, raise_on_no_answer=False, lifetime=remaining, search=False)
    except dns.resolver.NXDOMAIN as nxdomain:
        response = next(iter(nxdomain.responses().values()), None)
        return _Lookup("nxdomain", secure=bool(response is not None and response.flags & dns.flags.AD))
    except dns.exception.Timeout:
        return _Lookup("timeout")
    except dns.resolver.NoNameservers as failure:
        return _failed(failure.kwargs.get("errors") or [])
    except dns.exception.DNSException as error:
        return _Lookup("error", detail=str(error))
    records = tuple(answer.rrset) if answer.rrset is not None else ()
    return _Lookup("answer", records, bool(answer.response.flags & dns.flags.AD))


def _failed(errors: list) -> _Lookup:
    """A lookup every name server failed: SERVFAIL, unreachable (an OSError such as refused) or another rcode."""
    problems = [error[3] for error in errors if len(error) > 3]
    if "SERVFAIL" in problems:
        return _Lookup("servfail")
    for problem in problems:
        if isinstance(problem, OSError):
            return _Lookup("unreachable", detail=problem.strerror or str(problem))
    return _Lookup("error", detail=", ".join(str(problem) for problem in problems) or "no name server answered")


def _unanswered(lookups: list[_Lookup], where: str) -> str:
    """The error text for lookups none of which was answered."""
    kinds = {lookup.kind for lookup in lookups}
    if kinds == {"timeout"}:
        return f"dns: resolver {where} did not answer"
    if kinds == {"servfail"}:
        return "dns: SERVFAIL for every lookup"
    if kinds == {"unreachable"}:
        return f"dns: resolver {where} did not answer ({lookups[0].detail})"
    if len(kinds) == 1:
        return f"dns: resolver {where} failed: {lookups[0].detail}"[:200]
    counts = ", ".join(f"{sum(lookup.kind == kind for lookup in lookups)} {kind}" for kind in sorted(kinds))
    return f"dns: no lookup was answered ({counts})"


def _absolute(name: str) -> dns.name.Name:
    try:
        return dns.name.from_text(name.rstrip("."))
    except (dns.exception.DNSException, UnicodeError):
        raise ResolveError(f"dns: {name[:80]!r} is not a domain name") from None


def resolve_addresses(host: str, settings: AroiConfig, deadline: float) -> list[IPAddress]:
    """The IPv4 then IPv6 addresses of ``host`` (an address literal is its own answer), by ``deadline``.

    ``deadline`` is a ``time.monotonic()`` instant. Raises ResolveError, its
    message a short classified text, when no address was found: the name does
    not exist, has no A or AAAA record, or the resolver did not answer.
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    resolver, name = new_resolver(settings), _absolute(host)
    lookups = [_query(resolver, name, rdtype, deadline) for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]
    addresses = [ipaddress.ip_address(record.address) for lookup in lookups for record in lookup.records
                 if hasattr(record, "address")]
    if addresses:
        return addresses
    if any(lookup.kind == "nxdomain" for lookup in lookups):
        raise ResolveError(f"dns: {host} does not exist (NXDOMAIN)")
    if any(lookup.answered for lookup in lookups):
        raise ResolveError(f"dns: {host} has no A or AAAA record")
    raise ResolveError(_unanswered(lookups, _where(settings, resolver)))


def _fingerprints(fingerprints: Iterable[str]) -> list[str]:
    """The fingerprints, upper case, sorted, once each; ValueError naming one that is not 40 hex digits."""
    wanted = set()
    for fingerprint in fingerprints:
        upper = fingerprint.upper()
        if len(upper) != 40 or any(digit not in "0123456789ABCDEF" for digit in upper):
            raise ValueError(f"{fingerprint!r} is not a relay fingerprint (40 hex digits)")
        wanted.add(upper)
    return sorted(wanted)


def _says_proof(record) -> bool:
    strings = tuple(getattr(record, "strings", ()))
    return PROOF_TEXT in strings or b"".join(strings) == PROOF_TEXT


def check_dns_proof(domain: str, fingerprints: Iterable[str], settings: AroiConfig, now: int) -> DomainProof:
    """The dns-rsa proof of ``domain`` for ``fingerprints``: one TXT lookup of FINGERPRINT.DOMAIN each.

    A fingerprint is listed when one of its TXT records is exactly
    ``we-run-this-tor-relay``, refuted when the answer was NXDOMAIN, no data or
    other TXT records, and neither when its lookup timed out or failed. The
    proof has an error only when no lookup was answered. ``dnssec`` is
    "secure" when the resolver set AD on every answer. All lookups end within
    ``settings.timeout_seconds``; at most MAX_LOOKUPS (see there why) are made.
    Raises ValueError only for a malformed fingerprint (the caller's error).
    """
    deadline = time.monotonic() + settings.timeout_seconds
    wanted = _fingerprints(fingerprints)[:MAX_LOOKUPS]
    try:
        resolver = new_resolver(settings)
        names = [_absolute(f"{fingerprint}.{domain}") for fingerprint in wanted]
    except ResolveError as error:
        return DomainProof(domain, METHOD, now, error=str(error))
    if not wanted:
        return DomainProof(domain, METHOD, now, dnssec="insecure")
    with ThreadPoolExecutor(min(LOOKUP_THREADS, len(wanted)), thread_name_prefix="aroi-dns") as pool:
        # A lookup that starts after the deadline returns at once, so the pool is done by then too.
        lookups = list(pool.map(lambda name: _query(resolver, name, dns.rdatatype.TXT, deadline), names))
    answered = [lookup for lookup in lookups if lookup.answered]
    if not answered:
        return DomainProof(domain, METHOD, now, error=_unanswered(lookups, _where(settings, resolver)))
    listed = {fingerprint for fingerprint, lookup in zip(wanted, lookups)
              if lookup.kind == "answer" and any(_says_proof(record) for record in lookup.records)}
    refuted = {fingerprint for fingerprint, lookup in zip(wanted, lookups) if lookup.answered} - listed
    secure = all(lookup.secure for lookup in answered)
    return DomainProof(domain, METHOD, now, listed=frozenset(listed), refuted=frozenset(refuted),
                       dnssec="secure" if secure else "insecure")
