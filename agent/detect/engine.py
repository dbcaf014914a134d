"""One detection step per period: score every detector first, then learn; findings and tor_anomaly points out.

The whole detector state (River models, relay columns, rule windows) is one
picklable object, saved atomically after each period and loaded at the
next, so a restarted agent resumes where it stopped instead of warming up
again. A period not newer than the last one learned is ignored (a rerun).
"""

from __future__ import annotations

import logging
import os
import pickle
import time as clock
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from agent.checks.registry import Finding
from agent.detect.baseline import SeriesModel, Verdict
from agent.detect.facts import FLAG_BITS, PeriodFacts
from agent.detect.groups import Cluster, find_clusters
from agent.detect.relays import RelayAnomaly, RelayMemory
from agent.detect.rules import RuleHit, RuleWindows, gained_flags
from agent.detect.settings import DetectSettings
from agent.detect.series import family_of, label_of, network_series, severity_of, spec_for
from agent.metrics.points import Point, point

log = logging.getLogger(__name__)

STATE_FILE = "detectors.pickle"
STATE_VERSION = 1
LIST_AT_MOST = 10  # relays named in one message

SUMMARIES = {
    "TorAnomalySeries": "A network series left the range its learned baseline expects",
    "TorAnomalyRelays": "Relays behave unlike their own history",
    "TorRelayGroupArrived": "Relays arrived together sharing traits (possible Sybil group)",
    "TorAnomalyRule": "A threshold rule of the Tor Project's monitoring fired",
    "TorAnomalyDetectionWarmingUp": "Anomaly detection is still learning the network's baseline",
}
RELAY_ANOMALY_TEXT = {"weight_jump": "consensus weight jumped", "flag_flapping": "flags keep changing",
                      "fewer_authorities": "listed by fewer authorities than usual"}


@dataclass
class DetectionResult:
    verdicts: list[Verdict] = field(default_factory=list)
    relay_anomalies: list[RelayAnomaly] = field(default_factory=list)
    rule_hits: list[RuleHit] = field(default_factory=list)
    clusters: list[Cluster] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    warming: bool = False
    skipped: bool = False


