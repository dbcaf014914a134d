"""Which addresses a proof may be fetched from: global unicast ones only, unless the configuration allows more.

A contact line is written by whoever runs the relay, so its domain may resolve
anywhere, including the agent's own network (a metadata service, a router's
admin page). Proofs are therefore only fetched from addresses that are global
unicast; ``allowed_networks`` (tests: 127.0.0.0/8) is the only way to allow
others. The ranges are written out here (IANA's special-purpose registries)
rather than taken from ``ipaddress.is_global``, whose answers changed between
Python releases.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from agent.aroi.settings import AroiConfig

#: IPv4 ranges that are not global unicast (RFC 6890 and its updates, plus multicast and the reserved 240/4).
BLOCKED_V4 = tuple(IPv4Network(network) for network in (
    "0.0.0.0/8",  # "this network", including the unspecified address
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, including cloud metadata services (169.254.169.254)
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation
    "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation
    "203.0.113.0/24",  # documentation
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, including the limited broadcast address
))

#: All IPv6 global unicast lies in 2000::/3; within it, these ranges are not global unicast.
GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")
BLOCKED_V6 = tuple(IPv6Network(network) for network in (
    "2001::/23",  # IETF protocol assignments, including Teredo (2001::/32)
    "2001:db8::/32",  # documentation
    "3fff::/20",  # documentation
))
#: Prefixes that carry an IPv4 address in their low bits; the address they reach is judged by that IPv4 address.
SIXTOFOUR = IPv6Network("2002::/16")
NAT64 = IPv6Network("64:ff9b::/96")


def allowed_address(address: IPv4Address | IPv6Address, settings: AroiConfig) -> bool:
    """True when a proof may be fetched from ``address``: a global unicast address, or one in allowed_networks.

    An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) is judged as the IPv4
    address it is; 6to4, NAT64 and Teredo addresses carrying an IPv4 address
    only when that address is global unicast too.
    """
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address.version == network.version and address in network for network in settings.allowed_networks):
        return True
    return _global_unicast(address)


def _global_unicast(address: IPv4Address | IPv6Address) -> bool:
    if isinstance(address, IPv4Address):
        return not any(address in network for network in BLOCKED_V4)
    if address in NAT64:
        return _global_unicast(IPv4Address(int(address) & 0xFFFFFFFF))
    if address not in GLOBAL_UNICAST_V6 or any(address in network for network in BLOCKED_V6):
        return False
    if address in SIXTOFOUR:
        embedded = address.sixtofour
        return embedded is not None and _global_unicast(embedded)
    return True

