"""The ``reports`` config section: whether the daemon mails subscribers a monthly report (docs/reports.md).

Its settings are listed as ``(key, default, converter name in agent.config.values)``;
the config loader mounts them under ``reports``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass(frozen=True)
class ReportsConfig:
    monthly: bool

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        # On the first period of each month (UTC), one mail per active subscription about the month before.
        ("monthly", True, "boolean"),
    )
