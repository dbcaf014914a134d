"""Network health score: one 0-100 figure per period, with the components that make it up beside it.

Why: a dashboard full of series tells an expert what moved; the Tor
network-health team also wants one number whose drop is always explained.
The score is the weighted mean of six components, each 0-100 with a one-line
reason, so a drop of the score is the sum of the weighted drops of its
components (``Component.contribution``). The formula, each weight's
justification and the thresholds' origin are in docs/health-score.md.

Pure: ``health_score(inputs)`` depends on its argument only. What it needs of
earlier periods (rolling medians of churn, network size and per-role
capacity) comes in ``inputs.baseline``, kept by ``HealthState`` (bounded:
four weeks of periods per series; picklable). A component whose inputs are
missing is left out and the remaining weights are renormalised; the points
say so (weight 0, no score), so history with only some inputs (the 2014-2016
depictor votes) is scored on the subset it has.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from agent.model.points import Point, point

#: Component weights (sum 1). docs/health-score.md justifies each.
WEIGHTS: dict[str, float] = {
    "authorities": 0.25,  # no majority of votes and signatures, no consensus: nothing else matters then
    "freshness": 0.15,  # a stale consensus strands new clients within hours
    "capacity": 0.15,  # the weakest position (guard, middle, exit) bounds every circuit
    "diversity": 0.10,  # structural and slow: a large weight would hide the fast events
    "churn": 0.25,  # Sybil floods and mass rejections show here first
    "coverage": 0.10,  # unmeasured relays get self-reported weight: a lever for attackers, not an outage
}
WINDOW_PERIODS = 672  # four weeks of hourly periods: the rolling baselines' memory
MIN_BASELINE = 24  # a baseline is used once it holds a day of periods
FLOW_GOOD_Z, FLOW_BAD_Z = 5.0, 25.0  # robust z of relays joined, left, net change: full marks .. zero
LEVEL_GOOD, LEVEL_BAD = 0.20, 0.50  # |relays / 4-week median - 1|
CAPACITY_GOOD, CAPACITY_BAD = 0.90, 0.50  # role capacity / its 4-week median
MEASURED_GOOD, MEASURED_BAD = 0.90, 0.60  # share of relays a bandwidth authority measured
BWAUTHS_GOOD, BWAUTHS_BAD = 4, 2  # dir-spec: Measured= counts once 3 bandwidth authorities vote it
#: HHI of consensus-weight shares: full marks at or below the first, zero at or above the second.
HHI_LIMITS: dict[str, tuple[float, float]] = {"country": (0.15, 0.40), "operator": (0.02, 0.10),
                                              "family": (0.02, 0.10)}
#: Anomaly findings' severities, counted against 2 (critical = 1): two critical anomalies are zero.
ANOMALY_WEIGHTS: dict[str, float] = {"critical": 1.0, "warning": 1 / 3, "info": 0.0}
ANOMALY_BAD = 2.0
ANOMALY_CHECKS = ("TorAnomalySeries", "TorAnomalyRelays", "TorAnomalyRule", "TorAnomalyIncident",
                  "TorRelayGroupArrived")


@dataclass(frozen=True)
class Stat:
    """A rolling baseline of one series: median, MAD and how many periods it was taken over."""

    median: float
    mad: float
    count: int


@dataclass(frozen=True)
class HealthInputs:
    """What one period offers the score; None (or empty) where the period does not have it."""

    authorities: int | None = None  # authorities expected to vote (configured or discovered)
    votes: int | None = None  # votes the consensus was built from (or, in history, votes seen)
    signatures: int | None = None  # valid signatures on the newest consensus
    reachable: int | None = None  # authorities whose DirPort served a consensus
    consensus_age_seconds: float | None = None  # newest consensus's valid-after to the fetch
    fresh_seconds: float = 3600.0  # fresh-until minus valid-after
    valid_seconds: float = 10800.0  # valid-until minus valid-after
    serving_current: int | None = None  # authorities serving the newest consensus
    capacity: Mapping[str, float] = field(default_factory=dict)  # role -> advertised bandwidth
    concentration: Mapping[str, float] = field(default_factory=dict)  # by (country, operator, family) -> HHI
    relays: float | None = None
    joined: float | None = None  # relays that joined since the previous period
    left: float | None = None
    net_change: float | None = None  # relays minus the previous period's (joined - left)
    anomalies: Mapping[str, int] | None = None  # severity -> active anomaly findings; None: no detection
    bandwidth_authorities: int | None = None  # authorities voting Measured= this period
    measured_ratio: float | None = None  # median over them of the share of relays measured
    baseline: Mapping[str, Stat] = field(default_factory=dict)  # series -> earlier periods (HealthState)


@dataclass(frozen=True)
class Component:
    """One component: 0-100 (None when its inputs are missing), its weights and why it stands there."""

    name: str
    score: float | None
    base_weight: float  # from WEIGHTS
    weight: float  # renormalised over the components present; 0 when left out
    reason: str

    @property
    def contribution(self) -> float:
        """Points of the total this component gives: the contributions add up to the score."""
        return 0.0 if self.score is None else self.weight * self.score


def ramp(value: float, bad: float, good: float) -> float:
    """0 at ``bad``, 1 at ``good`` (either order, never equal), linear between and flat beyond: continuous, bounded."""
    return min(1.0, max(0.0, (value - bad) / (good - bad)))


def quorum_score(present: int, expected: int) -> float:
    """How far ``present`` of ``expected`` authorities stand above losing the majority, 0..1.

    h = (present - q + 1) / (expected - q + 1) with q = expected // 2 + 1;
    the score is 1 - (1 - h)^2, so the first missing authority costs little
    (8 of 9: 0.96) and the last one before quorum is lost costs most
    (5 of 9: 0.36, 4 of 9: 0).
    """
    if expected <= 0:
        return 0.0
    quorum = expected // 2 + 1
    headroom = ramp(present, quorum - 1, expected)
    return 1.0 - (1.0 - headroom) ** 2


def health_score(inputs: HealthInputs) -> tuple[float | None, list[Component]]:
    """The period's score 0-100 and its six components (score None when no component has inputs)."""
    parts = [authorities(inputs), freshness(inputs), capacity(inputs), diversity(inputs), churn(inputs),
             coverage(inputs)]
    present = sum(WEIGHTS[name] for name, value, _ in parts if value is not None)
    components = [Component(name, None if value is None else 100.0 * value, WEIGHTS[name],
                            WEIGHTS[name] / present if value is not None else 0.0,
                            reason if value is not None else f"{name}: left out, {reason}")
                  for name, value, reason in parts]
    return combine({c.name: c.score for c in components}), components


