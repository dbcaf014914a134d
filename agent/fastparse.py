"""A focused fast path for the bulk of directory documents: router status entries and server descriptors.

stem's validating parser builds every field of every entry (exit policies,
protocol sets, ...) and takes about 0.5 s per full consensus or vote and
1/2,900 s per server descriptor. The agent reads a handful of fields, so
these parsers read exactly those, with the same names, types and values as
stem (``tests/unit/test_fastparse.py`` compares them with stem field by
field on every real document we have), and check what they read: a
malformed line raises ValueError naming it. Everything else stays stem's:
the document header and footer (parsed and validated by stem, without the
entries), key certificates, bandwidth files; signatures are verified by
``agent.signatures``.
"""

from __future__ import annotations

import binascii
import ipaddress
import re
from datetime import datetime
from functools import lru_cache

import stem.exit_policy
import stem.version

ENTRY_START = b"\nr "
FOOTER_START = b"\ndirectory-footer"


class RouterEntry:
    """One router status entry: the fields the agent reads, named and typed as stem's RouterStatusEntryV3.

    Fields most entries lack are class-level defaults (an instance sets them
    only when its lines say so), which halves the cost of building 80,000
    entries a period. The shared empty lists are replaced, never appended to.
    """

    or_addresses: list = []
    flags: list = []
    unrecognized_bandwidth_entries: list = []
    version_line = version = bandwidth = measured = microdescriptor_digest = None
    is_unmeasured = False

    def __init__(self, nickname, fingerprint, digest, published, address, or_port, dir_port):
        self.nickname, self.fingerprint, self.digest, self.published = nickname, fingerprint, digest, published
        self.address, self.or_port, self.dir_port = address, or_port, dir_port


class ServerDescriptor:
    """A relay's server descriptor: the fields the agent reads, named and typed as stem's RelayDescriptor."""

    __slots__ = ("nickname", "fingerprint", "address", "or_port", "published", "platform", "contact", "family",
                 "average_bandwidth", "burst_bandwidth", "observed_bandwidth", "hibernating", "exit_policy_v6")

    def __init__(self):
        self.platform = self.contact = None
        self.family = set()
        self.hibernating = False
        self.exit_policy_v6 = _DEFAULT_IPV6_POLICY


_DEFAULT_IPV6_POLICY = stem.exit_policy.MicroExitPolicy("reject 1-65535")


def split_network_status(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """(header, entries, footer) of a network status document; entries start at the first ``r`` line."""
    start = raw.find(ENTRY_START)
    if start < 0:
        return raw, b"", b""
    end = raw.find(FOOTER_START, start)
    if end < 0:
        end = raw.find(b"\ndirectory-signature ", start)
    if end < 0:
        end = len(raw)
    return raw[:start + 1], raw[start + 1:end + 1], raw[end + 1:]


#: The lines the agent reads (``opt`` is an old prefix stem also accepts); the rest are skipped in C.
_ENTRY_LINES = re.compile(r"^(?:opt )?([rsavw])(?: |$)(.*)$", re.M)
_MICRODESC_ENTRY_LINES = re.compile(r"^(?:opt )?([rsavwm])(?: |$)(.*)$", re.M)
_IPV4 = re.compile(r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])")


def parse_router_entries(entries: bytes, microdesc: bool) -> dict[str, RouterEntry]:
    """Fingerprint -> entry for every ``r`` block; raises ValueError on a malformed line we read."""
    routers: dict[str, RouterEntry] = {}
    entry = None
    pattern = _MICRODESC_ENTRY_LINES if microdesc else _ENTRY_LINES
    for number, (keyword, value) in enumerate(pattern.findall(entries.decode("utf-8", "replace"))):
        if keyword == "r":
            try:
                entry = _r_line(value, microdesc, number)
            except ValueError as error:
                raise ValueError(f"router status entry {number}: {error}") from None
            if entry.fingerprint in routers:
                raise ValueError(f"router status entry {number}: fingerprint {entry.fingerprint} listed twice")
            routers[entry.fingerprint] = entry
        elif entry is None:
            continue
        elif keyword == "s":
            entry.flags = value.split(" ") if value else []
        elif keyword == "w":
            _w_line(entry, value, number)
        elif keyword == "v":
            entry.version_line = value
            entry.version = _version(value)
        elif keyword == "a":
            entry.or_addresses = [*entry.or_addresses, _or_address(value, number)]
        else:
            entry.microdescriptor_digest = value
    return routers


def _r_line(value: str, microdesc: bool, number: int) -> RouterEntry:
    parts = value.split(" ")
    if len(parts) != (7 if microdesc else 8):
        raise ValueError(f"router status entry line {number}: 'r {value[:80]}' has {len(parts)} fields")
    if microdesc:
        nickname, identity, day, clock, address, or_port, dir_port = parts
        digest = None
    else:
        nickname, identity, digest, day, clock, address, or_port, dir_port = parts
        digest = _base64_hex(digest)
    if _IPV4.fullmatch(address) is None:
        raise ValueError(f"router status entry line {number}: {address!r} is not an IPv4 address")
    return RouterEntry(nickname, _base64_hex(identity), digest, _timestamp(day, clock), address,
                       _port(or_port, number, allow_zero=False), _port(dir_port, number) or None)


