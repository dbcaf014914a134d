"""Real relay populations over time, as the PeriodFacts the detectors read: hourly (or 8-hourly) snapshots.

Two public series record which relays Onionoo listed as running, snapshot
after snapshot (``../shared/timeseries``): ``alireza-tor-nodes`` (hourly;
fingerprint, IPv4, ORPort, Guard and Exit) and ``dmitry-onionoo-mirror``
(about 8-hourly; adds country and advertised bandwidth). Both come as
*runs*: a relay in one state from one snapshot to another. ``periods``
turns a series directory into PeriodFacts, snapshot by snapshot, with what
the data lacks left empty (no nickname, contact, version or platform;
weight NaN; every relay Running and Valid) so the detectors judge only what
was observed. The mirror's ``guard_prob_pos`` is not the Guard flag (its
README: it flips for the Guard+Exit relays when the bandwidth weights
change), so its relays carry no Guard or Exit flag.

Times are the snapshot's hour: the commit hour for alireza-tor-nodes (it
lags the consensus by 1-2 h), Onionoo's ``relays_published`` hour for the
mirror. Of two snapshots in one hour the later one stands for the hour (the
detectors take a time once). A period lasts the series' median spacing
(1 h, 8 h), so the detectors' "gap of more than three periods" and their
hour-based windows mean what they mean live.
"""

from __future__ import annotations

import calendar
import csv
import gzip
import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from agent.detect.facts import FLAG_BITS, PeriodFacts, RelayFacts

#: The runs' flag bits (1 Guard, 2 Exit) as the detectors' masks; every listed relay ran ("running:true").
_RUN_FLAGS = {1: FLAG_BITS["Guard"], 2: FLAG_BITS["Exit"]}
_LISTED = FLAG_BITS["Running"] | FLAG_BITS["Valid"]
HOUR = 3600
#: The layouts ``snapshots.csv`` comes in: its time column -> the series it is (the labels' ``series``).
LAYOUTS = {"ts_utc": "alireza-tor-nodes", "relays_published_utc": "dmitry-onionoo-mirror"}
FILES = ("snapshots.csv", "relays.csv.gz", "relay_runs.csv.gz")


class PopulationError(ValueError):
    """A series directory that is not one of the known layouts, or a file in it that cannot be read."""


@dataclass(frozen=True)
class Snapshot:
    index: int
    time: int  # unix seconds, the snapshot's hour
    segment: int
    stale: bool  # the source had not advanced (an identical or nearly identical listing)


def hour_of(stamp: str) -> int:
    """Unix seconds of the hour of an ISO UTC stamp ("2025-11-20T20:14:00Z" -> 20:00)."""
    moment = datetime.strptime(stamp.strip().rstrip("Z")[:13], "%Y-%m-%dT%H")
    return calendar.timegm(moment.timetuple())


def is_series(directory: Path) -> bool:
    """Whether ``directory`` holds a population series (its three files)."""
    return directory.is_dir() and all((directory / name).is_file() for name in FILES)


def series_name(directory: Path) -> str:
    """Which series the directory holds, by the layout of its ``snapshots.csv`` (the labels' key)."""
    path = directory / "snapshots.csv"
    try:
        with path.open(newline="") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise PopulationError(f"{path}: cannot be read ({error})") from error
    for column, name in LAYOUTS.items():
        if column in header:
            return name
    raise PopulationError(f"{path}: not a snapshot series (no {' or '.join(LAYOUTS)} column)")


def snapshots(directory: Path) -> list[Snapshot]:
    """The series' snapshots in order (``snapshots.csv``)."""
    path = directory / "snapshots.csv"
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError) as error:
        raise PopulationError(f"{path}: cannot be read ({error})") from error
    stamp = "ts_utc" if rows and "ts_utc" in rows[0] else "relays_published_utc"
    try:
        return [Snapshot(int(row["snap"]), hour_of(row[stamp]), int(row.get("segment") or 1),
                         row.get("stale_suspect") == "1" or bool(row.get("repeat_of_snap")))
                for row in rows]
    except (KeyError, ValueError) as error:
        raise PopulationError(f"{path}: not a snapshot series ({error})") from error


def period_seconds(taken: list[Snapshot]) -> int:
    """The series' median spacing in whole hours (at least one): 1 h hourly, 8 h for the Onionoo mirror."""
    steps = [later.time - earlier.time for earlier, later in zip(taken, taken[1:])
             if later.segment == earlier.segment and later.time > earlier.time]
    return max(HOUR, round(statistics.median(steps) / HOUR) * HOUR) if steps else HOUR