def combine(scores: Mapping[str, float | None]) -> float | None:
    """The weighted mean of the components present, WEIGHTS renormalised over them; None when none is.

    Monotone in each component and within [0, 100] when they are; the
    weighted terms (``Component.contribution``) add up to it, so a drop of
    the score is the sum of its components' weighted drops.
    """
    present = {name: value for name, value in scores.items() if value is not None}
    total = sum(WEIGHTS[name] for name in present)
    if not total:
        return None
    return min(100.0, max(0.0, sum(WEIGHTS[name] * value for name, value in present.items()) / total))


def explain(score: float | None, components: Iterable[Component]) -> str:
    """One line: the score, each component's score times its weight, and those left out."""
    components = list(components)
    used = ", ".join(f"{c.name} {c.score:.0f}x{c.weight:.2f}" for c in components if c.score is not None)
    left_out = ", ".join(c.name for c in components if c.score is None)
    if score is None:
        return "no score: no component has inputs"
    return f"score {score:.1f} = {used}" + (f"; left out (weights renormalised): {left_out}" if left_out else "")


Part = tuple[str, float | None, str]  # name, 0..1 or None, reason (why it is missing when None)


def _worst(name: str, subs: list[tuple[float, str]], missing: str) -> Part:
    """The weakest of a component's sub-scores, with its reason; ``missing`` when there is none."""
    if not subs:
        return name, None, missing
    value, reason = min(subs, key=lambda sub: sub[0])
    return name, value, f"{name}: {reason}"


