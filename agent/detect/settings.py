"""The detectors' settings, in a module of their own so the config loader need not import River."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectSettings:
    """The ``detect`` config section (defaults and documentation: agent/config.py, the example YAML)."""

    thresholds: dict  # detect.rules.*
    warmup_periods: int = 48
    window_periods: int = 168
    z_threshold: float = 6.0
    adapt_after: int = 3
    group_min_relays: int = 10
    group_warning_relays: int = 50
