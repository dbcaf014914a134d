"""The threshold rules the Tor Project uses today, next to the learned detectors (operator-anchors.md §4).

- DocTor's sybil_checker: more than 50 relays never seen before in one hour.
- The network-health rules: more than 50 new relays in one country or one
  operator within 1 h (high), in one operator within 24 h (medium).

Two of the network-health rules are retired and one is judged net, on the
evidence of real hourly history (2024-04 to 2025-12, 14,173 snapshots
of the relay population): "more than 50 new relays in one country within
24 h" held in almost every hour for the largest country (a network of
10,000 relays brings 300 never-seen ones a day, a third of them in one
country), and the same rule per /16 block alike: rules that always hold
tell nothing. "More than 50 relays gaining one flag within 2 h" is retired
too: even counted net of losses it held in 46 of every 1,000 hours (the
bandwidth authorities move a hundred Guards at a time in a network of
5,000), and the baselines' ``flag_gained`` series judge the same change
against each flag's own history and number of holders.
- sybilhunter's churn: new or gone relays as a fraction of the larger of two
  consecutive consensuses, averaged over 24 h, at or above 0.012.

We have no AS database offline (tor's GeoIP file maps countries only), so
the per-AS rule runs per /16 address block instead; the docs say so.
Windows are in hours and converted to periods (at most 2,000, so on the
10-second test network a "24 h" window covers 5.6 h). ``ThresholdRules`` is
the detector the engine runs.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import asdict, dataclass

import numpy as np

from agent.detect.facts import RelayFacts
from agent.detect.protocol import BaseDetector, Period, Scores
from agent.detect.relays import RelayChanges
from agent.detect.settings import setting
from agent.model.findings import Finding, Severity

#: rule name -> (threshold setting, window hours, severity)
RULES = {
    "new_relays": ("new_relays_per_hour", 1, Severity.WARNING),
    "new_relays_country_1h": ("new_relays_per_group", 1, Severity.WARNING),
    "new_relays_operator_1h": ("new_relays_per_group", 1, Severity.WARNING),
    "new_relays_operator_24h": ("new_relays_per_group", 24, Severity.INFO),
    "new_relays_block_1h": ("new_relays_per_group", 1, Severity.WARNING),
}
MAX_WINDOW_PERIODS = 2000


@dataclass(frozen=True)
class RuleHit:
    rule: str
    severity: str
    key: str  # the country, operator, block or flag ("" for network-wide rules)
    observed: float
    threshold: float
    window_hours: float
    description: str


class RuleWindows:
    """Per-period counts the rules sum over their windows; pickles with the detector state.

    A rule's window includes the period it judges: ``judge`` sums the
    window as it will be once the period is learned, ``learn`` adds it.
    """

    def __init__(self):
        self.counts: dict[str, deque[Counter]] = {}
        self.churn: deque[tuple[float, float]] = deque(maxlen=_periods(24, 3600))

    def _window(self, name: str, periods: int) -> deque[Counter]:
        window = self.counts[name] = _sized(self.counts.get(name, deque()), periods)
        return window

    def evaluate(self, relays: RelayFacts, changes: RelayChanges, period_seconds: int,
                 thresholds: dict) -> list[RuleHit]:
        """Adds this period's counts and returns every rule above its threshold (``judge``, then ``learn``)."""
        counts, churn = period_counts(relays, changes), churn_of(relays, changes, period_seconds)
        hits = self.judge(counts, churn, period_seconds, thresholds, changes.elapsed_periods)
        self.learn(counts, churn, period_seconds)
        return hits

    def judge(self, counts: dict[str, Counter], churn: tuple[float, float] | None, period_seconds: int,
              thresholds: dict, elapsed_periods: float = 1.0) -> list[RuleHit]:
        """Every rule above its threshold over its window ending with this period; learns nothing.

        A period that spans more than a rule's window (8-hourly snapshots, or the first period after a gap)
        holds that many windows' counts: its limit grows in proportion, since the rule cannot see finer.
        """
        hits = []
        spanned_hours = period_seconds * max(elapsed_periods, 1.0) / 3600
        for rule, (threshold, hours, severity) in RULES.items():
            periods = _periods(hours, period_seconds)
            window = self.counts.get(rule, ())
            earlier = list(window)[max(0, len(window) - (periods - 1)):] if periods > 1 else []
            total: Counter = Counter()
            for counted in earlier + [counts[_source(rule)]]:
                total.update(counted)  # update, not +: a net flag count may be negative and must still subtract
            limit = thresholds[threshold] * max(1.0, spanned_hours / hours)
            for key, count in sorted(total.items()):
                if count > limit:
                    hits.append(RuleHit(rule, severity, key, count, limit, hours,
                                        _describe(rule, key, count, limit, hours)))
        if churn is not None:
            hits += self._churn((list(self.churn) + [churn]), period_seconds, thresholds["churn_fraction"])
        return hits

    def learn(self, counts: dict[str, Counter], churn: tuple[float, float] | None, period_seconds: int) -> None:
        """Adds the period's counts to every rule's window."""
        for rule, (_, hours, _) in RULES.items():
            self._window(rule, _periods(hours, period_seconds)).append(counts[_source(rule)])
        if churn is not None:
            # as many periods as the 24-hour average reads (a state saved with more is cut)
            self.churn = _sized(self.churn, _periods(24, period_seconds))
            self.churn.append(churn)

    @staticmethod
    def _churn(churn: list[tuple[float, float]], period_seconds: int, limit: float) -> list[RuleHit]:
        periods = _periods(24, period_seconds)
        recent = churn[-periods:]
        hits = []
        for index, direction in enumerate(("new", "gone")):
            average = float(np.mean([pair[index] for pair in recent]))
            if len(recent) >= periods and average >= limit:
                hits.append(RuleHit(f"churn_{direction}", Severity.INFO, "", average, limit, 24,
                                    f"{direction} relays averaged {average:.2%} of the consensus per period over "
                                    f"24 h (sybilhunter's threshold {limit:.1%})"))
        return hits


