"""Which directory authorities to watch: a bootstrap list merged with the consensus.

The bootstrap list (tor's own by default) only gets the agent started; once a
consensus is fetched, its ``dir-source`` lines are the truth. DocTor's and
depictor's hard-coded lists were their main source of false alarms whenever an
authority moved or changed keys, so a new, moved or retired authority here is
logged and followed, never an error.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any, cast

log = logging.getLogger(__name__)

_HEX40 = re.compile(r"^[0-9A-F]{40}$")


@dataclass(frozen=True)
class Authority:
    """One voting directory authority, as far as the agent needs to reach it."""

    nickname: str
    v3ident: str
    address: str
    dir_port: int
    or_port: int | None = None
    fingerprint: str | None = None

    @property
    def base_url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.dir_port}"


@dataclass(frozen=True)
class AuthorityChanges:
    """How the consensus's authority list differs from the one we knew."""

    added: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    moved: tuple[str, ...] = ()


def parse_dir_authority_line(line: str) -> Authority:
    """Parses one line in tor's ``DirAuthority`` format (as in auth_dirs.inc).

    ``nickname [flags] [orport=N] [v3ident=HEX] [ipv6=..] IPv4:DirPort FINGERPRINT``;
    the fingerprint may be written in groups of four. Raises ValueError naming
    what is wrong; a line without ``v3ident`` (a bridge authority) is rejected
    because it publishes no votes.
    """
    words = line.split()
    if len(words) < 3:
        raise ValueError(f"too few fields in authority line {line!r}")
    nickname, options = words[0], {}
    address_index = None
    for index, word in enumerate(words[1:], start=1):
        if "=" in word:
            key, _, value = word.partition("=")
            options[key] = value
        elif re.match(r"^\d{1,3}(\.\d{1,3}){3}:\d+$", word):
            address_index = index
            break
    if address_index is None:
        raise ValueError(f"no IPv4:DirPort address in authority line {line!r}")
    address, _, dir_port = words[address_index].rpartition(":")
    fingerprint = "".join(words[address_index + 1:]).upper() or None
    if "v3ident" not in options:
        raise ValueError(f"authority {nickname} has no v3ident (a bridge authority?)")
    return make_authority(
        nickname=nickname,
        v3ident=options["v3ident"],
        address=address,
        dir_port=dir_port,
        or_port=options.get("orport"),
        fingerprint=fingerprint,
    )


def make_authority(nickname: object, v3ident: object, address: object, dir_port: object, or_port: object = None,
                   fingerprint: object = None) -> Authority:
    """Builds an Authority from loosely typed values, raising ValueError on bad ones."""
    if not re.match(r"^[A-Za-z0-9]{1,19}$", str(nickname)):
        raise ValueError(f"nickname {nickname!r} is not a valid tor nickname")
    v3ident = str(v3ident).upper()
    if not _HEX40.match(v3ident):
        raise ValueError(f"v3ident of {nickname} must be 40 hex digits, got {v3ident!r}")
    try:
        ipaddress.ip_address(str(address))
    except ValueError:
        raise ValueError(f"address of {nickname} must be an IP address, got {address!r}") from None
    ports: dict[str, int | None] = {}
    for name, value in (("dir_port", dir_port), ("or_port", or_port)):
        if value is None and name == "or_port":
            ports[name] = None
            continue
        try:
            port = int(cast(Any, value))  # whatever the value is: int() refusing it is the check
        except (TypeError, ValueError):
            port = -1
        if not 0 < port < 65536:
            raise ValueError(f"{name} of {nickname} must be a port number, got {value!r}")
        ports[name] = port
    if fingerprint is not None:
        fingerprint = str(fingerprint).replace(" ", "").upper()
        if not _HEX40.match(fingerprint):
            raise ValueError(f"fingerprint of {nickname} must be 40 hex digits, got {fingerprint!r}")
    dir_port_number = cast(int, ports["dir_port"])  # only or_port may be None
    return Authority(str(nickname), v3ident, str(address), dir_port_number, ports["or_port"], fingerprint)


def default_authorities() -> tuple[Authority, ...]:
    """The voting authorities current tor ships (agent/data/authorities.txt)."""
    text = resources.files("agent").joinpath("data/authorities.txt").read_text()
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return tuple(parse_dir_authority_line(line) for line in lines)


def from_consensus(consensus: Any) -> list[Authority]:
    """The voting authorities a consensus lists in its ``dir-source`` lines.

    Legacy-key entries (``nickname-legacy``) are dropped: they name an old key
    of an authority that is already listed.
    """
    found = []
    for source in consensus.directory_authorities:
        if source.is_legacy:
            continue
        found.append(Authority(
            nickname=source.nickname,
            v3ident=source.v3ident.upper(),
            address=source.address,
            dir_port=int(source.dir_port),
            or_port=int(source.or_port) if source.or_port else None,
        ))
    return found


def merge(known: list[Authority], listed: list[Authority]) -> tuple[list[Authority], AuthorityChanges]:
    """Merges what we knew with what a consensus lists, keyed by v3ident.

    Listed authorities take the consensus's address and ports (the truth once
    fetched) and keep the relay fingerprint we knew. Known authorities the
    consensus does not list are kept, so a retired or broken authority stays
    visible, and reported as missing.
    """
    known_by_id = {authority.v3ident: authority for authority in known}
    listed_ids = {authority.v3ident for authority in listed}
    merged, added, moved = [], [], []
    for authority in listed:
        previous = known_by_id.get(authority.v3ident)
        if previous is None:
            added.append(authority.nickname)
            merged.append(authority)
            continue
        if (previous.address, previous.dir_port) != (authority.address, authority.dir_port):
            moved.append(authority.nickname)
        merged.append(replace(authority, fingerprint=previous.fingerprint))
    missing = [authority for authority in known if authority.v3ident not in listed_ids]
    merged.extend(missing)
    changes = AuthorityChanges(tuple(added), tuple(a.nickname for a in missing), tuple(moved))
    _log_changes(changes)
    return merged, changes


def _log_changes(changes: AuthorityChanges) -> None:
    for nickname in changes.added:
        log.warning("authority %s is listed in the consensus but was not known; watching it", nickname)
    for nickname in changes.missing:
        log.warning("authority %s is not listed in the consensus; still watching it", nickname)
    for nickname in changes.moved:
        log.warning("authority %s moved; using the address the consensus lists", nickname)
