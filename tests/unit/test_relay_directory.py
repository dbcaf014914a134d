"""The relay directory (the state's ``relay_directory``, which the REST API searches): its round trip through
State with each filter, and ``record`` writing it from a real live period (2020-02-29 10:00 with that hour's
descriptors) but not from a backfilled one."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.config.loader import load_config
from agent.loop.backfill import newest_snapshot
from agent.metrics.geoip import GeoIP
from agent.model.aroi import DomainProof, ProofBook
from agent.model.ciiss import parse_contact
from agent.pipeline.judge import Memory, judge
from agent.pipeline.record import record
from agent.pipeline.state import DirectoryEntry, DirectorySearch, State
from agent.store.store import Store
from tests.conftest import DATA, read_data

HOUR = "2020-02-29-10-00-00-consensus"
ENTRIES = (
    DirectoryEntry("A" * 40, "moria1", "US", "0.4.2.6", "Roger <arma AT mit dot edu>", None),
    DirectoryEntry("B" * 40, "Moria2", "DE", "0.4.2.6-dev", "100%_sure ops", "example.org"),
    DirectoryEntry("C" * 40, "other", "DE", "0.4.20.1", "100 percent sure", None),
    DirectoryEntry("D" * 40, None, None, None, "x" * 500, None),
)


def found(state: State, **search) -> list[str]:
    return list(state.relay_directory(DirectorySearch(**search)))


def test_the_directory_round_trips_and_each_filter_selects(tmp_path):
    state = State(tmp_path)
    assert state.relay_directory_period() is None and state.relay_directory() == {}
    assert state.replace_relay_directory(100, [DirectoryEntry("F" * 40, "gone")]) == 1
    assert state.replace_relay_directory(200, ENTRIES) == len(ENTRIES)
    everything = state.relay_directory()
    assert list(everything) == ["A" * 40, "B" * 40, "C" * 40, "D" * 40] and state.relay_directory_period() == 200
    assert everything["A" * 40] == ENTRIES[0]
    assert everything["D" * 40].contact == "x" * 200  # bounded
    assert found(state, nickname="MORIA") == ["A" * 40, "B" * 40]
    assert found(state, nickname="moria1") == ["A" * 40] and found(state, nickname="moria3") == []
    assert found(state, country="de") == ["B" * 40, "C" * 40]
    assert found(state, version="0.4.2") == ["A" * 40, "B" * 40]  # not 0.4.20.1
    assert found(state, version="0.4.2.6") == ["A" * 40, "B" * 40] and found(state, version="0.4.2.6-dev") == ["B" * 40]
    assert found(state, contact="MIT DOT") == ["A" * 40]
    assert found(state, contact="100%_") == ["B" * 40]  # % and _ are literal, not wildcards
    assert found(state, contact="%") == ["B" * 40] and found(state, contact="_") == ["B" * 40]
    assert found(state, operator="Example.org") == ["B" * 40]
    assert found(state, country="DE", nickname="oth") == ["C" * 40]
    assert list(state.relay_directory(DirectorySearch(country="DE"), fingerprints=["c" * 40, "A" * 40])) == ["C" * 40]
    state.close()
    reopened = State(tmp_path, read_only=True)
    assert reopened.relay_directory() == everything
    reopened.close()


def test_the_indexes_serve_the_prefix_filters(tmp_path):
    state = State(tmp_path)
    for search, index in ((DirectorySearch(nickname="mor"), "relay_directory_nickname"),
                          (DirectorySearch(country="DE"), "relay_directory_country"),
                          (DirectorySearch(operator="example.org"), "relay_directory_operator")):
        clauses, values = search.where()
        plan = state.db.execute(f"EXPLAIN QUERY PLAN SELECT * FROM relay_directory WHERE {' AND '.join(clauses)}",
                                values).fetchall()
        assert any(index in row[-1] for row in plan), plan
    state.close()


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """The real 10:00 period judged as ``once`` judges it, from a folder with the consensus and descriptors."""
    folder = tmp_path_factory.mktemp("hour")
    (folder / HOUR).write_bytes(read_data(f"{HOUR}.xz"))
    (folder / "2020-02-29-10-05-00-server-descriptors").write_bytes(
        read_data("2020-02-29-10-05-00-server-descriptors.xz"))
    config = _config(tmp_path_factory.mktemp("config"))
    snapshot = newest_snapshot([folder], config)[0]
    return judge(snapshot, Memory(), config, GeoIP.load(DATA / "geoip-excerpt"))


def _config(tmp_path):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "agent.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\nvantage: test\ndetect: {{enabled: false}}\n")
    return load_config(path, environ={})


def test_record_writes_the_directory_of_a_live_period_and_not_of_a_backfilled_one(judged, tmp_path, hour10):
    table = judged.table
    assert table is not None and len(table) > 6000
    # One relay's contact claims a domain whose proof lists it: its operator is that domain; no other has one.
    claimed = table.fingerprints[5]
    contacts = list(table.contacts)
    contacts[5] = parse_contact("ciissversion:2 url:https://example.org proof:uri-rsa")
    proofs = ProofBook({("example.org", "uri-rsa"): DomainProof("example.org", "uri-rsa", 0, frozenset({claimed}))})
    live = replace(judged, table=replace(table, contacts=contacts), proofs=proofs)

    config = _config(tmp_path / "live")
    state, store = State(config.state_dir), Store.from_config(config)
    record(live, store, state)
    directory = state.relay_directory()
    assert state.relay_directory_period() == judged.time
    assert list(directory) == sorted(table.fingerprints)
    for row, fingerprint in enumerate(table.fingerprints[:200]):
        entry = directory[fingerprint]
        assert entry.nickname == hour10.routers[fingerprint].nickname
        assert entry.version == table.version[row]
        assert entry.country == (table.country[row] if table.country[row] != "??" else None)
        assert entry.contact == ((table.contacts[row].raw.strip() or None) if row != 5 else contacts[5].raw)
    assert [fp for fp, entry in directory.items() if entry.operator] == [claimed]
    assert directory[claimed].operator == "example.org"
    with_contact = sum(1 for entry in directory.values() if entry.contact)
    assert 0 < with_contact < len(directory)
    store.close()
    state.close()

    config = _config(tmp_path / "backfill")
    state, store = State(config.state_dir), Store.from_config(config)
    record(judged.backfilled(), store, state, backfilled_at=judged.time + 60)
    assert state.relay_directory() == {} and state.relay_directory_period() is None
    store.close()
    state.close()


def test_a_directory_that_cannot_be_written_does_not_fail_the_period(judged, tmp_path, caplog):
    config = _config(tmp_path)
    state, store = State(config.state_dir), Store.from_config(config)
    state.db.execute("DROP TABLE relay_directory")
    saved = record(judged, store, state)
    assert saved.stored and state.relays_before(judged.time + 1) == judged.relays
    assert "relay directory could not be written" in caplog.text
    store.close()
    state.close()
