"""The fetch workers: daemon threads, and waiting for them no longer than the cycle's deadline.

A worker still busy when its cycle is over (a parse running late, a peer
holding a read until its bound ends) is abandoned, never waited for: it must
not keep ``once`` from exiting or the daemon from stopping.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Executor, Future, wait

from agent.fetch.http import POLL_SECONDS, Deadline


def wait_for(futures, deadline: Deadline) -> tuple[set, set]:
    """Waits for the futures until the deadline passes or is cancelled; returns (done, not done)."""
    pending, done = set(futures), set()
    while pending and deadline.remaining() > 0:
        finished, pending = wait(pending, timeout=min(POLL_SECONDS, deadline.remaining()))
        done |= finished
    return done, pending


class DaemonPool(Executor):
    """A thread pool whose workers are daemon threads.

    concurrent.futures' own pool joins its workers when the interpreter
    exits, so a single worker stuck in I/O would keep ``once`` (or the
    daemon's shutdown) waiting for as long as a peer likes. Work left over
    at the deadline is abandoned, never waited for.
    """

    def __init__(self, max_workers: int, name: str):
        self._max_workers, self._name = max_workers, name
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit to a pool that was shut down")
            self._tasks.put((future, fn, args, kwargs))
            if len(self._threads) < self._max_workers:
                thread = threading.Thread(target=self._work, name=f"{self._name}_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new work; queued work cancelled if asked; idle workers end, busy ones when their task returns."""
        with self._lock:
            self._closed = True
            while cancel_futures and not self._tasks.empty():
                task = self._tasks.get_nowait()
                if task is not None:
                    task[0].cancel()
            for _ in self._threads:
                self._tasks.put(None)
        for thread in self._threads if wait else ():
            thread.join()

    def _work(self) -> None:
        while (task := self._tasks.get()) is not None:
            future, fn, args, kwargs = task
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as error:
                future.set_exception(error)
            else:
                future.set_result(result)