class Detector:
    """Every detector of the agent, as one object that pickles."""

    def __init__(self, settings: DetectSettings):
        self.version = STATE_VERSION
        self.settings = settings
        self.series: dict[str, SeriesModel] = {}
        self.relays = RelayMemory()
        self.rules = RuleWindows()
        self.last_time: int | None = None
        self.periods = 0

    def update(self, facts: PeriodFacts) -> DetectionResult:
        if self.last_time is not None and facts.time <= self.last_time:
            return DetectionResult(skipped=True)
        settings, relays = self.settings, facts.relays
        rows, unknown = self.relays.rows_of(relays)
        flags_before = self.relays.flags[rows].copy()
        changes = self.relays.changes(relays, rows, unknown, facts.time, facts.period_seconds)
        relay_anomalies = self.relays.anomalies(relays, rows, settings.thresholds)
        values = network_series(facts, changes)
        season = 86400 // facts.period_seconds if 0 < 86400 // facts.period_seconds <= 168 else 0
        verdicts = []
        for name, value in values.items():
            model = self.series.get(name)
            if model is None:
                model = self.series[name] = series_model(name, season, settings)
            model.resume(facts.time, facts.period_seconds)
            verdicts.append(model.judge(name, value, settings.z_threshold))
        joined_mask = np.zeros(len(relays), bool)
        joined_mask[changes.joined] = True  # relays seen for the first time are among the joined
        gained = gained_flags(relays, flags_before, joined_mask) if changes.previous_known else {}
        rule_hits = self.rules.evaluate(relays, changes, gained, facts.period_seconds, settings.thresholds)
        arrivals = relays.take(changes.joined)
        clusters = find_clusters(arrivals, self.relays.presence[rows[changes.joined]], settings.group_min_relays)
        for verdict in verdicts:
            self.series[verdict.series].learn(values[verdict.series], verdict, facts.time, facts.period_seconds)
        self.relays.learn(relays, rows, facts.time)
        self.last_time, self.periods = facts.time, self.periods + 1
        self._forget_series(facts.time)
        warming = any(verdict.warming for verdict in verdicts if family_of(verdict.series) == "relays")
        result = DetectionResult(verdicts, relay_anomalies, rule_hits, clusters, warming=warming)
        result.findings = self._findings(result, facts, changes)
        result.points = _points(result, facts.time)
        return result

    def _forget_series(self, time: int) -> None:
        """Series not seen for 30 days (a version long gone, a retired authority) leave the state."""
        for name in [name for name, model in self.series.items() if time - (model.last_time or time) > 30 * 86400]:
            del self.series[name]

    def _findings(self, result: DetectionResult, facts: PeriodFacts, changes) -> list[Finding]:
        relays = facts.relays
        findings = []
        for verdict in result.verdicts:
            if verdict.anomalous:
                involved = _involved(verdict.series, relays, changes, result.clusters)
                severity = severity_of(verdict.series)
                findings.append(_finding("TorAnomalySeries", severity, {"series": verdict.series}, (
                    f"{verdict.series} is {_number(verdict.observed)}; expected {_number(verdict.expected)} "
                    f"(between {_number(max(verdict.low, 0))} and {_number(verdict.high)}), anomaly score "
                    f"{verdict.score:.6f}{involved}"), {"observed": verdict.observed, "expected": verdict.expected,
                                     "low": verdict.low, "high": verdict.high, "score": verdict.score}))
        by_kind: dict[str, list[RelayAnomaly]] = {}
        for anomaly in result.relay_anomalies:
            by_kind.setdefault(anomaly.kind, []).append(anomaly)
        for kind, found in sorted(by_kind.items()):
            found.sort(key=lambda anomaly: -anomaly.score)
            listed = "; ".join(f"{a.nickname} ({a.fingerprint}): {a.detail}" for a in found[:LIST_AT_MOST])
            findings.append(_finding("TorAnomalyRelays", "info", {"kind": kind},
                                     f"{len(found)} relays: {RELAY_ANOMALY_TEXT[kind]}: {listed}",
                                     {"relays": len(found)}))
        for cluster in result.clusters:
            # find_clusters gathers groups by strong traits only; without a shared contact it is undeclared.
            severity = ("warning" if cluster.size >= self.settings.group_warning_relays
                        or "operator" not in cluster.shared else "info")
            shared = ", ".join(f"{trait} {value}" for trait, value in cluster.shared.items())
            examples = ", ".join(f"{nick} ({fp})" for nick, fp in
                                 list(zip(cluster.nicknames, cluster.fingerprints))[:LIST_AT_MOST])
            findings.append(_finding("TorRelayGroupArrived", severity, {"group": " ".join(cluster.found_by)},
                                     f"{cluster.size} relays arrived this period sharing {shared}; e.g. {examples}",
                                     {"relays": cluster.size}))
        for hit in result.rule_hits:
            findings.append(_finding("TorAnomalyRule", hit.severity, {"rule": hit.rule, **({"key": hit.key}
                                                                                          if hit.key else {})},
                                     hit.description, {"observed": hit.observed, "threshold": hit.threshold}))
        if result.warming:
            learned = min(model.periods_learned for name, model in self.series.items() if family_of(name) == "relays")
            remaining = self.settings.warmup_periods - learned
            text = (f"{learned} of {self.settings.warmup_periods} periods learned; learned baselines alert after "
                    f"{remaining} more (the threshold rules already run)" if remaining > 0 else
                    "the baselines re-anchor on this period after a gap in the recorded periods; they judge "
                    "again from the next one")
            findings.append(Finding("TorAnomalyDetectionWarmingUp", "info", {}, SUMMARIES[
                "TorAnomalyDetectionWarmingUp"], text, {}, silenced_by="warming up: no alerts from learned "
                                                                       "baselines yet"))
        return findings


def series_model(name: str, season: int, settings: DetectSettings) -> SeriesModel:
    """A new baseline for the named series, modelled as its family says (agent.detect.series.SPECS)."""
    return SeriesModel(spec_for(name), season, settings.window_periods, settings.warmup_periods, settings.adapt_after)


