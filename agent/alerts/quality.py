"""Alert quality as data: how often each check or detector alarms, how long its alarms last, how often they flap.

The alert engine (``AlertBook.advance``) notes every period it evaluates
(``note_period``) in two tables of the state file: ``alert_periods``, one
row per period and scope, and ``alert_history``, one row per episode of an
alert (its key, from the period it entered the alert book to the period it
left it). Everything here is counted from those rows, never from wall time:

- *periods observed*: the periods the engine evaluated in the alert's scope
  (``findings``: checks and detectors; ``subscriptions``: relay operators' alerts);
- *alarm*: an onset, an alert entering the book in an observed period,
  whether it was told, is still waiting or is silenced;
- *time to resolve*: from the onset's period to the period it was gone in;
- *flap*: an alarm gone after being active in at most ``alerts.flap_periods``
  evaluated periods (3 by default).

Figures are per alert ID (a check or detector), all its subjects together,
over the newest ``HISTORY_PERIODS`` periods of its scope (older rows are pruned).
Given the IDs a scope can raise (``agent.pipeline.alert_ids``), the quiet
ones are listed too, with no alarm, so a check is never missing for being good.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.model.points import Point, point

#: Evaluated periods kept per scope (a year of hourly periods); the figures cover these.
HISTORY_PERIODS = 8760
#: ``note_period``'s scopes: the alert book's two halves (``agent.alerts.dispatch``).
FINDINGS, SUBSCRIPTIONS = "findings", "subscriptions"
MEASUREMENT = "allium_agent_alert_quality"


@dataclass(frozen=True)
class Episode:
    """One alert's stay in the alert book: onset to resolution (None while active), in period times."""

    alert_id: str
    scope: str
    onset: int
    resolved: int | None
    periods: int  # evaluated periods it was active in


@dataclass(frozen=True)
class CheckQuality:
    """The figures of one check or detector (alert ID)."""

    check: str
    scope: str
    periods_observed: int
    alarms: int
    resolved: int
    flaps: int
    active: int
    mean_seconds_to_resolve: float | None  # None: none resolved yet

    @property
    def alarms_per_1000_periods(self) -> float:
        return 1000 * self.alarms / self.periods_observed if self.periods_observed else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "scope": self.scope, "periods_observed": self.periods_observed,
                "alarms": self.alarms, "alarms_per_1000_periods": round(self.alarms_per_1000_periods, 3),
                "mean_time_to_resolve_seconds": self.mean_seconds_to_resolve, "resolved": self.resolved,
                "flaps": self.flaps, "active": self.active}


def summarise(episodes: Iterable[Episode], periods_observed: Mapping[str, int], flap_periods: int,
              known: Mapping[str, Iterable[str]] | None = None) -> list[CheckQuality]:
    """Each alert ID's figures, most alarms per period first; pure.

    ``periods_observed``: periods evaluated per scope. An episode is a flap
    when it resolved after at most ``flap_periods`` evaluated periods.
    ``known``: scope -> the alert IDs it can raise; those without an alarm get a row of zeros.
    """
    grouped: dict[tuple[str, str], list[Episode]] = {
        (check, scope): [] for scope, checks in (known or {}).items() for check in checks}
    for episode in episodes:
        grouped.setdefault((episode.alert_id, episode.scope), []).append(episode)
    report = []
    for (check, scope), mine in grouped.items():
        ended = [e for e in mine if e.resolved is not None]
        # A failed period is alerted on in clock time, later than the valid-after that follows it: never below 0.
        durations = [max(0, (e.resolved or 0) - e.onset) for e in ended]
        report.append(CheckQuality(
            check, scope, periods_observed.get(scope, 0), alarms=len(mine), resolved=len(ended),
            flaps=sum(1 for e in ended if e.periods <= flap_periods), active=len(mine) - len(ended),
            mean_seconds_to_resolve=sum(durations) / len(durations) if durations else None))
    return sorted(report, key=lambda q: (-q.alarms_per_1000_periods, q.check, q.scope))


