"""Whole router status entries remembered from one consensus to the next, for backfill.

Consecutive hourly consensuses mostly repeat each other: of the 6,463
entries of 2020-02-29 11:00, 79 % are byte for byte in 10:00 (a relay
publishes a new descriptor about once in 18 hours; flags and weights change
more rarely than that). While ``remembering_entries()`` is on, each
consensus's entries are looked up by their text among those of the previous
consensus of the same flavour, and only the others are parsed
(``agent.fastparse``). What is remembered is one consensus per flavour, so
memory stays bounded; it is off by default because the live cycle gains
nothing (its consensus and votes share few whole entries) and its memory
budget is tight. Votes are never remembered.

A document refused here is refused by parsing it whole again, so the error
names the same line as without the memory.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from agent import fastparse
from agent.entries import RouterEntries

#: Flavour (microdesc?) -> the previous consensus's entries, and the row of each by its text (without the leading
#: "r "). No key while not remembering; None before the first consensus.
_REMEMBERED: dict[bool, tuple[dict[str, int], RouterEntries] | None] | None = None


@contextmanager
def remembering_entries():
    """Consensuses parsed meanwhile remember their entries for the next one (forgotten afterwards)."""
    global _REMEMBERED
    outer = _REMEMBERED
    _REMEMBERED = {False: None, True: None} if outer is None else outer
    try:
        yield
    finally:
        _REMEMBERED = outer


def parse_entries(entries: bytes, microdesc: bool, consensus: bool, first_line: int = 1) -> RouterEntries:
    """The entries of a network status document as columns (``fastparse.parse_router_entries``)."""
    if _REMEMBERED is None or not consensus:
        return fastparse.parse_router_entries(entries, microdesc, first_line)
    text = entries.decode("utf-8", "replace")
    bodies = text[2:-1].split("\nr ") if text.startswith("r ") and text.endswith("\n") else []
    parsed = _picked(bodies, microdesc, _REMEMBERED[microdesc]) if bodies else None
    if parsed is None:  # nothing to take from the previous consensus, or a refusal to name in the whole text
        parsed = fastparse.parse_entry_text(text, microdesc, first_line)
    # Remembered only if each text is one entry; else ("opt r", "r<TAB>": parsed whole) the next starts afresh.
    _REMEMBERED[microdesc] = (dict(zip(bodies, range(len(bodies)))), parsed) if len(parsed) == len(bodies) else None
    return parsed


def _picked(bodies: list[str], microdesc: bool, previous) -> RouterEntries | None:
    """The entries whose texts are ``bodies``: those among ``previous`` taken from there, the others parsed.

    None when the whole document is to be parsed instead: nothing is remembered from it, a new entry is
    refused or a relay is listed twice (parsing it whole names the line), or a line the split on "\nr " did
    not take as an entry's start makes more entries than texts.
    """
    if previous is None:
        return None
    rows_before, entries_before = previous
    known = list(map(rows_before.get, bodies))
    missing = [row for row, known_row in enumerate(known) if known_row is None]
    if len(missing) == len(bodies):
        return None
    try:
        fresh = fastparse.parse_entry_text("r " + "\nr ".join([bodies[row] for row in missing]) if missing else "",
                                           microdesc)
    except ValueError:
        return None
    if len(fresh) != len(missing):
        return None
    for position, row in enumerate(missing):
        known[row] = len(entries_before) + position
    picked = RouterEntries.picked(entries_before, fresh, np.array(known, np.int64))
    return picked if len(set(picked.fingerprints)) == len(picked) else None
