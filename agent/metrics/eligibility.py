"""Flag eligibility, explained: per authority, why a relay has or lacks Fast, Stable, Guard and HSDir.

A vote states its authority's thresholds (``flag-thresholds``) and, per relay, the flags voted, the bandwidth
judged (``w Bandwidth= Measured=``) and, since tor#40314 (2021), ``stats wfu= tk= mtbf=``: the authority's own
weighted fractional uptime, weighted time known and mean time between failures. The rules are tor's
(``voteflags.c``; dir-spec "Assigning flags in a vote"), explained in docs/relays.md. What a vote lacks is derived
and marked so (uptime from the server descriptor; WFU, time known and MTBF from the agent's consensus history,
given as ``stats``), else it is "unknown", never guessed. A margin is quantity / threshold: 1.0 is the boundary,
0.93 is 7 % short; none where either side is unknown or the threshold is 0. Pure: votes (stem's or
``agent.model.network_status.NetworkStatus``) and descriptors in, plain data and points out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np

from agent.metrics.thresholds import RelayStats, Thresholds, VoteStats, thresholds_of
from agent.model.entries import ABSENT, STATS_KEYS, RouterEntries, entries_of
from agent.model.points import PointColumns

# tor's defaults for what the flag-thresholds line leaves out (dirauth_options.inc, voteflags.c; the guarantees were
# the constants UPTIME_TO_GUARANTEE_STABLE, ... before tor#40652). tor compares bandwidths in kB of 1,000 bytes:
# a guarantee of "2 MB" (2,097,152 bytes) is 2,097 kB there. A rule passes at the threshold or at the guarantee.
GUARD_BW = (2_097_000, "AuthDirGuardBWGuarantee 2 MB, tor's default")
STABLE_UPTIME = (30 * 86400, "AuthDirVoteStableGuaranteeMinUptime 30 d, tor's default")
STABLE_MTBF = (5 * 86400, "AuthDirVoteStableGuaranteeMTBF 5 d, tor's default")
HSDIR_UPTIME = 96 * 3600  # MinUptimeHidServDirectoryV2 since tor 0.2.6.3 (0 on a TestingTorNetwork)

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
#: The flags explained, in the order a reader checks them; a vote's other flags are policy, not thresholds.
EXPLAINED = ("Running", "Valid", "V2Dir", "Fast", "Stable", "Guard", "HSDir")
_POLICY = {
    "Running": "the authority's own reachability test of the ORPort (within 45 min); no document carries it",
    "Valid": "the authority's policy (known-broken versions, its reject lists); not in the vote",
    "V2Dir": "the descriptor's tunnelled-dir-server line (the agent's descriptor parser does not read it)",
}
_AT_ODDS = "the authority's tor or configuration differs, or it judged by figures the vote does not show"
MARGIN_FIELDS = ("fast_margin", "guard_bw_margin", "guard_wfu_margin", "guard_tk_margin", "stable_margin",
                 "hsdir_uptime_margin")

# -- one relay, one vote -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    """One condition of a flag rule: ``quantity`` (``value``, from ``source``) against ``threshold``, in ``unit``:
    bytes/s, s, ratio, or flag (a flag the rule needs: 1 or 0 against 1)."""

    quantity: str
    value: float | None
    threshold: float | None
    unit: str
    source: str
    threshold_source: str = ""
    derived: bool = False
    note: str = ""  # why the value or the threshold is unknown

    @property
    def status(self) -> str:
        if self.value is None or self.threshold is None:
            return UNKNOWN
        return PASS if self.value >= self.threshold else FAIL

    @property
    def margin(self) -> float | None:
        """value / threshold; None when either is unknown, the threshold is 0, or for a flag."""
        if self.value is None or self.threshold is None or self.threshold <= 0 or self.unit == "flag":
            return None
        return self.value / self.threshold

    def text(self) -> str:
        """``WFU 93.0% < 98.0% (guard-wfu)``, ``no Fast in this vote``, ``MTBF unknown (...)``."""
        if self.unit == "flag":
            return f"{'has' if self.value else 'no'} {self.quantity} in this vote"
        if self.value is None:
            return f"{self.quantity} unknown ({self.note or self.source})"
        if self.threshold is None:
            return f"{self.quantity} {_shown(self.value, self.unit)}, threshold unknown ({self.note})"
        sign = ">=" if self.value >= self.threshold else "<"
        return (f"{self.quantity} {_shown(self.value, self.unit)} {sign} {_shown(self.threshold, self.unit)}"
                f" ({self.threshold_source})")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status, "margin": self.margin}


def _shown(value: float, unit: str) -> str:
    if unit == "bytes/s":
        return f"{value / 1000:,.0f} kB/s"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    return f"{value / 3600:,.1f} h" if value < 10 * 86400 else f"{value / 86400:,.1f} d"


@dataclass(frozen=True)
class FlagDecision:
    """One flag in one vote: voted or not, the rule's checks, and whether the two agree."""

    flag: str
    voted: bool
    checks: tuple[Check, ...] = ()
    note: str = ""  # what decides a flag without a threshold

    @property
    def rule(self) -> str:
        statuses = {check.status for check in self.checks}
        return FAIL if FAIL in statuses else UNKNOWN if UNKNOWN in statuses or not statuses else PASS

    @property
    def agrees(self) -> bool | None:
        """Does the vote match the rule? None when the rule's outcome is unknown."""
        return None if self.rule == UNKNOWN else (self.rule == PASS) == self.voted

    @property
    def deciding(self) -> list[Check]:
        """The failing checks; else the unknown ones; else the tightest (smallest margin) passing one."""
        for status in (FAIL, UNKNOWN):
            if found := [check for check in self.checks if check.status == status]:
                return found
        passing = [check for check in self.checks if check.margin is not None]
        return [min(passing, key=lambda check: check.margin or 0)] if passing else list(self.checks[:1])

    def reason(self) -> str:
        """The deciding checks as text; for a vote at odds with tor's current rule, that and any hint (``note``)."""
        if not self.checks:
            return self.note
        text = "; ".join(check.text() for check in self.deciding)
        if self.agrees is False:
            text += ("; withheld although tor's current rule passes" if not self.voted else
                     "; voted although tor's current rule fails") + f": {self.note or _AT_ODDS}"
        return text

    @property
    def derived(self) -> bool:
        return any(check.derived for check in self.deciding)

    def as_dict(self) -> dict[str, Any]:
        return {"flag": self.flag, "voted": self.voted, "rule": self.rule, "agrees": self.agrees,
                "reason": self.reason(), "derived": self.derived, "checks": [c.as_dict() for c in self.checks]}


