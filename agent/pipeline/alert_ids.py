"""Every alert ID the period flow can raise, by alert-quality scope: the checks, the detectors' findings and
the relay operators' subscription alerts.

Alert quality (``agent.alerts.quality``) is counted from the alerts that
entered the alert book; without this list a check that never fired would
be missing from ``alerts status`` and the self-metrics instead of showing
its 0 alarms. The alerts stage may not import the checks, detectors or
subscriptions, so the list is put together here, where the stages meet.
"""

from __future__ import annotations

from agent.alerts.quality import FINDINGS, SUBSCRIPTIONS


def alert_ids() -> dict[str, tuple[str, ...]]:
    """Scope -> the sorted alert IDs it can raise (``TorAuthorityClockSkew``, ``TorAnomalySeries``, ...)."""
    from agent.checks.catalog import CHECKS
    from agent.detect.engine import DETECTORS
    from agent.detect.incident import INCIDENT
    from agent.detect.series import WARMING
    from agent.subscriptions.events import ALERTS

    findings = {check.id for check in CHECKS} | {INCIDENT, WARMING}
    findings |= {name for detector in DETECTORS for name in detector.checks}
    return {FINDINGS: tuple(sorted(findings)), SUBSCRIPTIONS: tuple(sorted(ALERTS))}
