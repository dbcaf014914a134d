"""What a watched relay's month was: the figures of the monthly report, from the store and the state.

The store gives each watched relay's hourly ``tor_relay`` samples of the
month (``in_consensus``, ``weight``, ``advertised_bandwidth_bytes`` and the
``flag_*`` series, docs/metrics.md) through one PromQL query over a range
selector (``{...}[31d]`` at the month's last second), which the endpoint
answers with the raw samples: every recorded period exactly once, nothing
filled in by the lookback a ``query_range`` step would apply. The state
gives the subscription's relays and the alerts raised for it.

The arithmetic (``summarise``) is pure and works on hour slots: the month's
hours from its first second (UTC), each holding the newest sample written in
it (periods are stamped with their valid-after, one an hour on the live
network).

- time in consensus: hour slots with ``in_consensus`` 1, over the month's
  hours (and over the hours the agent recorded a period at all, so an agent
  that was down is not mistaken for a relay that was);
- flags: those of the first and of the last hour in the consensus (gained,
  lost), and every hour whose flags differ from the previous hour in it;
- trends: median of the first seven days against the median of the last
  seven, as a percentage of the first.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from agent.store.query import run_query
from agent.subscriptions.store import Subscription

HOUR, DAY = 3600, 86400
WEEK = 7 * DAY
#: Flags as the consensus spells them; the store's series are ``tor_relay_flag_<lower case>``.
FLAGS = ("Authority", "BadExit", "Exit", "Fast", "Guard", "HSDir", "MiddleOnly", "NoEdConsensus", "Running",
         "Stable", "StaleDesc", "Sybil", "V2Dir", "Valid")
FIELDS = ("in_consensus", "weight", "advertised_bandwidth_bytes", *(f"flag_{flag.lower()}" for flag in FLAGS))
#: More relays than this in one subscription: the report covers the first ones (by fingerprint) and says so.
MAX_RELAYS = 200
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")

Samples = list[tuple[int, float]]


@dataclass(frozen=True)
class Month:
    """One calendar month in UTC: [start, end) in Unix seconds."""

    label: str  # YYYY-MM
    start: int
    end: int

    @property
    def hours(self) -> int:
        return (self.end - self.start) // HOUR

    @classmethod
    def parse(cls, text: str) -> Month:
        """``2024-05``; ValueError naming the text otherwise."""
        match = _MONTH.match(str(text).strip())
        if not match or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
            raise ValueError(f"not a month like 2024-05: {text!r}")
        return cls.of(int(match.group(1)), int(match.group(2)))

    @classmethod
    def of(cls, year: int, month: int) -> Month:
        start = datetime(year, month, 1, tzinfo=timezone.utc)
        end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=timezone.utc)
        return cls(f"{year:04d}-{month:02d}", int(start.timestamp()), int(end.timestamp()))

    @classmethod
    def before(cls, now: float) -> Month:
        """The calendar month before the one ``now`` is in (UTC)."""
        today = datetime.fromtimestamp(now, timezone.utc)
        return cls.of(today.year - (today.month == 1), (today.month - 2) % 12 + 1)


@dataclass(frozen=True)
class Trend:
    """Median of the month's first seven days against its last seven."""

    first: float | None
    last: float | None

    @property
    def percent(self) -> float | None:
        if self.first is None or self.last is None or self.first <= 0:
            return None
        return (self.last - self.first) / self.first * 100


@dataclass(frozen=True)
class FlagChange:
    at: int  # the hour slot's start (Unix seconds)
    gained: tuple[str, ...]
    lost: tuple[str, ...]


@dataclass(frozen=True)
class RelayMonth:
    """One watched relay's month."""

    fingerprint: str
    nickname: str | None
    hours_in_consensus: int
    hours_running: int
    first_seen: int | None  # the first and last hour slot it was in the consensus
    last_seen: int | None
    first_flags: frozenset[str]
    last_flags: frozenset[str]
    changes: tuple[FlagChange, ...]
    weight: Trend
    bandwidth: Trend  # advertised, bytes per second

    @property
    def gained(self) -> tuple[str, ...]:
        return tuple(sorted(self.last_flags - self.first_flags))

    @property
    def lost(self) -> tuple[str, ...]:
        return tuple(sorted(self.first_flags - self.last_flags))

    @property
    def name(self) -> str:
        return f"{self.nickname} ({self.fingerprint[:8]})" if self.nickname else self.fingerprint


@dataclass(frozen=True)
class MonthlyReport:
    subscription: Subscription
    month: Month
    relays: tuple[RelayMonth, ...]
    hours_observed: int  # hour slots in which the agent recorded a period
    alerts: dict[str, int]  # alert ID -> alerts raised for this subscription that began in the month
    left_out: int = 0  # relays beyond MAX_RELAYS
    series: dict[str, dict[str, Samples]] = field(default_factory=dict, compare=False)  # for the chart


def slots(samples: Samples, month: Month) -> dict[int, float]:
    """Each hour slot of the month (its start) with the newest sample written in it."""
    found: dict[int, tuple[int, float]] = {}
    for at, value in samples:
        if month.start <= at < month.end:
            slot = month.start + (at - month.start) // HOUR * HOUR
            if slot not in found or at >= found[slot][0]:
                found[slot] = (at, value)
    return {slot: value for slot, (_, value) in found.items()}


def trend(samples: Samples, month: Month) -> Trend:
    first = [value for at, value in samples if month.start <= at < month.start + WEEK]
    last = [value for at, value in samples if month.end - WEEK <= at < month.end]
    return Trend(statistics.median(first) if first else None, statistics.median(last) if last else None)