def authorities(inputs: HealthInputs) -> Part:
    """Quorum headroom of votes, valid signatures and reachable authorities: the weakest of them."""
    expected = inputs.authorities
    subs = [] if not expected else [
        (quorum_score(count, expected), f"{count}/{expected} {what} (majority {expected // 2 + 1})")
        for count, what in ((inputs.votes, "votes"), (inputs.signatures, "valid signatures"),
                            (inputs.reachable, "reachable")) if count is not None]
    return _worst("authorities", subs, "no authority counts")


def freshness(inputs: HealthInputs) -> Part:
    """The newest consensus's age (full while fresh, zero at valid-until) and who serves it."""
    subs = []
    if inputs.consensus_age_seconds is not None:
        age = inputs.consensus_age_seconds
        subs.append((ramp(age, inputs.valid_seconds, inputs.fresh_seconds),
                     f"newest consensus {age / 60:.0f} min old (fresh {inputs.fresh_seconds / 60:.0f}, "
                     f"valid {inputs.valid_seconds / 60:.0f} min)"))
    if inputs.serving_current is not None and inputs.authorities:
        subs.append((quorum_score(inputs.serving_current, inputs.authorities),
                     f"{inputs.serving_current}/{inputs.authorities} authorities serve the newest consensus"))
    return _worst("freshness", subs, "no consensus ages")


def capacity(inputs: HealthInputs) -> Part:
    """Each role's capacity against its own 4-week median: the weakest role."""
    subs = []
    for role, value in sorted(inputs.capacity.items()):
        usual = inputs.baseline.get(f"capacity:{role}")
        if usual is not None and usual.median > 0:
            ratio = value / usual.median
            subs.append((ramp(ratio, CAPACITY_BAD, CAPACITY_GOOD), f"{role} at {ratio:.0%} of its 4-week median"))
    return _worst("capacity", subs, "no role capacity with a baseline")


def diversity(inputs: HealthInputs) -> Part:
    """Concentration of consensus weight (HHI) by country, operator and family: their mean."""
    subs = [(ramp(hhi, *reversed(HHI_LIMITS[by])), by, hhi)
            for by, hhi in sorted(inputs.concentration.items()) if by in HHI_LIMITS]
    if not subs:
        return "diversity", None, "no concentration figures"
    detail = ", ".join(f"{by} {hhi:.3f} ({1 / hhi:.0f} effective)" if hhi > 0 else f"{by} {hhi:.3f}"
                       for _, by, hhi in subs)
    return "diversity", statistics.fmean(value for value, _, _ in subs), f"diversity: HHI {detail}"


def churn(inputs: HealthInputs) -> Part:
    """Relays joined and left against their usual flow, network size against its median, anomaly findings."""
    subs = []
    for what, value in (("joined", inputs.joined), ("left", inputs.left), ("net", inputs.net_change)):
        usual = inputs.baseline.get(what)
        if value is None or usual is None:
            continue
        spread = max(1.4826 * usual.mad, math.sqrt(abs(usual.median) + 1))  # Poisson noise as the floor
        z = (value - usual.median) / spread
        z = abs(z) if what == "net" else z  # the net change is judged both ways, the flows by their excess
        if what == "net":
            text = f"net change {value:+,.0f} relays in a period, usually {usual.median:+,.0f} ± {spread:,.0f}"
        else:
            text = f"{value:,.0f} relays {what} in a period, {value / max(usual.median, 1):,.1f}x the usual " \
                   f"{usual.median:,.0f}"
        subs.append((ramp(z, FLOW_BAD_Z, FLOW_GOOD_Z), f"{text} (robust z {z:.0f})"))
    usual = inputs.baseline.get("relays")
    if inputs.relays is not None and usual is not None and usual.median > 0:
        deviation = inputs.relays / usual.median - 1
        subs.append((ramp(abs(deviation), LEVEL_BAD, LEVEL_GOOD),
                     f"{inputs.relays:,.0f} relays, {deviation:+.0%} against the 4-week median {usual.median:,.0f}"))
    if inputs.anomalies is not None:
        load = sum(ANOMALY_WEIGHTS.get(severity, 0.0) * count for severity, count in inputs.anomalies.items())
        counted = ", ".join(f"{count} {severity}" for severity, count in sorted(inputs.anomalies.items()) if count)
        subs.append((ramp(load, ANOMALY_BAD, 0.0), f"anomaly findings: {counted or 'none'}"))
    return _worst("churn", subs, "no churn with a baseline")


