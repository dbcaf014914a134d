"""Runs the checks of one period and counts their findings as points (tor_health)."""

from __future__ import annotations

import logging

from agent.checks.catalog import CHECKS
from agent.checks.registry import Check, Context
from agent.model.findings import SEVERITIES, Finding, Hit, Silence
from agent.model.points import Point, point

log = logging.getLogger(__name__)


def run_checks(context: Context, silences: tuple[Silence, ...] = (), disabled: frozenset[str] = frozenset(),
               checks: tuple[Check, ...] = CHECKS) -> list[Finding]:
    """Every finding of every enabled check, most severe first; silenced ones are marked, not dropped."""
    findings = []
    for registered in checks:
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
                finding = Finding(**{**finding.__dict__,
                                     "silenced_by": f"{silence.reason} (until {silence.until:%Y-%m-%d %H:%M} UTC)"})
            findings.append(finding)
    return sorted(findings, key=Finding.sort_key)


def health_points(findings: list[Finding], time: int, checks: tuple[Check, ...] = CHECKS) -> list[Point]:
    """Active findings per check and severity (0 for quiet checks, so alert rules see a series)."""
    counts: dict[tuple[str, str], list[int]] = {}
    for registered in checks:
        for severity in SEVERITIES:
            counts[(registered.id, severity)] = [0, 0]
    for finding in findings:
        counts[(finding.check, finding.severity)][1 if finding.silenced_by else 0] += 1
    return [point("tor_health", {"check": check_id, "severity": severity}, {"active": active, "silenced": silenced},
                  time) for (check_id, severity), (active, silenced) in counts.items()]
