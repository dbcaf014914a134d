"""The network series the learned baselines watch, and ``NetworkBaselines``, the detector judging them.

Names read like PromQL selectors (``relays{flag="Guard"}``) and become the
``series`` tag of ``tor_anomaly``. Per-country churn and per-version counts
are kept to the largest countries and versions so the number of series
stays bounded (a version wave shows as the old versions' sudden drop).
Each series has its own ``baseline.SeriesModel``; one not seen for 30 days
(a version long gone, a retired authority) leaves the state.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from agent.detect.baseline import FLOW, LEVEL, UP, SeriesModel, SeriesSpec, Verdict
from agent.detect.facts import FLAG_BITS, PeriodFacts
from agent.detect.groups import Cluster
from agent.detect.protocol import BaseDetector, Period, Scores
from agent.detect.relays import RelayChanges
from agent.detect.settings import setting
from agent.model.findings import Finding, Severity
from agent.model.points import point

WATCHED_FLAGS = ("Running", "Valid", "Fast", "Stable", "Guard", "Exit", "HSDir", "BadExit")
TOP_COUNTRIES = 15
TOP_VERSIONS = 10

#: family -> how it is modelled. Floors: counts move by a few relays an hour on their own, weights and
#: bandwidths by a few per cent; a latency by a few hundred milliseconds.
SPECS = {
    "relays": SeriesSpec(LEVEL, floor_absolute=5, floor_relative=0.003),
    "relays_version": SeriesSpec(LEVEL, floor_absolute=5, floor_relative=0.01),
    "weight_total": SeriesSpec(LEVEL, floor_relative=0.02),
    "advertised_bandwidth": SeriesSpec(LEVEL, floor_relative=0.02),
    "joined": SeriesSpec(FLOW, UP, floor_absolute=5),
    "left": SeriesSpec(FLOW, UP, floor_absolute=5),
    "authority_vote_relays": SeriesSpec(LEVEL, floor_absolute=5, floor_relative=0.005),
    "authority_measured_relays": SeriesSpec(LEVEL, floor_absolute=5, floor_relative=0.01),
    "authority_total_measured_weight": SeriesSpec(LEVEL, floor_relative=0.02),
    "authority_consensus_latency_seconds": SeriesSpec(FLOW, UP, floor_absolute=0.5),
}
#: Series whose anomaly means lost capacity or a failing measurer: a warning rather than info.
WARNING_SERIES = frozenset({"relays", "left"})
WARNING_FAMILIES = frozenset({"authority_measured_relays"})


def family_of(name: str) -> str:
    return name.split("{", 1)[0]


def network_series(facts: PeriodFacts, changes: RelayChanges) -> dict[str, float]:
    """Series name -> value for this period (churn series only when the previous period is known)."""
    relays = facts.relays
    values = {"relays": float(len(relays)), "weight_total": float(relays.weight.sum())}
    if not np.isnan(relays.advertised).all():
        values["advertised_bandwidth"] = float(np.nansum(relays.advertised))
    for flag in WATCHED_FLAGS:
        values[f'relays{{flag="{flag}"}}'] = float(np.count_nonzero(relays.flags & FLAG_BITS[flag]))
    for version, count in Counter(v for v in relays.version if v).most_common(TOP_VERSIONS):
        values[f'relays_version{{version="{version}"}}'] = float(count)
    if changes.previous_known:
        values["joined"], values["left"] = float(len(changes.joined)), float(len(changes.left))
        joined_flags = relays.flags[changes.joined]
        for flag in WATCHED_FLAGS:
            bit = FLAG_BITS[flag]
            values[f'joined{{flag="{flag}"}}'] = float(np.count_nonzero(joined_flags & bit))
            values[f'left{{flag="{flag}"}}'] = float(np.count_nonzero(changes.left_flags & bit))
        top = [code for code, _ in Counter(relays.country).most_common(TOP_COUNTRIES) if code != "??"]
        joined_by = Counter(relays.country[i] for i in changes.joined)
        left_by = Counter(changes.left_country)
        for code in top:
            values[f'joined{{country="{code}"}}'] = float(joined_by.get(code, 0))
            values[f'left{{country="{code}"}}'] = float(left_by.get(code, 0))
    for nickname, measured in sorted(facts.authorities.items()):
        for name, value in measured.items():
            values[f'authority_{name}{{authority="{nickname}"}}'] = value
    return values


def severity_of(name: str) -> str:
    return Severity.WARNING if name in WARNING_SERIES or family_of(name) in WARNING_FAMILIES else Severity.INFO


def label_of(name: str) -> tuple[str, str] | None:
    """The one label of a series name (``joined{country="de"}`` -> ("country", "de")), or None."""
    if "{" not in name:
        return None
    key, _, value = name.split("{", 1)[1].rstrip("}").partition("=")
    return key, value.strip('"')


def spec_for(name: str) -> SeriesSpec:
    return SPECS[family_of(name)]



@dataclass(frozen=True)
class BaselineSettings:
    """The learned baselines' settings (field names as in DetectSettings, so either serves ``series_model``)."""

    warmup_periods: int = setting("detect.warmup_periods", 48, "positive_int")
    window_periods: int = setting("detect.window_periods", 168, "positive_int")
    z_threshold: float = setting("detect.z_threshold", 6.0, "positive_number")
    adapt_after: int = setting("detect.adapt_after", 3, "positive_int")