@dataclass(frozen=True)
class Verdict:
    """One authority's vote on one relay: the flags voted, and each explained flag's decision."""

    authority: str
    fingerprint: str
    listed: bool
    nickname: str | None
    voted: tuple[str, ...]
    known_flags: tuple[str, ...]
    decisions: tuple[FlagDecision, ...]
    thresholds: Thresholds

    @property
    def withheld(self) -> tuple[str, ...]:
        """The explained flags this authority knows but did not vote (its other known flags are policy)."""
        return tuple(decision.flag for decision in self.decisions if not decision.voted)

    def as_dict(self) -> dict[str, Any]:
        return {"authority": self.authority, "listed": self.listed, "nickname": self.nickname,
                "voted": list(self.voted), "withheld": list(self.withheld), "known_flags": list(self.known_flags),
                "flag_thresholds": dict(self.thresholds.values) if self.thresholds.present else None,
                "flag_threshold_problems": list(self.thresholds.problems),
                "decisions": [decision.as_dict() for decision in self.decisions]}


def explain(vote: Any, fingerprint: str, descriptor: Any = None, stats: RelayStats | None = None,
            hsdir_uptime: float = HSDIR_UPTIME) -> Verdict:
    """Why ``vote`` gives the relay ``fingerprint`` the flags it does; ``stats``: figures derived or read elsewhere
    (default: the vote's own stats line, ``VoteStats``)."""
    thresholds = thresholds_of(vote)
    known = tuple(vote.known_flags or ())
    entry = vote.routers.get(fingerprint)
    authority = vote.directory_authorities[0].nickname if vote.directory_authorities else "?"
    if entry is None:
        return Verdict(authority, fingerprint, False, None, (), known, (), thresholds)
    flags = set(entry.flags or ())
    but_authority = _measured_but_authority(entry.unrecognized_bandwidth_entries or ())
    bandwidth = _bandwidth(entry.measured, but_authority, entry.bandwidth, thresholds.get("ignoring-advertised-bws"))
    uptime = _uptime(descriptor, _vote_time(vote))
    none = RelayStats(source="no stats line in this vote, no history given")
    stats = stats or VoteStats(vote).get(fingerprint) or none
    checks = _rules(flags, thresholds, bandwidth, uptime, stats, hsdir_uptime)
    hint = "" if "Running" in flags else f"the relay is not Running in this vote, and {_AT_ODDS}"
    decisions = tuple(FlagDecision(flag, flag in flags, checks.get(flag, ()), _POLICY.get(flag, hint))
                      for flag in EXPLAINED if flag in known)
    return Verdict(authority, fingerprint, True, entry.nickname, tuple(entry.flags or ()), known, decisions,
                   thresholds)


