"""One incident, one alert: when several detectors fire in one period, one finding lists what each saw.

A network event rarely moves one series: 850 relays arriving at once raise
the arrivals baseline, the Guard or Exit arrivals, the DocTor rule and a
group finding. Sent separately that is a burst of alerts for one change,
and the severity would be whichever spoke loudest. So when two or more
findings of the detectors fire in a period they become one
``TorAnomalyIncident`` (subject-less: the network has one incident at a
time, which stays open while detectors keep firing and resolves when they
stop); each part is kept, recorded and shown, silenced as "part of" it.
Its severity is the largest of the parts' (the magnitude, which each
detector grades), raised to a warning when three or more detectors
independently saw the change at info (corroboration); never above what a
part could justify plus one step, and never critical from corroboration.
"""

from __future__ import annotations

from dataclasses import replace

from agent.model.findings import Finding, Severity, severity_rank

INCIDENT = "TorAnomalyIncident"
INCIDENT_SUMMARY = "Several anomaly detectors saw one change in the network"
PART_OF = f"part of {INCIDENT}"
CORROBORATING_DETECTORS = 3  # detectors (not findings) seeing the same period for info parts to make a warning
LISTED_AT_MOST = 8  # parts quoted in the incident's description


def merge(findings_by_detector: dict[str, list[Finding]]) -> dict[str, list[Finding]]:
    """The detectors' findings with, when two or more fired, the parts silenced and the incident added
    (under the key ``INCIDENT``). Findings already silenced (a warm-up) are left as they are."""
    firing = {name: [f for f in findings if f.silenced_by is None] for name, findings in findings_by_detector.items()}
    parts = [(name, finding) for name, findings in firing.items() for finding in findings]
    if len(parts) < 2:
        return findings_by_detector
    merged = {name: [replace(f, silenced_by=PART_OF) if f.silenced_by is None else f for f in findings]
              for name, findings in findings_by_detector.items()}
    merged[INCIDENT] = [incident(parts)]
    return merged


def incident(parts: list[tuple[str, Finding]]) -> Finding:
    """The one finding for a period's firing parts (detector name, finding)."""
    ordered = sorted(parts, key=lambda part: part[1].sort_key())
    severity = ordered[0][1].severity
    detectors = {name for name, _ in parts}
    if severity == Severity.INFO and len(detectors) >= CORROBORATING_DETECTORS:
        severity = Severity.WARNING
    listed = "; ".join(f"[{name}] {finding.description}" for name, finding in ordered[:LISTED_AT_MOST])
    more = f"; and {len(ordered) - LISTED_AT_MOST} more" if len(ordered) > LISTED_AT_MOST else ""
    description = (f"{len(ordered)} findings from {len(detectors)} detectors ({', '.join(sorted(detectors))}): "
                   f"{listed}{more}")
    return Finding(INCIDENT, severity, {}, INCIDENT_SUMMARY, description,
                   {"parts": len(ordered), "detectors": len(detectors),
                    "most_severe_rank": severity_rank(ordered[0][1].severity)})
