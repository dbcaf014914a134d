"""Integration fixtures: a real private Tor network on 127.0.0.1 for the session."""

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from agent.testnet import network as testnet
from agent.testnet.watch import wait_until_ready


def require_tor() -> None:
    """Fails (not skips) the test when Debian's tor is missing: the integration tests need it."""
    if shutil.which("tor") is None or shutil.which("tor-gencert") is None:
        pytest.fail("Debian's tor package is required for the integration tests (apt-get install tor)")


@contextmanager
def running(network):
    """Starts a created private network, waits for its first consensus, and stops it by PID on leaving."""
    testnet.start(network)
    try:
        wait_until_ready(network, timeout=120)
        yield network
    finally:
        testnet.stop(network)


@pytest.fixture(scope="session")
def tor_network(tmp_path_factory):
    """Three authorities and three relays voting every 10 s, stopped by PID afterwards."""
    require_tor()
    with running(testnet.create(tmp_path_factory.mktemp("testnet"))) as network:
        yield network


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
    backfill_real_documents(path)
    victoria.settled_export("tor_network_relays", 3 + len(BACKFILLED))
    return path


#: Two consecutive real consensuses (churn between them) with the server descriptors of that hour.
BACKFILLED = ("consensus/2020-02-29-10-00-00-consensus", "consensus/2020-02-29-11-00-00-consensus")
#: When instant queries find the backfilled data: just after the second period starts (within the 5-minute lookback).
BACKFILL_TIME = 1582974000 + 60


def backfill_real_documents(config_path) -> None:
    from tests.conftest import SHARED_TORDATA
    from tests.integration.commands import agent

    paths = [SHARED_TORDATA / name for name in BACKFILLED] + [
        Path(__file__).parents[1] / "data" / "2020-02-29-10-05-00-server-descriptors.xz"]
    # Backfill trusts only the configured authorities: the private network's config would (rightly) refuse the
    # live network's history, so it is imported with the same store and state but the default (live) authorities.
    settings = yaml.safe_load(Path(config_path).read_text())
    settings.pop("authorities", None)
    live = Path(config_path).with_name("backfill-live-authorities.yaml")
    live.write_text(yaml.safe_dump(settings))
    done = agent("backfill", "--config", live, "--no-progress", *paths, timeout=300)
    assert done.returncode == 0, done.stderr