def note_period(db, scope: str, active: Mapping[str, tuple[str, int]], now: int) -> None:
    """Records one evaluated period of ``scope``: ``active`` maps each alert key in the book after it to
    (alert ID, first_seen). Inside the caller's transaction; a period noted before changes nothing."""
    if db.execute("SELECT 1 FROM alert_periods WHERE scope = ? AND period = ?", (scope, now)).fetchone():
        return
    db.execute("INSERT INTO alert_periods VALUES (?, ?)", (scope, now))
    opened = {key: onset for key, onset in db.execute(
        "SELECT key, onset FROM alert_history WHERE scope = ? AND resolved IS NULL", (scope,))}
    # An open episode goes on while its key is in the book with the same first_seen; else it ended now.
    ended = [(now, key, onset) for key, onset in opened.items() if active.get(key, ("", None))[1] != onset]
    going_on = [(key, onset) for key, onset in opened.items() if active.get(key, ("", None))[1] == onset]
    started = [(key, alert_id, scope, first_seen) for key, (alert_id, first_seen) in active.items()
               if opened.get(key) != first_seen]
    db.executemany("UPDATE alert_history SET resolved = ? WHERE key = ? AND onset = ?", ended)
    db.executemany("UPDATE alert_history SET periods = periods + 1 WHERE key = ? AND onset = ?", going_on)
    db.executemany("INSERT OR REPLACE INTO alert_history VALUES (?, ?, ?, ?, NULL, 1)", started)
    _prune(db, scope)


def _prune(db, scope: str) -> None:
    """Keeps the newest HISTORY_PERIODS periods of the scope and the episodes that began in them (or go on)."""
    db.execute("DELETE FROM alert_periods WHERE scope = ? AND period NOT IN (SELECT period FROM alert_periods "
               "WHERE scope = ? ORDER BY period DESC LIMIT ?)", (scope, scope, HISTORY_PERIODS))
    db.execute("DELETE FROM alert_history WHERE scope = ? AND resolved IS NOT NULL AND onset < "
               "(SELECT MIN(period) FROM alert_periods WHERE scope = ?)", (scope, scope))


def load(db) -> tuple[list[Episode], dict[str, int]]:
    """The stored episodes whose onset was observed, and the periods observed per scope."""
    observed = {str(scope): int(count) for scope, count in db.execute(
        "SELECT scope, COUNT(*) FROM alert_periods GROUP BY scope")}
    rows = db.execute(
        "SELECT alert_id, h.scope, onset, resolved, periods FROM alert_history h JOIN "
        "(SELECT scope, MIN(period) AS since FROM alert_periods GROUP BY scope) p "
        "ON h.scope = p.scope WHERE onset >= since ORDER BY onset").fetchall()
    # A row that is not what note_period writes (edited by hand, damaged) is left out, not a failed report.
    episodes = [Episode(str(alert_id), str(scope), onset, resolved, periods)
                for alert_id, scope, onset, resolved, periods in rows
                if all(_is_int(value) for value in (onset, periods)) and (resolved is None or _is_int(resolved))]
    return episodes, observed


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def quality(db, flap_periods: int, known: Mapping[str, Iterable[str]] | None = None) -> list[CheckQuality]:
    """Every alert ID's figures from the state's alert history (and ``known``'s quiet ones, see summarise)."""
    episodes, observed = load(db)
    return summarise(episodes, observed, flap_periods, known)


def quality_points(report: Iterable[CheckQuality], vantage: str, time: int) -> list[Point]:
    """The ``allium_agent_alert_quality`` self-metrics: one point per check or detector."""
    return [point(MEASUREMENT, {"vantage": vantage, "check": q.check}, {
        "alarms_per_1000_periods": q.alarms_per_1000_periods, "alarms": q.alarms, "flaps": q.flaps,
        "mean_time_to_resolve_seconds": q.mean_seconds_to_resolve, "periods_observed": q.periods_observed,
    }, time) for q in report]