def series_model(name: str, season: int, settings) -> SeriesModel:
    """A new baseline for the named series, modelled as its family says (SPECS); ``settings``: BaselineSettings."""
    return SeriesModel(spec_for(name), season, settings.window_periods, settings.warmup_periods, settings.adapt_after)


WARMING = "TorAnomalyDetectionWarmingUp"
WARMING_SUMMARY = "Anomaly detection is still learning the network's baseline"
FORGET_AFTER_SECONDS = 30 * 86400
LIST_AT_MOST = 10  # relays named in one finding


class NetworkBaselines(BaseDetector):
    """A learned baseline per network series: ``TorAnomalySeries`` findings, and the warm-up while learning.

    For an arrivals series it names the relays involved, members of the
    groups the ``groups`` detector found first (so DETECTORS runs that one
    before this one).
    """

    name = "baseline"
    checks = {"TorAnomalySeries": "A network series left the range its learned baseline expects"}
    Settings = BaselineSettings

    def __init__(self, settings):
        super().__init__(settings)
        self.series: dict[str, SeriesModel] = {}

    def configure(self, settings) -> None:
        super().configure(settings)
        for model in getattr(self, "series", {}).values():
            model.configure(self.settings.warmup_periods, self.settings.adapt_after)

    def score_one(self, period: Period) -> Scores:
        facts, settings = period.facts, self.settings
        season = 86400 // facts.period_seconds if 0 < 86400 // facts.period_seconds <= 168 else 0
        verdicts = []
        for name, value in network_series(facts, period.changes).items():
            model = self.series.get(name)
            if model is None:
                model = self.series[name] = series_model(name, season, settings)
            model.resume(facts.time, facts.period_seconds)
            verdicts.append(model.judge(name, value, settings.z_threshold))
        clusters = period.details_of("groups")
        findings = [self._finding(verdict, period, clusters) for verdict in verdicts if verdict.anomalous]
        points = [point("tor_anomaly", {"detector": self.name, "series": v.series}, {
            "score": v.score, "observed": v.observed, "expected": v.expected, "expected_low": v.low,
            "expected_high": v.high, "anomalous": int(v.anomalous), "warming": int(v.warming)}, facts.time)
            for v in verdicts]
        warming = any(verdict.warming for verdict in verdicts if family_of(verdict.series) == "relays")
        return Scores(findings, points, verdicts, warming)

    def learn_one(self, period: Period) -> None:
        """Learns each series' value (anomalies kept out, see SeriesModel.learn), then says how far warm-up is."""
        facts, scores = period.facts, period.scores[self.name]
        for verdict in scores.details:
            self.series[verdict.series].learn(verdict.observed, verdict, facts.time, facts.period_seconds)
        for name in [name for name, model in self.series.items()
                     if facts.time - (model.last_time or facts.time) > FORGET_AFTER_SECONDS]:
            del self.series[name]
        if scores.warming:  # counted after learning: the periods learned including this one
            scores.findings.append(self._warming())

    def _finding(self, verdict: Verdict, period: Period, clusters: list[Cluster]) -> Finding:
        involved = _involved(verdict.series, period.facts.relays, period.changes, clusters)
        return self.finding("TorAnomalySeries", severity_of(verdict.series), {"series": verdict.series}, (
            f"{verdict.series} is {_number(verdict.observed)}; expected {_number(verdict.expected)} "
            f"(between {_number(max(verdict.low, 0))} and {_number(verdict.high)}), anomaly score "
            f"{verdict.score:.6f}{involved}"), {"observed": verdict.observed, "expected": verdict.expected,
                                                 "low": verdict.low, "high": verdict.high, "score": verdict.score})

    def _warming(self) -> Finding:
        warmup = self.settings.warmup_periods
        learned = min(model.periods_learned for name, model in self.series.items() if family_of(name) == "relays")
        remaining = warmup - learned
        text = (f"{learned} of {warmup} periods learned; learned baselines alert after {remaining} more (the "
                f"threshold rules already run)" if remaining > 0 else
                "the baselines re-anchor on this period after a gap in the recorded periods; they judge again "
                "from the next one")
        return Finding(WARMING, Severity.INFO, {}, WARMING_SUMMARY, text, {},
                       silenced_by="warming up: no alerts from learned baselines yet")

    @classmethod
    def label(cls, finding: Finding) -> str:
        return f"baseline {family_of(finding.subjects['series'])}"

    @classmethod
    def labels(cls) -> list[str]:
        return [f"baseline {family}" for family in SPECS]


def _involved(series: str, relays, changes: RelayChanges, clusters: list[Cluster]) -> str:
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