def _w_line(entry: RouterEntry, value: str, number: int) -> None:
    bandwidth, separator, measured = value.partition(" Measured=")
    # The common cases: "Bandwidth=N" (consensus) and "Bandwidth=N Measured=M" (a bandwidth authority's vote).
    if bandwidth.startswith("Bandwidth=") and bandwidth[10:].isdigit() and (not separator or measured.isdigit()):
        entry.bandwidth = int(bandwidth[10:])
        if separator:
            entry.measured = int(measured)
        return
    if not value.startswith("Bandwidth="):
        raise ValueError(f"router status entry line {number}: 'w {value[:60]}' must start with Bandwidth=")
    for item in value.split(" "):
        key, _, number_text = item.partition("=")
        if key in ("Bandwidth", "Measured"):
            if not number_text.isdigit():
                raise ValueError(f"router status entry line {number}: {key}= needs a number: w {value[:60]}")
            setattr(entry, "bandwidth" if key == "Bandwidth" else "measured", int(number_text))
        elif key == "Unmeasured":
            if number_text != "1":
                raise ValueError(f"router status entry line {number}: Unmeasured= must be 1: w {value[:60]}")
            entry.is_unmeasured = True
        else:
            entry.unrecognized_bandwidth_entries = [*entry.unrecognized_bandwidth_entries, item]


def _or_address(value: str, number: int) -> tuple[str, int, bool]:
    address, _, port = value.rpartition(":")
    bare = address[1:-1] if address.startswith("[") and address.endswith("]") else address
    try:
        parsed = ipaddress.ip_address(bare)
    except ValueError:
        raise ValueError(f"router status entry line {number}: 'a {value[:60]}' has no valid address") from None
    return bare, _port(port, number, allow_zero=False), parsed.version == 6


@lru_cache(maxsize=4096)
def _version(line: str):
    """stem's Version for 'Tor x.y.z...' (None for other software), cached: a few hundred distinct lines."""
    if not line.startswith("Tor "):
        return None
    try:
        return stem.version.Version(line[4:].split(" ", 1)[0])
    except ValueError:
        return None


@lru_cache(maxsize=65536)  # identities and digests repeat across the consensus and the nine votes
def _base64_hex(text: str) -> str:
    try:
        return binascii.a2b_base64(text + "=" * (-len(text) % 4), strict_mode=True).hex().upper()
    except (binascii.Error, ValueError):
        raise ValueError(f"{text!r} is not base64") from None


@lru_cache(maxsize=65536)
def _timestamp(day: str, clock: str) -> datetime:
    try:
        return datetime(int(day[0:4]), int(day[5:7]), int(day[8:10]), int(clock[0:2]), int(clock[3:5]),
                        int(clock[6:8]))
    except (ValueError, IndexError):
        raise ValueError(f"{day} {clock} is not a time") from None


def _port(text: str, number: int, allow_zero: bool = True) -> int:
    if not text.isdigit() or not (0 if allow_zero else 1) <= int(text) <= 65535:
        raise ValueError(f"line {number}: {text!r} is not a port")
    return int(text)


def parse_server_descriptors(raw: bytes) -> list[ServerDescriptor]:
    """Every descriptor in a concatenation (annotations allowed); raises ValueError on a malformed one."""
    descriptors = []
    # A leading newline makes the first descriptor split like the others (annotations before it drop out).
    for block in ("\n" + raw.decode("utf-8", "replace")).split("\nrouter ")[1:]:
        descriptors.append(_descriptor("router " + block))
    return descriptors


def _descriptor(block: str) -> ServerDescriptor:
    descriptor = ServerDescriptor()
    lines = block.split("\n")
    router = lines[0].split(" ")
    if len(router) != 6:
        raise ValueError(f"server descriptor {lines[0][:80]!r}: the router line needs 5 fields")
    descriptor.nickname, descriptor.address = router[1], router[2]
    descriptor.or_port = _port(router[3], 0)
    seen = set()
    for line in lines[1:]:
        keyword, _, value = line.partition(" ")
        if keyword == "opt":
            keyword, _, value = value.partition(" ")
        if keyword == "router-signature":
            break
        if keyword == "fingerprint":
            descriptor.fingerprint = value.replace(" ", "")
            if len(descriptor.fingerprint) != 40 or not _is_hex(descriptor.fingerprint):
                raise ValueError(f"server descriptor {descriptor.nickname}: fingerprint {value!r} is malformed")
        elif keyword == "published":
            day, _, clock = value.partition(" ")
            descriptor.published = _timestamp(day, clock)
        elif keyword == "platform":
            descriptor.platform = value.encode()
        elif keyword == "contact":
            descriptor.contact = value.encode()
        elif keyword == "family":
            descriptor.family = set(value.split(" ")) if value else set()
        elif keyword == "bandwidth":
            values = value.split(" ")
            if len(values) != 3 or not all(v.isdigit() for v in values):
                raise ValueError(f"server descriptor {descriptor.nickname}: 'bandwidth {value}' needs 3 numbers")
            descriptor.average_bandwidth, descriptor.burst_bandwidth, descriptor.observed_bandwidth = map(
                int, values)
        elif keyword == "hibernating":
            descriptor.hibernating = value == "1"
        elif keyword == "ipv6-policy":
            descriptor.exit_policy_v6 = _micro_policy(value)
        seen.add(keyword)
    missing = {"fingerprint", "published", "bandwidth"} - seen
    if missing:
        raise ValueError(f"server descriptor {descriptor.nickname}: no {', '.join(sorted(missing))} line")
    return descriptor


@lru_cache(maxsize=1024)
def _micro_policy(value: str):
    return stem.exit_policy.MicroExitPolicy(value)


def _is_hex(text: str) -> bool:
    try:
        int(text, 16)
        return True
    except ValueError:
        return False
