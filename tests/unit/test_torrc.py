"""The private network's torrc files keep every packet on 127.0.0.1."""

import re
from pathlib import Path

import pytest

from agent.testnet.torrc import Node, render_bandwidth_file, render_torrc

AUTHORITIES = [
    Node(f"auth{i}", "authority", 5000 + i, 6000 + i, Path(f"/n/auth{i}"),
         fingerprint=f"{i}" * 40, v3ident=f"{i}A" * 20)
    for i in (1, 2, 3)
]
RELAY = Node("relay1", "relay", 7001, None, Path("/n/relay1"), fingerprint="B" * 40)


def options(text: str) -> dict[str, list[str]]:
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            found.setdefault(key, []).append(value)
    return found


@pytest.fixture(params=["authority", "relay"])
def torrc(request):
    node = AUTHORITIES[0] if request.param == "authority" else RELAY
    return options(render_torrc(node, AUTHORITIES, interval_seconds=10, resolv_conf=Path("/n/resolv.conf"),
                                tor_version="0.4.9.11", bandwidth_file=None))


def test_loopback_rules_on_every_node(torrc):
    assert torrc["TestingTorNetwork"] == ["1"]
    assert torrc["Address"] == ["127.0.0.1"]
    assert torrc["OutboundBindAddress"] == ["127.0.0.1"]
    assert torrc["UseDefaultFallbackDirs"] == ["0"]
    assert torrc["ExitRelay"] == ["0"]
    assert torrc["ExitPolicy"] == ["reject *:*"]
    assert torrc["ServerDNSDetectHijacking"] == ["0"]
    assert torrc["ServerDNSResolvConfFile"] == ["/n/resolv.conf"]
    assert torrc["SocksPort"] == ["0"]
    for key in ("ORPort", "DirPort"):
        for value in torrc.get(key, []):
            assert value.startswith("127.0.0.1:")


def test_only_our_own_authorities(torrc):
    lines = torrc["DirAuthority"]
    assert len(lines) == 3
    for line, authority in zip(lines, AUTHORITIES):
        assert f"127.0.0.1:{authority.dir_port} {authority.fingerprint}" in line
        assert f"v3ident={authority.v3ident}" in line
        assert re.findall(r"\d+\.\d+\.\d+\.\d+", line) == ["127.0.0.1"]
    assert "FallbackDir" not in torrc and "AlternateDirAuthority" not in torrc


def test_authority_votes_every_interval_with_recommended_versions():
    text = render_torrc(AUTHORITIES[0], AUTHORITIES, interval_seconds=10, resolv_conf=Path("/r"),
                        tor_version="0.4.9.11", bandwidth_file=Path("/n/bw"))
    torrc = options(text)
    assert torrc["V3AuthVotingInterval"] == ["10"]
    assert torrc["V3AuthVoteDelay"] == ["2"] and torrc["V3AuthDistDelay"] == ["2"]
    assert torrc["VersioningAuthoritativeDirectory"] == ["1"]
    assert torrc["RecommendedVersions"] == ["0.4.9.11"]
    assert torrc["V3BandwidthsFile"] == ["/n/bw"]
    relay = options(render_torrc(RELAY, AUTHORITIES, interval_seconds=10, resolv_conf=Path("/r"),
                                 tor_version="0.4.9.11"))
    assert "AuthoritativeDirectory" not in relay and "DirPort" not in relay


def test_bandwidth_file_lists_every_node():
    text = render_bandwidth_file(1700000000, [*AUTHORITIES, RELAY])
    lines = text.splitlines()
    assert lines[:4] == ["1700000000", "version=1.4.0", "software=allium-agent-testnet", "====="]
    assert len(lines) == 8 and lines[-1] == f"bw=1300 node_id=${'B' * 40} nick=relay1"
