"""How good the at-risk warnings (``agent.metrics.atrisk``) are on real history: precision, recall, lead time.

What: a history (``agent.evaluation.atrisk_input``: the alireza-tor-nodes
series, hourly Onionoo lists with Guard; or consecutive consensuses, with
Guard, Stable, HSDir and Fast) is turned into, per relay and snapshot,
"listed" and "has the flag"; at every snapshot each listed relay gets the
history features of ``agent.metrics.atrisk`` computed from the snapshots up
to it, and the warning is scored against what happened in the next
``HORIZON`` snapshots:

- ``dropout``: a listed relay is missing from a later snapshot (onset: listed, then not);
- a flag (``guard``, ``stable``, ``hsdir``, ``fast``): a listed relay with the flag is listed without it
  (onset: listed without the flag, with it when last listed).

Precision: warnings followed by an onset within the horizon / warnings.
Recall: onsets with a warning for that relay in the ``HORIZON`` snapshots
before / onsets. Lead time: hours from the earliest such warning to the
onset (snapshot times). The cell rates and the thresholds are fitted on the
tuning part only and measured on the held-out rest: alireza, tuned on
segment 1 before 2025-01-01, held out on the rest of segment 1 and on
segment 2; consensuses, tuned on the first ``--split-fraction`` (0.5) of
the time span, held out on the rest. Each segment starts with a week of
warm-up (``--warmup``). The baseline warns every relay that changed (left,
came back, gained or lost the flag; Guard for dropout) in the last day.

Why: an operator may subscribe to a warning only once its measured precision
says it is worth reading (``MIN_PRECISION``). Vectorised over blocks of
relays x snapshots: the whole series is about 75 s of CPU.

    python -m agent.evaluation.atrisk [--series DIR] [--json]
    python -m agent.evaluation.atrisk --consensuses PATH [PATH ...] [--config FILE] [--split-fraction F]
"""

from __future__ import annotations

import argparse
import calendar
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from agent.evaluation.atrisk_input import SERIES, SPLIT, Series, load, load_consensuses
from agent.metrics import atrisk

__all__ = ["SERIES", "SPLIT", "Series", "load", "load_consensuses", "fit", "evaluate", "render", "main"]
WARMUP = atrisk.LONG_WINDOW  # snapshots of a segment before its features have a week of history
CHUNK = 4000  # relays per vectorised block (divided among the flags: each flag has its own features)
SPAN = 2000  # snapshots per vectorised block (plus its context)


def _matrix(series: Series, relays: np.ndarray, first: int, last: int, which: np.ndarray) -> np.ndarray:
    """A relays x snapshots (first..last-1) boolean matrix: in one of the runs selected by ``which``."""
    position = np.full(series.relays, -1)
    position[relays] = np.arange(len(relays))
    take = which & (position[series.relay] >= 0) & (series.stop >= first) & (series.start < last)
    row = position[series.relay[take]]
    begin, end = np.maximum(series.start[take], first) - first, np.minimum(series.stop[take] + 1, last) - first
    delta = np.zeros((len(relays), last - first + 1), np.int32)
    np.add.at(delta, (row, begin), 1)
    np.add.at(delta, (row, end), -1)
    return np.cumsum(delta[:, :-1], axis=1) > 0


def _window_after(events: np.ndarray, horizon: int) -> np.ndarray:
    """Per column t: whether any of columns (t, t + horizon] is true (truncated at the end)."""
    counts = np.concatenate([np.zeros((events.shape[0], 1), np.int32), np.cumsum(events, axis=1, dtype=np.int32)],
                            axis=1)
    width = events.shape[1]
    ahead = np.minimum(np.arange(width) + horizon + 1, width)
    return (counts[:, ahead] - counts[:, 1:]) > 0


