"""Pure rendering of torrc files for the private Tor network on loopback.

Every rule that keeps packets on this machine lives in ``LOOPBACK_RULES`` and
is written into every node's torrc: addresses and listeners on 127.0.0.1,
outbound connections bound to 127.0.0.1, only our own authorities and no
default fallbacks, no exits, no DNS hijacking self-test and a resolver file
that points at 127.0.0.1 (a relay that resolves names off the machine is a
defect). Tests read the rendered files back to hold these rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Node:
    """One tor process of the private network."""

    name: str
    role: str  # "authority" or "relay"
    or_port: int
    dir_port: int | None
    data_dir: Path
    fingerprint: str = ""
    v3ident: str = ""
    bandwidth_authority: bool = False

    @property
    def torrc_path(self) -> Path:
        return self.data_dir / "torrc"


def loopback_rules(resolv_conf: Path) -> list[str]:
    """The options that keep a node's traffic on 127.0.0.1 (DESIGN.md)."""
    return [
        f"Address {LOOPBACK}",
        "AddressDisableIPv6 1",
        f"OutboundBindAddress {LOOPBACK}",
        "ClientUseIPv6 0",
        "UseDefaultFallbackDirs 0",
        "ExitRelay 0",
        "ExitPolicy reject *:*",
        "ServerDNSDetectHijacking 0",
        f"ServerDNSResolvConfFile {resolv_conf}",
        "SocksPort 0",
    ]


def dir_authority_line(node: Node) -> str:
    """The ``DirAuthority`` line every node uses to find ``node``."""
    return (f"DirAuthority {node.name} orport={node.or_port} no-v2 v3ident={node.v3ident} "
            f"{LOOPBACK}:{node.dir_port} {node.fingerprint}")


def render_torrc(node: Node, authorities: list[Node], *, interval_seconds: int, resolv_conf: Path,
                 tor_version: str, bandwidth_file: Path | None = None) -> str:
    """The full torrc of ``node``; authorities also get voting options."""
    lines = [
        "# Written by `allium-agent testnet`: a private Tor network confined to 127.0.0.1.",
        "TestingTorNetwork 1",
        f"Nickname {node.name}",
        f"DataDirectory {node.data_dir}",
        f"PidFile {node.data_dir / 'pid'}",
        f"Log notice file {node.data_dir / 'notice.log'}",
        "RunAsDaemon 0",
        "SafeLogging 0",
        "ShutdownWaitLength 0",
        "AssumeReachable 1",
        f"ContactInfo allium-agent testnet operator <{node.name}@example.invalid>",
        f"ORPort {LOOPBACK}:{node.or_port} IPv4Only",
        *loopback_rules(resolv_conf),
        *(dir_authority_line(authority) for authority in authorities),
    ]
    if node.role == "authority":
        lines += _authority_options(node, interval_seconds, tor_version, bandwidth_file)
    return "\n".join(lines) + "\n"


def _authority_options(node: Node, interval_seconds: int, tor_version: str,
                       bandwidth_file: Path | None) -> list[str]:
    # Vote and distribution delays of 2 s fit a 10 s period; tor requires
    # VoteDelay + DistDelay < VotingInterval.
    delay = max(2, interval_seconds // 5)
    options = [
        f"DirPort {LOOPBACK}:{node.dir_port} IPv4Only",
        "AuthoritativeDirectory 1",
        "V3AuthoritativeDirectory 1",
        # stem rejects a consensus without recommended versions.
        "VersioningAuthoritativeDirectory 1",
        f"RecommendedVersions {tor_version}",
        f"V3AuthVotingInterval {interval_seconds}",
        f"V3AuthVoteDelay {delay}",
        f"V3AuthDistDelay {delay}",
        f"TestingV3AuthInitialVotingInterval {interval_seconds}",
        f"TestingV3AuthInitialVoteDelay {delay}",
        f"TestingV3AuthInitialDistDelay {delay}",
        "TestingV3AuthVotingStartOffset 0",
        # Every node shares 127.0.0.1; without this only two would be listed.
        "AuthDirMaxServersPerAddr 0",
        # Every node may be a guard. Otherwise a three-relay network often has one guard
        # relay, and while it is down a restarted relay cannot build the self-test
        # circuits it needs before it publishes its descriptor again.
        f"TestingDirAuthVoteGuard {LOOPBACK}/8",
    ]
    if bandwidth_file is not None:
        options.append(f"V3BandwidthsFile {bandwidth_file}")
    return options


def render_bandwidth_file(timestamp: int, nodes: list[Node]) -> str:
    """A version 1.4.0 bandwidth file giving every node a measured bandwidth."""
    lines = [str(timestamp), "version=1.4.0", "software=allium-agent-testnet", "====="]
    for index, node in enumerate(nodes):
        lines.append(f"bw={1000 + 100 * index} node_id=${node.fingerprint} nick={node.name}")
    return "\n".join(lines) + "\n"
