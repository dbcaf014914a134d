"""The daemon's scheduling decisions and health verdict, without a network."""

import threading
import time
from datetime import datetime, timedelta, timezone

import yaml

from agent.cli.health import health
from agent.config.loader import load_config
from agent.loop.runner import CycleOutcome
from agent.loop.scheduler import CYCLE_JOB, Daemon
from agent.pipeline.state import State


class ScriptedRunner:
    """Stands in for PeriodRunner (the network side is tested in tests/integration/test_daemon.py)."""

    def __init__(self, config, outcomes):
        self.config, self.outcomes, self.calls = config, list(outcomes), 0
        self.idle = threading.Event()
        self.idle.set()

    def cycle(self, stop):
        self.calls += 1
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


def config_in(tmp_path, **schedule):
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "schedule": schedule}))
    return load_config(path, environ={})


def next_cycle_time(daemon):
    return daemon.scheduler.get_job(CYCLE_JOB).next_run_time


def test_an_exception_in_a_cycle_still_schedules_the_next(tmp_path, caplog):
    config = config_in(tmp_path, retry_seconds=42)
    daemon = Daemon(ScriptedRunner(config, [RuntimeError("boom")]), threading.Event(), 1)
    daemon.scheduler.start(paused=True)
    try:
        before = datetime.now(timezone.utc)
        daemon._cycle()
        scheduled = next_cycle_time(daemon)
    finally:
        daemon.scheduler.shutdown(wait=False)
    assert "the cycle raised" in caplog.text and "RuntimeError: boom" in caplog.text
    assert before + timedelta(seconds=41) <= scheduled <= before + timedelta(seconds=43)


def test_the_next_cycle_runs_when_the_runner_says(tmp_path):
    config = config_in(tmp_path)
    due = datetime.now(timezone.utc) + timedelta(minutes=7)
    daemon = Daemon(ScriptedRunner(config, [CycleOutcome("processed", due, {})]), threading.Event(), 1)
    daemon.scheduler.start(paused=True)
    try:
        daemon._cycle()
        assert next_cycle_time(daemon) == due
        daemon.stop.set()
        daemon.runner.outcomes.append(CycleOutcome("processed", due, {}))
        daemon.scheduler.remove_job(CYCLE_JOB)
        daemon._cycle()  # once stopping, nothing new is scheduled
        assert daemon.scheduler.get_job(CYCLE_JOB) is None
    finally:
        daemon.scheduler.shutdown(wait=False)


def test_a_wall_clock_jump_reschedules_from_the_documents(tmp_path, caplog):
    config = config_in(tmp_path)
    daemon = Daemon(ScriptedRunner(config, []), threading.Event(), 1)
    daemon.scheduler.start(paused=True)
    try:
        daemon._schedule(datetime.now(timezone.utc) + timedelta(hours=1))
        daemon._clock = (time.time() - 3600, time.monotonic())  # wall clock moved an hour ahead
        daemon._watch_clock()
        assert next_cycle_time(daemon) <= datetime.now(timezone.utc) + timedelta(seconds=2)
    finally:
        daemon.scheduler.shutdown(wait=False)
    assert "the wall clock jumped by +3600 s" in caplog.text


def test_status_is_unhealthy_when_the_last_period_is_older_than_two_periods(tmp_path):
    config = config_in(tmp_path)
    assert health(config)["healthy"] is False  # nothing recorded yet
    state = State(config.state_dir)
    state.record_processed(999_000, 3600, at=1_000_000)
    state.close()
    assert health(config, now=1_000_000 + 2 * 3600)["healthy"] is True
    stale = health(config, now=1_000_000 + 2 * 3600 + 1)
    assert stale["healthy"] is False and stale["reason"] == "last success 2 h ago, more than 2 periods of 1 h"


def test_a_missed_cycle_runs_at_once(tmp_path, caplog):
    from types import SimpleNamespace

    config = config_in(tmp_path)
    daemon = Daemon(ScriptedRunner(config, []), threading.Event(), 1)
    daemon.scheduler.start(paused=True)
    try:
        daemon._schedule(datetime.now(timezone.utc) + timedelta(hours=1))
        missed = SimpleNamespace(job_id=CYCLE_JOB, scheduled_run_time=datetime.now(timezone.utc) - timedelta(minutes=5))
        daemon._missed(missed)
        assert next_cycle_time(daemon) <= datetime.now(timezone.utc) + timedelta(seconds=1)
    finally:
        daemon.scheduler.shutdown(wait=False)
    assert "was missed" in caplog.text


def test_a_state_error_in_a_cycle_is_one_clear_line_not_a_traceback(tmp_path, caplog, monkeypatch):
    """The state database became unwritable mid-run: the cycle fails with the error's own message (naming the
    path), no traceback, and the next one is scheduled; before, the catch-all logged the whole traceback."""
    from agent.loop import runner as runner_module
    from agent.metrics.geoip import GeoIP
    from agent.model.errors import StateError
    from agent.model.snapshot import Snapshot
    from agent.store.store import Store

    config = config_in(tmp_path)
    runner = runner_module.PeriodRunner(config, State(config.state_dir), Store.from_config(config), GeoIP.empty())
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    empty = Snapshot("test", now, now, [], {}, [])
    monkeypatch.setattr(runner_module, "collect", lambda *args, **kwargs: empty)
    monkeypatch.setattr(runner_module, "admissible", lambda snapshot, thresholds: (snapshot, []))

    def unwritable(snapshot, summary):
        raise StateError(f"{config.state_dir}/agent.sqlite", "attempt to write a readonly database")

    monkeypatch.setattr(runner, "_handle", unwritable)
    with caplog.at_level("ERROR"):
        outcome = runner.cycle()
    assert outcome.status == "failed" and "readonly database" in outcome.summary["problem"]
    [record] = [r for r in caplog.records if "cycle failed" in r.getMessage()]
    assert record.exc_info is None and str(config.state_dir) in record.getMessage()
