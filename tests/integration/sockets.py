"""Lists the TCP/UDP sockets a process holds, read from /proc (no ss needed)."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_address)
    # /proc/net prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def _table(proto: str) -> dict[str, tuple]:
    rows = {}
    path = Path("/proc/net") / proto
    if not path.exists():
        return rows
    for line in path.read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        local_ip, local_port = local.split(":")
        remote_ip, remote_port = remote.split(":")
        rows[inode] = (proto, _address(local_ip), int(local_port, 16), _address(remote_ip), int(remote_port, 16))
    return rows


def sockets_of(pid: int) -> list[tuple]:
    """(proto, local ip, local port, remote ip, remote port) for each inet socket of ``pid``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    tables = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        tables.update(_table(proto))
    return [tables[inode] for inode in inodes if inode in tables]


def is_loopback_or_unset(address) -> bool:
    if address.is_unspecified or address.is_loopback:
        return True
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped is not None and mapped.is_loopback


def off_loopback(pid: int) -> list[tuple]:
    """Sockets of ``pid`` whose local or remote address is not loopback.

    A listener bound to a wildcard address counts as off loopback: every
    listener of ours must be bound to 127.0.0.1.
    """
    bad = []
    for proto, local, local_port, remote, remote_port in sockets_of(pid):
        if not local.is_loopback and not (getattr(local, "ipv4_mapped", None) or local).is_loopback:
            bad.append((proto, str(local), local_port, str(remote), remote_port))
        elif not is_loopback_or_unset(remote):
            bad.append((proto, str(local), local_port, str(remote), remote_port))
    return bad
