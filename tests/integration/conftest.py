"""Integration fixtures: a real private Tor network on 127.0.0.1 for the session."""

import shutil

import pytest

from agent.testnet import network as testnet
from agent.testnet.watch import wait_until_ready


@pytest.fixture(scope="session")
def tor_network(tmp_path_factory):
    """Three authorities and three relays voting every 10 s, stopped by PID afterwards."""
    if shutil.which("tor") is None or shutil.which("tor-gencert") is None:
        pytest.fail("Debian's tor package is required for the integration tests (apt-get install tor)")
    network = testnet.create(tmp_path_factory.mktemp("testnet"))
    testnet.start(network)
    try:
        wait_until_ready(network, timeout=120)
        yield network
    finally:
        testnet.stop(network)


@pytest.fixture
def victoria(tmp_path):
    """A fresh VictoriaMetrics for one test, stopped by PID afterwards."""
    from tests.integration.victoria import VictoriaMetrics

    server = VictoriaMetrics(tmp_path / "vmdata").start()
    yield server
    server.stop()


@pytest.fixture
def filled_victoria(tor_network, victoria, tmp_path):
    """A VictoriaMetrics holding three periods the agent wrote from the private network; its config file."""
    import time

    import yaml

    from tests.integration.commands import agent

    config = yaml.safe_load((tor_network.directory / testnet.AGENT_CONFIG).read_text())
    config.update({"state_dir": str(tmp_path / "state"), "store": {"url": victoria.url},
                   "query": {"url": victoria.url}})
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(config))
    for _ in range(3):  # three periods: churn and *_over_time have something to work on
        assert agent("once", "--config", path, timeout=60).returncode == 0
        time.sleep(10)
    victoria.settled_export("tor_network_relays", 3)
    return path
