"""The ``schedule`` config section: when the loop polls for a new voting period and retries a failed one.

Its settings are listed as ``(key, default, converter name in agent.config.values)``;
the config loader mounts them under ``schedule``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class ScheduleConfig:
    poll_delay_seconds: float
    retry_seconds: float
    grace_seconds: float

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("poll_delay_seconds", 10, "non_negative_number"),
        ("retry_seconds", 30, "positive_number"),
        ("grace_seconds", 30, "non_negative_number"),
    )