def _rules(flags: set[str], t: Thresholds, bandwidth: Check, uptime: Check, stats: RelayStats,
           hsdir_uptime: float) -> dict[str, tuple[Check, ...]]:
    def has(flag: str) -> Check:
        return Check(flag, float(flag in flags), 1.0, "flag", "this vote")

    def against(base: Check, threshold: float | None, source: str, *keys: str) -> Check:
        why = "the vote has no flag-thresholds line" if not t.present else f"no usable {' or '.join(keys)}"
        notes = ([base.note or base.source] if base.value is None else []) + ([why] if threshold is None else [])
        return replace(base, threshold=threshold, threshold_source=source, note="; ".join(notes))

    def figure(name: str, value: float | None) -> Check:
        return Check(name, value, None, "ratio" if name == "WFU" else "s", stats.source, derived=stats.derived)

    enough = t.get("enough-mtbf")
    if enough == 1:  # the authority has watched long enough (4 h) to trust its MTBF; else it judges by uptime
        stable = against(figure("MTBF", stats.mtbf), *_lowest(t, ("stable-mtbf",), STABLE_MTBF), "stable-mtbf")
    else:
        limit, source = _lowest(t, ("stable-uptime",) if enough == 0 else (), STABLE_UPTIME)
        stable = against(uptime, limit, source, "enough-mtbf", "stable-uptime")
    return {
        "Fast": (against(bandwidth, t.get("fast-speed"), "fast-speed", "fast-speed"),),
        "Stable": (stable,),
        "Guard": (has("Fast"), has("Stable"), has("V2Dir"),
                  against(bandwidth, *_lowest(t, ("guard-bw-inc-exits", "guard-bw-exc-exits"), GUARD_BW),
                          "guard-bw-inc-exits", "guard-bw-exc-exits"),
                  against(figure("WFU", stats.wfu), t.get("guard-wfu"), "guard-wfu", "guard-wfu"),
                  against(figure("time known", stats.tk), t.get("guard-tk"), "guard-tk", "guard-tk")),
        "HSDir": (has("Fast"), has("Stable"), has("Running"), has("Valid"), has("V2Dir"),
                  against(uptime, hsdir_uptime, "MinUptimeHidServDirectoryV2, assumed")),
    }


def _lowest(t: Thresholds, keys: tuple[str, ...], guarantee: tuple[float, str]) -> tuple[float | None, str]:
    """The lowest of the vote's ``keys`` and the guarantee tor adds to them (a rule passes at either), and its name."""
    given = {key: value for key in keys if (value := t.get(key)) is not None}
    lowest = min(given, key=given.__getitem__, default=None)
    if lowest is None or given[lowest] <= guarantee[0]:
        return (None, "") if lowest is None else (given[lowest], lowest)
    return guarantee[0], f"{guarantee[1]}, below {lowest}"


def _measured_but_authority(items: Iterable[str]) -> int | None:
    # A vote leaves Measured= out for relays with the Authority flag and gives the bandwidth authority's figure
    # as MeasuredButAuthority= instead (dir-spec); tor still judges the relay by it.
    for item in items:
        key, _, value = item.partition("=")
        if key == "MeasuredButAuthority" and value.isascii() and value.isdigit():
            return int(value)
    return None


