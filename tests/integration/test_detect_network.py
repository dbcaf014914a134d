"""Detection on the private Tor network, each period in a new agent process: the state carries over,
so a restarted agent resumes learning instead of warming up again, and the scores reach the store."""

import re
import time

import pytest
import yaml

from agent.config.loader import load_config
from agent.detect.engine import DetectorFile
from agent.store.store import Store
from agent.testnet import network as testnet
from tests.integration.commands import agent

pytestmark = [pytest.mark.integration, pytest.mark.slow]
WARMUP = 3


def test_restarted_agent_resumes_without_rewarming(tor_network, tmp_path):
    config = yaml.safe_load((tor_network.directory / testnet.AGENT_CONFIG).read_text())
    # Outbox only: the test reads the scores back from what waits there.
    config.update({"state_dir": str(tmp_path / "state"), "detect": {"warmup_periods": WARMUP},
                   "store": {"embedded": False}})
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    loaded = load_config(path, environ={})
    learned = []
    for _ in range(WARMUP + 3):
        assert agent("once", "--config", path, timeout=60).returncode == 0  # a new process every period
        learned.append(DetectorFile(loaded.state_dir, loaded.detect.settings).load().periods)
        time.sleep(tor_network.interval_seconds)
    print(f"\nperiods learned after each restart: {learned}")
    assert learned[-1] >= WARMUP + 2 and learned == sorted(learned)

    store = Store.from_config(loaded)
    try:
        lines = [line for record in store.outbox.pending() for line in record.lines
                 if line.startswith("tor_anomaly,detector=baseline,series=joined ")]
    finally:
        store.close()
    warming = [int(re.search(r"warming=(\d+)", line).group(1)) for line in lines]
    print(f"arrivals baseline (from the second period on), warming per period: {warming}")
    assert warming[0] == 1 and warming[-1] == 0  # learned across processes, then judged
    detector = DetectorFile(loaded.state_dir, loaded.detect.settings).load()
    assert detector.series["joined"].learned >= 1 and len(detector.relays) >= 6  # 3 authorities + 3 relays
