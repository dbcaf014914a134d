"""What one period remembers of its relays for the next: each relay's flags, by fingerprint."""

from __future__ import annotations

#: fingerprint -> the flags the consensus gave it (churn and relays that left are judged against these).
PreviousRelays = dict[str, frozenset[str]]

#: How long tor keeps reporting one overload event in its descriptors' ``overload-general`` line (proposal 328,
#: "should remain in place for 72 hours"; rephist.c): the metrics and the subscription alerts apply this window.
OVERLOAD_KEPT_SECONDS = 72 * 3600
