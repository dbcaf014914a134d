"""A focused fast path for server descriptors: the fields the agent reads, named and typed as stem's.

stem's validating parser takes about 1/2,900 s per descriptor and builds
every field (exit policies, protocol sets, keys). The agent reads a dozen
fields of ~7,000 descriptors a period; this reads exactly those and checks
them (a malformed descriptor raises ValueError naming it).
``tests/unit/test_fastparse.py`` compares every field with stem on every
real descriptor file we have.
"""

from __future__ import annotations

import re
import sys
from functools import lru_cache

import stem.exit_policy

from agent.parse.fastparse import parse_port, parse_timestamp


class ServerDescriptor:
    """A relay's server descriptor: the fields the agent reads, named and typed as stem's RelayDescriptor."""

    __slots__ = ("nickname", "fingerprint", "address", "or_port", "published", "platform", "contact", "family",
                 "average_bandwidth", "burst_bandwidth", "observed_bandwidth", "hibernating", "uptime",
                 "exit_policy_v6")

    def __init__(self):
        self.platform = self.contact = self.uptime = None
        self.family = _NO_FAMILY
        self.hibernating = False
        self.exit_policy_v6 = _DEFAULT_IPV6_POLICY


_DEFAULT_IPV6_POLICY = stem.exit_policy.MicroExitPolicy("reject 1-65535")
_NO_FAMILY: frozenset = frozenset()  # shared by the descriptors without a family line (equal to stem's set())


#: The lines the agent reads, found in C (``opt`` is an old prefix stem also accepts); about 9 of a descriptor's 30.
_LINES = re.compile(r"\n(?:opt )?(router-signature|router|fingerprint|published|platform|contact|family|bandwidth|"
                    r"hibernating|uptime|ipv6-policy)(?: |(?=\n)|\Z)([^\n]*)")
_REQUIRED = ("bandwidth", "fingerprint", "published")


def parse_server_descriptors(raw: bytes) -> list[ServerDescriptor]:
    """Every descriptor in a concatenation (annotations allowed); raises ValueError on a malformed one."""
    descriptors: list[ServerDescriptor] = []
    descriptor, seen, signed = None, set(), False
    for keyword, value in _lines(raw):
        if keyword == "router":
            _finish(descriptor, seen)
            descriptor, seen, signed = _router(value), set(), False
            descriptors.append(descriptor)
        elif descriptor is None or signed:
            continue  # before the first descriptor, or inside a signature
        elif keyword == "router-signature":
            signed = True
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
    router = value.split(" ")
    if len(router) != 5:
        raise ValueError(f"server descriptor {('router ' + value)[:80]!r}: the router line needs 5 fields")
    descriptor = ServerDescriptor()
    descriptor.nickname, descriptor.address = router[0], router[1]
    descriptor.or_port = parse_port(router[2], 0)
    return descriptor


def _read(descriptor: ServerDescriptor, keyword: str, value: str) -> None:
    if keyword == "fingerprint":
        descriptor.fingerprint = value.replace(" ", "")
        if len(descriptor.fingerprint) != 40 or not _is_hex(descriptor.fingerprint):
            raise ValueError(f"server descriptor {descriptor.nickname}: fingerprint {value!r} is malformed")
    elif keyword == "published":
        day, _, clock = value.partition(" ")
        descriptor.published = parse_timestamp(day, clock)
    elif keyword == "platform":
        descriptor.platform = value.encode()
    elif keyword == "contact":
        descriptor.contact = value.encode()
    elif keyword == "family":
        descriptor.family = set(map(sys.intern, value.split(" "))) if value else set()  # members repeat
    elif keyword == "bandwidth":
        values = value.split(" ")
        if len(values) != 3 or not all(v.isdigit() for v in values):
            raise ValueError(f"server descriptor {descriptor.nickname}: 'bandwidth {value}' needs 3 numbers")
        descriptor.average_bandwidth, descriptor.burst_bandwidth, descriptor.observed_bandwidth = map(int, values)
    elif keyword == "hibernating":
        descriptor.hibernating = value == "1"
    elif keyword == "uptime":  # seconds; negative from tor before 0.1.2.7, which stem accepts too
        try:
            descriptor.uptime = int(value)
        except ValueError:
            raise ValueError(f"server descriptor {descriptor.nickname}: 'uptime {value[:40]}' needs a number") from None
    else:  # ipv6-policy
        descriptor.exit_policy_v6 = _micro_policy(value)


def _finish(descriptor: ServerDescriptor | None, seen: set) -> None:
    if descriptor is not None and len(seen.intersection(_REQUIRED)) != len(_REQUIRED):
        missing = sorted(set(_REQUIRED) - seen)
        raise ValueError(f"server descriptor {descriptor.nickname}: no {', '.join(missing)} line")


@lru_cache(maxsize=1024)
def _micro_policy(value: str):
    return stem.exit_policy.MicroExitPolicy(value)


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
        return True
    except ValueError:
        return False