def _finding(check: str, severity: str, subjects: dict, description: str, values: dict) -> Finding:
    return Finding(check, severity, subjects, SUMMARIES[check], description, values)


def _involved(series: str, relays, changes, clusters: list[Cluster]) -> str:
    """"; e.g. ..." naming up to ten of the relays behind an arrivals or departures series (its flag or
    country only), or "" for other series."""
    family, label = family_of(series), label_of(series)
    if family == "joined":
        rows = changes.joined
        if label and label[0] == "flag":
            rows = rows[(relays.flags[rows] & FLAG_BITS[label[1]]) != 0]
        elif label and label[0] == "country":
            rows = np.array([row for row in rows if relays.country[row] == label[1]], np.int64)
        return "; e.g. " + _arrivals(relays, rows, clusters) if len(rows) else ""
    if family == "left":
        gone = list(range(len(changes.left)))
        if label and label[0] == "flag":
            gone = [i for i in gone if changes.left_flags[i] & FLAG_BITS[label[1]]]
        elif label and label[0] == "country":
            gone = [i for i in gone if changes.left_country[i] == label[1]]
        return "; e.g. " + ", ".join(changes.left[i] for i in gone[:LIST_AT_MOST]) if gone else ""
    return ""


def _arrivals(relays, joined, clusters: list[Cluster]) -> str:
    """Up to ten arrivals, members of the largest group first (they are what the person will look at)."""
    grouped = [fingerprint for cluster in clusters for fingerprint in cluster.fingerprints]
    order = {fingerprint: rank for rank, fingerprint in enumerate(grouped)}
    rows = sorted(joined, key=lambda row: order.get(relays.fingerprint[row], len(order)))[:LIST_AT_MOST]
    return ", ".join(f"{relays.nickname[i]} ({relays.fingerprint[i]})" for i in rows)


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _points(result: DetectionResult, time: int) -> list[Point]:
    points = [point("tor_anomaly", {"detector": "baseline", "series": v.series}, {
        "score": v.score, "observed": v.observed, "expected": v.expected, "expected_low": v.low,
        "expected_high": v.high, "anomalous": int(v.anomalous), "warming": int(v.warming)}, time)
        for v in result.verdicts]
    counts = {kind: 0 for kind in RELAY_ANOMALY_TEXT}
    for anomaly in result.relay_anomalies:
        counts[anomaly.kind] += 1
    points += [point("tor_anomaly", {"detector": "relays", "series": kind}, {"anomalous": count}, time)
               for kind, count in counts.items()]
    largest = max((cluster.size for cluster in result.clusters), default=0)
    points.append(point("tor_anomaly", {"detector": "groups", "series": "largest_arrival_group"},
                        {"observed": largest, "anomalous": len(result.clusters)}, time))
    return points


class DetectorFile:
    """The pickled detector state in the state directory; a damaged file is set aside, never fatal."""

    def __init__(self, state_dir: Path, settings: DetectSettings):
        self.path, self.settings = Path(state_dir) / STATE_FILE, settings

    def load(self) -> Detector:
        if not self.path.exists():
            return Detector(self.settings)
        try:
            with self.path.open("rb") as handle:
                detector = pickle.load(handle)
            if getattr(detector, "version", None) != STATE_VERSION:
                raise ValueError(f"state version {getattr(detector, 'version', None)}, expected {STATE_VERSION}")
        except Exception as error:  # noqa: BLE001 -- any unreadable state means: start learning again
            aside = self.path.with_suffix(f".unreadable-{int(clock.time())}")
            self.path.rename(aside)
            log.error("detector state %s is unreadable (%s); moved to %s, detection warms up again",
                      self.path, error, aside.name)
            return Detector(self.settings)
        detector.settings = self.settings  # thresholds follow the config, the learned state is kept
        for model in detector.series.values():
            model.configure(self.settings.warmup_periods, self.settings.adapt_after)
        return detector

    def save(self, detector: Detector) -> None:
        temporary = self.path.with_suffix(".tmp")
        with temporary.open("wb") as handle:
            pickle.dump(detector, handle, protocol=pickle.HIGHEST_PROTOCOL)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
