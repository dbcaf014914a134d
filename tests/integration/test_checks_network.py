"""Consensus-health checks against real authorities: one down, two down, back up."""

import time
from datetime import datetime

import pytest

from agent.config.loader import load_config
from agent.loop.collect import collect
from agent.pipeline.judge import Memory, judge_checks
from agent.testnet import network as testnet
from tests.integration.commands import agent

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OUTAGE_CHECKS = {"TorAuthorityUnreachable", "TorAuthorityOrPortUnreachable", "TorAuthorityVoteMissing",
                 "TorConsensusSignatureMissing", "TorConsensusStale", "TorAuthorityQuorumLost",
                 "TorConsensusNotAccepted"}


def active(network):
    config = load_config(network.directory / testnet.AGENT_CONFIG, environ={})
    snapshot = collect(config)
    return snapshot, [f for f in judge_checks(snapshot, Memory(), config)[0] if not f.silenced_by]


def wait_for(network, condition, timeout=90):
    end = time.monotonic() + timeout
    while True:
        snapshot, findings = active(network)
        if condition(snapshot, findings):
            return snapshot, findings
        if time.monotonic() > end:
            raise AssertionError("not reached; findings: " + "; ".join(f"{f.check} {f.subjects}" for f in findings))
        time.sleep(1)


def by_check(findings):
    found = {}
    for finding in findings:
        found.setdefault(finding.check, []).append(finding)
    return found


def test_one_down_two_down_and_back(tor_network):
    snapshot, healthy = wait_for(tor_network, lambda s, f: not (OUTAGE_CHECKS & {x.check for x in f}))
    assert [f for f in healthy if f.severity != "info"] == [], [f.description for f in healthy]
    assert sorted((p.authority, p.reachable) for p in snapshot.orport_probes) == [
        ("auth1", True), ("auth2", True), ("auth3", True)]
    # The 3x3 vote-propagation matrix: nobody lacks a vote (a column may be void if the period rotated mid-probe).
    assert len(snapshot.vote_holdings) == 9 and all(h.held is not False for h in snapshot.vote_holdings)
    assert sum(1 for h in snapshot.vote_holdings if h.held) >= 6

    stopped_at = datetime.utcnow()
    testnet.stop(tor_network, ["auth3"])
    try:
        _, one_down = wait_for(tor_network, lambda s, f: s.valid_after is not None and s.valid_after > stopped_at
                               and "TorAuthorityVoteMissing" in {x.check for x in f})
        found = by_check(one_down)
        assert {(f.subjects["authority"], f.subjects["document"]) for f in found["TorAuthorityUnreachable"]} == {
            ("auth3", "consensus"), ("auth3", "vote"), ("auth3", "consensus-microdesc")}
        assert [f.subjects for f in found["TorAuthorityVoteMissing"]] == [{"authority": "auth3"}]
        assert [f.subjects for f in found["TorConsensusSignatureMissing"]] == [{"authority": "auth3"}]
        assert [f.subjects["authority"] for f in found["TorAuthorityOrPortUnreachable"]] == ["auth3"]
        assert "connection refused" in found["TorAuthorityOrPortUnreachable"][0].description
        assert "TorConsensusStale" not in found and "TorAuthorityQuorumLost" not in found

        testnet.stop(tor_network, ["auth2"])
        snapshot, two_down = wait_for(tor_network, lambda s, f: "TorConsensusStale" in {x.check for x in f},
                                      timeout=120)
        found = by_check(two_down)
        assert found["TorConsensusStale"][0].severity == "critical"
        assert found["TorAuthorityQuorumLost"][0].values == {"answering": ["auth1"], "needed": 2}
        report = agent("check", "--config", tor_network.directory / testnet.AGENT_CONFIG, timeout=60)
        print("\n$ allium-agent check  (auth2 and auth3 stopped)\n" + report.stdout)
        assert report.returncode == 2
        assert "[critical] TorConsensusStale" in report.stdout and "[critical] TorAuthorityQuorumLost" in report.stdout
    finally:
        testnet.start(tor_network, ["auth2", "auth3"])
    _, recovered = wait_for(tor_network, lambda s, f: s.latest_consensus() is not None
                            and len(s.latest_consensus().signatures) == 3
                            and not (OUTAGE_CHECKS & {x.check for x in f}), timeout=120)
    assert [f for f in recovered if f.severity == "critical"] == []
