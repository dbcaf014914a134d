"""The threshold rules the Tor Project uses today, next to the learned detectors (operator-anchors.md §4).

- DocTor's sybil_checker: more than 50 relays never seen before in one hour.
- The network-health rules: more than 50 new relays in one country or one
  operator within 1 h (high) or 24 h (medium); more than 50 relays gaining
  one flag within 2 h.
- sybilhunter's churn: new or gone relays as a fraction of the larger of two
  consecutive consensuses, averaged over 24 h, at or above 0.012.

We have no AS database offline (tor's GeoIP file maps countries only), so
the per-AS rule runs per /16 address block instead; the docs say so.
Windows are in hours and converted to periods (at most 2,000, so on the
10-second test network a "24 h" window covers 5.6 h).
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

import numpy as np

from agent.detect.facts import FLAG_BITS, RelayFacts
from agent.detect.relays import RelayChanges

#: rule name -> (threshold setting, window hours, severity)
RULES = {
    "new_relays": ("new_relays_per_hour", 1, "warning"),
    "new_relays_country_1h": ("new_relays_per_group", 1, "warning"),
    "new_relays_country_24h": ("new_relays_per_group", 24, "info"),
    "new_relays_operator_1h": ("new_relays_per_group", 1, "warning"),
    "new_relays_operator_24h": ("new_relays_per_group", 24, "info"),
    "new_relays_block_1h": ("new_relays_per_group", 1, "warning"),
    "new_relays_block_24h": ("new_relays_per_group", 24, "info"),
    "flag_gained_2h": ("flag_gained_per_2h", 2, "info"),
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
    """Per-period counts the rules sum over their windows; pickles with the detector state."""

    def __init__(self):
        self.counts: dict[str, deque[Counter]] = {}
        self.churn: deque[tuple[float, float]] = deque(maxlen=MAX_WINDOW_PERIODS)

    def _window(self, name: str, periods: int) -> deque[Counter]:
        window = self.counts.get(name)
        if window is None or window.maxlen != periods:
            window = self.counts[name] = deque(window or (), maxlen=periods)
        return window

    def evaluate(self, relays: RelayFacts, changes: RelayChanges, gained: dict[str, int], period_seconds: int,
                 thresholds: dict) -> list[RuleHit]:
        """Adds this period's counts and returns every rule above its threshold."""
        new = changes.new
        per_key = {
            "country": Counter(relays.country[i] for i in new if relays.country[i] != "??"),  # ?? = no GeoIP
            "operator": Counter(relays.operator[i] for i in new if relays.operator[i]),
            "block": Counter(_block16(relays.address[i]) for i in new if _block16(relays.address[i])),
            "new": Counter({"": len(new)}) if changes.previous_known else Counter(),
            "flag": Counter(gained),
        }
        hits = []
        for rule, (setting, hours, severity) in RULES.items():
            source = rule.split("_")[2] if rule.startswith("new_relays_") else ("new" if rule == "new_relays"
                                                                                 else "flag")
            periods = max(1, min(MAX_WINDOW_PERIODS, round(hours * 3600 / period_seconds)))
            window = self._window(rule, periods)
            window.append(per_key[source])
            total = sum(window, Counter())
            limit = thresholds[setting]
            for key, count in sorted(total.items()):
                if count > limit:
                    hits.append(RuleHit(rule, severity, key, count, limit, hours,
                                        _describe(rule, key, count, limit, hours)))
        hits += self._churn(changes, relays, period_seconds, thresholds["churn_fraction"])
        return hits

    def _churn(self, changes: RelayChanges, relays: RelayFacts, period_seconds: int, limit: float) -> list[RuleHit]:
        if not changes.previous_known:
            return []
        larger = max(len(relays), changes.previous_size) or 1
        self.churn.append((len(changes.joined) / larger, len(changes.left) / larger))
        periods = max(1, min(MAX_WINDOW_PERIODS, round(24 * 3600 / period_seconds)))
        recent = list(self.churn)[-periods:]
        hits = []
        for index, direction in enumerate(("new", "gone")):
            average = float(np.mean([pair[index] for pair in recent]))
            if len(recent) >= periods and average >= limit:
                hits.append(RuleHit(f"churn_{direction}", "info", "", average, limit, 24,
                                    f"{direction} relays averaged {average:.2%} of the consensus per period over "
                                    f"24 h (sybilhunter's threshold {limit:.1%})"))
        return hits


def gained_flags(relays: RelayFacts, rows_flags_before: np.ndarray, joined_mask: np.ndarray) -> dict[str, int]:
    """Per flag: relays present in both periods that have the flag now and did not before.

    Arriving relays are left out: each gains Running and Valid by arriving,
    and arrivals have their own rules.
    """
    stayed = ~joined_mask
    return {flag: int(np.count_nonzero(stayed & ((relays.flags & bit) != 0) & ((rows_flags_before & bit) == 0)))
            for flag, bit in FLAG_BITS.items()}


def _block16(address: str) -> str:
    parts = address.split(".")
    return f"{parts[0]}.{parts[1]}.0.0/16" if len(parts) == 4 else ""


def _describe(rule: str, key: str, count: float, limit: float, hours: float) -> str:
    window = "hour" if hours == 1 else f"{hours:g} hours"
    if rule == "new_relays":
        return f"{count:.0f} relays never seen before joined within the last {window} (DocTor's limit {limit:g})"
    if rule.startswith("flag_gained"):
        return f"{count:.0f} relays gained the {key} flag within the last {window} (limit {limit:g})"
    group = rule.split("_")[2]
    label = {"country": f"country {key}", "operator": f"operator {key}", "block": f"address block {key}"}[group]
    return f"{count:.0f} new relays in {label} within the last {window} (limit {limit:g})"
