"""The ``checks`` config section: typed thresholds (DocTor's values by default), disabled checks and silences.

Each class lists its settings as ``(key, default, converter name in agent.config.values)``;
the config loader mounts ChecksConfig's under ``checks``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any, ClassVar

from agent.model.findings import Silence


@dataclass(frozen=True)
class CheckThresholds:
    """``checks.thresholds``, one field a key, and the consensus parameters the votes check knows."""

    latency_factor: float
    clock_skew_seconds: float
    stale_authorities_critical: int
    certificate_warning_days: int
    certificate_info_days: int
    flag_count_high: float
    flag_count_low: float
    flag_count_skip: tuple[str, ...]
    unmeasured_ratio: float
    bwauth_sync_ratio: float
    bandwidth_file_max_age_hours: float
    bandwidth_file_min_coverage: float
    consensus_ahead_seconds: float
    operator_proof_absent_days: float
    operator_family_min_relays: int
    known_parameters: frozenset[str]  # not a key: agent/data/known-parameters.txt + checks.extra_known_parameters

    # DocTor's thresholds are the defaults.
    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("latency_factor", 5, "positive_number"),
        ("clock_skew_seconds", 10, "positive_number"),
        ("stale_authorities_critical", 3, "positive_int"),
        ("certificate_warning_days", 14, "positive_int"),
        ("certificate_info_days", 21, "positive_int"),
        ("flag_count_high", 1.5, "positive_number"),
        ("flag_count_low", 0.5, "ratio"),
        ("flag_count_skip", ["Running", "HSDir", "StaleDesc", "BadExit", "MiddleOnly"], "names"),
        ("unmeasured_ratio", 0.05, "ratio"),
        ("bwauth_sync_ratio", 0.2, "ratio"),
        ("bandwidth_file_max_age_hours", 48, "positive_number"),
        ("bandwidth_file_min_coverage", 0.6, "ratio"),
        # Not DocTor's: a live consensus whose valid-after is further ahead of our clock is refused.
        ("consensus_ahead_seconds", 600, "positive_number"),
        # Not DocTor's (AROI): a verified operator's proof listing relays absent from the consensus this long.
        ("operator_proof_absent_days", 30, "positive_number"),
        # Not DocTor's (AROI): an operator's (or a family's) verified relays in the consensus before their family
        # declarations are judged; 2 means a single-relay operator is never judged.
        ("operator_family_min_relays", 2, "positive_int"),
    )


@dataclass(frozen=True)
class ChecksConfig:
    thresholds: CheckThresholds
    disabled: frozenset[str]
    silences: tuple[Silence, ...]

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("disabled", [], "names"),
        ("silences", [], "silences"),
        ("extra_known_parameters", [], "names"),
        *((f"thresholds.{key}", default, convert) for key, default, convert in CheckThresholds.SETTINGS),
    )

    @classmethod
    def from_settings(cls, values: dict[str, Any]) -> ChecksConfig:
        thresholds = {key.removeprefix("thresholds."): value for key, value in values.items()
                      if key.startswith("thresholds.")}
        known = known_parameters() | set(values["extra_known_parameters"])
        return cls(CheckThresholds(**thresholds, known_parameters=known), frozenset(values["disabled"]),
                   values["silences"])


def known_parameters() -> frozenset[str]:
    """The consensus parameters tor knows, from agent/data/known-parameters.txt."""
    text = resources.files("agent").joinpath("data/known-parameters.txt").read_text()
    return frozenset(word for line in text.splitlines() if not line.startswith("#") for word in line.split())
