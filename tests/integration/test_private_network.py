"""The agent against real tor directory authorities on 127.0.0.1."""

import json
import re
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import jsonschema
import pytest

from agent.cli.report import build_report, render_table
from agent.config.loader import load_config
from agent.loop.collect import collect
from agent.model.snapshot import DocKind, Outcome
from agent.testnet import network as testnet
from tests.integration.commands import agent
from tests.integration.sockets import off_loopback

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
SCHEMA = json.loads((ROOT / "docs" / "once.schema.json").read_text())
SHARED_CHECK = ROOT.parent / "shared" / "tools" / "tor-off-loopback"




def config_of(network):
    return load_config(network.directory / testnet.AGENT_CONFIG, environ={})


def wait_for(condition, network, timeout=60.0):
    """Collects periods until ``condition(snapshot)`` holds; returns that snapshot."""
    end = time.monotonic() + timeout
    while True:
        snapshot = collect(config_of(network))
        if condition(snapshot):
            return snapshot
        if time.monotonic() > end:
            pytest.fail(f"condition not met within {timeout:.0f} s; last period:\n"
                        + render_table(build_report(snapshot)))
        time.sleep(1.0)


def test_every_tor_socket_stays_on_loopback(tor_network):
    for node in tor_network.nodes:
        pid = tor_network.pids[node.name]
        assert off_loopback(pid) == [], f"{node.name} has sockets off 127.0.0.1"
    if SHARED_CHECK.exists():
        result = subprocess.run([str(SHARED_CHECK)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout


def test_once_json_sees_every_authority(tor_network):
    result = agent("once", "--config", str(tor_network.directory / testnet.AGENT_CONFIG), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["failures"] == 0
    assert report["quorum"] == 2
    assert report["server_descriptors"]["count"] == 6
    for item in report["authorities"]:
        assert item["reachable"], item
        for flavour in ("consensus", "microdesc_consensus"):
            consensus = item[flavour]
            assert consensus["accepted"] and consensus["valid_signatures"] == 3, (item["nickname"], consensus)
            assert consensus["valid_after"] == report["valid_after"] or consensus["valid_after"] < report["valid_after"]
            assert consensus["relays"] == 6 and consensus["votes"] == 3
        assert item["vote"]["relays"] == 6 and item["key_certificates"] == 3
        assert abs(item["clock_skew_seconds"]) < 1.5
    bandwidth = {item["nickname"]: item["bandwidth_file"] for item in report["authorities"]}
    assert bandwidth["auth1"]["measurements"] == 6 and bandwidth["auth2"] is None
    auth1_vote = next(item["vote"] for item in report["authorities"] if item["nickname"] == "auth1")
    # auth1 is the bandwidth authority; tor votes its measurement of an
    # authority as MeasuredButAuthority=, not Measured=, so the 3 relays count.
    assert auth1_vote["measured"] == 3


def test_period_timing_comes_from_the_documents(tor_network):
    consensus = collect(config_of(tor_network)).latest_consensus()
    assert (consensus.fresh_until - consensus.valid_after).total_seconds() == tor_network.interval_seconds
    assert (consensus.valid_until - consensus.valid_after).total_seconds() == 3 * tor_network.interval_seconds
    assert consensus.vote_delay == 2 and consensus.dist_delay == 2


def test_stopping_one_authority_and_starting_it_again(tor_network):
    stopped_at = datetime.utcnow()
    testnet.stop(tor_network, ["auth3"])
    try:
        # A consensus whose valid-after is just past the stop was voted and signed a few
        # seconds earlier (vote + dist delay), still with auth3: wait a full period.
        settled = stopped_at + timedelta(seconds=tor_network.interval_seconds)
        without = wait_for(lambda s: s.valid_after is not None and s.valid_after > settled, tor_network)
        failed = [r for r in without.records_of("auth3") if r.outcome is Outcome.FAILED]
        assert [r.error for r in failed] == ["connection refused"]
        assert all(r.outcome is Outcome.SKIPPED for r in without.records_of("auth3") if r not in failed)
        latest = without.latest_consensus()
        assert len(latest.signatures) == 2
        assert sorted(source.nickname for source in latest.directory_authorities) == ["auth1", "auth2"]
        assert without.changes.missing == ("auth3",)
        report = build_report(without)
        # An authority may still serve the previous consensus for a moment; check the one serving the newest.
        newest = next(item["consensus"] for item in report["authorities"]
                      if item["consensus"] and item["consensus"]["valid_after"] == report["valid_after"])
        assert newest["missing_signatures"] == ["auth3"] and newest["accepted"]
        assert newest["votes"] == 2
        table = render_table(report)
        assert re.search(r"^auth3 +NO ", table, re.MULTILINE) and "missing auth3" in table
        assert re.search(r"^  auth3: connection refused \(127\.0\.0\.1:\d+\) \[key-certificates\]$", table,
                         re.MULTILINE), table
    finally:
        testnet.start(tor_network, ["auth3"])
    # Back in the consensus, signing it, and serving its own vote again (a
    # restarted authority answers 404 for its vote until it has voted).
    # ... and every authority already serves that newest consensus (one may lag by a moment).
    recovered = wait_for(lambda s: s.latest_consensus() is not None
                         and len(s.latest_consensus().signatures) == 3
                         and all(r.outcome is Outcome.OK for r in s.records_of("auth3")
                                 if r.kind is not DocKind.BANDWIDTH_FILE)
                         and all(v.consensus is not None and v.consensus.valid_after == s.valid_after
                                 for v in s.views.values()), tor_network, timeout=90)
    assert recovered.changes.missing == ()
    assert [r for r in recovered.records if r.outcome is Outcome.FAILED] == []
    report = build_report(recovered)
    assert all(item["consensus"]["missing_signatures"] == [] for item in report["authorities"])


def test_up_once_status_down_from_the_command_line(tmp_path):
    directory = tmp_path / "net"
    try:
        up = agent("testnet", "up", "--dir", str(directory))
        assert up.returncode == 0, up.stderr
        config = directory / testnet.AGENT_CONFIG
        assert f"agent config: {config}" in up.stdout
        started = time.monotonic()
        once = agent("once", "--config", str(config), "--json")
        print(f"once took {time.monotonic() - started:.2f} s after `testnet up`")
        report = json.loads(once.stdout)
        assert once.returncode == 0 and report["failures"] == 0
        assert all(item["reachable"] and item["consensus"]["accepted"] for item in report["authorities"])
        status = agent("testnet", "status", "--dir", str(directory))
        assert status.returncode == 0
        for name in ("auth1", "auth2", "auth3", "relay1", "relay2", "relay3"):
            assert f"{name} " in status.stdout
        assert status.stdout.count(" running ") == 6 and status.stdout.count("3 signatures") == 3
        pids = testnet.Network.load(directory).pids
    finally:
        down = agent("testnet", "down", "--dir", str(directory))
    assert down.returncode == 0, down.stderr
    assert "stopped: auth1, auth2, auth3, relay1, relay2, relay3" in down.stdout
    for pid in pids.values():
        assert not _alive_tor(pid), f"tor pid {pid} still runs after `testnet down`"


def _alive_tor(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return "(tor)" in stat and stat.rsplit(")", 1)[1].split()[0] != "Z"