@dataclass
class Blocks:
    """Some relays over some snapshots: features, eligibility, outcomes and onsets per target."""

    features: dict[str, dict[str, np.ndarray]]  # per target: the history features it is scored on
    eligible: dict[str, np.ndarray]
    outcome: dict[str, np.ndarray]
    onset: dict[str, np.ndarray]
    fresh: dict[str, np.ndarray]  # onsets of relays without the same event in the week before
    present: np.ndarray
    columns: np.ndarray  # the absolute snapshot index of each column
    core: np.ndarray  # the columns this block answers for (the others are history or look-ahead context)
    relays: np.ndarray | None = None  # the relay index of each row


def blocks(series: Series, horizon: int = atrisk.HORIZON, span: int = SPAN) -> Iterator[Blocks]:
    """Yields ``Blocks``: per segment (history never crosses a segment gap), per ``span`` snapshots (with a
    week and a horizon of history before and a horizon after), per ``CHUNK`` relays listed in that time."""
    everyone = np.ones(len(series.relay), bool)
    size = CHUNK // max(1, len(series.flags))
    first_start = np.full(series.relays, np.iinfo(np.int64).max)
    for seg in np.unique(series.segment):
        columns = np.flatnonzero(series.segment == seg)
        seg_first, seg_last = int(columns[0]), int(columns[-1]) + 1
        inside = (series.stop >= seg_first) & (series.start < seg_last)
        first_start[:] = np.iinfo(np.int64).max
        np.minimum.at(first_start, series.relay[inside], np.maximum(series.start[inside], seg_first))
        for core_first in range(seg_first, seg_last, span):
            core_last = min(core_first + span, seg_last)
            first = max(seg_first, core_first - atrisk.LONG_WINDOW - horizon - 1)
            last = min(seg_last, core_last + horizon)
            relays = np.unique(series.relay[(series.stop >= first) & (series.start < last)])
            for begin in range(0, len(relays), size):
                chunk = relays[begin:begin + size]
                yield _block(series, chunk, first, last, everyone, first_start[chunk] < first, horizon,
                             core_first, core_last)


def _block(series: Series, chunk: np.ndarray, first: int, last: int, everyone: np.ndarray,
           seen_before: np.ndarray, horizon: int, core_first: int, core_last: int) -> Blocks:
    present = _matrix(series, chunk, first, last, everyone)
    width = last - first
    before = np.concatenate([np.zeros((len(chunk), 1), bool), present[:, :-1]], axis=1)
    last_present = np.maximum.accumulate(np.where(present, np.arange(width), 0), axis=1)
    ever = np.logical_or.accumulate(present, axis=1)
    features, onset, eligible = {}, {"dropout": before & ~present}, {"dropout": present}
    for target, runs in series.flags.items():
        flag = _matrix(series, chunk, first, last, runs)
        features[target] = atrisk.history_features(present, flag, seen_before=seen_before)
        flag_when_last = np.take_along_axis(flag, last_present, axis=1) & ever
        flag_when_last = np.concatenate([np.zeros((len(chunk), 1), bool), flag_when_last[:, :-1]], axis=1)
        onset[target] = present & ~flag & flag_when_last
        eligible[target] = present & flag
    # dropout is scored on the first flag's features (Guard: state age counts its changes), as FITTED was fitted
    features["dropout"] = (features[next(iter(series.flags))] if series.flags
                           else atrisk.history_features(present, seen_before=seen_before))
    outcome = {target: _window_after(events, horizon) for target, events in onset.items()}
    quiet = {target: np.concatenate([np.zeros((len(chunk), 1), bool),
                                     features[target]["drops_168" if target == "dropout" else "losses_168"][:, :-1]
                                     == 0], axis=1) for target in onset}
    fresh = {target: onset[target] & quiet[target] for target in onset}
    columns = np.arange(first, last)
    return Blocks(features, eligible, outcome, onset, fresh, present, columns,
                  (columns >= core_first) & (columns < core_last), chunk)


