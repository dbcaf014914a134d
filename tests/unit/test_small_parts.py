"""GeoIP parsing, version status, and the SQLite state."""

import pytest

from agent.metrics.geoip import GeoIP, load_or_empty
from agent.model import versions
from agent.pipeline.state import MIGRATIONS, State
from tests.conftest import DATA


def test_geoip_excerpt():
    geoip = GeoIP.load(DATA / "geoip-excerpt")
    assert geoip.countries(["128.31.0.39", "45.66.35.11", "10.0.0.1", "not-an-ip"]) == ["US", "NL", "??", "??"]


def test_geoip_remembers_recent_addresses_within_its_bound(monkeypatch):
    geoip = GeoIP.load(DATA / "geoip-excerpt")
    monkeypatch.setattr("agent.metrics.geoip.KNOWN_LIMIT", 3)
    first = geoip.countries(["128.31.0.39", "45.66.35.11", "10.0.0.1"])
    looked_up = []
    look_up = geoip._look_up
    monkeypatch.setattr(geoip, "_look_up", lambda addresses: looked_up.append(addresses) or look_up(addresses))
    again = geoip.countries(["10.0.0.1", "45.66.35.11", "not-an-ip", "128.31.0.39"])
    assert first == ["US", "NL", "??"] and again == ["??", "NL", "??", "US"]
    assert looked_up == [["not-an-ip"]]  # only the new address is looked up
    assert set(geoip._known) == {"10.0.0.1", "45.66.35.11", "not-an-ip", "128.31.0.39"}  # full: those at hand


def test_geoip_bad_line_names_file_and_line(tmp_path):
    path = tmp_path / "geoip"
    path.write_text("# header\n1,2,US\nthree,4,DE\n")
    with pytest.raises(ValueError, match=r"geoip:3: not a LOW,HIGH,CC line"):
        GeoIP.load(path)
    assert load_or_empty(tmp_path / "missing").countries(["1.2.3.4"]) == ["??"]


@pytest.mark.parametrize("version, status", [
    ("0.4.8.9", "recommended"), ("0.4.8.8", "obsolete"), ("0.4.9.2-alpha", "experimental"),
    ("0.4.8.11", "new_in_series"), ("0.4.9.0", "unrecommended"), (None, "unknown"), ("garbage", "unknown"),
    ("0.4.8.10-rc", "unrecommended"), ("0.4.9.1-alpha", "recommended"), ("0.4.9.1", "experimental"),
])
def test_version_status_like_tor(version, status):
    assert versions.classify(version, ("0.4.8.9", "0.4.8.10", "0.4.9.1-alpha")) == status


def test_state_keeps_recent_periods_and_migrates_once(tmp_path):
    state = State(tmp_path)
    state.save_relays(100, {"A": frozenset({"Guard", "Running"})})
    state.save_relays(200, {"B": frozenset()})
    assert state.relays_before(200) == {"A": frozenset({"Guard", "Running"})}
    assert state.relays_before(100) is None
    state.close()
    reopened = State(tmp_path)
    assert reopened.relays_before(300) == {"B": frozenset()}
    assert reopened._db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_geoip_read_in_chunks_is_the_same_database(monkeypatch):
    whole = GeoIP.load(DATA / "geoip-excerpt")
    monkeypatch.setattr("agent.metrics.geoip._CHUNK_LINES", 3)
    chunked = GeoIP.load(DATA / "geoip-excerpt")
    assert chunked.starts.tolist() == whole.starts.tolist() and chunked.ends.tolist() == whole.ends.tolist()
    assert [chunked.names[c] for c in chunked.codes] == [whole.names[c] for c in whole.codes]
    assert len(whole.starts) > 3


@pytest.mark.parametrize("lines", [
    ["# tor geoip\n", "16777216,16777471,au\n", "16777472,16778239,CN\r\n", "16778240,16779263,\n"],
    ["16777216,16777471,AU \n", "16777472,16778239,CN\n"],  # a stray space: read line by line, as before
])
def test_geoip_lines_read_in_bulk_as_line_by_line(lines):
    from agent.metrics.geoip import _parse_chunk, _parse_lines

    bulk_names, line_names = {"??": 0}, {"??": 0}
    bulk, by_line = _parse_chunk(lines, 0, "geoip", bulk_names), _parse_lines(lines, 0, "geoip", line_names)
    assert [column.tolist() for column in bulk] == [column.tolist() for column in by_line]
    assert bulk_names == line_names
