"""The ``store`` and ``query`` config sections: where points are written to and read back from.

Each class lists its settings as ``(key, default, converter name in agent.config.values)``;
the config loader mounts them under the section of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from agent.model.retry import RetryPolicy


@dataclass(frozen=True)
class StoreConfig:
    url: str | None
    org: str
    bucket: str
    token_env: str
    timeout_seconds: float
    batch_lines: int
    outbox_max_bytes: int
    retry: RetryPolicy

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("url", None, "url"),
        ("org", "tor", "name"),
        ("bucket", "tor", "name"),
        ("token_env", "ALLIUM_INFLUX_TOKEN", "env_name"),
        ("timeout_seconds", 10, "positive_number"),
        ("batch_lines", 5000, "positive_int"),
        ("outbox_max_bytes", 1073741824, "positive_int"),
        ("retry.attempts", 3, "positive_int"),
        ("retry.initial_delay_seconds", 1, "non_negative_number"),
        ("retry.max_delay_seconds", 30, "non_negative_number"),
    )

    @classmethod
    def from_settings(cls, values: dict[str, Any]) -> StoreConfig:
        plain = {key: value for key, value in values.items() if not key.startswith("retry.")}
        retry = {key.removeprefix("retry."): value for key, value in values.items() if key.startswith("retry.")}
        return cls(**plain, retry=RetryPolicy(**retry))

    def problems(self, section: str) -> list[str]:
        if self.retry.initial_delay_seconds > self.retry.max_delay_seconds:
            return [f"{section}.retry.initial_delay_seconds: must not exceed {section}.retry.max_delay_seconds"]
        return []


@dataclass(frozen=True)
class QueryConfig:
    url: str | None
    timeout_seconds: float

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("url", None, "url"),
        ("timeout_seconds", 30, "positive_number"),
    )