def parts(series: Series, horizon: int = atrisk.HORIZON, split: int | None = None,
          warmup: int = WARMUP) -> dict[str, list[tuple[int, int]]]:
    """Per part of ``series.plan``, its snapshot ranges [start, stop), one per segment it covers: the segment's
    snapshots on its side of ``split`` (default ``series.split``, else the first snapshot from ``SPLIT``),
    without the segment's first ``warmup`` snapshots and the part's last ``horizon`` (their outcome would reach
    past it). Alireza: tune (segment 1 before), held-out (segment 1 from), segment 2; consensuses: tune, held-out."""
    if split is None:
        split = series.split
    if split is None:
        split_hour = calendar.timegm(datetime.strptime(SPLIT, "%Y-%m-%dT%H:%M:%SZ").timetuple()) / 3600.0
        split = int(np.searchsorted(series.hours, split_hour))
    out: dict[str, list[tuple[int, int]]] = {}
    for name, wanted, side in series.plan:
        low, high = {"before": (0, split), "after": (split, 1 << 62), "all": (0, 1 << 62)}[side]
        for seg in np.unique(series.segment) if wanted is None else [wanted]:
            columns = np.flatnonzero(series.segment == seg)
            if not len(columns):
                continue
            start = max(int(columns[0]) + warmup, low)
            stop = min(int(columns[-1]) + 1, high) - horizon
            if stop > start:
                out.setdefault(name, []).append((start, stop))
    return out


def _within(columns: np.ndarray, ranges: list[tuple[int, int]]) -> np.ndarray:
    """Whether each absolute snapshot index is in one of ``ranges``."""
    inside = np.zeros(len(columns), bool)
    for start, stop in ranges:
        inside |= (columns >= start) & (columns < stop)
    return inside


def fit(series: Series, split: int | None = None, horizon: int = atrisk.HORIZON,
        warmup: int = WARMUP) -> dict[str, dict[str, Any]]:
    """Per target: the cell rates, counts and positives on the tuning part, and the two thresholds."""
    tune = parts(series, horizon, split, warmup).get("tune")
    if not tune:
        raise ValueError(f"no tuning part: {len(series.hours)} snapshots leave none before the split after "
                         f"{warmup} of warm-up and a horizon of {horizon} (try --warmup, --horizon, --split-*)")
    counts = {target: np.zeros(atrisk.CELLS) for target in series.targets}
    positives = {target: np.zeros(atrisk.CELLS) for target in series.targets}
    for block in blocks(series, horizon):
        window = block.core & _within(block.columns, tune)
        if not window.any():
            continue
        for target in series.targets:
            mask = block.eligible[target] & window
            codes = atrisk.cell_codes({name: values[mask] for name, values in block.features[target].items()},
                                      target)
            counts[target] += np.bincount(codes, minlength=atrisk.CELLS)
            positives[target] += np.bincount(codes, weights=block.outcome[target][mask], minlength=atrisk.CELLS)
    fitted = {}
    for target in series.targets:
        rates = atrisk.rates_of(counts[target], positives[target])
        fitted[target] = {"rates": rates, "counts": counts[target], "positives": positives[target],
                          "best_f1": atrisk.choose_threshold(rates, counts[target], positives[target]),
                          "confident": atrisk.choose_threshold(rates, counts[target], positives[target],
                                                               atrisk.MIN_PRECISION)}
    return fitted


@dataclass
class Score:
    """A predictor's figures on one part."""

    warnings: int = 0
    correct: int = 0
    onsets: int = 0
    caught: int = 0
    fresh: int = 0
    fresh_caught: int = 0
    relay_hours: int = 0
    leads: list[np.ndarray] | None = None

    def row(self) -> dict[str, float]:
        leads = np.concatenate(self.leads) if self.leads else np.zeros(0)
        nan = float("nan")
        return {"precision": self.correct / self.warnings if self.warnings else nan,
                "recall": self.caught / self.onsets if self.onsets else nan,
                "fresh_recall": self.fresh_caught / self.fresh if self.fresh else nan,
                "median_lead_h": float(np.median(leads)) if len(leads) else nan,
                "warnings_per_1000": 1000 * self.warnings / self.relay_hours if self.relay_hours else nan,
                "warnings": self.warnings, "onsets": self.onsets}


