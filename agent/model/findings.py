"""Findings: what a check or a detector saw in one period, with one severity vocabulary.

Check findings and anomalies are the same type, so alerting, the state and
the reports treat them alike. A ``Hit`` is what one check function returns;
the check registry turns it into a Finding with the check's ID and summary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    """How urgent: critical = act now; warning = act soon; info = worth knowing."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


#: Most severe first: the order reports, sorting and alert routing use.
SEVERITIES: tuple[str, ...] = tuple(severity.value for severity in Severity)


def severity_rank(severity: str) -> int:
    """0 for critical, 1 for warning, 2 for info (raises ValueError for anything else)."""
    return SEVERITIES.index(severity)


@dataclass(frozen=True)
class Hit:
    """What a check found: the subjects, a description with the observed values, and those values."""

    subjects: dict[str, str]
    description: str
    values: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None  # overrides the check's default (e.g. DocTor's ERROR above 3 stale authorities)


@dataclass(frozen=True)
class Finding:
    """One problem seen in a period, by a check or a detector; ``check`` is its stable ID."""

    check: str
    severity: str
    subjects: dict[str, str]
    summary: str
    description: str
    values: dict[str, Any]
    silenced_by: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "severity", Severity(self.severity))

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "severity": str(self.severity), "subjects": self.subjects,
                "summary": self.summary, "description": self.description, "values": self.values,
                "silenced_by": self.silenced_by}

    def sort_key(self) -> tuple[int, str, list[tuple[str, str]]]:
        """Most severe first, then by ID and subjects."""
        return severity_rank(self.severity), self.check, sorted(self.subjects.items())


@dataclass(frozen=True)
class Silence:
    """Mutes a check (optionally for one authority) until a time; set in the config, never in code."""

    check: str
    until: datetime  # naive UTC
    reason: str
    authority: str | None = None

    def covers(self, finding: Finding, now: datetime) -> bool:
        return (now < self.until and self.check == finding.check
                and (self.authority is None or finding.subjects.get("authority") == self.authority))