def _bandwidth(measured: int | None, but_authority: int | None, advertised: int | None,
               ignoring: float | None) -> Check:
    """The bandwidth tor judges by (its "credible" bandwidth) in bytes/s; a vote's figures are kB (1,000 bytes)."""
    judged = measured if measured is not None else but_authority
    if judged is not None:
        source = "Measured=" if measured is not None else "MeasuredButAuthority="
        return Check("bandwidth", judged * 1000.0, None, "bytes/s", f"{source} in this vote")
    if ignoring == 1:  # tor keeps measurements up to 3 days old (MAX_MEASUREMENT_AGE): the vote shows the newest
        return Check("bandwidth", 0.0, None, "bytes/s", "no Measured= in this vote: 0 (ignoring-advertised-bws=1) "
                                                        "unless the authority holds a measurement up to 3 d old")
    if ignoring == 0 and advertised is not None:
        return Check("bandwidth", advertised * 1000.0, None, "bytes/s", "advertised (Bandwidth= in this vote)")
    return Check("bandwidth", None, None, "bytes/s", "unmeasured", note="unmeasured, and whether this authority "
                 "counts advertised bandwidths is unknown (no ignoring-advertised-bws)")


def _vote_time(vote: Any) -> datetime:
    """When the authority judged: the vote's published time (its valid-after if it has none)."""
    return utc(getattr(vote, "published", None) or vote.valid_after)


def utc(moment: datetime) -> datetime:
    """An aware UTC time; stem's and our parsers' times are naive UTC."""
    return moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _uptime(descriptor: Any, when: datetime) -> Check:
    """The relay's uptime when the authority voted: its descriptor's ``uptime`` plus the time since publication
    (counted back from a descriptor published after the vote: negative, the relay restarted in between)."""
    if descriptor is None or getattr(descriptor, "uptime", None) is None:
        why = "no server descriptor" if descriptor is None else "its descriptor has no uptime line"
        return Check("uptime", None, None, "s", why, derived=True, note=why)
    published = utc(descriptor.published)
    value = descriptor.uptime + (when - published).total_seconds()
    source = f"server descriptor published {published:%Y-%m-%dT%H:%M:%SZ}, uptime {descriptor.uptime:,} s then"
    restarted = "its descriptor, newer than the vote, shows a restart after the vote" if value < 0 else ""
    return Check("uptime", None if restarted else value, None, "s", source, derived=True, note=restarted)


# -- per-relay margins, every relay, every vote ------------------------------------------------------------------

def margin_columns(relays: RouterEntries, votes: Sequence[Any], descriptors: Iterable[Any] = (),
                   stats: Sequence[Mapping[str, RelayStats] | None] | None = None,
                   hsdir_uptime: float = HSDIR_UPTIME) -> dict[str, np.ndarray]:
    """Per relay of ``relays``: each margin's median over the votes that list it and give its threshold (NaN: none).

    ``stats`` (one mapping per vote, or None) gives WFU, time known and MTBF: without them the guard_wfu, guard_tk
    and (where enough-mtbf=1) stable margins are NaN. ``VoteStats(vote)``: the vote's own lines, read as columns.
    Linear in relays times votes.
    """
    count = len(relays)
    per_vote = {name: np.full((len(votes), count), np.nan) for name in MARGIN_FIELDS}
    newest: dict[str, tuple[float, float]] = {}  # fingerprint -> (published, uptime - published), Unix seconds
    for descriptor in descriptors:
        published = utc(descriptor.published).timestamp()
        if descriptor.uptime is not None and published > newest.get(descriptor.fingerprint, (-np.inf, 0))[0]:
            newest[descriptor.fingerprint] = (published, descriptor.uptime - published)
    uptime_base = np.array([newest.get(fingerprint, (0, np.nan))[1] for fingerprint in relays.fingerprints], float)
    for index, vote in enumerate(votes):
        t = thresholds_of(vote)
        entries = entries_of(vote)
        rows = entries.indices_in(relays)
        present = rows >= 0
        bandwidth = _bandwidth_column(entries, t.get("ignoring-advertised-bws"))
        uptime = np.where(present, uptime_base[np.maximum(rows, 0)], np.nan) + _vote_time(vote).timestamp()
        uptime[uptime < 0] = np.nan  # a descriptor newer than the vote that shows a restart after it
        figures = (stats[index] if stats else None) or {}
        wfu, tk, mtbf = (_figures(figures, entries, name) for name in STATS_KEYS)
        enough = t.get("enough-mtbf")
        stable = (_ratio(mtbf, _lowest(t, ("stable-mtbf",), STABLE_MTBF)[0]) if enough == 1 else
                  _ratio(uptime, _lowest(t, ("stable-uptime",), STABLE_UPTIME)[0]) if enough == 0 else None)
        columns = {"fast_margin": _ratio(bandwidth, t.get("fast-speed")),
                   "guard_bw_margin": _ratio(bandwidth, _lowest(t, ("guard-bw-inc-exits", "guard-bw-exc-exits"),
                                                                GUARD_BW)[0]),
                   "guard_wfu_margin": _ratio(wfu, t.get("guard-wfu")),
                   "guard_tk_margin": _ratio(tk, t.get("guard-tk")),
                   "stable_margin": stable, "hsdir_uptime_margin": _ratio(uptime, hsdir_uptime)}
        for name, column in columns.items():
            if column is not None:
                per_vote[name][index, rows[present]] = column[present]
    return {name: _median(values) for name, values in per_vote.items()}