def periods(directory: Path, geoip=None, start: int = 0, stop: int | None = None) -> Iterator[tuple[Snapshot,
                                                                                                   PeriodFacts]]:
    """(snapshot, facts) for snapshots ``start``..``stop`` of the series in ``directory``.

    Country comes from the series when it has one, else from ``geoip``
    (``agent.metrics.geoip.GeoIP``), else "??". Of consecutive snapshots of
    the same hour only the last is yielded (the detectors take a time once).
    """
    every = snapshots(directory)
    taken = every[start:stop]
    if not taken:
        return
    seconds = period_seconds(every)
    runs = _resolved(_runs(directory, taken[0].index, taken[-1].index), _fingerprints(directory), geoip)
    state: dict[int, tuple] = {}
    starting: dict[int, list[tuple]] = {}
    ending: dict[int, list[tuple]] = {}
    for run in runs:
        starting.setdefault(max(run[1], taken[0].index), []).append(run)
        ending.setdefault(run[2], []).append(run)
    removed = taken[0].index  # runs ending before this snapshot are gone
    for position, snapshot in enumerate(taken):
        for end in range(removed, snapshot.index):
            for run in ending.pop(end, ()):
                if state.get(run[0]) is run:
                    del state[run[0]]
        removed = snapshot.index
        for run in starting.pop(snapshot.index, ()):
            state[run[0]] = run
        if position + 1 < len(taken) and taken[position + 1].time <= snapshot.time:
            continue  # the next snapshot is of the same hour: it stands for the hour
        yield snapshot, PeriodFacts(snapshot.time, seconds, _relays(state))


def _resolved(runs: list[tuple], fingerprints: dict[int, str], geoip) -> list[tuple]:
    """Each run with what its relays' columns need, worked out once: the flag mask, the country, the fingerprint.

    (relay, from, to, mask, ipv4, orport, country, advertised, fingerprint)
    """
    countries: dict[str, str] = {}
    if geoip is not None:
        unknown = list(dict.fromkeys(run[4] for run in runs if not run[6]))
        countries = dict(zip(unknown, geoip.countries(unknown)))
    masks = {flags: _LISTED | sum(bit for mask, bit in _RUN_FLAGS.items() if flags & mask) for flags in range(4)}
    try:
        return [(relay, begin, end, masks[flags & 3], ipv4, orport, country or countries.get(ipv4, "??"), advertised,
                 fingerprints[relay]) for relay, begin, end, flags, ipv4, orport, country, advertised in runs]
    except KeyError as error:
        raise PopulationError(f"relay {error} of relay_runs.csv.gz is not in relays.csv.gz") from error


def _relays(state: dict[int, tuple]) -> RelayFacts:
    listed = sorted(state.values())
    count = len(listed)
    if not count:
        _, _, _, masks, addresses, ports, country, advertised, fingerprint = ((),) * 9
    else:
        _, _, _, masks, addresses, ports, country, advertised, fingerprint = zip(*listed)
    return RelayFacts(fingerprint=list(fingerprint), nickname=[""] * count, address=list(addresses),
                      or_port=np.array(ports, np.int32), dir_port=np.zeros(count, np.int32),
                      flags=np.array(masks, np.uint32), weight=np.full(count, np.nan),
                      advertised=np.array(advertised, float), listed_by=np.zeros(count, np.int16),
                      country=list(country), operator=[None] * count, version=[None] * count, platform=[""] * count)


def _fingerprints(directory: Path) -> dict[int, str]:
    path = directory / "relays.csv.gz"
    try:
        with gzip.open(path, "rt", newline="") as handle:
            return {int(row["relay_id"]): row["fingerprint"] for row in csv.DictReader(handle)}
    except (OSError, csv.Error, KeyError, ValueError, EOFError) as error:
        raise PopulationError(f"{path}: cannot be read as relays ({error})") from error


def _runs(directory: Path, first: int, last: int) -> list[tuple]:
    """(relay, from, to, flags, ipv4, orport, country, advertised) of every run overlapping first..last.

    Flags only where the series has them (alireza-tor-nodes' ``flags``).
    """
    path = directory / "relay_runs.csv.gz"
    runs = []
    try:
        with gzip.open(path, "rt", newline="") as handle:
            rows = csv.reader(handle)
            column = {name: index for index, name in enumerate(next(rows))}
            relay, begin, end, ipv4, orport = (column[name] for name in ("relay_id", "from_snap", "to_snap", "ipv4",
                                                                          "orport"))
            flags, country, advertised = (column.get(name) for name in ("flags", "country_name",
                                                                        "adv_bw_bytes_2sig"))
            for row in rows:
                begins, ends = int(row[begin]), int(row[end])
                if ends < first or begins > last:
                    continue
                runs.append((int(row[relay]), begins, ends, int(row[flags] or 0) if flags is not None else 0,
                             row[ipv4], int(row[orport] or 0),
                             _country_code(row[country]) if country is not None else "",
                             float(row[advertised]) if advertised is not None and row[advertised] else np.nan))
    except (OSError, csv.Error, KeyError, ValueError, IndexError, EOFError, StopIteration) as error:
        raise PopulationError(f"{path}: cannot be read as relay runs ({error!r})") from error
    return runs


def _country_code(name: str) -> str:
    """The series' country names are full names; the detectors only compare them, so the name serves as a key."""
    return name.strip().lower()
