"""The ``subscriptions`` config section: the sign-up endpoint and when a watched relay's operator is told.

Its settings are listed as ``(key, default, converter name in agent.config.values)``;
the config loader mounts them under ``subscriptions``.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Any, ClassVar


@dataclass(frozen=True)
class SubscriptionsConfig:
    listen: tuple[str, int] | None
    confirm_hours: float
    rate_limit: str
    mails_per_address: str
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...]
    max_body_bytes: int
    idle_timeout_seconds: int
    max_connections: int
    down_hours: float
    weight_drop_percent: float
    weight_drop_hours: float
    min_authorities: int | None
    min_bandwidth_authorities: int
    low_bandwidth_kbytes: float
    flags: tuple[str, ...]
    public_contact: bool

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("listen", None, "listen"),
        ("confirm_hours", 48, "positive_number"),
        ("rate_limit", "20 per hour", "rate"),
        # Mails (confirmations, lists) to one mailbox, whoever asks: bounds what anyone can send a victim.
        ("mails_per_address", "5 per day", "rate"),
        ("trusted_proxies", [], "networks"),
        # A subscription form is a few hundred bytes; larger bodies are refused (413) before they are read.
        ("max_body_bytes", 16384, "positive_int"),
        ("idle_timeout_seconds", 30, "positive_int"),
        ("max_connections", 100, "positive_int"),
        # Tor Weather's default: a relay down for 1 h.
        ("down_hours", 1, "non_negative_number"),
        ("weight_drop_percent", 50, "positive_number"),
        ("weight_drop_hours", 24, "positive_number"),
        ("min_authorities", None, "optional_positive_int"),
        # tor uses measured bandwidth only with at least 3 bandwidth authorities' measurements.
        ("min_bandwidth_authorities", 3, "positive_int"),
        # Tor Weather's default: observed bandwidth under 20 kB/s is low (0: never reported).
        ("low_bandwidth_kbytes", 20, "non_negative_number"),
        ("flags", ["Guard", "Exit", "Stable", "Fast", "HSDir", "Valid", "Running"], "flags"),
        # Contact-string subscriptions from the public endpoint: anyone can put any string in a contact line,
        # so they could mail strangers; off, only administrators add them (`subscriptions add`).
        ("public_contact", False, "boolean"),
    )