def summarise(fingerprint: str, series: dict[str, Samples], month: Month, nickname: str | None = None
              ) -> RelayMonth:
    """A relay's month from its samples by field (``FIELDS``); pure."""
    present = {slot for slot, value in slots(series.get("in_consensus", []), month).items() if value == 1}
    if "in_consensus" not in series:  # written by an agent before the field existed: listed if weighed
        present = set(slots(series.get("weight", []), month))
    by_flag = {flag: slots(series.get(f"flag_{flag.lower()}", []), month) for flag in FLAGS}
    hours = sorted(present)
    flags_at = {slot: frozenset(flag for flag in FLAGS if by_flag[flag].get(slot) == 1) for slot in hours}
    changes = []
    for before, now in zip(hours, hours[1:]):
        gained, lost = flags_at[now] - flags_at[before], flags_at[before] - flags_at[now]
        if gained or lost:
            changes.append(FlagChange(now, tuple(sorted(gained)), tuple(sorted(lost))))
    return RelayMonth(
        fingerprint, nickname, len(hours), sum(1 for slot in hours if "Running" in flags_at[slot]),
        hours[0] if hours else None, hours[-1] if hours else None,
        flags_at[hours[0]] if hours else frozenset(), flags_at[hours[-1]] if hours else frozenset(),
        tuple(changes), trend(series.get("weight", []), month),
        trend(series.get("advertised_bandwidth_bytes", []), month))


def fetch_series(url: str, fingerprints: list[str], month: Month, timeout: float = 60
                 ) -> tuple[dict[str, dict[str, Samples]], int]:
    """The relays' raw samples of the month by fingerprint and field, and the hours the agent recorded.

    Raises ``agent.model.errors.QueryError`` when the endpoint cannot answer.
    """
    fingerprints = [fp for fp in fingerprints if _FINGERPRINT.match(fp)]
    window = f"[{month.end - month.start}s]"
    at = datetime.fromtimestamp(month.end - 1, timezone.utc)  # a range selector takes (at - window, at]
    found: dict[str, dict[str, Samples]] = {fp: {} for fp in fingerprints}
    if fingerprints:
        selector = (f'{{__name__=~"tor_relay_({"|".join(FIELDS)})",fingerprint=~"{"|".join(fingerprints)}"}}'
                    f"{window}")
        for labels, samples in run_query(url, selector, at=at, timeout=timeout).series:
            fingerprint, name = labels.get("fingerprint", ""), labels.get("__name__", "")
            if fingerprint in found and name.startswith("tor_relay_"):
                found[fingerprint][name.removeprefix("tor_relay_")] = [(int(t), float(v)) for t, v in samples]
    observed = run_query(url, f"tor_network_relays{window}", at=at, timeout=timeout).series
    hours = set()
    for _, samples in observed:
        hours |= set(slots([(int(t), 1.0) for t, _ in samples], month))
    return found, len(hours)


def watched(db, subscription: Subscription) -> list[str]:
    """The relays a subscription covers: its fingerprint, and the members it has had (families, operators...)."""
    members = {row[0] for row in db.execute(
        "SELECT fingerprint FROM subscription_members WHERE subscription_id = ?", (subscription.id,))}
    if subscription.kind in ("relay", "family"):
        members.add(subscription.target)
    return sorted(fp for fp in members if isinstance(fp, str) and _FINGERPRINT.match(fp))


def nicknames(db, fingerprints: list[str]) -> dict[str, str]:
    """The newest nickname the state remembers for each relay (subscriptions keep a week of history)."""
    names: dict[str, str] = {}
    for fingerprint in fingerprints:
        row = db.execute("SELECT nickname FROM relay_history WHERE fingerprint = ? AND nickname IS NOT NULL "
                         "ORDER BY valid_after DESC LIMIT 1", (fingerprint,)).fetchone()
        if row and isinstance(row[0], str):
            names[fingerprint] = row[0]
    return names


def alerts_raised(db, subscription: Subscription, fingerprints: list[str], month: Month) -> dict[str, int]:
    """Alerts raised for this subscription's relays and address that began in the month, by alert ID.

    Read from the alert history (``agent.alerts.quality``): an alert key is
    ``ID|subjects|recipient``, the subjects holding ``relay=FINGERPRINT``.
    """
    wanted = set(fingerprints)
    counted: Counter[str] = Counter()
    for key, alert_id in db.execute("SELECT key, alert_id FROM alert_history WHERE scope = 'subscriptions' "
                                    "AND onset >= ? AND onset < ?", (month.start, month.end)):
        parts = str(key).split("|")
        if len(parts) < 3 or parts[-1] != subscription.email:
            continue
        subjects = dict(item.partition("=")[::2] for item in "|".join(parts[1:-1]).split(","))
        if subjects.get("relay") in wanted:
            counted[str(alert_id)] += 1
    return dict(sorted(counted.items()))


def build(db, url: str, subscription: Subscription, month: Month, timeout: float = 60) -> MonthlyReport:
    """The subscription's report for the month (QueryError if the store cannot answer)."""
    everything = watched(db, subscription)
    fingerprints = everything[:MAX_RELAYS]
    series, observed = fetch_series(url, fingerprints, month, timeout)
    names = nicknames(db, fingerprints)
    relays = tuple(summarise(fp, series[fp], month, names.get(fp)) for fp in fingerprints)
    return MonthlyReport(subscription, month, relays, observed, alerts_raised(db, subscription, everything, month),
                         len(everything) - len(fingerprints), series)
