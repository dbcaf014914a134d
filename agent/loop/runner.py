"""The daemon's cycle: record each new voting period exactly once, and say when to look next.

Timing comes from the documents: the next period starts at the current
consensus's fresh-until, so the next cycle runs then plus a small poll delay;
until the new consensus is served, the cycle is retried every few seconds
(within the period). A period already recorded is never recorded again, and
a period that appears late (valid-after jumped by more than one period while
the agent ran) is counted as skipped.

Self-monitoring goes to the ``allium_agent`` measurement at the period's
time, and each cycle logs one INFO summary line.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import cast

from agent.alerts.dispatch import Alerting
from agent.alerts.quality import quality as alert_quality
from agent.alerts.quality import quality_points
from agent.aroi.service import OperatorProofs
from agent.config.loader import Config
from agent.loop.collect import collect
from agent.metrics.geoip import GeoIP
from agent.model.errors import StateError
from agent.model.points import Point, point
from agent.model.snapshot import Outcome, Snapshot
from agent.model.time import unix, utc_now
from agent.pipeline.alert_ids import alert_ids
from agent.pipeline.extrainfos import remembered_extra_infos
from agent.pipeline.judge import Memory, PeriodResult, admissible, judge
from agent.pipeline.record import Detectors, describe, memory_of, record
from agent.pipeline.state import State
from agent.store.store import SaveResult, Store
from agent.subscriptions.watch import RelayWatch

log = logging.getLogger(__name__)

PROCESSED, NOT_YET, FAILED = "processed", "not yet", "failed"


@dataclass(frozen=True)
class CycleOutcome:
    status: str
    next_run: datetime
    summary: dict


class PeriodRunner:
    """Runs one cycle at a time (a lock guards it, whatever calls it)."""

    def __init__(self, config: Config, state: State, store: Store, geoip: GeoIP):
        self.config, self.state, self.store, self.geoip = config, state, store, geoip
        self.authorities = list(config.authorities.bootstrap)
        self.alerting = Alerting(config, state.db)
        self.watch = RelayWatch(state.db, config.subscriptions)
        self.proofs = OperatorProofs(config.aroi, config.state_dir)  # its verifier thread starts with a period
        self.detectors = Detectors(config) if config.detect.enabled else None
        self._lines_written = 0  # by the previous save, reported with the next period
        self._lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()

    def cycle(self, stop: threading.Event | None = None) -> CycleOutcome:
        if not self._lock.acquire(blocking=False):
            log.warning("a cycle is still running; not starting another")
            return CycleOutcome(NOT_YET, utc_now() + self._retry(), {"status": "busy"})
        self.idle.clear()
        try:
            return self._cycle(stop)
        finally:
            self.idle.set()
            self._lock.release()

    def _cycle(self, stop: threading.Event | None) -> CycleOutcome:
        started, started_at = time.monotonic(), utc_now()
        summary: dict = {"started_at": started_at.isoformat(timespec="seconds")}
        try:
            # A consensus dated impossibly far from now is refused here, before it can become the period.
            snapshot, _ = admissible(collect(self.config, self.authorities, cancel=stop,
                                             extra_infos=remembered_extra_infos(self.state)),
                                     self.config.checks.thresholds)
            if snapshot.latest_consensus() is not None:
                self.authorities = snapshot.authorities  # discovery carries over to the next cycle
            status, next_run = self._handle(snapshot, summary)
        except StateError as error:  # a clear message naming the path: no traceback to read through
            log.error("cycle failed: %s; the next one runs as scheduled", error)
            status, next_run = FAILED, utc_now() + self._retry()
            summary["problem"] = str(error)
        except Exception:
            log.exception("cycle failed; the next one runs as scheduled")
            status, next_run = FAILED, utc_now() + self._retry()
            summary["errors"] = self.state.count("cycle_errors")
        summary.update(status=status, duration_seconds=round(time.monotonic() - started, 3),
                       next_run=next_run.isoformat(timespec="seconds"))
        self.state.set_last_cycle(summary)
        log.info("cycle %s", _summary_line(summary))
        return CycleOutcome(status, next_run, summary)

    def _handle(self, snapshot: Snapshot, summary: dict) -> tuple[str, datetime]:
        consensus = snapshot.latest_consensus()
        _count_records(snapshot, summary)
        if consensus is None:
            summary["problem"] = "no authority served a consensus a client would accept"
            return self._failed(*self._judge(snapshot), summary)
        valid_after = unix(consensus.valid_after)
        period = unix(consensus.fresh_until) - valid_after
        summary.update(valid_after=consensus.valid_after.isoformat(), period_seconds=period)
        last = self._last_processed()
        if last is not None and valid_after <= last:
            self.drain_deliveries()
            return NOT_YET, self._when_due(last + period)
        result, memory = self._judge(snapshot)
        if result.time != valid_after or not result.has_consensus:
            return self._period_rejected(result, memory, summary, last)
        self._count_skipped(valid_after, period, last, consensus.valid_after)
        self._process(result, memory, summary, period)
        next_run = datetime.fromtimestamp(unix(consensus.fresh_until), timezone.utc) + self._poll_delay()
        return PROCESSED, max(next_run, utc_now() + timedelta(seconds=1))

    def _when_due(self, next_period: int) -> datetime:
        """When to look for the period after the last recorded one: at its start, or after a retry if it is late.

        A late one is not polled every second: authorities stuck on an old
        consensus can serve it for a day.
        """
        now, expected = utc_now(), datetime.fromtimestamp(next_period, timezone.utc) + self._poll_delay()
        return min(expected, now + self._retry()) if expected > now else now + self._retry()

    def _judge(self, snapshot: Snapshot) -> tuple[PeriodResult, Memory]:
        """The period judged (what judging rejected is in the result), and the memory it was judged with."""
        memory = memory_of(snapshot, self.state, self.detectors, learners=None if snapshot.archived else self.config)
        if not snapshot.archived:
            memory = replace(memory, proofs=self.proofs.book())
        return judge(snapshot, memory, self.config, self.geoip), memory

    def _failed(self, result: PeriodResult, memory: Memory, summary: dict) -> tuple[str, datetime]:
        """A cycle without a period to record: its fetch records still become points (an outage must show)."""
        self.state.count("cycles_without_consensus")
        saved = self._record(result, memory, summary, failed=True)
        summary.update(points=saved.points, storage=describe(saved))
        return FAILED, utc_now() + self._retry()

    def _period_rejected(self, result: PeriodResult, memory: Memory, summary: dict,
                         last: int | None) -> tuple[str, datetime]:
        """Judging rejected the newest consensus: an older one left is recorded if new, else retried soon."""
        summary["problem"] = "the newest consensus breaks judging and was rejected"
        if not result.has_consensus:
            return self._failed(result, memory, summary)
        if last is not None and result.time <= last:
            self._alert(result, summary, failed=True)
            return FAILED, utc_now() + self._retry()
        consensus = cast(Snapshot, result.snapshot).latest_consensus()
        self._process(result, memory, summary, unix(consensus.fresh_until) - result.time)
        return PROCESSED, utc_now() + self._retry()

    def _process(self, result: PeriodResult, memory: Memory, summary: dict, period: int) -> None:
        """Records a period and marks it processed in the state."""
        processed = self.state.counters().get("periods_processed", 0) + 1
        saved = self._record(result, memory, summary, processed=processed)
        self.state.record_processed(result.time, period, unix(utc_now()))
        summary.update(points=saved.points, storage=describe(saved), periods_waiting=saved.periods_waiting)
        try:
            self.proofs.after_period(result)
        except Exception:
            log.exception("queueing the period's AROI claims failed; proofs are checked again next period")

    def _count_skipped(self, valid_after: int, period: int, last: int | None, when: datetime) -> None:
        skipped = max(0, (valid_after - last) // period - 1) if last is not None and period > 0 else 0
        if skipped:
            log.warning("%d period(s) before %s were not recorded (the agent was down or late)", skipped, when)
            self.state.count("periods_skipped", skipped)

    def _last_processed(self) -> int | None:
        """The state's last recorded period, unless it lies in the future (left by a consensus dated ahead)."""
        last = self.state.last_processed()
        ahead = unix(utc_now()) + self.config.checks.thresholds.consensus_ahead_seconds
        if last is not None and last > ahead:
            log.warning("the state's last recorded period (%s) lies in the future; ignored: the current period is "
                        "recorded and replaces it", datetime.fromtimestamp(last, timezone.utc).isoformat())
            return None
        return last

    def _record(self, result: PeriodResult, memory: Memory, summary: dict, failed: bool = False,
                processed: int = 0) -> SaveResult:
        """The judged period recorded: alerts, then one save with the self-metrics."""

        def alert(judged: PeriodResult) -> None:
            self._alert(judged, summary, failed)

        def self_metrics(judged: PeriodResult) -> list[Point]:
            return [] if failed else self._self_metrics(summary, judged, processed)

        _count_records(cast(Snapshot, result.snapshot), summary)
        saved = record(result, self.store, self.state, memory, alert, self_metrics, self.detectors)
        self._lines_written = saved.lines_written
        return saved

    def _alert(self, result: PeriodResult, summary: dict, failed: bool = False) -> None:
        """Alerts for a judged period, then a drain of the delivery outbox; never fails the cycle.

        A recorded period is alerted on in its own time (valid-after), once;
        a failed period (no consensus) is retried every few seconds, so its
        findings are alerted on at most once per voting period, in clock time.
        """
        try:
            now = int(time.time())
            snapshot = cast(Snapshot, result.snapshot)
            period = None if failed or not result.has_consensus else result.time
            if failed and now - self.state.last_alerted() < (self.state.period_seconds() or 3600):
                return
            notices = self.alerting.on_period(result.findings, self._relay_alerts(snapshot, period or now, result),
                                              period)
            self.state.set_last_alerted(now)
            if not failed:
                self._monthly_reports(now)
            counts = self.alerting.drain()
            summary.update(notices=len(notices), deliveries_waiting=counts["waiting"])
        except Exception:
            log.exception("alerting failed; the period's findings are stored and alerting resumes next period")

    def _monthly_reports(self, now: int) -> None:
        """Queues last month's report per subscription, in the first period of a month (a no-op after that)."""
        try:
            from agent.reports.mail import due_reports

            url = self.config.query.url or (self.store.embedded.url if self.store.embedded is not None else None)
            due_reports(self.config, self.alerting, url, now)
        except Exception:
            log.exception("monthly reports failed; they are tried again next period")

    def _relay_alerts(self, snapshot: Snapshot, now: int, result: PeriodResult):
        """Subscription alerts, or None if they cannot be judged (then they stay as they were)."""
        warnings: dict[str, list] = {}
        for warning in result.warnings:  # the at-risk learner's, this period
            warnings.setdefault(warning.fingerprint, []).append(warning)
        try:
            return self.watch.alerts(snapshot, now, warnings, self.proofs.book())
        except Exception:
            log.exception("evaluating subscriptions failed; network alerts go out regardless")
            return None

    def drain_deliveries(self) -> None:
        """Retries waiting messages between periods (a server that came back need not wait an hour)."""
        try:
            self.alerting.drain()
        except Exception:
            log.exception("draining the delivery outbox failed")

    def _self_metrics(self, summary: dict, result: PeriodResult, processed: int) -> list[Point]:
        """The allium_agent point of a recorded period, saved with its points.

        Saved with the period, so the outbox figures are those before this
        period was added, and ``points_written`` is what the previous save delivered.
        """
        counters = self.state.counters()
        deliveries = self.alerting.outbox.counts()
        quality = self._alert_quality(result.time)
        fields = {
            "cycle_duration_seconds": (utc_now() - datetime.fromisoformat(summary["started_at"])).total_seconds(),
            "last_success_seconds": unix(utc_now()),
            "fetch_failures": summary["fetch_failures"],
            "documents_rejected": summary["documents_rejected"],
            "points": len(result.points) + 1 + len(quality),
            "points_written": self._lines_written,
            "outbox_periods": self.store.outbox.records,
            "outbox_bytes": self.store.outbox.pending_bytes,
            "periods_processed_total": processed,
            "periods_skipped_total": counters.get("periods_skipped", 0),
            "cycle_errors_total": counters.get("cycle_errors", 0),
            "alerts_active": self.alerting.book.count(),
            "deliveries_waiting": deliveries["waiting"],
            "deliveries_given_up": deliveries["given_up"],
        }
        return [point("allium_agent", {"vantage": self.config.vantage}, fields, result.time), *quality]

    def _alert_quality(self, time: int) -> list[Point]:
        """The allium_agent_alert_quality points (``agent.alerts.quality``); none if the history cannot be read."""
        try:
            report = alert_quality(self.state.db, self.config.alerts.flap_periods, alert_ids())
        except Exception:
            log.exception("the alert history could not be read; no alert-quality metrics this period")
            return []
        return quality_points(report, self.config.vantage, time)

    def _poll_delay(self) -> timedelta:
        return timedelta(seconds=self.config.schedule.poll_delay_seconds)

    def _retry(self) -> timedelta:
        return timedelta(seconds=self.config.schedule.retry_seconds)


def _count_records(snapshot: Snapshot, summary: dict) -> None:
    """Failed fetches and rejected documents (by parsing, by their times, by judging: named, with why) into the
    summary (``status`` shows the last cycle's)."""
    rejected = [f"{r.authority} {r.kind.value}: {(r.error or '')[:300]}" for r in snapshot.records if r.rejected]
    summary.update(fetch_failures=sum(1 for record in snapshot.records if record.outcome is Outcome.FAILED),
                   documents_rejected=len(rejected))
    if rejected:
        summary["rejected"] = rejected


def _summary_line(summary: dict) -> str:
    parts = [summary["status"], f"in {summary['duration_seconds']} s"]
    if "valid_after" in summary:
        parts.append(f"consensus {summary['valid_after']}")
    for key in ("points", "fetch_failures", "documents_rejected", "periods_waiting"):
        if key in summary:
            parts.append(f"{key.replace('_', ' ')} {summary[key]}")
    if "storage" in summary:
        parts.append(summary["storage"])
    if "problem" in summary:
        parts.append(summary["problem"])
    parts.append(f"next {summary['next_run']}")
    return "; ".join(parts)