def period_counts(relays: RelayFacts, changes: RelayChanges) -> dict[str, Counter]:
    """What the rules count in one period, per source: new relays per country, operator, /16 and overall."""
    new = changes.new
    return {
        "country": Counter(relays.country[i] for i in new if relays.country[i] != "??"),  # ?? = no GeoIP
        "operator": Counter(relays.operator[i] for i in new if relays.operator[i]),
        "block": Counter(_block16(relays.address[i]) for i in new if _block16(relays.address[i])),
        "new": Counter({"": len(new)}) if changes.previous_known else Counter(),
    }


def churn_of(relays: RelayFacts, changes: RelayChanges, period_seconds: int = 3600) -> tuple[float, float] | None:
    """Joined and left relays as shares of the larger of the two consensuses, per hour when the period spans
    more (sybilhunter compares consecutive hourly consensuses: after a gap, or between 8-hourly snapshots,
    the churn of several hours is spread over them); None when the previous period is unknown."""
    if not changes.previous_known:
        return None
    hours = max(1.0, period_seconds * max(changes.elapsed_periods, 1.0) / 3600)
    larger = (max(len(relays), changes.previous_size) or 1) * hours
    return len(changes.joined) / larger, len(changes.left) / larger


def _source(rule: str) -> str:
    return rule.split("_")[2] if rule.startswith("new_relays_") else "new"


def _sized(window: deque, periods: int) -> deque:
    """``window`` holding at most ``periods`` (the same deque when it already does; the newest kept)."""
    return window if window.maxlen == periods else deque(window, maxlen=periods)


def _periods(hours: float, period_seconds: int) -> int:
    return max(1, min(MAX_WINDOW_PERIODS, round(hours * 3600 / period_seconds)))


@dataclass(frozen=True)
class RuleSettings:
    """``detect.rules.*`` of the rules (field names are the keys RULES and RuleWindows use)."""

    new_relays_per_hour: int = setting("detect.rules.new_relays_per_hour", 50, "positive_int")
    new_relays_per_group: int = setting("detect.rules.new_relays_per_group", 50, "positive_int")
    churn_fraction: float = setting("detect.rules.churn_fraction", 0.012, "ratio")


class ThresholdRules(BaseDetector):
    """The Tor Project's threshold rules, as a detector: one ``TorAnomalyRule`` finding per rule and key."""

    name = "rules"
    checks = {"TorAnomalyRule": "A threshold rule of the Tor Project's monitoring fired"}
    Settings = RuleSettings

    def __init__(self, settings):
        super().__init__(settings)
        self.windows = RuleWindows()

    def score_one(self, period: Period) -> Scores:
        relays, changes = period.facts.relays, period.changes
        counts, churn = period_counts(relays, changes), churn_of(relays, changes, period.facts.period_seconds)
        hits = self.windows.judge(counts, churn, period.facts.period_seconds, asdict(self.settings),
                                  changes.elapsed_periods)
        return Scores([self._finding(hit) for hit in hits], details=hits, pending=(counts, churn))

    def learn_one(self, period: Period) -> None:
        counts, churn = period.scores[self.name].pending
        self.windows.learn(counts, churn, period.facts.period_seconds)

    def _finding(self, hit: RuleHit) -> Finding:
        return self.finding("TorAnomalyRule", hit.severity, {"rule": hit.rule, **({"key": hit.key} if hit.key else {})},
                            hit.description, {"observed": hit.observed, "threshold": hit.threshold})

    @classmethod
    def label(cls, finding: Finding) -> str:
        return f"rule {finding.subjects['rule']}"

    @classmethod
    def labels(cls) -> list[str]:
        return [f"rule {rule}" for rule in RULES] + ["rule churn_new", "rule churn_gone"]


def _block16(address: str) -> str:
    parts = address.split(".")
    return f"{parts[0]}.{parts[1]}.0.0/16" if len(parts) == 4 else ""


def _describe(rule: str, key: str, count: float, limit: float, hours: float) -> str:
    window = "hour" if hours == 1 else f"{hours:g} hours"
    if rule == "new_relays":
        return f"{count:.0f} relays never seen before joined within the last {window} (DocTor's limit {limit:g})"
    group = rule.split("_")[2]
    label = {"country": f"country {key}", "operator": f"operator {key}", "block": f"address block {key}"}[group]
    return f"{count:.0f} new relays in {label} within the last {window} (limit {limit:g})"
