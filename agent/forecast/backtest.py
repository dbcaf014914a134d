"""Rolling-origin backtest of the capacity forecast on the real daily history; MAPE per role, quantity, horizon.

What: the Tor Metrics export ``bandwidth-flags.csv`` (date, have_guard_flag,
have_exit_flag, advbw, bwhist in Gbit/s, four rows a day, 2010-2019) summed
per role the way the agent counts roles (exit: the Exit flag; guard: Guard
without it; middle: neither), replayed one period a day through the very
``Forecaster.update`` the agent calls, so nothing of the forecaster is
re-implemented here. Every day is an origin; each origin's 7- and 30-day
forecasts are scored when the target day arrives (a missing target is not
scored), and the absolute percentage errors are averaged per window of
origin dates. Why: the model is only worth publishing where it beats the
naive baselines on data it has not seen; the 2015-2019 window is that
evidence (the model's settings were chosen on 2011-2014), and it is what
``agent.forecast.model.PRIOR`` holds.

``advertised`` is advbw; the archive has no consensus weight per role, so
``consensus`` is backtested on bwhist (the bandwidth the relays report
carrying), the nearest daily per-role capacity series. The documented
measurement artefacts (single-day halvings on 2019-01-14 and 2019-02-07;
MANIFEST.md) are dropped, and a day whose rows are incomplete is a gap.

    python -m agent.forecast.backtest [--csv PATH] [--since DATE] [--until DATE] [--json | --markdown | --prior]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from agent.forecast.model import (
    BAND,
    BASELINES,
    DAY_SECONDS,
    HORIZONS,
    LAST,
    METHODS,
    MODEL,
    ROLES,
    SEASONAL,
    Forecaster,
    Key,
    mape,
    quantile,
)

DEFAULT_CSV = (Path(__file__).resolve().parents[3] / "shared" / "timeseries" / "metrics-exports"
               / "mpguerra-apidaysbarcelona2019" / "bandwidth-flags.csv")
COLUMNS = {"advertised": "advbw", "consensus": "bwhist"}
ARTEFACTS = frozenset({date(2019, 1, 14), date(2019, 2, 7)})
#: (name, first origin, last origin): the model's settings were chosen on the first, the prior is the last.
WINDOWS = (("2011-2014", date(2011, 1, 1), date(2014, 12, 31)), ("2015-2019", date(2015, 1, 1), date(2019, 12, 31)))
PRIOR_WINDOW = WINDOWS[-1][0]

History = dict[Key, dict[int, float]]  # series -> day index (Unix days) -> daily value


@dataclass(frozen=True)
class Row:
    """One series, horizon and window of origins: how far each method's forecasts were off."""

    role: str
    quantity: str
    horizon: int
    window: str
    origins: int
    mapes: dict[str, float]  # method -> MAPE
    bands: dict[str, tuple[float, float]]  # method -> BAND quantiles of log(actual / forecast)

    @property
    def published(self) -> str:
        """What the agent publishes on this evidence: the model only where it beats both baselines."""
        return min(METHODS, key=lambda name: (self.mapes[name], METHODS.index(name)))


def day_index(day: date) -> int:
    return (day - date(1970, 1, 1)).days


def load_history(path: Path) -> History:
    """Per (role, quantity) the daily sum of its flag combinations; days missing a combination are left out."""
    sums: dict[Key, dict[int, float]] = defaultdict(dict)
    parts: dict[tuple[Key, int], int] = defaultdict(int)
    with path.open(newline="") as handle:
        for row in csv.DictReader(line for line in handle if not line.startswith("#")):
            day = date.fromisoformat(row["date"])
            if day in ARTEFACTS:
                continue
            role = "exit" if row["have_exit_flag"] == "TRUE" else "guard" if row["have_guard_flag"] == "TRUE" \
                else "middle"
            for quantity, column in COLUMNS.items():
                if row[column]:
                    key, index = (role, quantity), day_index(day)
                    sums[key][index] = sums[key].get(index, 0.0) + float(row[column])
                    parts[(key, index)] += 1
    needed = {"exit": 2, "guard": 1, "middle": 1}  # exit: with and without Guard
    return {key: {index: value for index, value in days.items()
                  if parts[(key, index)] == needed[key[0]] and value > 0}
            for key, days in sorted(sums.items())}


