"""The at-risk harness (``python -m agent.evaluation.atrisk --consensuses``) on consecutive consensuses of a real
private Tor network: ~40 periods of 10 s, one relay stopped mid-way.

A functional check of the input path (real tor consensuses, read as backfill reads them, grouped by
valid-after, trust from the network's own authorities) and of the onset counting; with 6 relays and 40
periods its precision and recall are no evidence of anything (docs/relays.md "At-risk warnings").
"""

import json
import re
import time

import pytest

from agent.config.loader import load_config
from agent.evaluation import atrisk as evaluation
from agent.fetch.http import Deadline, download, new_session
from agent.model.snapshot import DocKind
from agent.testnet import network as testnet
from agent.testnet.watch import as_authority
from tests.integration.conftest import require_tor, running

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PERIODS = 20  # tune periods 4-5 and held-out 10-15 (warm-up 4, horizon 4, split in half): 200 s of voting
STOP_AT = 12  # consensuses collected before relay3 is stopped: its dropout falls in the held-out half
STOPPED = "relay3"
VALID_AFTER = re.compile(rb"^valid-after (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)$", re.MULTILINE)


@pytest.fixture(scope="module")
def atrisk_network(tmp_path_factory):
    """Three authorities and three relays of its own (relay3 is stopped for good), stopped by PID afterwards."""
    require_tor()
    with running(testnet.create(tmp_path_factory.mktemp("atrisk-testnet") / "net")) as network:
        yield network


def _served(network) -> tuple[str, bytes] | None:
    """(valid-after, bytes) of the consensus the first answering authority serves now."""
    for node in network.authorities:
        if not testnet.is_running(network, node.name):
            continue
        with new_session() as session:
            fetched = download(session, as_authority(node), DocKind.CONSENSUS, Deadline(5.0), 5.0)
        body = fetched.body or b""
        match = VALID_AFTER.search(body)
        if match:
            return match.group(1).decode(), body
    return None


def test_the_harness_counts_a_stopped_relays_dropout_on_consecutive_consensuses(atrisk_network, tmp_path,
                                                                                      capsys):
    network = atrisk_network
    archive = tmp_path / "consensuses"
    archive.mkdir()
    seen: list[str] = []
    stopped_after = None
    end = time.monotonic() + PERIODS * network.interval_seconds * 3
    while len(seen) < PERIODS:
        assert time.monotonic() < end, f"only {len(seen)} consensuses collected"
        served = _served(network)
        if served is not None and served[0] not in seen:
            seen.append(served[0])
            (archive / f"{served[0].replace(' ', '-').replace(':', '-')}-consensus").write_bytes(served[1])
            if len(seen) == STOP_AT:
                # Stopped, and rejected by the authorities so that it leaves the next consensus: they assume every
                # relay reachable (AssumeReachable) and would keep a silent relay Running for up to 45 minutes.
                testnet.stop(network, [STOPPED])
                testnet.reject_relays(network, [STOPPED])
                stopped_after = served[0]
        time.sleep(1.0)
    config = network.directory / testnet.AGENT_CONFIG
    series = evaluation.load_consensuses([archive], load_config(config, environ={}))
    assert len(series.hours) == PERIODS and series.segment.max() == 1
    fingerprint = network.node(STOPPED).fingerprint
    dropouts = []
    names = series.fingerprints
    assert names is not None
    for block in evaluation.blocks(series, horizon=4, span=100):
        assert block.relays is not None
        rows, cols = (block.onset["dropout"] & block.core).nonzero()
        dropouts += [(names[block.relays[r]], int(block.columns[c])) for r, c in zip(rows, cols)]
    assert [f for f, _ in dropouts] == [fingerprint], dropouts  # the stopped relay, once; no one else
    assert dropouts[0][1] > seen.index(stopped_after)  # columns are the collected periods, in time order

    table = evaluation.evaluate(series, horizon=4, warmup=4)
    assert {row["target"] for row in table} == {"dropout", "guard", "stable", "hsdir", "fast"}
    assert {(row["target"], row["part"]) for row in table} == {
        (target, part) for target in series.targets for part in ("tune", "held-out")}
    held_out = [row for row in table if row["target"] == "dropout" and row["part"] == "held-out"]
    assert all(row["onsets"] == 1 for row in held_out)

    capsys.readouterr()
    cli = evaluation.main(["--consensuses", str(archive), "--config", str(config), "--horizon", "4", "--warmup",
                           "4", "--json"])
    assert cli == 0 and capsys.readouterr().out == json.dumps(table, indent=1, default=float) + "\n"
    with capsys.disabled():
        print(f"\n{PERIODS} consensuses {seen[0]} .. {seen[-1]}, {STOPPED} stopped after {stopped_after}, "
              f"dropout onset at period {dropouts[0][1]}\n{evaluation.render(table)}")
