"""Points into a real VictoriaMetrics: PromQL read-back, an outage, and a kill mid-drain."""

import json
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from agent.cli.human import plural
from agent.config.loader import load_config
from agent.metrics.geoip import GeoIP
from agent.metrics.period import snapshot_points
from agent.model.points import Point
from agent.model.time import unix
from agent.store.lineprotocol import encode_all
from agent.store.outbox import Outbox
from agent.store.store import Store
from agent.testnet import network as testnet
from agent.testnet.watch import served_consensus
from tests.conftest import DATA, parse_data
from tests.integration.commands import agent
from tests.unit.test_metrics import snapshot_of

pytestmark = [pytest.mark.integration]
ROOT = Path(__file__).parents[2]




def write_config(path: Path, store_url: str, network=None, **extra) -> Path:
    base = yaml.safe_load((network.directory / testnet.AGENT_CONFIG).read_text()) if network else {}
    base.update({"state_dir": str(path.parent / "state"), "store": {"url": store_url, "retry": {"attempts": 1}}})
    base.update(extra)
    path.write_text(yaml.safe_dump(base))
    return path


@pytest.fixture(scope="module")
def real_points():
    consensus = parse_data("consensus", "2020-02-29-10-00-00-consensus.xz")
    return snapshot_points(snapshot_of(consensus), None, GeoIP.load(DATA / "geoip-excerpt"))


def test_written_points_read_back_and_a_rewrite_adds_nothing(victoria, tmp_path, real_points):
    config = load_config(write_config(tmp_path / "agent.yaml", victoria.url), environ={})
    store = Store.from_config(config)
    period = real_points[0].time
    first = store.save(real_points, period)
    second = store.save(real_points, period)
    store.close()
    assert first.error is None and first.lines_written == len(encode_all(real_points))
    assert second.lines_written == first.lines_written and second.periods_waiting == 0
    victoria.flush()
    assert victoria.query("tor_network_relays", at=period)[0]["value"][1] == "6433"
    assert victoria.query("count(tor_relay_weight)", at=period)[0]["value"][1] == "6433"
    samples = victoria.export('tor_network_flag_relays{flag="Guard"}')
    assert len(samples) == 1 and samples[0]["timestamps"] == [period * 1000]


def wait_for_new_period(network, after: datetime | None, timeout=60) -> datetime:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        served = served_consensus(network.authorities[0])
        if served.valid_after is not None and (after is None or served.valid_after > after):
            return served.valid_after
        time.sleep(0.5)
    raise AssertionError("no new consensus within the timeout")


def recorded_period(report: dict) -> datetime:
    """The valid-after the agent recorded, as stem's naive UTC datetime."""
    return datetime.fromisoformat(report["valid_after"].replace("Z", "+00:00")).replace(tzinfo=None)


