"""The ``alerts`` config section: where alerts go and how often (each notifier declares its own section).

Each class lists its settings as ``(key, default, converter name in agent.config.values)``;
the config loader mounts them under the section of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from agent.alerts.routes import Route
from agent.model.findings import SEVERITIES
from agent.model.retry import RetryPolicy


@dataclass(frozen=True)
class AlertsConfig:
    routes: tuple[Route, ...]
    suppression_hours: dict[str, float]
    per_alert_hours: dict[str, float]
    retry: RetryPolicy
    public_url: str | None
    flap_periods: int

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("routes", [], "routes"),
        # DocTor's suppression: info repeated after 24 h, warnings after 4 h, critical every period.
        ("suppression_hours.info", 24, "non_negative_number"),
        ("suppression_hours.warning", 4, "non_negative_number"),
        ("suppression_hours.critical", 0, "non_negative_number"),
        ("per_alert_hours", {}, "hours_by_alert"),
        ("retry.initial_delay_seconds", 30, "positive_number"),
        ("retry.max_delay_seconds", 1800, "positive_number"),
        ("public_url", None, "url"),
        # Alert quality (agent/alerts/quality.py): an alarm gone within this many evaluated periods is a flap.
        ("flap_periods", 3, "positive_int"),
    )

    @classmethod
    def from_settings(cls, values: dict[str, Any]) -> AlertsConfig:
        return cls(
            routes=values["routes"],
            suppression_hours={severity: values[f"suppression_hours.{severity}"] for severity in SEVERITIES},
            per_alert_hours=values["per_alert_hours"],
            retry=RetryPolicy(initial_delay_seconds=values["retry.initial_delay_seconds"],
                              max_delay_seconds=values["retry.max_delay_seconds"]),
            public_url=values["public_url"],
            flap_periods=values["flap_periods"],
        )

    def problems(self, section: str) -> list[str]:
        if self.retry.initial_delay_seconds > self.retry.max_delay_seconds:
            return [f"{section}.retry.initial_delay_seconds: must not exceed {section}.retry.max_delay_seconds"]
        return []
