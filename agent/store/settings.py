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
    embedded: bool
    embedded_binary: str
    embedded_port: int
    embedded_retention_years: int
    retry: RetryPolicy

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("url", None, "url"),
        ("org", "tor", "name"),
        ("bucket", "tor", "name"),
        ("token_env", "ALLIUM_INFLUX_TOKEN", "env_name"),
        ("timeout_seconds", 10, "positive_number"),
        ("batch_lines", 5000, "positive_int"),
        ("outbox_max_bytes", 1073741824, "positive_int"),
        # With no url: the agent's own VictoriaMetrics on 127.0.0.1 (agent/store/embedded.py).
        ("embedded", True, "boolean"),
        ("embedded_binary", "victoria-metrics", "path"),
        ("embedded_port", 8428, "positive_int"),
        ("embedded_retention_years", 100, "positive_int"),
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
        problems = []
        if self.retry.initial_delay_seconds > self.retry.max_delay_seconds:
            problems.append(f"{section}.retry.initial_delay_seconds: must not exceed {section}.retry.max_delay_seconds")
        if self.embedded_port > 65535:
            problems.append(f"{section}.embedded_port: must be a TCP port (1-65535), got {self.embedded_port}")
        return problems

    @property
    def uses_embedded(self) -> bool:
        """True when the agent runs its own store: no url configured and the embedded store not switched off."""
        return self.url is None and self.embedded


@dataclass(frozen=True)
class QueryConfig:
    url: str | None
    timeout_seconds: float

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("url", None, "url"),
        ("timeout_seconds", 30, "positive_number"),
    )
