"""Real history as the PeriodFacts the daemon hands ``Detector.update``: three kinds of input, found by looking.

- a relay-population series directory (``populations``: alireza-tor-nodes,
  dmitry-onionoo-mirror): the relays Onionoo listed, snapshot by snapshot;
- depictor's hourly vote counts of 2014-2016 (a CSV): each authority's
  ``vote_relays`` (``<auth>_known``) and ``measured_relays``
  (``<auth>_bwauth``) with *no relays*, so those hours exercise the
  per-authority baselines only; a 0 or an empty cell is a collection gap
  (or an authority that did not vote, or does not measure) and leaves that
  authority's value out of that hour;
- consensuses (a directory, a file, a CollecTor ``.tar``/``.tar.xz``, with
  any votes, key certificates and server descriptors beside them): read and
  grouped as backfill does (``agent.loop.backfill``), each period's consensus
  chosen by trust (``agent.loop.archived``), in valid-after order, and its
  facts built as the live path builds them (the metrics' relay table, then
  ``agent.detect.facts.facts_of``).

Each history is a sequence of periods addressed by index (``facts(start,
stop)``), so a replay can be cut into parts run in worker processes; a
history pickles small (paths, not documents, except archive members).
"""

from __future__ import annotations

import calendar
import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from agent.detect.facts import PeriodFacts, RelayFacts
from agent.evaluation import populations

DEPICTOR = "depictor"
CONSENSUSES = "consensus"
#: depictor's column suffix -> the authority fact it is (``agent.detect.facts._authority_facts``'s names).
DEPICTOR_COLUMNS = {"known": "vote_relays", "bwauth": "measured_relays"}


class HistoryError(ValueError):
    """A path that is none of the inputs, or that cannot be read as the one it looks like."""


class History(Protocol):
    series: str  # the labels' key
    period_seconds: int

    def __len__(self) -> int: ...

    def describe(self) -> str: ...

    def facts(self, start: int, stop: int, geoip: Any = None) -> Iterator[tuple[int, PeriodFacts]]:
        """(index, facts) of the periods ``start``..``stop`` (exclusive), in time order."""


def open_history(path: Path, config: Any = None) -> History:
    """The history at ``path``, whichever kind it is; HistoryError naming the path if it is none of them."""
    path = Path(path)
    if not path.exists():
        raise HistoryError(f"{path}: no such file or directory")
    if populations.is_series(path):
        return PopulationHistory.open(path)
    if path.is_file() and _is_depictor(path):
        return DepictorHistory.open(path)
    history = ConsensusHistory.open(path, config)
    if not len(history):
        raise HistoryError(
            f"{path}: not a relay-population series (a directory with {', '.join(populations.FILES)}), not "
            f"depictor's hourly vote counts (a CSV whose header starts valid_after_utc, <authority>_known, ...), "
            f"and no consensus was found in it ({history.read_summary()})")
    return history


@dataclass
class PopulationHistory:
    path: Path
    series: str
    count: int
    period_seconds: int
    first: int
    last: int

    @classmethod
    def open(cls, path: Path) -> PopulationHistory:
        try:
            taken = populations.snapshots(path)
            series = populations.series_name(path)
        except populations.PopulationError as error:
            raise HistoryError(str(error)) from error
        if not taken:
            raise HistoryError(f"{path / 'snapshots.csv'}: no snapshots")
        return cls(path, series, len(taken), populations.period_seconds(taken), taken[0].time, taken[-1].time)

    def __len__(self) -> int:
        return self.count

    def describe(self) -> str:
        return (f"{self.path} ({self.series}): {self.count:,} snapshots, {_hour(self.first)} .. {_hour(self.last)}, "
                f"one period = {self.period_seconds // 3600} h")

    def facts(self, start: int, stop: int, geoip: Any = None) -> Iterator[tuple[int, PeriodFacts]]:
        try:
            for snapshot, facts in populations.periods(self.path, geoip, start, stop):
                yield snapshot.index, facts
        except populations.PopulationError as error:
            raise HistoryError(str(error)) from error


def _is_depictor(path: Path) -> bool:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    return bool(header) and header[0] == "valid_after_utc" and any(name.endswith("_known") for name in header)


@dataclass
class DepictorHistory:
    path: Path
    count: int
    first: int
    last: int
    series: str = DEPICTOR
    period_seconds: int = 3600

    @classmethod
    def open(cls, path: Path) -> DepictorHistory:
        times = [time for time, _ in _depictor_rows(path)]
        if not times:
            raise HistoryError(f"{path}: depictor's header but no hours")
        return cls(path, len(times), times[0], times[-1])

    def __len__(self) -> int:
        return self.count

    def describe(self) -> str:
        return (f"{self.path} (depictor's vote counts): {self.count:,} hours, {_hour(self.first)} .. "
                f"{_hour(self.last)}; no relays: the per-authority baselines only")

    def facts(self, start: int, stop: int, geoip: Any = None) -> Iterator[tuple[int, PeriodFacts]]:
        for index, (time, authorities) in enumerate(_depictor_rows(self.path)):
            if index >= stop:
                return
            if index >= start:
                yield index, PeriodFacts(time, self.period_seconds, no_relays(), authorities)