def coverage(inputs: HealthInputs) -> Part:
    """Bandwidth authorities measuring (3 needed for Measured= to count) and the share of relays they measured."""
    subs = []
    count = inputs.bandwidth_authorities
    if count is not None:
        subs.append((ramp(count, BWAUTHS_BAD, BWAUTHS_GOOD), f"{count} bandwidth authorities measuring"))
    if inputs.measured_ratio is not None and count:
        subs.append((ramp(inputs.measured_ratio, MEASURED_BAD, MEASURED_GOOD),
                     f"bandwidth authorities measured {inputs.measured_ratio:.0%} of relays (median)"))
    return _worst("coverage", subs, "no bandwidth-authority counts")


def health_points(score: float | None, components: Iterable[Component], time: int) -> list[Point]:
    """``tor_health_score`` (value, coverage_ratio) and one ``tor_health_component`` point per component.

    A component left out is written with weight 0 and no score, so a panel
    shows that the figure stood on fewer inputs that period.
    """
    components = list(components)
    points = [point("tor_health_component", {"component": c.name},
                    {"score": c.score, "weight": c.weight,
                     "contribution": c.contribution if c.score is not None else None}, time) for c in components]
    if score is not None:
        covered = sum(c.base_weight for c in components if c.score is not None)
        points.insert(0, point("tor_health_score", {}, {"value": score, "coverage_ratio": covered}, time))
    return points


class Window:
    """The last ``size`` values of one series in a numpy ring: bounded, picklable, cheap to take medians of."""

    def __init__(self, size: int) -> None:
        self.values, self.count = np.zeros(size), 0

    def __len__(self) -> int:
        return min(self.count, len(self.values))

    def append(self, value: float) -> None:
        self.values[self.count % len(self.values)] = value
        self.count += 1

    def stat(self) -> Stat:
        """Median and MAD (one partition each: this runs for every series every period)."""
        held = self.values[:len(self)]
        low, high = (len(held) - 1) // 2, len(held) // 2
        part = np.partition(held, [low, high])
        median = float(part[low] + part[high]) / 2
        part = np.partition(np.abs(held - median), [low, high])
        return Stat(median, float(part[low] + part[high]) / 2, len(held))


@dataclass
class HealthState:
    """The rolling baselines the score compares a period with: four weeks of values per series.

    Bounded (``WINDOW_PERIODS`` floats per series: joined, left, net, relays
    and one per role) and picklable, to live beside the detector in the state file.
    """

    windows: dict[str, Window] = field(default_factory=dict)
    window: int = WINDOW_PERIODS

    def baseline(self) -> dict[str, Stat]:
        """Median and MAD of each series with at least ``MIN_BASELINE`` periods."""
        return {name: values.stat() for name, values in self.windows.items() if len(values) >= MIN_BASELINE}

    def learn(self, inputs: HealthInputs) -> None:
        """Adds the period's values to the windows (after it was scored against them)."""
        values = {"joined": inputs.joined, "left": inputs.left, "net": inputs.net_change, "relays": inputs.relays,
                  **{f"capacity:{role}": value for role, value in inputs.capacity.items()}}
        for name, value in values.items():
            if value is not None and math.isfinite(value):
                self.windows.setdefault(name, Window(self.window)).append(float(value))

    def score(self, inputs: HealthInputs) -> tuple[float | None, list[Component]]:
        """Scores a period against the baselines so far, then learns it."""
        result = health_score(replace(inputs, baseline=self.baseline()))
        self.learn(inputs)
        return result