def _score(score: Score, warn: np.ndarray, block: Blocks, target: str, window: np.ndarray, hours: np.ndarray,
           horizon: int) -> None:
    """Adds one block's warnings (relays x columns) to ``score`` within the part's columns ``window``."""
    score.warnings += int(warn[:, window].sum())
    score.correct += int((warn & block.outcome[target])[:, window].sum())
    score.relay_hours += int(block.present[:, window].sum())
    width = warn.shape[1]
    index = np.arange(width)
    never = np.int64(width)
    upcoming = np.minimum.accumulate(np.where(warn, index, never)[:, ::-1], axis=1)[:, ::-1]  # next warning >= t
    rows, cols = np.nonzero(block.onset[target] & window)
    earliest = upcoming[rows, np.maximum(cols - horizon, 0)]
    caught = earliest < cols
    score.onsets += len(cols)
    score.caught += int(caught.sum())
    fresh = block.fresh[target][rows, cols]
    score.fresh += int(fresh.sum())
    score.fresh_caught += int((fresh & caught).sum())
    absolute = block.columns
    leads = hours[absolute[cols[caught]]] - hours[absolute[earliest[caught]]]
    score.leads = [*(score.leads or []), leads]


def evaluate(series: Series, split: int | None = None, fitted: dict[str, dict[str, Any]] | None = None,
             horizon: int = atrisk.HORIZON, warmup: int = WARMUP) -> list[dict[str, Any]]:
    """The table: per target and part (the tuning part too, marked), the model at both thresholds and the
    baseline. ``fitted`` defaults to ``fit(series, split, horizon, warmup)``."""
    fitted = fitted if fitted is not None else fit(series, split, horizon, warmup)
    ranges = parts(series, horizon, split, warmup)
    scores: dict[tuple[str, str, str], Score] = {}
    for block in blocks(series, horizon):
        for target in series.targets:
            features = block.features[target]
            mask = block.eligible[target] & block.core
            rates = np.zeros(mask.shape)
            rates[mask] = fitted[target]["rates"][
                atrisk.cell_codes({name: values[mask] for name, values in features.items()}, target)]
            predictors = {"baseline": features["flaps_24"] > 0}
            for point in ("best_f1", "confident"):
                if fitted[target][point] is not None:
                    predictors[point] = rates >= fitted[target][point]
            for name, spans in ranges.items():
                window = block.core & _within(block.columns, spans)
                if not window.any():
                    continue
                for predictor, warn in predictors.items():
                    key = (target, name, predictor)
                    _score(scores.setdefault(key, Score()), warn & block.eligible[target], block, target, window,
                           series.hours, horizon)
    table = []
    for target in series.targets:
        for name in ranges:
            base = scores.get((target, name, "baseline"), Score()).row()
            for point in ("best_f1", "confident"):
                threshold = fitted[target][point]
                model = scores.get((target, name, point), Score()).row()
                if threshold is None:  # no model warnings at this point; the onsets happened all the same
                    model["onsets"] = base["onsets"]
                table.append({"target": target, "part": name, "horizon_h": horizon, "operating_point": point,
                              "threshold": threshold, **model, "baseline_precision": base["precision"],
                              "baseline_recall": base["recall"], "baseline_fresh_recall": base["fresh_recall"],
                              "baseline_per_1000": base["warnings_per_1000"]})
    return table