def backtest(history: History, since: date | None = None, until: date | None = None,
             windows: Sequence[tuple[str, date, date]] = WINDOWS) -> list[Row]:
    """Replays ``history`` (one period at noon each day) through a Forecaster without prior; MAPE per window."""
    first = min(min(days) for days in history.values()) if since is None else day_index(since)
    last = max(max(days) for days in history.values()) if until is None else day_index(until)
    forecaster = Forecaster(DAY_SECONDS, use_prior=False)
    found: dict[tuple[Key, int, str], list[tuple[float, ...]]] = defaultdict(list)
    spans = [(name, day_index(start), day_index(end)) for name, start, end in windows]
    for day in range(first, last + 2):  # one day more: it closes the last one
        forecaster.advance(day * DAY_SECONDS + DAY_SECONDS // 2,
                          {key: days[day] for key, days in history.items() if day in days and day <= last})
        for scored in forecaster.scored:
            for name, start, end in spans:
                if start <= scored.origin <= end:
                    found[(scored.key, scored.horizon, name)].append(scored.residuals)
    rows = []
    for (key, horizon, name), residuals in sorted(found.items(), key=lambda item: _order(*item[0])):
        columns = dict(zip(METHODS, (list(column) for column in zip(*residuals))))
        rows.append(Row(key[0], key[1], horizon, name, len(residuals),
                        {method: mape(column) for method, column in columns.items()},
                        {method: _band(column) for method, column in columns.items()}))
    return rows


def _band(residuals: list[float]) -> tuple[float, float]:
    return quantile(residuals, BAND[0]), quantile(residuals, BAND[1])


def _order(key: Key, horizon: int, window: str) -> tuple[int, str, str, int]:
    return ROLES.index(key[0]), key[1], window, horizon


def _cells(rows: Iterable[Row]) -> list[tuple[str, ...]]:
    shown = (MODEL, *BASELINES)
    header = ("role", "quantity", "horizon", "window", "origins", *(f"{method} %" for method in shown), "published")
    return [header] + [(row.role, row.quantity, f"{row.horizon} d", row.window, str(row.origins),
                        *(f"{100 * row.mapes[method]:.2f}" for method in shown), row.published) for row in rows]


def table(rows: Iterable[Row]) -> str:
    """The rows as an aligned text table, MAPE in percent."""
    lines = _cells(rows)
    header = lines[0]
    widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
    numeric = {2, 4, 5, 6, 7}
    return "\n".join("  ".join(cell.rjust(width) if column in numeric else cell.ljust(width)
                               for column, (cell, width) in enumerate(zip(line, widths))).rstrip()
                     for line in lines)


def markdown(rows: Iterable[Row]) -> str:
    """The rows as a Markdown table (docs/forecast.md), the published method in bold."""
    lines = _cells(rows)
    body = [f"| {' | '.join(line[:-1])} | **{line[-1]}** |" for line in lines[1:]]
    return "\n".join([f"| {' | '.join(lines[0])} |", "|" + "---|" * len(lines[0]), *body])


def prior_literal(rows: Iterable[Row], window: str = PRIOR_WINDOW) -> str:
    """``PRIOR`` for agent/forecast/model.py from the rows of ``window``."""
    lines = ["PRIOR: dict[tuple[str, str, int], dict[str, tuple[float, Band]]] = {"]
    for row in rows:
        if row.window == window:
            methods = [f"{name.upper()}: ({row.mapes[method]:.5f}, ({row.bands[method][0]:.4f}, "
                       f"{row.bands[method][1]:.4f}))" for name, method in _NAMES.items()]
            lines += [f'    ("{row.role}", "{row.quantity}", {row.horizon}): {{{", ".join(methods[:2])},',
                      f"        {methods[2]}}},"]
    return "\n".join([*lines, "}"])


_NAMES = {"model": MODEL, "seasonal": SEASONAL, "last": LAST}  # the constants' names in model.py


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.forecast.backtest", description=__doc__.split("\n")[0])
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="Tor Metrics bandwidth-flags.csv")
    parser.add_argument("--since", type=date.fromisoformat, help="first day replayed (default: the first in the file)")
    parser.add_argument("--until", type=date.fromisoformat, help="last day replayed (default: the last in the file)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the rows as JSON")
    output.add_argument("--markdown", action="store_true", help="the table in Markdown (docs/forecast.md)")
    output.add_argument("--prior", action="store_true", help=f"PRIOR for model.py, from the {PRIOR_WINDOW} window")
    arguments = parser.parse_args(argv)
    if not arguments.csv.is_file():
        print(f"{arguments.csv}: no such file", file=sys.stderr)
        return 2
    rows = backtest(load_history(arguments.csv), arguments.since, arguments.until)
    if arguments.json:
        print(json.dumps({"horizons": list(HORIZONS), "windows": [[name, str(start), str(end)]
                                                                 for name, start, end in WINDOWS],
                          "rows": [{**asdict(row), "published": row.published} for row in rows]}, indent=1))
    elif arguments.prior:
        print(prior_literal(rows))
    elif arguments.markdown:
        print(markdown(rows))
    else:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
