"""Whole router status entries remembered from one consensus to the next, for backfill.

Consecutive hourly consensuses mostly repeat each other: of the 6,463
entries of 2020-02-29 11:00, 79 % are byte for byte in 10:00 (a relay
publishes a new descriptor about once in 18 hours; flags and weights change
more rarely than that). A consensus parsed with an ``EntryMemory``
(``parse_document(..., memory=memory)``) has its entries looked up by their
text among those of the previous consensus of the same flavour parsed with
that memory, and only the others are parsed (``agent.parse.fastparse``).
A memory holds one consensus per flavour, so it stays bounded; the live
cycle passes none, as it gains nothing (its consensus and votes share few
whole entries) and its memory budget is tight. Votes are never remembered.

A document refused here is refused by parsing it whole again, so the error
names the same line as without the memory.
"""

from __future__ import annotations

import numpy as np

from agent.model.entries import RouterEntries
from agent.parse import fastparse


class EntryMemory:
    """The entries of the last consensus of each flavour parsed with it, for the next one to look up.

    Make one per run of consecutive periods (``memory = EntryMemory()``) and
    pass it to every ``parse_document`` of the run; drop it (or ``forget()``)
    afterwards. Not shared between threads.
    """

    __slots__ = ("_previous",)

    def __init__(self):
        #: Flavour (microdesc?) -> the previous consensus's entries, and the row of each by its text (without
        #: the leading "r "); None before the first consensus, or after one whose texts were not one entry each.
        self._previous: dict[bool, tuple[dict[str, int], RouterEntries] | None] = {False: None, True: None}

    def remembered(self, microdesc: bool) -> RouterEntries | None:
        """The entries remembered for the flavour (None: nothing yet)."""
        previous = self._previous[microdesc]
        return previous[1] if previous is not None else None

    def forget(self) -> None:
        """Remembers nothing any more (the next consensus is parsed whole)."""
        self._previous = {False: None, True: None}

    def parse_entries(self, entries: bytes, microdesc: bool, first_line: int = 1) -> RouterEntries:
        """A consensus's entries as columns, those also in the previous one taken from there; remembered."""
        text = entries.decode("utf-8", "replace")
        bodies = text[2:-1].split("\nr ") if text.startswith("r ") and text.endswith("\n") else []
        parsed = _picked(bodies, microdesc, self._previous[microdesc]) if bodies else None
        if parsed is None:  # nothing to take from the previous consensus, or a refusal to name in the whole text
            parsed = fastparse.parse_entry_text(text, microdesc, first_line)
        # Remembered only if each text is one entry; else ("opt r", "r<TAB>": parsed whole) the next starts afresh.
        self._previous[microdesc] = (dict(zip(bodies, range(len(bodies)))), parsed) if len(parsed) == len(bodies) \
            else None
        return parsed

    def __repr__(self) -> str:
        held = {flavour: len(previous[1]) for flavour, previous in self._previous.items() if previous is not None}
        return f"<EntryMemory ns: {held.get(False, 0)} entries, microdesc: {held.get(True, 0)} entries>"


def parse_entries(entries: bytes, microdesc: bool, consensus: bool, first_line: int = 1,
                  memory: EntryMemory | None = None) -> RouterEntries:
    """The entries of a network status document as columns (``fastparse.parse_router_entries``).

    With a ``memory``, a consensus's entries are looked up in it and remembered there; a vote's never are.
    """
    if memory is None or not consensus:
        return fastparse.parse_router_entries(entries, microdesc, first_line)
    return memory.parse_entries(entries, microdesc, first_line)


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
