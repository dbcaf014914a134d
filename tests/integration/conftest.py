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
