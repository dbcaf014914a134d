"""A focused fast path for server descriptors: the fields the agent reads, named and typed as stem's.

stem's validating parser takes about 1/2,900 s per descriptor and builds
every field (exit policies, protocol sets, keys). The agent reads a dozen
fields of ~7,000 descriptors a period; this reads exactly those and checks
them as tor's router_parse_entry_from_string does (a malformed descriptor
raises ValueError naming it): numbers in ASCII within tor's bounds, a legal
nickname and family, times in the years ``agent.parse.grammar`` accepts.
``tests/unit/test_fastparse.py`` compares every field with stem on every
real descriptor file we have.

One line is read that stem 1.8.2 does not (it leaves it in
``get_unrecognized_lines()``): ``overload-general`` (tor 0.4.6+, proposal
328, dir-spec "server-descriptor-format"), the hour at which the relay last
found itself overloaded. It is read leniently, unlike the lines above: a
malformed one is ignored with a reason (``overload_general_ignored``) and
never refuses the descriptor, because tor's authorities do not read the line
at all (it is no token of routerparse.c's ``routerdesc_token_table``), so a
relay whose line is garbage is still in the consensus.

Two more lines are kept that stem 1.8.2 does not read: ``master-key-ed25519``
(stem's ``ed25519_master_key``, the relay's ed25519 identity, base64 as
written) and every ``family-cert`` with its ``FAMILY CERT`` object (tor
0.4.9, proposal 321), judged by ``agent.parse.familycert`` into
``family_certs`` (a tuple of ``agent.model.family.FamilyCert``). Like
overload-general, a bad family-cert never refuses the descriptor: it is
kept with the reason it does not count, and costs only that cert.
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache

import stem.exit_policy

from agent.parse import grammar
from agent.parse.familycert import read_family_object


class ServerDescriptor:
    """A relay's server descriptor: the fields the agent reads, named and typed as stem's RelayDescriptor."""

    __slots__ = ("nickname", "fingerprint", "address", "or_port", "published", "platform", "contact", "family",
                 "average_bandwidth", "burst_bandwidth", "observed_bandwidth", "hibernating", "uptime",
                 "exit_policy_v6", "overload_general", "overload_general_ignored", "ed25519_master_key",
                 "family_certs")

    def __init__(self):
        # overload_general: the line's time (naive UTC, as published) or None; overload_general_ignored: why a
        # line that was there is not read (None when it was read, or when there was none).
        self.platform = self.contact = self.uptime = self.overload_general = self.overload_general_ignored = None
        self.ed25519_master_key = None
        self.family_certs: tuple | list = ()  # the objects' text while parsing; FamilyCerts once finished
        self.family = _NO_FAMILY
        self.hibernating = False
        self.exit_policy_v6 = _DEFAULT_IPV6_POLICY


_DEFAULT_IPV6_POLICY = stem.exit_policy.MicroExitPolicy("reject 1-65535")
_NO_FAMILY: frozenset = frozenset()  # shared by the descriptors without a family line (equal to stem's set())


#: The lines the agent reads, found in C (``opt`` is an old prefix stem also accepts); about 10 of a descriptor's 30.
#: A ``family-cert`` line's value is its FAMILY CERT object (the lookbehind keeps any other line from taking one).
_LINES = re.compile(r"\n(?:opt )?(router-signature|router|fingerprint|published|platform|contact|family-cert|family|"
                    r"bandwidth|hibernating|uptime|ipv6-policy|overload-general|master-key-ed25519)(?: |(?=\n)|\Z)"
                    r"([^\n]*(?:(?<=\nfamily-cert)\n-----BEGIN FAMILY CERT-----\n[A-Za-z0-9+/=\n]*"
                    r"-----END FAMILY CERT-----)?)")
_REQUIRED = ("bandwidth", "fingerprint", "published")
#: A family line as tor's is_legal_nickname_or_hexdigest takes its members: nicknames, or "$" and 40 hex digits
#: with an optional "=nickname" or "~nickname"; separated by spaces.
_MEMBER = r"(?:[A-Za-z0-9]{1,19}|\$[0-9A-Fa-f]{40}(?:[=~][A-Za-z0-9]{1,19})?)"
_FAMILY = re.compile(rf"(?:{_MEMBER}(?: +{_MEMBER})*)?")  # of the line without its outer spaces: no backtracking
#: The common shape of the ``router`` line, its ports 0-65535 in the pattern (the ORPort's 0 is refused after),
#: and of the ``bandwidth`` line (ASCII digits; ranges checked after).
_PORT = r"0*(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_ROUTER = re.compile(rf"([A-Za-z0-9]{{1,19}}) ({grammar.IPV4_TEXT}) ({_PORT}) {_PORT} {_PORT}")
_BANDWIDTH = re.compile(r"([0-9]{1,10}) ([0-9]{1,10}) ([0-9]{1,10})")
_UPTIME = re.compile(r"-?[0-9]{1,19}")
#: An ipv6-policy line as tor's parse_short_policy reads it (ASCII ports; stem checks their range).
_MICRO_POLICY = re.compile(r"(?:accept|reject) [0-9]{1,5}(?:-[0-9]{1,5})?(?:,[0-9]{1,5}(?:-[0-9]{1,5})?)*")
#: ``overload-general`` SP version SP YYYY-MM-DD HH:MM:SS, then anything: dir-spec 1.2 has every item allow extra
#: arguments at the end ("for forward compatibility"). The version is what tor writes with %d (1 so far).
_OVERLOAD = re.compile(r"([0-9]{1,10}) ([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2})(?: [^\n]*)?")
OVERLOAD = "overload-general"
FAMILY_CERT = "family-cert"  # any number of times (one per family key)


def parse_server_descriptors(raw: bytes) -> list[ServerDescriptor]:
    """Every descriptor in a concatenation (annotations allowed); raises ValueError on a malformed one."""
    descriptors: list[ServerDescriptor] = []
    descriptor, seen, signed = None, set(), False
    for keyword, value in _lines(raw):
        if keyword == "router":
            _finish(descriptor, seen)
            descriptor, seen, signed = _router(value), set(), False
            descriptor.family_certs = []
            descriptors.append(descriptor)
        elif descriptor is None or signed:
            continue  # before the first descriptor, or inside a signature
        elif keyword == "router-signature":
            signed = True
        elif keyword == FAMILY_CERT:
            descriptor.family_certs.append(value)  # judged in _finish, with the identity key
        elif keyword in seen:  # tor allows each of these lines once a descriptor: which would count?
            if keyword != OVERLOAD:
                raise ValueError(f"{_named(descriptor)}: a second '{keyword}' line")
            descriptor.overload_general = None  # neither: ignored, but the descriptor stays
            descriptor.overload_general_ignored = "a second overload-general line (dir-spec: at most once)"
        else:
            _read(descriptor, keyword, value)
            seen.add(keyword)
    _finish(descriptor, seen)
    return descriptors


def _lines(raw: bytes, chunk_bytes: int = 1 << 17):
    """(keyword, value) of the lines we read, a chunk of whole descriptors at a time.

    Chunks keep the short-lived strings few at any moment, so the descriptors
    we keep are not scattered among freed memory the process cannot return.
    """
    start = 0
    while start < len(raw):
        end = raw.find(b"\nrouter ", start + chunk_bytes) if start + chunk_bytes < len(raw) else -1
        end = len(raw) if end < 0 else end
        # A leading newline lets the first line match like the others (annotations before it are skipped).
        yield from _LINES.findall("\n" + raw[start:end].decode("utf-8", "replace"))
        start = end


def _router(value: str) -> ServerDescriptor:
    """A descriptor of a ``router`` line: nickname, IPv4 address, ORPort (not 0), SOCKSPort and DirPort."""
    match = _ROUTER.fullmatch(value)
    or_port = int(match[3]) if match is not None else 0
    if not or_port:
        _refuse_router(value)
    descriptor = ServerDescriptor()
    descriptor.nickname, descriptor.address, descriptor.or_port = match[1], match[2], or_port
    return descriptor


def _refuse_router(value: str) -> None:
    """Raises ValueError naming what is wrong with a ``router`` line the common shape did not take."""
    router = value.split(" ")
    named = f"server descriptor {('router ' + value)[:80]!r}"
    if len(router) != 5:
        raise ValueError(f"{named}: the router line needs 5 fields")
    if not grammar.is_nickname(router[0]):
        raise ValueError(f"{named}: the nickname is not 1-19 letters and digits")
    if not grammar.is_ipv4(router[1]):
        raise ValueError(f"{named}: {router[1][:40]!r} is not an IPv4 address")
    for port, low in zip(router[2:], (1, 0, 0)):
        try:
            grammar.number(port, low, grammar.PORT_MAX)
        except ValueError:
            raise ValueError(f"{named}: {port[:40]!r} is not a port") from None
    raise ValueError(f"{named}: malformed")


def _named(descriptor: ServerDescriptor) -> str:
    """How errors name a descriptor (made only when refusing one)."""
    return f"server descriptor {descriptor.nickname}"


def _read(descriptor: ServerDescriptor, keyword: str, value: str) -> None:
    if keyword == "fingerprint":
        descriptor.fingerprint = value.replace(" ", "")
        if not grammar.is_fingerprint(descriptor.fingerprint):
            raise ValueError(f"{_named(descriptor)}: fingerprint {value[:60]!r} is malformed")
    elif keyword == "published":
        try:
            descriptor.published = grammar.parse_time(value)
        except ValueError as error:
            raise ValueError(f"{_named(descriptor)}: published {error}") from None
    elif keyword == "platform":
        descriptor.platform = value.encode()
    elif keyword == "contact":
        descriptor.contact = value.encode()
    elif keyword == "family":
        if _FAMILY.fullmatch(value.strip(" ")) is None:
            raise ValueError(f"{_named(descriptor)}: family {value[:80]!r} has a member that is neither a nickname "
                             "nor a $fingerprint")
        descriptor.family = set(map(sys.intern, value.split(" "))) if value else set()  # members repeat
    elif keyword == "bandwidth":
        descriptor.average_bandwidth, descriptor.burst_bandwidth, descriptor.observed_bandwidth = \
            _bandwidth(value, descriptor)
    elif keyword == "hibernating":
        descriptor.hibernating = value == "1"
    elif keyword == "uptime":  # seconds, a long; negative from tor before 0.1.2.7, which stem accepts too
        if _UPTIME.fullmatch(value) is None or not grammar.LONG_MIN <= int(value) <= grammar.LONG_MAX:
            raise ValueError(f"{_named(descriptor)}: 'uptime {value[:40]}' needs a number")
        descriptor.uptime = int(value)
    elif keyword == OVERLOAD:
        _overload(descriptor, value)
    elif keyword == "master-key-ed25519":
        descriptor.ed25519_master_key = value
    else:  # ipv6-policy
        if _MICRO_POLICY.fullmatch(value) is None:
            raise ValueError(f"{_named(descriptor)}: 'ipv6-policy {value[:60]}' is not accept or reject and ports")
        descriptor.exit_policy_v6 = _micro_policy(value)


def _bandwidth(value: str, descriptor: ServerDescriptor) -> tuple[int, int, int]:
    """Average, burst and observed bandwidth, ints as tor reads them (average at least 1, routerparse.c)."""
    match = _BANDWIDTH.fullmatch(value)
    if match is not None:
        average, burst, observed = int(match[1]), int(match[2]), int(match[3])
        if average >= 1 and max(average, burst, observed) <= grammar.INT_MAX:
            return average, burst, observed
    raise ValueError(f"{_named(descriptor)}: 'bandwidth {value[:80]}' needs 3 numbers: average "
                     f"1-{grammar.INT_MAX}, burst and observed 0-{grammar.INT_MAX}")


def _overload(descriptor: ServerDescriptor, value: str) -> None:
    """Reads an ``overload-general`` line, or says on the descriptor why it is ignored (never raises).

    The version must be a positive int (tor writes 1; a later version adds
    causes but keeps the shape, so it is read too); the time one we accept
    (``grammar.parse_time``: 1970-2199). That the time is not after the
    descriptor's ``published`` is checked in ``_finish``, once both are read.
    """
    match = _OVERLOAD.fullmatch(value)
    if match is None:
        line = f"overload-general {value}"[:80].rstrip()
        descriptor.overload_general_ignored = f"{line!r} is not a version and a time (YYYY-MM-DD HH:MM:SS)"
    elif not 1 <= int(match[1]) <= grammar.INT_MAX:
        descriptor.overload_general_ignored = f"overload-general version {match[1]} is not from 1 to {grammar.INT_MAX}"
    else:
        try:
            descriptor.overload_general = grammar.parse_time(match[2])
        except ValueError as error:
            descriptor.overload_general_ignored = f"overload-general time {error}"


def _finish(descriptor: ServerDescriptor | None, seen: set) -> None:
    if descriptor is not None:
        descriptor.family_certs = tuple(read_family_object(text, descriptor.ed25519_master_key)
                                        for text in descriptor.family_certs) if descriptor.family_certs else ()
    if descriptor is not None and len(seen.intersection(_REQUIRED)) != len(_REQUIRED):
        missing = sorted(set(_REQUIRED) - seen)
        raise ValueError(f"server descriptor {descriptor.nickname}: no {', '.join(missing)} line")
    # tor writes the hour of the last overload, rounded down, into a descriptor it makes afterwards: a later time
    # is not tor's (a clock cannot explain it: both times come from the same clock).
    if descriptor is not None and descriptor.overload_general is not None \
            and descriptor.overload_general > descriptor.published:
        descriptor.overload_general_ignored = (f"overload-general time {descriptor.overload_general} is after the "
                                               f"descriptor's published {descriptor.published}")
        descriptor.overload_general = None


@lru_cache(maxsize=1024)
def _micro_policy(value: str):
    return stem.exit_policy.MicroExitPolicy(value)

