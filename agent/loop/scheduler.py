"""APScheduler wiring for ``allium-agent run``: when cycles run, and how the daemon stops.

The cycle job is a one-shot date job that reschedules itself at the time the
runner asks for (derived from the consensus's fresh-until), so the period
length always comes from the documents. One worker thread plus
``max_instances=1`` means two cycles never overlap; a misfired run (the
process was suspended) is coalesced into one immediate run; a clock-watch
job notices wall-clock jumps (NTP step, suspend, manual change) and
reschedules the cycle from the documents instead of waiting for a wall-clock
time that moved.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime, timedelta, timezone

from apscheduler.events import EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from agent.loop.runner import PeriodRunner

log = logging.getLogger(__name__)

CYCLE_JOB = "cycle"
CLOCK_CHECK_SECONDS = 5.0
CLOCK_JUMP_SECONDS = 10.0
#: What the shutdown may take beyond the grace time: stopping the web server, closing the store and the state.
SHUTDOWN_CLEANUP_SECONDS = 2.0


class Daemon:
    """Runs PeriodRunner cycles on schedule until ``stop`` is set."""

    def __init__(self, runner: PeriodRunner, stop: threading.Event, grace_seconds: float):
        self.runner, self.stop, self.grace_seconds = runner, stop, grace_seconds
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 60},
            timezone=timezone.utc,
        )
        self.scheduler.add_listener(self._missed, EVENT_JOB_MISSED)
        self._clock = (time.time(), time.monotonic())

    def run(self) -> bool:
        """Blocks until ``stop`` is set; True if the last cycle finished within the grace time."""
        self.scheduler.start()
        self._schedule(datetime.now(timezone.utc))
        self.scheduler.add_job(self._watch_clock, "interval", seconds=CLOCK_CHECK_SECONDS, id="clock")
        self.stop.wait()
        log.info("stopping: no new cycles; waiting up to %.0f s for the running one", self.grace_seconds)
        self.scheduler.shutdown(wait=False)
        finished = self.runner.idle.wait(self.grace_seconds)
        if not finished:
            log.warning("the running cycle did not finish within %.0f s; abandoning it "
                        "(what it stored is in the outbox)", self.grace_seconds)
        return finished

    def _schedule(self, when: datetime) -> None:
        if self.stop.is_set():
            return
        self.scheduler.add_job(self._cycle, "date", run_date=when, id=CYCLE_JOB, replace_existing=True)

    def _cycle(self) -> None:
        next_run = datetime.now(timezone.utc) + timedelta(seconds=self.runner.config.schedule.retry_seconds)
        try:
            next_run = self.runner.cycle(self.stop).next_run
        except Exception:
            log.exception("the cycle raised; trying again at %s", next_run)
        finally:
            self._schedule(next_run)  # whatever happened, there is always a next cycle

    def _missed(self, event) -> None:
        if event.job_id == CYCLE_JOB:
            log.warning("the cycle due at %s was missed (the process was suspended?); running it now",
                        event.scheduled_run_time)
            self._schedule(datetime.now(timezone.utc))

    def _watch_clock(self) -> None:
        wall, steady = time.time(), time.monotonic()
        jump = (wall - self._clock[0]) - (steady - self._clock[1])
        self._clock = (wall, steady)
        if abs(jump) >= CLOCK_JUMP_SECONDS:
            log.warning("the wall clock jumped by %+.0f s; rescheduling the next cycle from the documents", jump)
            if self.runner.idle.is_set():
                self._schedule(datetime.now(timezone.utc) + timedelta(seconds=1))


def exit_when_shutdown_overruns(stop: threading.Event, grace_seconds: float, code: int) -> None:
    """Once ``stop`` is set, gives the shutdown its grace time (plus the clean-up's), then ends the process.

    The last resort behind "``run`` stops within its grace time whatever the
    peers do": a cycle, web server or mailer stuck on a peer, or any thread
    that keeps the interpreter from exiting, cannot hold the process past it.
    What a cycle stored is already in the outbox, fsync'd.
    """
    seconds = grace_seconds + SHUTDOWN_CLEANUP_SECONDS

    def expire() -> None:
        stop.wait()
        time.sleep(seconds)
        log.warning("the shutdown did not finish within %.0f s; exiting now", seconds)
        os._exit(code)

    threading.Thread(target=expire, name="shutdown-watchdog", daemon=True).start()