def render(table: list[dict[str, Any]]) -> str:
    """The aligned text table."""
    heads = ("target", "part", "horizon", "point", "threshold", "precision", "recall", "fresh rec", "lead(h)",
             "warn/1k", "onsets", "base prec", "base rec", "base fresh", "base/1k")

    def shown(value: Any) -> str:
        if value is None:
            return "none"
        if isinstance(value, float):
            return "-" if np.isnan(value) else f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    rows = [[shown(row[k]) for k in ("target", "part", "horizon_h", "operating_point", "threshold", "precision",
                                      "recall", "fresh_recall", "median_lead_h", "warnings_per_1000", "onsets",
                                      "baseline_precision", "baseline_recall", "baseline_fresh_recall",
                                      "baseline_per_1000")]
            for row in table]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) if i < 4 else h.rjust(w) for i, (h, w) in enumerate(zip(heads, widths)))]
    lines += ["  ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in rows]
    return "\n".join(lines)


def fitted_literal(fitted: dict[str, dict[str, Any]]) -> str:
    """``FITTED = {...}``: per target the cell rates (3 significant digits) and the offered threshold: the
    stricter of the two chosen on the tuning part (None when no threshold reached ``MIN_PRECISION``)."""
    lines = ["FITTED: dict[str, tuple[tuple[float, ...], float | None]] = {"]
    for target, values in fitted.items():
        rates = [float(f"{rate:.3g}") for rate in values["rates"]]
        threshold = values["confident"] if values["confident"] is None else max(values["confident"],
                                                                                 values["best_f1"] or 0.0)
        lines.append(f'    "{target}": ((')
        for begin in range(0, len(rates), 12):
            lines.append("        " + ", ".join(repr(rate) for rate in rates[begin:begin + 12]) + ",")
        lines.append(f"    ), {None if threshold is None else float(f'{threshold:.3g}')!r}),")
    return "\n".join([*lines, "}"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent.evaluation.atrisk", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--series", type=Path, default=SERIES, help="the alireza-tor-nodes directory (default)")
    source.add_argument("--consensuses", type=Path, nargs="+", metavar="PATH",
                        help="consecutive consensuses: directories, files, CollecTor .tar/.tar.xz (as backfill)")
    parser.add_argument("--config", type=Path, default=None, help="with --consensuses: the agent config whose "
                        "authorities trust comes from (default: the live network's)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--max-snapshots", type=int, default=None, help="alireza: only the first N snapshots")
    parser.add_argument("--split-snapshot", type=int, default=None, help=f"tune before this snapshot (alireza: "
                        f"{SPLIT}; consensuses: see --split-fraction)")
    parser.add_argument("--split-fraction", type=float, default=0.5, help="consensuses: tune on this first "
                        "fraction of the time span, hold out the rest (default 0.5)")
    parser.add_argument("--max-gap", type=int, default=None, help="consensuses: more missing periods than this "
                        "start a new segment (default 24); shorter gaps are skipped, never dropouts")
    parser.add_argument("--horizon", type=int, default=atrisk.HORIZON, help="periods a warning speaks for "
                        f"(default {atrisk.HORIZON})")
    parser.add_argument("--warmup", type=int, default=WARMUP, help="periods of each segment before it is scored "
                        f"(default {WARMUP})")
    parser.add_argument("--fitted", action="store_true", help="also print the tuned rates as agent.metrics.atrisk's"
                        " FITTED literal")
    args = parser.parse_args(argv)
    if args.consensuses:
        from agent.config.loader import load_config
        from agent.evaluation.atrisk_input import MAX_GAP

        config = load_config(args.config, environ={}) if args.config is not None else None
        series = load_consensuses(args.consensuses, config, MAX_GAP if args.max_gap is None else args.max_gap,
                                  args.split_fraction, progress=True)
        print(f"atrisk: {series.source}; {len(series.hours)} periods used, {int(series.segment.max(initial=0))} "
              f"segment(s), {series.relays} relays", file=sys.stderr)
    else:
        series = load(args.series, args.max_snapshots)
    try:
        fitted = fit(series, args.split_snapshot, args.horizon, args.warmup)
    except ValueError as error:
        print(f"atrisk: {error}", file=sys.stderr)
        return 2
    table = evaluate(series, args.split_snapshot, fitted, args.horizon, args.warmup)
    sys.stdout.write((json.dumps(table, indent=1, default=float) if args.json else render(table)) + "\n")
    if args.fitted:
        sys.stdout.write(fitted_literal(fitted) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