def inputs_from(points: Iterable[Any], findings: Iterable[Any], fresh_seconds: float = 3600.0,
                valid_seconds: float = 10800.0) -> HealthInputs:
    """A live period's inputs from what judge made of it: its points and findings (``PeriodResult``).

    ``fresh_seconds`` and ``valid_seconds`` come from the newest consensus
    (fresh-until and valid-until minus valid-after); the defaults are the live network's.
    """
    network: dict[str, float] = {}
    fetched: dict[str, bool] = {}  # authority -> its DirPort served the consensus
    served: dict[str, dict[str, float]] = {}  # authority -> its ns consensus's fields
    measured: dict[str, dict[str, float]] = {}
    roles: dict[str, float] = {}
    hhi: dict[str, float] = {}
    detected = False  # anomaly detection ran this period (it writes tor_anomaly points)
    for item in points:
        name, tags, fields = item.measurement, item.tags, item.fields
        if name == "tor_network":
            network.update(fields)
        elif name == "tor_authority_fetch":
            fetched[tags["authority"]] = fetched.get(tags["authority"], False) or (
                tags.get("document") == "consensus" and fields.get("ok") == 1.0)
        elif name == "tor_authority_consensus" and tags.get("flavour") == "ns" and fields.get("served"):
            served[tags["authority"]] = fields
        elif name == "tor_authority" and fields.get("measured_relays", 0.0) > 0:
            measured[tags["authority"]] = fields
        elif name == "tor_network_role" and "advertised_bandwidth_bytes" in fields:
            roles[tags["role"]] = fields["advertised_bandwidth_bytes"]
        elif name == "tor_network_concentration" and "hhi" in fields:
            hhi[tags["by"]] = fields["hhi"]
        elif name == "tor_anomaly":
            detected = True
    counts: dict[str, int] = {}
    for finding in findings:
        if finding.check in ANOMALY_CHECKS and not finding.silenced_by:
            counts[str(finding.severity)] = counts.get(str(finding.severity), 0) + 1
    ratios = [fields["measured_ratio"] for fields in measured.values() if "measured_ratio" in fields]
    current = [fields for fields in served.values() if fields.get("lag_seconds") == 0.0]  # the newest consensus
    votes = network.get("votes")
    return HealthInputs(
        authorities=len(fetched) or None, votes=None if votes is None else int(votes),
        signatures=max((int(f.get("valid_signatures", 0)) for f in current), default=None),
        reachable=sum(fetched.values()) if fetched else None,
        consensus_age_seconds=min((f["age_seconds"] for f in served.values() if "age_seconds" in f), default=None),
        fresh_seconds=fresh_seconds, valid_seconds=valid_seconds,
        serving_current=len(current) if served else None,
        capacity=roles, concentration=hhi, relays=network.get("relays"),
        joined=network.get("joined_relays"), left=network.get("left_relays"),
        net_change=network["joined_relays"] - network["left_relays"]
        if "joined_relays" in network and "left_relays" in network else None,
        anomalies=counts if detected else None,
        bandwidth_authorities=len(measured) if "relays" in network else None,
        measured_ratio=statistics.median(ratios) if ratios else None)


@dataclass
class HealthLearner:
    """The score in the live period flow (``agent.pipeline.learners``): each new period scored, then learned."""

    state: HealthState = field(default_factory=HealthState)
    last_time: int | None = None

    def learn(self, result: Any) -> list[Point]:
        """The score's points of a judged period with a consensus (none for a rerun: it was scored already)."""
        consensus = result.snapshot.latest_consensus() if result.snapshot is not None else None
        if consensus is None or (self.last_time is not None and result.time <= self.last_time):
            return []
        valid_after = consensus.valid_after
        inputs = inputs_from(result.points, result.findings,
                             fresh_seconds=(consensus.fresh_until - valid_after).total_seconds(),
                             valid_seconds=(consensus.valid_until - valid_after).total_seconds())
        score, components = self.state.score(inputs)
        self.last_time = result.time
        return health_points(score, components, result.time)
