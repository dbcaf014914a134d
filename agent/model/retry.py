"""The one retry policy, for anything the agent retries (TSDB writes, later deliveries)."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """Up to ``attempts`` tries; before try n+1 wait
    ``min(max_delay, initial_delay * multiplier**(n-1))`` seconds, randomised by
    ±``jitter`` of itself so that agents recovering together do not retry in step.
    """

    attempts: int = 3
    initial_delay_seconds: float = 1.0
    max_delay_seconds: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.1

    def delays(self) -> Iterator[float]:
        """The waits between tries (``attempts - 1`` of them)."""
        for failures in range(1, self.attempts):
            yield self.delay_after(failures)

    def delay_after(self, failures: int) -> float:
        """The wait after the ``failures``-th failure in a row (jittered); also for queues that retry forever."""
        delay = min(self.max_delay_seconds, self.initial_delay_seconds * self.multiplier ** (failures - 1))
        return delay * (1 + random.uniform(-self.jitter, self.jitter))

    def call(self, action: Callable[[], T], retryable: Callable[[Exception], bool], what: str,
             sleep: Callable[[float], None] = time.sleep) -> T:
        """Runs ``action``; retries exceptions ``retryable`` accepts; re-raises the last one."""
        waits = self.delays()
        while True:
            try:
                return action()
            except Exception as error:
                delay = next(waits, None) if retryable(error) else None
                if delay is None:
                    raise
                log.warning("%s failed (%s); retrying in %.1f s", what, error, delay)
                sleep(delay)
