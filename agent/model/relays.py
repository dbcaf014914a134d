"""What one period remembers of its relays for the next: each relay's flags, by fingerprint."""

from __future__ import annotations

#: fingerprint -> the flags the consensus gave it (churn and relays that left are judged against these).
PreviousRelays = dict[str, frozenset[str]]