def _median(values: np.ndarray) -> np.ndarray:
    """Per column: the median of its values that are not NaN (NaN if none); np.nanmedian, 10 times faster here."""
    if not values.size:
        return np.full(values.shape[1], np.nan)
    ordered = np.sort(values, axis=0)  # NaN sorts last
    count = np.count_nonzero(~np.isnan(values), axis=0)
    middle = [np.take_along_axis(ordered, row[None], 0)[0] for row in (np.maximum(count - 1, 0) // 2, count // 2)]
    return np.where(count > 0, (middle[0] + middle[1]) / 2, np.nan)


def _bandwidth_column(entries: RouterEntries, ignoring: float | None) -> np.ndarray:
    """Per entry: the bandwidth tor judges by, bytes/s (as ``_bandwidth``); NaN where unknown."""
    unmeasured = (np.zeros(len(entries)) if ignoring == 1 else
                  np.where(entries.bandwidth != ABSENT, entries.bandwidth * 1000.0, np.nan) if ignoring == 0 else
                  np.full(len(entries), np.nan))
    column = np.where(entries.measured != ABSENT, entries.measured * 1000.0, unmeasured)
    for row, items in entries.unrecognized.items():
        value = _measured_but_authority(items)
        if value is not None and entries.measured[row] == ABSENT:
            column[row] = value * 1000.0
    return column


def _figures(stats: Mapping[str, RelayStats], entries: RouterEntries, name: str) -> np.ndarray:
    if isinstance(stats, VoteStats) and stats.entries is entries and entries.stats is not None:
        return entries.stats[:, STATS_KEYS.index(name)]
    if not stats:
        return np.full(len(entries), np.nan)
    values = (getattr(stats.get(fingerprint), name, None) for fingerprint in entries.fingerprints)
    return np.array([np.nan if value is None else value for value in values], float).reshape(len(entries))


def _ratio(values: np.ndarray, threshold: float | None) -> np.ndarray | None:
    return None if threshold is None or threshold <= 0 else values / threshold  # 0: everyone passes, no margin


def eligibility_points(relays: RouterEntries, votes: Sequence[Any], descriptors: Iterable[Any], time: int,
                       stats: Sequence[Mapping[str, RelayStats] | None] | None = None) -> list[Any]:
    """tor_relay points with the margins (``MARGIN_FIELDS``) of each relay that has at least one."""
    columns = margin_columns(relays, votes, descriptors, stats)
    keep = np.flatnonzero(np.any([~np.isnan(column) for column in columns.values()], axis=0))
    fingerprints = [relays.fingerprints[row] for row in keep.tolist()]
    kept = {name: column[keep] for name, column in columns.items() if not np.isnan(column[keep]).all()}
    return PointColumns("tor_relay", "fingerprint", fingerprints, kept, time).points() if kept else []
