"""The ``aroi`` config section: whether and how operators' proofs (uri-rsa, dns-rsa) are verified.

Its settings are listed as ``(key, default, converter name in agent.config.values)``;
the config loader mounts them under ``aroi``.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Any, ClassVar


@dataclass(frozen=True)
class AroiConfig:
    verify: bool
    refresh_hours: float
    retry_hours: float
    timeout_seconds: float
    max_proof_bytes: int
    max_redirects: int
    concurrency: int
    resolver: tuple[str, int] | None
    ca_file: str | None
    allowed_networks: tuple[IPv4Network | IPv6Network, ...]
    https_port: int

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        # Live runs (`run`, `once`) check the proofs of every complete CIISS claim; backfill never does
        # (a proof says who runs a relay now, not then).
        ("verify", True, "boolean"),
        # A readable proof is checked again after this long; one that could not be read after retry_hours.
        ("refresh_hours", 12, "positive_number"),
        ("retry_hours", 2, "positive_number"),
        # Everything one proof may take: connecting, TLS, redirects and reading (a slow server gets no more).
        ("timeout_seconds", 15, "positive_number"),
        # A fingerprint list is 41 bytes a relay: 1 MiB holds 25,000 relays.
        ("max_proof_bytes", 1048576, "positive_int"),
        ("max_redirects", 3, "non_negative_int"),
        ("concurrency", 8, "positive_int"),
        # host:port of the DNS resolver for dns-rsa lookups and proof hosts' addresses; null: the system's.
        ("resolver", None, "listen"),
        # A CA bundle to trust instead of the system's (tests: a test CA).
        ("ca_file", None, "optional_path"),
        # Proof hosts may resolve only to public unicast addresses, plus these networks. For tests only
        # (e.g. [127.0.0.0/8]): a proof pointing at an internal address is refused otherwise.
        ("allowed_networks", [], "networks"),
        # The port uri-rsa proofs are fetched from: 443 (tests run their HTTPS server elsewhere).
        ("https_port", 443, "positive_int"),
    )

    def problems(self, section: str) -> list[str]:
        problems = []
        if self.https_port > 65535:
            problems.append(f"{section}.https_port: must be a TCP port (1-65535), got {self.https_port}")
        if self.resolver is not None:
            try:
                ipaddress.ip_address(self.resolver[0])
            except ValueError:
                problems.append(f"{section}.resolver: must be an IP address and port (a resolver is asked by "
                                f"address), got {self.resolver[0]!r}")
        return problems