def _depictor_rows(path: Path) -> Iterator[tuple[int, dict[str, dict[str, float]]]]:
    """(hour, authority -> {vote_relays, measured_relays}) per row; zeros and empty cells left out."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                try:
                    time = calendar.timegm(datetime.strptime(row["valid_after_utc"][:13], "%Y-%m-%dT%H").timetuple())
                    authorities: dict[str, dict[str, float]] = {}
                    for column, text in row.items():
                        authority, _, kind = (column or "").rpartition("_")
                        if kind in DEPICTOR_COLUMNS and authority != "median" and text and float(text) > 0:
                            authorities.setdefault(authority, {})[DEPICTOR_COLUMNS[kind]] = float(text)
                except (KeyError, ValueError, TypeError) as error:
                    raise HistoryError(f"{path}, line {line}: not an hour of vote counts ({error})") from error
                yield time, authorities
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise HistoryError(f"{path}: cannot be read ({error})") from error


def no_relays() -> RelayFacts:
    """An empty relay table (depictor's hours list no relays)."""
    return RelayFacts([], [], [], np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.uint32),
                      np.zeros(0), np.zeros(0), np.zeros(0, np.int16), [], [], [], [])


@dataclass
class ConsensusHistory:
    paths: list[Path]
    config: Any
    periods: list = field(default_factory=list)  # agent.loop.archived.Period with a consensus, by valid-after
    certificates: list = field(default_factory=list)
    descriptors: list = field(default_factory=list)
    documents: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    series: str = CONSENSUSES
    period_seconds: int = 3600  # the detectors take each consensus's own (fresh-until minus valid-after)

    @classmethod
    def open(cls, path: Path | Sequence[Path], config: Any) -> ConsensusHistory:
        """The consensuses in ``path`` (or in several paths, read together as backfill reads its arguments)."""
        from agent.loop.archived import BackfillResult
        from agent.loop.backfill import _gather  # backfill's own grouping by valid-after, reused

        if config is None:
            from agent.config.loader import load_config

            config = load_config(None, environ={})
        paths = [Path(path)] if isinstance(path, (str, Path)) else [Path(each) for each in path]
        found = BackfillResult()
        periods, certificates, descriptors = _gather(paths, found)
        ordered = [periods[key] for key in sorted(periods) if periods[key].consensuses]
        descriptors.sort(key=lambda descriptor: descriptor.published)
        return cls(paths, config, ordered, certificates, descriptors, found.documents, found.read.unreadable or [])

    def __len__(self) -> int:
        return len(self.periods)

    def read_summary(self) -> str:
        kinds = "documents read: " + (", ".join(f"{kind} {count}" for kind, count in sorted(self.documents.items()))
                                      or "none the agent uses")
        return kinds + (f"; {len(self.problems)} unreadable" if self.problems else "")

    def describe(self) -> str:
        span = (f", {self.periods[0].valid_after:%Y-%m-%dT%H:%M} .. {self.periods[-1].valid_after:%Y-%m-%dT%H:%M}"
                if self.periods else "")
        return f"{', '.join(map(str, self.paths))} (consensuses): {len(self.periods):,} periods{span}; " \
               f"{self.read_summary()}"

    def consensuses(self, start: int, stop: int) -> Iterator[tuple[int, Any, Any]]:
        """(index, Snapshot, consensus) of the periods ``start``..``stop`` (exclusive), each period's consensus as
        trust chooses it (``agent.loop.archived``); a period without a usable one is skipped, as live."""
        from agent.loop.archived import BackfillResult, archived_snapshot
        from agent.loop.backfill import _DescriptorFeed
        from agent.parse.entrymemory import EntryMemory
        from agent.parse.signatures import trust_certificates

        trusted, _ = trust_certificates(self.certificates)
        feed, entries, found = _DescriptorFeed(self.descriptors), EntryMemory(), BackfillResult()
        for index in range(start, min(stop, len(self.periods))):
            period = self.periods[index]
            snapshot = archived_snapshot(period, self.config, trusted, feed.until(period.valid_after), found,
                                         entries)
            consensus = snapshot.latest_consensus() if snapshot is not None else None
            if snapshot is None or consensus is None:
                continue  # no usable consensus (reasons in ``found``): the period is missing, as live
            yield index, snapshot, consensus

    def facts(self, start: int, stop: int, geoip: Any = None) -> Iterator[tuple[int, PeriodFacts]]:
        """Each period's consensus as trust chooses it, its relay table and facts as the live path builds them."""
        from agent.detect.facts import facts_of
        from agent.metrics.geoip import GeoIP
        from agent.metrics.relays import table_of

        geoip = geoip if geoip is not None else GeoIP.empty()
        for index, snapshot, consensus in self.consensuses(start, stop):
            yield index, facts_of(snapshot, consensus, table_of(snapshot, consensus, geoip))


def _hour(time: int) -> str:
    return datetime.fromtimestamp(time, timezone.utc).strftime("%Y-%m-%dT%HZ")
