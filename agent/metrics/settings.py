"""The ``metrics`` config section: the GeoIP file and how many operators get series of their own.

Its settings are listed as ``(key, default, converter name in agent.config.values)``;
the config loader mounts them under ``metrics``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class MetricsConfig:
    geoip_file: str | None
    operators_top_n: int

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("geoip_file", "/usr/share/tor/geoip", "optional_path"),
        ("operators_top_n", 200, "positive_int"),
    )
