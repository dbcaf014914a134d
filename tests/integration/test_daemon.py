"""`allium-agent run` on the private network: every period once, clean stops, crash recovery."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from agent.metrics.catalogue import catalogue
from agent.testnet import network as testnet
from tests.integration.commands import agent as run_agent
from tests.integration.hostile_dirport import HostileDirPort

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).parents[2]


def daemon_config(tmp_path, network, store_url, **fetch):
    config = yaml.safe_load((network.directory / testnet.AGENT_CONFIG).read_text())
    config.update({"state_dir": str(tmp_path / "state"), "store": {"url": store_url, "retry": {"attempts": 1}}})
    config["fetch"].update(fetch)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start(config: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(config)], cwd=ROOT,
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)


def status_value(state_dir: Path, key: str, default=None):
    path = state_dir / "agent.sqlite"
    if not path.exists():
        return default
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        try:
            row = db.execute("SELECT value FROM agent_status WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return default
    return default if row is None else json.loads(row[0])


def wait_processed(state_dir: Path, count: int, process: subprocess.Popen, timeout: float) -> int:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = status_value(state_dir, "counter:periods_processed", 0)
        if done >= count:
            return done
        assert process.poll() is None, "the agent exited unexpectedly"
        time.sleep(0.5)
    raise AssertionError(f"fewer than {count} periods processed within {timeout:.0f} s")


def stop(process: subprocess.Popen, grace: float) -> tuple[int, float]:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    code = process.wait(grace + 10)
    return code, time.monotonic() - started


def period_timestamps(victoria, at_least: int = 1) -> list[int]:
    series = victoria.settled_export("tor_network_relays", at_least)
    assert len(series) == 1
    return sorted(t // 1000 for t in series[0]["timestamps"])


def test_twelve_periods_each_written_once(tor_network, victoria, tmp_path):
    config = daemon_config(tmp_path, tor_network, victoria.url)
    agent = start(config, tmp_path / "agent.log")
    try:
        processed = wait_processed(tmp_path / "state", 12, agent, timeout=200)
    finally:
        code, took = stop(agent, grace=10)
    assert code == 0, (tmp_path / "agent.log").read_text()[-2000:]
    stamps = period_timestamps(victoria, processed)
    steps = {b - a for a, b in zip(stamps, stamps[1:])}
    print(f"{len(stamps)} periods in the TSDB, {processed}+ processed, steps {sorted(steps)} s, "
          f"stopped in {took:.1f} s")
    assert len(stamps) == len(set(stamps)) >= 12
    assert steps == {tor_network.interval_seconds}  # none missing, none doubled
    counted = victoria.query("count_over_time(tor_network_relays[1h])", at=stamps[-1])
    assert counted[0]["value"][1] == str(len(stamps))
    self_fields = {name for (measurement, name) in catalogue() if measurement == "allium_agent"}
    present = {series["metric"]["__name__"].removeprefix("allium_agent_")
               for series in victoria.export('{__name__=~"allium_agent_.*"}')}
    # Alert quality (allium_agent_alert_quality_*): one series per check that raised an alarm, if any did.
    quality = {f"alert_quality_{name}" for (measurement, name) in catalogue()
               if measurement == "allium_agent_alert_quality"}
    assert present - quality == self_fields
    log = (tmp_path / "agent.log").read_text()
    assert log.count("agent.loop.runner: cycle processed") >= 12 and "Traceback" not in log
    health = run_agent("status", "--config", config)
    assert health.returncode == 0 and health.stdout.startswith("healthy ") and " yes: " in health.stdout


def test_sigterm_during_a_cycle_exits_cleanly(tor_network, victoria, tmp_path):
    with HostileDirPort("hang") as hanging:
        config = daemon_config(tmp_path, tor_network, victoria.url, deadline_seconds=6, timeout_seconds=4)
        settings = yaml.safe_load(config.read_text())
        settings["authorities"]["bootstrap"].append(
            {"nickname": "slow", "v3ident": "F" * 40, "address": "127.0.0.1", "dir_port": hanging.port})
        config.write_text(yaml.safe_dump(settings))
        agent = start(config, tmp_path / "agent.log")
        try:
            wait_processed(tmp_path / "state", 1, agent, timeout=60)
            next_run = datetime.fromisoformat(status_value(tmp_path / "state", "last_cycle")["next_run"])
            time.sleep(max(0.0, (next_run - datetime.now(timezone.utc)).total_seconds()) + 1.5)
            assert "received SIGTERM" not in (tmp_path / "agent.log").read_text()
        finally:
            code, took = stop(agent, grace=10)
    log = (tmp_path / "agent.log").read_text()
    print(f"SIGTERM mid-cycle: exit code {code} after {took:.1f} s")
    assert code == 0 and took < 10 + 5, log[-2000:]
    assert "stopping: no new cycles" in log and "stopped" in log.splitlines()[-1]
    processed = status_value(tmp_path / "state", "counter:periods_processed")
    assert len(period_timestamps(victoria, processed)) == processed  # the interrupted cycle's period is stored too


def test_kill_9_and_restart_no_duplicates_no_gap_beyond_the_downtime(tor_network, victoria, tmp_path):
    config = daemon_config(tmp_path, tor_network, victoria.url)
    agent = start(config, tmp_path / "agent.log")
    before = wait_processed(tmp_path / "state", 3, agent, timeout=60)
    agent.send_signal(signal.SIGKILL)
    agent.wait()
    killed_at = time.time()
    time.sleep(15)
    restarted_at = time.time()
    agent = start(config, tmp_path / "agent.log")
    try:
        wait_processed(tmp_path / "state", before + 3, agent, timeout=90)
    finally:
        code, _ = stop(agent, grace=10)
    assert code == 0
    stamps = period_timestamps(victoria)
    assert len(stamps) == len(set(stamps))
    interval = tor_network.interval_seconds
    gaps = [(a, b) for a, b in zip(stamps, stamps[1:]) if b - a != interval]
    missing = sum((b - a) // interval - 1 for a, b in gaps)
    allowed = int((restarted_at - killed_at) // interval) + 1
    print(f"killed after {before} periods, down {restarted_at - killed_at:.0f} s: {missing} periods missing "
          f"(at most {allowed} allowed), {len(stamps)} periods stored once each")
    assert len(gaps) <= 1 and missing <= allowed
    for a, b in gaps:
        assert killed_at - interval <= a and b <= restarted_at + 2 * interval
    assert status_value(tmp_path / "state", "counter:periods_skipped", 0) == missing
