"""The embedded store: the agent's own VictoriaMetrics (Debian's victoria-metrics), started, shared and stopped.

Every test starts the real binary on 127.0.0.1 with its data in a temporary
state directory, and checks by PID that nothing is left running.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from agent.config.loader import load_config
from agent.model.points import point
from agent.store.embedded import RUN_FILE, describe
from agent.store.query import run_query
from agent.store.store import Store, query_endpoint
from tests.integration.commands import agent

pytestmark = pytest.mark.integration
HOUR = 1_700_000_000 // 3600 * 3600


def config_in(tmp_path, **store):
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "store": {"embedded_port": 18999, **store}}))
    return load_config(path, environ={})


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not open(f"/proc/{pid}/stat").read().split()[2] == "Z"


def relays_at(url: str, at: int) -> list:
    deadline = time.monotonic() + 20
    while True:
        import requests

        requests.get(f"{url}/internal/force_flush", timeout=10)
        series = run_query(url, "tor_network_relays", at=_utc(at)).series
        if series or time.monotonic() > deadline:
            return series
        time.sleep(0.3)


def _utc(unix: int):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(unix, timezone.utc)


def test_with_no_store_url_points_go_to_the_embedded_store_and_close_stops_it(tmp_path):
    config = config_in(tmp_path)
    store = Store.from_config(config)
    assert store.embedded is not None and store.embedded.owned
    pid, url = store.embedded.pid, store.embedded.url
    saved = store.save([point("tor_network", {}, {"relays": 7000}, HOUR)], HOUR)
    assert saved.periods_written == 1 and saved.periods_waiting == 0 and saved.destination == url
    [(labels, [(_, value)])] = relays_at(url, HOUR + 60)
    assert value == "7000"
    assert describe(config.state_dir) == {"pid": pid, "url": url}
    store.close()
    assert not alive(pid) and not (config.state_dir / RUN_FILE).exists()
    assert describe(config.state_dir) is None


def test_a_second_command_uses_the_running_store_and_leaves_it_running(tmp_path):
    config = config_in(tmp_path)
    first = Store.from_config(config)
    try:
        first.save([point("tor_network", {}, {"relays": 6500}, HOUR)], HOUR)
        with query_endpoint(config) as url:  # what `allium-agent query` does beside `run`
            assert url == first.embedded.url
            assert relays_at(url, HOUR + 60)
        assert alive(first.embedded.pid)  # the query did not stop the daemon's store
    finally:
        first.close()


def test_the_query_command_starts_the_store_for_the_query_and_stops_it(tmp_path):
    config = config_in(tmp_path)
    store = Store.from_config(config)
    store.save([point("tor_network", {}, {"relays": 6400}, HOUR)], HOUR)
    store.embedded.flush()
    store.close()
    answer = agent("query", "tor_network_relays", "--at", "2023-11-14T22:02:00Z", "--config", tmp_path / "agent.yaml",
                   timeout=60)
    assert answer.returncode == 0, answer.stderr
    assert "6400" in answer.stdout or "6,400" in answer.stdout
    assert describe(config.state_dir) is None  # stopped again


def test_a_store_that_dies_is_started_again_and_nothing_is_lost(tmp_path):
    config = config_in(tmp_path)
    store = Store.from_config(config)
    try:
        store.save([point("tor_network", {}, {"relays": 6000}, HOUR)], HOUR)
        os.kill(store.embedded.pid, signal.SIGKILL)
        store.embedded._process.wait()
        saved = store.save([point("tor_network", {}, {"relays": 6100}, HOUR + 3600)], HOUR + 3600)
        assert saved.periods_written == 1 and saved.periods_waiting == 0
        assert alive(store.embedded.pid)
        [(_, [(_, value)])] = relays_at(store.embedded.url, HOUR + 3600 + 60)
        assert value == "6100"
    finally:
        store.close()


def test_a_store_left_by_a_killed_agent_is_adopted_and_stopped(tmp_path):
    config = config_in(tmp_path)
    script = ("import os, sys\nfrom agent.config.loader import load_config\nfrom agent.store.store import Store\n"
              f"store = Store.from_config(load_config({str(tmp_path / 'agent.yaml')!r}, environ={{}}))\n"
              "print(store.embedded.pid, flush=True)\nos._exit(0)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    orphan = int(done.stdout.strip())
    assert alive(orphan)  # what a kill -9 of the agent leaves behind
    try:
        store = Store.from_config(config)
        assert store.embedded.pid == orphan and store.embedded.owned
        assert json.loads((config.state_dir / RUN_FILE).read_text())["owner"] == os.getpid()
        store.close()
        assert not alive(orphan)
    finally:
        if alive(orphan):
            os.kill(orphan, signal.SIGKILL)


def test_without_the_binary_the_agent_says_how_to_install_it_and_keeps_periods_in_the_outbox(tmp_path, caplog):
    config = config_in(tmp_path, embedded_binary="no-such-victoria-metrics")
    store = Store.from_config(config)
    try:
        assert store.embedded is None and store.writer is None
        saved = store.save([point("tor_network", {}, {"relays": 6000}, HOUR)], HOUR)
        assert saved.stored and saved.periods_waiting == 1
    finally:
        store.close()
    assert "apt-get install victoria-metrics" in caplog.text


def test_a_configured_store_url_replaces_the_embedded_store(tmp_path, victoria):
    config = config_in(tmp_path, url=victoria.url)
    store = Store.from_config(config)
    try:
        assert store.embedded is None and store.writer.url == victoria.url
    finally:
        store.close()
    assert not (config.state_dir / "victoria-metrics").exists()


@pytest.mark.slow
def test_once_with_no_store_configured_stores_into_the_embedded_store_and_query_answers(tor_network, tmp_path):
    """The README's first two commands, on the private network: once, then query, with no store configured."""
    settings = yaml.safe_load((tor_network.directory / "allium-agent.yaml").read_text())
    settings.update({"state_dir": str(tmp_path / "state"), "store": {"embedded_port": 18998}})
    settings.pop("query", None)
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(settings))
    once = agent("once", "--config", path, timeout=120)
    assert once.returncode == 0, once.stderr
    assert "embedded" in once.stderr or "127.0.0.1:" in once.stdout
    answer = agent("query", "tor_network_relays", "--config", path, "--format", "json", timeout=60)
    assert answer.returncode == 0, answer.stderr
    [series] = json.loads(answer.stdout)["result"]
    assert float(series["value"][1]) == len(tor_network.nodes)
    assert describe(tmp_path / "state") is None  # both commands stopped the store they started
