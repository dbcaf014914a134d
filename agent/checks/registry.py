"""The one check registry: pure checks over a Snapshot, findings as data, silences applied.

A check is a function ``(context) -> iterable of Hit``; the registry gives
each hit its check's stable ID, severity and static summary. Thresholds come
from the config (DocTor's values by default); silences and maintenance
windows mute a check, optionally for one authority, until a given time, so
a known problem is muted without editing code (DocTor commented checks out).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from agent.snapshot import Snapshot

log = logging.getLogger(__name__)

SEVERITIES = ("critical", "warning", "info")


@dataclass(frozen=True)
class Hit:
    """What a check found: the subjects, a description with the observed values, and those values."""

    subjects: dict[str, str]
    description: str
    values: dict = field(default_factory=dict)
    severity: str | None = None  # overrides the check's default (e.g. DocTor's ERROR above 3 stale authorities)


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    subjects: dict[str, str]
    summary: str
    description: str
    values: dict
    silenced_by: str | None = None

    def as_dict(self) -> dict:
        return {"check": self.check, "severity": self.severity, "subjects": self.subjects, "summary": self.summary,
                "description": self.description, "values": self.values, "silenced_by": self.silenced_by}


@dataclass(frozen=True)
class Context:
    """What checks may read: the snapshot, the time, thresholds, and memory of earlier periods."""

    snapshot: Snapshot
    now: datetime  # naive UTC, like stem's datetimes
    thresholds: dict
    bandwidth_authorities: frozenset[str] = frozenset()  # nicknames whose recent votes carried Measured=


@dataclass(frozen=True)
class Check:
    id: str
    severity: str
    summary: str
    doctor: str  # the DocTor template it replaces, or "new"
    run: Callable[[Context], Iterable[Hit]]


@dataclass(frozen=True)
class Silence:
    check: str
    until: datetime  # naive UTC
    reason: str
    authority: str | None = None

    def covers(self, finding: Finding, now: datetime) -> bool:
        return (now < self.until and self.check == finding.check
                and (self.authority is None or finding.subjects.get("authority") == self.authority))


REGISTRY: list[Check] = []


def check(check_id: str, severity: str, summary: str, doctor: str = "new"):
    """Registers a check function under a stable ID."""
    assert severity in SEVERITIES and check_id.startswith("Tor"), check_id

    def register(function: Callable[[Context], Iterable[Hit]]):
        assert all(existing.id != check_id for existing in REGISTRY), f"{check_id} registered twice"
        REGISTRY.append(Check(check_id, severity, summary, doctor, function))
        return function

    return register


def run_checks(context: Context, silences: tuple[Silence, ...] = (), disabled: frozenset[str] = frozenset()
               ) -> list[Finding]:
    """Every finding of every enabled check, most severe first; silenced ones are marked, not dropped."""
    import agent.checks.all  # noqa: F401  (registers the checks)

    findings = []
    for registered in REGISTRY:
        if registered.id in disabled:
            continue
        try:
            hits = list(registered.run(context))
        except Exception:  # a broken check must not hide the others' findings
            log.exception("check %s failed", registered.id)
            hits = [Hit({}, "the check itself failed: see the agent log", severity="warning")]
        for hit in hits:
            finding = Finding(registered.id, hit.severity or registered.severity, hit.subjects,
                              registered.summary, hit.description, hit.values)
            silence = next((s for s in silences if s.covers(finding, context.now)), None)
            if silence is not None:
                finding = Finding(**{**finding.__dict__, "silenced_by": f"{silence.reason} (until {silence.until:%Y-%m-%d %H:%M} UTC)"})
            findings.append(finding)
    return sorted(findings, key=lambda f: (SEVERITIES.index(f.severity), f.check, sorted(f.subjects.items())))
