"""The network series the learned baselines watch, and ``NetworkBaselines``, the detector judging them.

Names read like PromQL selectors (``flag_lost{flag="Guard"}``) and become the
``series`` tag of ``tor_anomaly``. Churn is watched as flows (relays joining
and leaving; a flag's holders arriving and leaving; a flag won or lost by
relays that stay), not as the levels they move: a level's change is their
sum, and judging both alarmed twice for one event. Per-version counts are
kept to the largest versions so the number of series stays bounded (a
version wave shows as the old versions' sudden drop). Per-country churn is
not watched: on real 2024-2025 history its series alarmed in hours where the
network did nothing unusual, a country being a poor proxy for one operator
(the groups detector's /24 and /16 blocks are better ones).
Each series has its own ``baseline.SeriesModel``; one not seen for 30 days
(a version long gone, a retired authority) leaves the state, and past
``MAX_SERIES`` those seen longest ago leave first.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from agent.detect.baseline import FLOW, LEVEL, REVERSAL_PERIODS, UP, SeriesModel, SeriesSpec, Verdict
from agent.detect.facts import FLAG_BITS, PeriodFacts
from agent.detect.groups import Cluster
from agent.detect.protocol import BaseDetector, Period, Scores
from agent.detect.relays import RelayChanges, block24
from agent.detect.settings import setting
from agent.model.findings import Finding, Severity
from agent.model.points import point

#: Flags whose holders joining or leaving (relays new or gone) are watched, and those whose gains and losses
#: among relays listed in both periods are. Running and Valid are left out: the consensus lists only relays
#: with both, so they move with the relays themselves.
ARRIVING_FLAGS = ("Guard", "Exit")
CHANGING_FLAGS = ("Guard", "Exit", "Stable", "Fast", "HSDir", "BadExit")
TOP_VERSIONS = 10

#: family -> how it is modelled. The relative floors are shares of the population the series counts from
#: (the relays, a flag's holders, the level itself): joining or leaving, 1 % of the relays (2024-2025: the
#: 99.9th percentile of an hour's joiners is 2.7 % of the network, the median 0.3 %); a flag's holders
#: arriving or leaving 3 %; a flag won or lost by relays that stay, 5 % of its holders (the bandwidth
#: authorities' thresholds move a few per cent of the Guards in ordinary hours); an authority's vote 1 %.
SPECS = {
    "relays_version": SeriesSpec(LEVEL, floor_absolute=20, floor_relative=0.05),
    "weight_total": SeriesSpec(LEVEL, floor_relative=0.05),
    "advertised_bandwidth": SeriesSpec(LEVEL, floor_relative=0.05),
    "joined": SeriesSpec(FLOW, UP, floor_absolute=20, floor_relative=0.01),
    "left": SeriesSpec(FLOW, UP, floor_absolute=20, floor_relative=0.01),
    "flag_joined": SeriesSpec(FLOW, UP, floor_absolute=20, floor_relative=0.03),
    "flag_left": SeriesSpec(FLOW, UP, floor_absolute=20, floor_relative=0.03),
    "flag_gained": SeriesSpec(FLOW, UP, floor_absolute=20, floor_relative=0.05),
    "flag_lost": SeriesSpec(FLOW, UP, floor_absolute=20, floor_relative=0.05),
    "returned_soon": SeriesSpec(FLOW, UP, floor_absolute=20, floor_relative=0.01),
    "left_young": SeriesSpec(FLOW, UP, floor_absolute=20, floor_relative=0.005),
    "joined_block_max": SeriesSpec(FLOW, UP, floor_absolute=20),
    "left_block_max": SeriesSpec(FLOW, UP, floor_absolute=20),
    "authority_vote_relays": SeriesSpec(LEVEL, floor_absolute=10, floor_relative=0.01),
    "authority_measured_relays": SeriesSpec(LEVEL, floor_absolute=10, floor_relative=0.01),
    "authority_total_measured_weight": SeriesSpec(LEVEL, floor_relative=0.05),
    "authority_consensus_latency_seconds": SeriesSpec(FLOW, UP, floor_absolute=2.0),
}


#: Flows that undo each other: an anomaly of one may be reversed by the other (same labels) within
#: REVERSAL_PERIODS; the reversal is judged, told as such, info at most, and never learned.
COUNTERPARTS = {"joined": "left", "left": "joined", "flag_joined": "flag_left", "flag_left": "flag_joined",
                "flag_gained": "flag_lost", "flag_lost": "flag_gained"}


def family_of(name: str) -> str:
    return name.split("{", 1)[0]


def counterpart_of(name: str) -> str | None:
    """The flow that would undo this one (``flag_lost{flag="Guard"}`` -> ``flag_gained{flag="Guard"}``)."""
    family = family_of(name)
    other = COUNTERPARTS.get(family)
    return None if other is None else other + name[len(family):]


def network_series(facts: PeriodFacts, changes: RelayChanges,
                   flags_before: np.ndarray | None = None) -> dict[str, tuple[float, float | None]]:
    """Series name -> (value, the population it counts from or None) for this period.

    Churn series only when the previous recorded period is known (``changes.previous_known``, after a gap
    too); ``flags_before``: each relay's flags in the memory before this period (for gains and losses).
    """
    relays = facts.relays
    values: dict[str, tuple[float, float | None]] = {}
    weight = relays.weight[~np.isnan(relays.weight)]
    if len(weight) and weight.any():
        values["weight_total"] = (float(weight.sum()), None)
    if not np.isnan(relays.advertised).all():
        values["advertised_bandwidth"] = (float(np.nansum(relays.advertised)), None)
    for version, count in Counter(v for v in relays.version if v).most_common(TOP_VERSIONS):
        values[f'relays_version{{version="{version}"}}'] = (float(count), None)
    if changes.previous_known:
        before = max(changes.previous_size, len(relays))
        values["joined"], values["left"] = (float(len(changes.joined)), before), (float(len(changes.left)), before)
        values["returned_soon"] = (float(changes.returned_soon), before)
        values["left_young"] = (float(changes.left_young), before)
        values["joined_block_max"] = (_largest_block(block24([relays.address[i] for i in changes.joined])), None)
        values["left_block_max"] = (_largest_block(changes.left_blocks), None)
        holders = {flag: float(np.count_nonzero(relays.flags & FLAG_BITS[flag])) for flag in CHANGING_FLAGS}
        joined_flags = relays.flags[changes.joined]
        for flag in ARRIVING_FLAGS:
            bit = FLAG_BITS[flag]
            left = float(np.count_nonzero(changes.left_flags & bit))
            arrived = float(np.count_nonzero(joined_flags & bit))
            values[f'flag_joined{{flag="{flag}"}}'] = (arrived, holders[flag] + left)
            values[f'flag_left{{flag="{flag}"}}'] = (left, holders[flag] + left)
        if flags_before is not None:
            stayed = np.ones(len(relays), bool)
            stayed[changes.joined] = False
            now, then = relays.flags[stayed], flags_before[stayed]
            for flag in CHANGING_FLAGS:
                bit = FLAG_BITS[flag]
                had, has = (then & bit) != 0, (now & bit) != 0
                population = max(holders[flag], float(np.count_nonzero(had)))
                if population:
                    values[f'flag_gained{{flag="{flag}"}}'] = (float(np.count_nonzero(has & ~had)), population)
                    values[f'flag_lost{{flag="{flag}"}}'] = (float(np.count_nonzero(had & ~has)), population)
    for nickname, measured in sorted(facts.authorities.items()):
        for name, value in measured.items():
            values[f'authority_{name}{{authority="{nickname}"}}'] = (value, None)
    return values


def _largest_block(blocks: np.ndarray) -> float:
    """How many of the relays share the commonest IPv4 /24 (0 when none has one)."""
    known = blocks[blocks != 0]
    return float(np.unique(known, return_counts=True)[1].max()) if len(known) else 0.0


#: Concentrated churn (one /24's relays leaving or coming back together), relays back within hours, fresh
#: relays leaving again: an operator's restart or outage, or a flood's end, far more often than an attack
#: (never-seen relays gathering are the groups detector's, the flood's arrival the arrivals'): info at most.
INFO_ONLY = frozenset({"joined_block_max", "left_block_max", "returned_soon", "left_young"})


def _network_wide(verdicts: list[Verdict]) -> set[str]:
    """The per-authority families anomalous for most authorities at once (at least AGREEING_AUTHORITIES):
    the network changed (Heartbleed's rejections, LizardNSA's flood moved every vote), not one authority."""
    reporting: Counter = Counter(family_of(v.series) for v in verdicts if v.series.startswith("authority_"))
    anomalous: Counter = Counter(family_of(v.series) for v in verdicts
                                 if v.series.startswith("authority_") and v.anomalous)
    return {family for family, count in anomalous.items()
            if count >= max(AGREEING_AUTHORITIES, (reporting[family] + 1) // 2)}


#: Authorities whose series must move together for a per-authority anomaly to be more than info ...
AGREEING_AUTHORITIES = 3
#: ... except a bandwidth authority's measured count: one measurer losing its measurements shifts the
#: consensus weights (the median of fewer measurers) by itself.
ALONE_MATTERS = frozenset({"authority_measured_relays"})


def severity_of(verdict: Verdict, warning_ratio: float) -> str:
    """A warning from ``warning_ratio`` times the limit: the magnitude, not the series, makes the severity."""
    if family_of(verdict.series) in INFO_ONLY or verdict.reversal:
        return Severity.INFO
    return Severity.WARNING if verdict.score >= warning_ratio else Severity.INFO


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
    window_periods: int = setting("detect.window_periods", 672, "positive_int")
    tail_multiple: float = setting("detect.tail_multiple", 1.5, "positive_number")
    warning_ratio: float = setting("detect.warning_ratio", 2.5, "positive_number")
    adapt_after: int = setting("detect.adapt_after", 3, "positive_int")


def series_model(name: str, settings) -> SeriesModel:
    """A new baseline for the named series, modelled as its family says (SPECS); ``settings``: BaselineSettings."""
    return SeriesModel(spec_for(name), settings.window_periods, settings.warmup_periods, settings.adapt_after)


WARMING = "TorAnomalyDetectionWarmingUp"
#: The series whose warm-up is the detector's: churn when relays are known, else an authority's vote size.
WARMING_FAMILIES = frozenset({"joined", "authority_vote_relays"})
WARMING_SUMMARY = "Anomaly detection is still learning the network's baseline"
FORGET_AFTER_SECONDS = 30 * 86400
#: Series kept at most (a few kB each). A period has about 110 (the top versions and countries, each authority's
#: four); only names churning faster than versions do (a flood of made-up versions) could reach this.
MAX_SERIES = 1000
LIST_AT_MOST = 10  # relays named in one finding


class NetworkBaselines(BaseDetector):
    """A learned baseline per network series: ``TorAnomalySeries`` findings, and the warm-up while learning.

    For an arrivals series it names the relays involved, members of the
    groups the ``groups`` detector found first (so DETECTORS runs that one
    before this one).
    """

    name = "baseline"
    STATE_VERSION = 2  # 2: judged by the change's rolling tail (1: a Gaussian over a seasonal forecast's misses)
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
        verdicts = []
        for name, (value, population) in network_series(facts, period.changes, period.flags_before).items():
            model = self.series.get(name)
            if model is None:
                model = self.series[name] = series_model(name, settings)
            model.resume(facts.time, facts.period_seconds)
            verdicts.append(model.judge(name, value, settings.tail_multiple, population))
        clusters = period.details_of("groups")
        network_wide = _network_wide(verdicts)
        findings = [self._finding(verdict, period, clusters, network_wide) for verdict in verdicts if verdict.anomalous]
        points = [point("tor_anomaly", {"detector": self.name, "series": v.series}, {
            "score": v.score, "observed": v.observed, "expected": v.expected, "expected_low": v.low,
            "expected_high": v.high, "anomalous": int(v.anomalous), "warming": int(v.warming)}, facts.time)
            for v in verdicts]
        own = [verdict for verdict in verdicts if family_of(verdict.series) in WARMING_FAMILIES]
        warming = not own or any(verdict.warming for verdict in own)
        return Scores(findings, points, verdicts, warming)

    def learn_one(self, period: Period) -> None:
        """Learns each series' value (anomalies kept out, see SeriesModel.learn), then says how far warm-up is."""
        facts, scores = period.facts, period.scores[self.name]
        for verdict in scores.details:
            self.series[verdict.series].learn(verdict.observed, verdict, facts.time, facts.period_seconds)
        until = facts.time + REVERSAL_PERIODS * facts.period_seconds
        for verdict in scores.details:
            counterpart = counterpart_of(verdict.series)
            if verdict.anomalous and not verdict.reversal and counterpart in self.series:
                self.series[counterpart].expect_reversal(verdict.observed, until)
        self._forget(facts.time)
        if scores.warming:  # counted after learning: the periods learned including this one
            scores.findings.append(self._warming())

    def _forget(self, time: int) -> None:
        """Drops series not seen for FORGET_AFTER_SECONDS, then (past MAX_SERIES) those seen longest ago."""
        seen = {name: time if model.last_time is None else model.last_time for name, model in self.series.items()}
        kept = [name for name, last in seen.items() if time - last <= FORGET_AFTER_SECONDS]
        kept.sort(key=seen.__getitem__, reverse=True)  # the newest first; stable, so ties keep their order
        for name in set(seen) - set(kept[:MAX_SERIES]):
            del self.series[name]

    def _finding(self, verdict: Verdict, period: Period, clusters: list[Cluster], network_wide: set[str]) -> Finding:
        involved = _involved(verdict.series, period.facts.relays, period.changes, clusters)
        severity = severity_of(verdict, self.settings.warning_ratio)
        family = family_of(verdict.series)
        if family.startswith("authority_") and family not in network_wide | ALONE_MATTERS:
            severity = Severity.INFO  # one authority's own change: its health checks say more
        return self.finding("TorAnomalySeries", severity, {"series": verdict.series}, (
            f"{verdict.series} is {_number(verdict.observed)}; expected {_number(verdict.expected)} "
            f"(between {_number(max(verdict.low, 0))} and {_number(verdict.high)}), anomaly score "
            f"{verdict.score:.6f}{_reverses(verdict)}{involved}"), {
                "observed": verdict.observed, "expected": verdict.expected, "low": verdict.low,
                "high": verdict.high, "score": verdict.score})

    def _warming(self) -> Finding:
        warmup = self.settings.warmup_periods
        learned = min((model.periods_learned for name, model in self.series.items()
                       if family_of(name) in WARMING_FAMILIES), default=0)
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
    if family in ("joined", "flag_joined"):
        rows = changes.joined
        if label and label[0] == "flag":
            rows = rows[(relays.flags[rows] & FLAG_BITS[label[1]]) != 0]
        return "; e.g. " + _arrivals(relays, rows, clusters) if len(rows) else ""
    if family in ("left", "flag_left"):
        gone = list(range(len(changes.left)))
        if label and label[0] == "flag":
            gone = [i for i in gone if changes.left_flags[i] & FLAG_BITS[label[1]]]
        return "; e.g. " + ", ".join(changes.left[i] for i in gone[:LIST_AT_MOST]) if gone else ""
    return ""


def _arrivals(relays, joined, clusters: list[Cluster]) -> str:
    """Up to ten arrivals, members of the largest group first (they are what the person will look at)."""
    grouped = [fingerprint for cluster in clusters for fingerprint in cluster.fingerprints]
    order = {fingerprint: rank for rank, fingerprint in enumerate(grouped)}
    rows = sorted(joined, key=lambda row: order.get(relays.fingerprint[row], len(order)))[:LIST_AT_MOST]
    return ", ".join(f"{relays.nickname[i]} ({relays.fingerprint[i]})" for i in rows)


def _reverses(verdict: Verdict) -> str:
    """"; it reverses ..." for a reversal (the counterpart's anomaly of the last day undone), else ""."""
    if not verdict.reversal:
        return ""
    return f"; it reverses the anomalous {counterpart_of(verdict.series)} of the last {REVERSAL_PERIODS} periods"


def _number(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