@pytest.mark.slow
def test_private_network_series_in_victoria_metrics(tor_network, victoria, tmp_path):
    config = write_config(tmp_path / "agent.yaml", victoria.url, tor_network)
    result = agent("once", "--config", str(config), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["storage"]["error"] is None and report["storage"]["lines_written"] == report["storage"]["points"]
    at = datetime.fromisoformat(report["valid_after"].replace("Z", "+00:00")).timestamp()
    relays = victoria.settled_query("tor_network_relays", at=at)  # searchable within a second or so, later under load
    consensus_relays = next(item["consensus"]["relays"] for item in report["authorities"] if item["consensus"])
    print("tor_network_relays =", relays[0]["value"][1], "; consensus relays =", consensus_relays)
    assert float(relays[0]["value"][1]) == consensus_relays == 6
    fetch_ok = victoria.query('sum by (authority) (tor_authority_fetch_ok{document="consensus"})', at=at)
    voted = victoria.query("tor_authority_voted", at=at)
    relay_series = victoria.query("count(tor_relay_in_consensus)", at=at)
    print("per-authority consensus fetch ok:", {r["metric"]["authority"]: r["value"][1] for r in fetch_ok})
    print("voted:", {r["metric"]["authority"]: r["value"][1] for r in voted})
    assert {r["metric"]["authority"]: r["value"][1] for r in fetch_ok} == {"auth1": "1", "auth2": "1", "auth3": "1"}
    assert {r["metric"]["authority"] for r in voted} == {"auth1", "auth2", "auth3"}
    assert relay_series[0]["value"][1] == "6"
    assert {r["metric"]["vantage"] for r in victoria.query("tor_authority_fetch_latency_seconds", at=at)} == {"testnet"}


@pytest.mark.slow
def test_outage_keeps_every_period_exactly_once(tor_network, victoria, tmp_path):
    config = write_config(tmp_path / "agent.yaml", victoria.url, tor_network)
    victoria.stop()
    periods, waiting = [], []
    for _ in range(4):
        # The period is the one the agent recorded: with 10-second voting, a newer consensus may be out
        # by the time the agent has started and fetched.
        wait_for_new_period(tor_network, periods[-1] if periods else None)
        report = json.loads(agent("once", "--config", str(config), "--json").stdout)
        assert report["storage"]["stored"] and report["storage"]["error"]
        periods.append(recorded_period(report))
        waiting.append(report["storage"]["periods_waiting"])
    assert waiting == [1, 2, 3, 4] and len(set(periods)) == 4
    victoria.start()
    wait_for_new_period(tor_network, periods[-1])
    report = json.loads(agent("once", "--config", str(config), "--json").stdout)
    periods.append(recorded_period(report))
    assert report["storage"]["periods_written"] == 5 and report["storage"]["periods_waiting"] == 0
    expected = sorted(unix(moment) * 1000 for moment in periods)
    for selector in ("tor_network_relays", 'tor_authority_fetch_ok{authority="auth2",document="vote"}'):
        samples = victoria.settled_export(selector, len(expected))
        assert len(samples) == 1, selector
        print(selector, "samples:", len(samples[0]["timestamps"]), "for", len(expected), "periods")
        assert sorted(samples[0]["timestamps"]) == expected, selector
    # Export sees new samples before queries do under load (the search caches): ask until settled.
    end = time.monotonic() + 20
    while (counted := victoria.query("count_over_time(tor_network_relays[10m])", at=expected[-1] / 1000)
           )[0]["value"][1] != "5" and time.monotonic() < end:
        time.sleep(0.5)
    assert counted[0]["value"][1] == "5"


def test_kill_during_drain_then_restart_delivers_each_period_once(victoria, tmp_path, real_points):
    config = write_config(tmp_path / "agent.yaml", victoria.url)
    start = real_points[0].time
    outbox = Outbox(tmp_path / "state" / "outbox", 1 << 30)
    hours = 30
    for hour in range(hours):
        shifted = [Point(p.measurement, p.tags, p.fields, start + hour * 3600) for p in real_points]
        outbox.append(encode_all(shifted), start + hour * 3600)
    outbox.close()
    offset_file = tmp_path / "state" / "outbox" / "outbox.offset"
    drain = subprocess.Popen([sys.executable, "-m", "agent", "outbox", "drain", "--config", str(config)],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    end = time.monotonic() + 60
    while time.monotonic() < end and drain.poll() is None:
        if offset_file.exists() and offset_file.read_text().strip() not in ("", "0"):
            break
        time.sleep(0.01)
    drain.send_signal(signal.SIGKILL)
    drain.wait()
    assert drain.returncode == -signal.SIGKILL, "the drain finished before it could be killed"
    left = Outbox(tmp_path / "state" / "outbox", 1 << 30)
    interrupted_with = left.records
    left.close()
    assert 0 < interrupted_with < hours
    finish = agent("outbox", "drain", "--config", str(config))
    assert finish.returncode == 0, finish.stderr
    assert f"delivered {plural(interrupted_with, 'period')} (" in finish.stdout
    expected = [(start + hour * 3600) * 1000 for hour in range(hours)]
    for selector in ("tor_network_relays", 'tor_relay_weight{fingerprint="0002CC5705DA854E4E771F240A385567F4A3C13D"}'):
        samples = victoria.settled_export(selector, hours)
        assert len(samples) == 1 and sorted(samples[0]["timestamps"]) == expected, selector
    print(f"killed with {interrupted_with} of {hours} periods waiting; after restart each series has "
          f"{len(expected)} samples, one per period")
    at = expected[-1] / 1000
    assert victoria.query("count(count_over_time(tor_relay_weight[2d]) == 30)", at=at)[0]["value"][1] == "6433"


def test_refused_credentials_keep_every_period_in_the_outbox(tmp_path, real_points):
    from tests.integration.victoria import VictoriaMetrics

    guarded = VictoriaMetrics(tmp_path / "vmdata", ("-httpAuth.username=u", "-httpAuth.password=p")).start()
    try:
        config = load_config(write_config(tmp_path / "agent.yaml", guarded.url), environ={})
        store = Store.from_config(config)
        first = store.save(real_points, real_points[0].time)
        second = store.save(real_points, real_points[0].time + 3600)
        store.close()
    finally:
        guarded.stop()
    assert "HTTP 401" in first.error and "(is the token set?)" in first.error
    assert (second.periods_waiting, second.lines_written) == (2, 0)
    assert not list((tmp_path / "state" / "outbox").glob("rejected-*"))


def test_a_full_outbox_makes_room_by_draining_first(victoria, tmp_path, real_points):
    config = load_config(write_config(tmp_path / "agent.yaml", victoria.url), environ={})
    store = Store.from_config(config)
    store.writer, writer = None, store.writer  # the TSDB is unreachable for a while
    first = store.save(real_points, real_points[0].time)
    store.outbox.max_bytes = store.outbox.pending_bytes + 100  # no room for a second period
    assert not store.outbox.append(encode_all(real_points), real_points[0].time + 3600)
    store.writer = writer  # the TSDB is back
    second = store.save(real_points, real_points[0].time + 3600)
    store.close()
    assert first.stored and second.stored and second.periods_written == 2 and second.periods_waiting == 0
