"""Extra-info descriptors from real tor authorities on 127.0.0.1: fetched by digest, matched, not fetched twice.

``allium-agent once`` (outbox only, a state directory of its own) fetches the relays' extra-infos by the
digests their server descriptors name, from the authority that served those, and keeps each relay's newest in
the state; the next period, collected with that memory, asks for none again unless a relay published a new one
meanwhile (then for exactly those). Every tor socket stays on loopback meanwhile.
"""

from __future__ import annotations

import sqlite3

import pytest
import yaml

from agent.config.loader import load_config
from agent.loop.collect import collect
from agent.model.extrainfo import wanted_digests
from agent.model.snapshot import DocKind, Outcome
from agent.pipeline.extrainfos import remembered_extra_infos
from agent.pipeline.state import State
from agent.testnet import network as testnet
from tests.integration.commands import agent
from tests.integration.sockets import off_loopback

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _extra_records(snapshot):
    return [record for record in snapshot.records if record.kind is DocKind.EXTRA_INFOS]


def test_extra_infos_are_fetched_by_digest_once_and_remembered(tor_network, tmp_path):
    settings = yaml.safe_load((tor_network.directory / testnet.AGENT_CONFIG).read_text())
    settings.update({"state_dir": str(tmp_path / "state"), "store": {"embedded": False}})
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(settings))
    config = load_config(path, environ={})
    assert config.fetch.extra_info

    # The first period, collected as `once` does with an empty memory: every relay's extra-info, by digest.
    first = collect(config, extra_infos={})
    named = first.extra_info_digests
    relays = {descriptor.fingerprint for descriptor in first.server_descriptors}
    assert len(relays) == 6 and set(named) == relays  # 3 authorities + 3 relays, each names its extra-info
    records = _extra_records(first)
    assert records and all(record.outcome is Outcome.OK for record in records), records
    served_by = {record.authority for record in first.records
                 if record.kind is DocKind.SERVER_DESCRIPTORS and record.outcome is Outcome.OK}
    assert {record.authority for record in records} == served_by  # from the authority that served the descriptors
    assert all("/tor/extra/d/" in record.url for record in records)
    # Matched to the server descriptors. A relay that published a moment ago may have its new server descriptor
    # at the authority before its extra-info (seen once in ~10 runs): it is asked for again next period.
    held = {fingerprint: extra.digest for fingerprint, extra in first.extra_infos.items()}
    assert {fingerprint: digest for fingerprint, digest in named.items() if fingerprint in held} == held
    assert len(held) >= len(named) - 1
    print(f"\nfirst period: {len(held)} of {len(named)} extra-infos in {len(records)} request(s), "
          f"{sum(r.bytes for r in records)} bytes ({sum(r.wire_bytes for r in records)} on the wire)")

    # `once` through the whole pipeline keeps them in the state.
    result = agent("once", "--config", str(path), timeout=60)
    assert result.returncode == 0, result.stderr
    with sqlite3.connect(tmp_path / "state" / "agent.sqlite") as db:
        rows = dict(db.execute("SELECT fingerprint, digest FROM extra_infos").fetchall())
    assert len(rows) >= len(relays) - 1 and set(rows) <= relays

    # The next period with the state's memory asks only for what changed meanwhile (normally nothing).
    state = State(tmp_path / "state")
    remembered = remembered_extra_infos(state)
    state.close()
    second = collect(config, extra_infos=remembered)
    asked = [digest for record in _extra_records(second) for digest in record.url.rsplit("/", 1)[1].split("+")]
    assert sorted(asked) == wanted_digests(second.extra_info_digests, remembered)
    changed = {fingerprint for fingerprint, digest in second.extra_info_digests.items()
               if fingerprint not in remembered or remembered[fingerprint].digest != digest}
    assert len(asked) == len(changed)
    matched = {fingerprint for fingerprint, digest in second.extra_info_digests.items()
               if fingerprint in second.extra_infos and second.extra_infos[fingerprint].digest == digest}
    assert len(matched) >= len(relays) - 1  # from the memory, or fetched anew
    print(f"second period: {len(asked)} extra-infos asked for ({len(changed)} relays new or not held), "
          f"{sum(r.bytes for r in _extra_records(second))} bytes")

    for node in tor_network.nodes:
        assert off_loopback(tor_network.pids[node.name]) == [], f"{node.name} has sockets off 127.0.0.1"
