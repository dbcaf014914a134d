"""What the alert engine works on: alerts (something wrong now) and notices (what to tell)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.model.findings import Finding


@dataclass(frozen=True)
class Alert:
    """One problem as seen this period.

    ``recipient`` is set for subscription alerts: they go to that subscriber
    only, never through the configured routes. ``wait_seconds`` is how long
    the problem must last before anyone is told (a relay down for 1 h).
    """

    id: str
    severity: str
    subjects: dict[str, str]
    summary: str
    description: str
    silenced: bool = False
    wait_seconds: int = 0
    recipient: str | None = None
    unsubscribe_token: str | None = None  # of the subscription, for the message footer
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable identity across periods: ID, subjects and recipient."""
        subjects = ",".join(f"{name}={value}" for name, value in sorted(self.subjects.items()))
        return f"{self.id}|{subjects}|{self.recipient or ''}"

    @property
    def label(self) -> str:
        """``TorAuthorityUnreachable (auth3, vote)``: the ID and its subjects' values (relays by name)."""
        if "relay" in self.subjects:
            return self.short_label
        values = [value for name, value in sorted(self.subjects.items()) if name != "subscription"]
        return f"{self.id} ({', '.join(values)})" if values else self.id

    @property
    def short_label(self) -> str:
        """``TorAuthorityUnreachable (auth3)``: the ID and its main subject, for subjects and summaries."""
        main = self.subjects.get("authority") or self.subjects.get("relay")
        if "relay" in self.subjects:
            main = " ".join(filter(None, (self.extra.get("name"), self.subjects["relay"][:8],
                                          self.subjects.get("flag"))))
        if main is None:
            values = [value for name, value in sorted(self.subjects.items()) if name != "subscription"]
            main = values[0] if values else None
        return f"{self.id} ({main})" if main else self.id

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, "subjects": self.subjects, "summary": self.summary,
                "description": self.description, "silenced": self.silenced, "wait_seconds": self.wait_seconds,
                "recipient": self.recipient, "unsubscribe_token": self.unsubscribe_token, "extra": self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        return cls(**data)


@dataclass(frozen=True)
class Notice:
    """Something to tell people: an alert that fires (again) or has resolved."""

    alert: Alert
    status: str  # firing | reminder | resolved
    first_seen: int  # Unix seconds
    now: int


def from_finding(finding: Finding) -> Alert:
    """An alert from a consensus-health Finding (agent.checks)."""
    return Alert(finding.check, finding.severity, dict(finding.subjects), finding.summary, finding.description,
                 silenced=finding.silenced_by is not None)
