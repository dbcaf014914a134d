"""Which addresses a uri-rsa proof may be fetched from: global unicast only, unless allowed_networks says more."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.aroi.addresses import allowed_address
from agent.aroi.settings import AroiConfig


def settings(*networks: str) -> AroiConfig:
    return AroiConfig(verify=True, refresh_hours=12, retry_hours=2, timeout_seconds=15, max_proof_bytes=1048576,
                      max_redirects=3, concurrency=8, resolver=None, ca_file=None,
                      allowed_networks=tuple(ip_network(network) for network in networks), https_port=443)


PUBLIC = [
    "1.1.1.1", "8.8.8.8", "93.184.216.34", "9.255.255.255", "11.0.0.0", "100.63.255.255", "100.128.0.0",
    "172.15.255.255", "172.32.0.0", "192.0.1.1", "192.167.255.255", "223.255.255.254",
    "2606:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001:81a::200e", "2c0f:fb50:4002::1",
    "::ffff:8.8.8.8",  # IPv4-mapped: the IPv4 address it is
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
]
SPECIAL = {
    "unspecified": ["0.0.0.0", "0.1.2.3", "::"],
    "private": ["10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.255", "192.168.0.1", "fc00::1", "fd12::1"],
    "shared (carrier-grade NAT)": ["100.64.0.1", "100.127.255.254"],
    "loopback": ["127.0.0.1", "127.255.255.254", "::1"],
    "link-local": ["169.254.169.254", "169.254.0.1", "fe80::1", "fe80::a9fe:a9fe"],
    "multicast": ["224.0.0.1", "239.255.255.250", "ff02::1", "ff0e::1"],
    "reserved": ["240.0.0.1", "255.255.255.255", "100::1", "fec0::1", "::127.0.0.1", "4000::1"],
    "IETF and documentation": ["192.0.0.8", "192.0.2.1", "198.51.100.7", "203.0.113.9", "198.18.0.1",
                               "2001:db8::1", "3fff::1", "2001:10::1"],
    "IPv4-mapped": ["::ffff:10.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:100.64.0.1"],
    "6to4 of a special address": ["2002:a00:1::1", "2002:7f00:1::", "2002:a9fe:a9fe::1"],
    "Teredo": ["2001:0:4136:e378:8000:63bf:3fff:fdd2", "2001::1"],
    "NAT64 of a special address": ["64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe"],
}


@pytest.mark.parametrize("address", PUBLIC)
def test_global_unicast_addresses_are_allowed(address):
    assert allowed_address(ip_address(address), settings()) is True


@pytest.mark.parametrize("kind, address", [(kind, address) for kind, addresses in SPECIAL.items()
                                           for address in addresses])
def test_special_addresses_are_not(kind, address):
    assert allowed_address(ip_address(address), settings()) is False, kind


def test_allowed_networks_add_exactly_their_addresses():
    loopback = settings("127.0.0.0/8")
    assert allowed_address(ip_address("127.0.0.1"), loopback) and allowed_address(ip_address("127.9.9.9"), loopback)
    assert allowed_address(ip_address("::ffff:127.0.0.1"), loopback)  # the same address, mapped
    for other in ("::1", "10.0.0.1", "169.254.169.254", "128.0.0.1"):
        assert allowed_address(ip_address(other), loopback) is (other == "128.0.0.1"), other
    unique_local = settings("fd00::/8", "192.168.7.0/24")
    assert allowed_address(ip_address("fd00::5"), unique_local) and allowed_address(ip_address("192.168.7.3"),
                                                                                    unique_local)
    assert not allowed_address(ip_address("fc00::5"), unique_local)
    assert not allowed_address(ip_address("192.168.8.3"), unique_local)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_an_ipv4_address_in_ipv6_clothing_is_judged_as_itself(number):
    address = IPv4Address(number)
    expected = allowed_address(address, settings())
    assert allowed_address(IPv6Address(f"::ffff:{address}"), settings()) is expected
    assert allowed_address(IPv6Address((0x2002 << 112) | (number << 80) | 1), settings()) is expected
    assert allowed_address(IPv6Address((0x64FF9B << 96) | number), settings()) is expected
    if expected:
        assert not address.is_private and not address.is_multicast  # the standard library agrees
