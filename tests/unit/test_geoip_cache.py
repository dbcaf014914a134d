"""The GeoIP cache (agent/metrics/geoipcache.py): built once, reused, rebuilt when the file changes or the cache
is damaged, never fatal, and the same lookups as parsing the file."""

from __future__ import annotations

import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from agent.metrics import geoip as geoip_module
from agent.metrics import geoipcache
from agent.metrics.geoip import GeoIP, load_or_empty
from tests.conftest import DATA

TOR_GEOIP = Path("/usr/share/tor/geoip")  # Debian tor-geoipdb: the file the agent reads by default


def relay_addresses(consensus_bytes: bytes) -> list[str]:
    """The IPv4 address of every relay of a real consensus (its ``r`` lines)."""
    return [line.split()[6].decode() for line in re.findall(rb"^r .*$", consensus_bytes, re.M)]


@pytest.fixture
def source(tmp_path) -> Path:
    """A copy of the real excerpt of tor's geoip, free to change."""
    path = tmp_path / "geoip"
    shutil.copyfile(DATA / "geoip-excerpt", path)
    return path


def no_parse(monkeypatch) -> None:
    def refused(cls, path):
        raise AssertionError("parsed the file although the cache was valid")
    monkeypatch.setattr(GeoIP, "load", classmethod(refused))


def same(first: GeoIP, second: GeoIP) -> bool:
    return (first.starts.tolist() == second.starts.tolist() and first.ends.tolist() == second.ends.tolist()
            and [first.names[c] for c in first.codes] == [second.names[c] for c in second.codes])


def test_built_once_then_reused(source, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    built = load_or_empty(source, cache_dir)
    files = list(cache_dir.iterdir())
    assert [path.name for path in files] == [geoipcache.cache_file(source, cache_dir).name]  # no temporary left
    assert same(built, GeoIP.load(source))
    no_parse(monkeypatch)
    reused = load_or_empty(source, cache_dir)
    assert same(reused, built) and reused.names == built.names
    assert reused.countries(["128.31.0.39", "45.66.35.11", "10.0.0.1", "not-an-ip"]) == ["US", "NL", "??", "??"]


def test_a_changed_file_is_parsed_again_even_with_the_same_size_and_time(source, tmp_path):
    cache_dir = tmp_path / "cache"
    assert load_or_empty(source, cache_dir).countries(["45.66.35.11"]) == ["NL"]
    before = source.stat()
    source.write_text(source.read_text().replace(",NL\n", ",DE\n"))  # same size
    os.utime(source, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert source.stat().st_size == before.st_size and source.stat().st_mtime_ns == before.st_mtime_ns
    assert load_or_empty(source, cache_dir).countries(["45.66.35.11"]) == ["DE"]
    assert load_or_empty(source, cache_dir).countries(["45.66.35.11"]) == ["DE"]  # from the rewritten cache
    assert len(list(cache_dir.iterdir())) == 1  # replaced, not added


def test_an_unchanged_file_touched_or_copied_keeps_its_cache(source, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    load_or_empty(source, cache_dir)
    os.utime(source, ns=(1, 1))
    no_parse(monkeypatch)
    assert load_or_empty(source, cache_dir).countries(["128.31.0.39"]) == ["US"]


def damage_truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def damage_flipped_byte(path: Path) -> None:
    """One bit of the range starts flipped (the members are stored uncompressed; zip's CRC-32 covers them)."""
    data = bytearray(path.read_bytes())
    with np.load(path) as stored:
        at = data.find(stored["starts"].tobytes())
    assert at > 0
    data[at + 5] ^= 0x01
    path.write_bytes(bytes(data))


def damage_garbage(path: Path) -> None:
    path.write_bytes(os.urandom(3000))


def damage_empty(path: Path) -> None:
    path.write_bytes(b"")


def damage_npy_not_npz(path: Path) -> None:
    with open(path, "wb") as handle:
        np.save(handle, np.arange(10))


def damage_pickled_member(path: Path) -> None:
    with np.load(path) as stored:
        members = {name: stored[name] for name in stored.files}
    members["names"] = np.array([object(), "US"], dtype=object)  # would need pickle: refused, not run
    with open(path, "wb") as handle:
        np.savez(handle, **members)


def damage_codes_beyond_names(path: Path) -> None:
    with np.load(path) as stored:
        members = {name: stored[name] for name in stored.files}
    members["codes"] = np.full_like(members["codes"], 999)
    with open(path, "wb") as handle:
        np.savez(handle, **members)


def damage_member_missing(path: Path) -> None:
    with zipfile.ZipFile(path) as old:
        kept = {name: old.read(name) for name in old.namelist() if name != "ends.npy"}
    with zipfile.ZipFile(path, "w") as new:
        for name, data in kept.items():
            new.writestr(name, data)


def damage_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


@pytest.mark.parametrize("damage", [damage_truncated, damage_flipped_byte, damage_garbage, damage_empty,
                                    damage_npy_not_npz, damage_pickled_member, damage_codes_beyond_names,
                                    damage_member_missing])
def test_a_damaged_cache_is_rebuilt(source, tmp_path, caplog, damage):
    cache_dir = tmp_path / "cache"
    expected = load_or_empty(source, cache_dir)
    cache = geoipcache.cache_file(source, cache_dir)
    damage(cache)
    with caplog.at_level(logging.WARNING, logger="agent.metrics.geoipcache"):
        rebuilt = load_or_empty(source, cache_dir)
    assert same(rebuilt, expected)
    assert "unreadable" in caplog.text and "building it again" in caplog.text
    assert geoipcache.read(cache, geoipcache.source_key(source)) is not None  # and written again, whole


def test_a_cache_that_cannot_be_read_or_written_costs_the_parse_only(source, tmp_path, caplog):
    cache_dir = tmp_path / "cache"
    load_or_empty(source, cache_dir)
    damage_directory(geoipcache.cache_file(source, cache_dir))  # neither readable nor replaceable
    with caplog.at_level(logging.WARNING):
        assert load_or_empty(source, cache_dir).countries(["128.31.0.39"]) == ["US"]
    assert "cannot be written" in caplog.text
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    assert load_or_empty(source, blocked / "cache").countries(["128.31.0.39"]) == ["US"]


def test_a_file_changing_while_parsed_is_not_cached(source, tmp_path, monkeypatch):
    cache_dir = tmp_path / "cache"
    keys = iter(["first", "second"])
    monkeypatch.setattr(geoipcache, "source_key", lambda path: next(keys))
    assert load_or_empty(source, cache_dir).countries(["128.31.0.39"]) == ["US"]
    assert not cache_dir.exists()


def test_missing_or_no_file_gives_the_empty_database_and_no_cache(tmp_path):
    cache_dir = tmp_path / "cache"
    assert load_or_empty(tmp_path / "missing", cache_dir).countries(["128.31.0.39"]) == ["??"]
    assert load_or_empty(None, cache_dir).countries(["128.31.0.39"]) == ["??"]
    assert not cache_dir.exists()


def test_a_malformed_file_still_raises_and_is_not_cached(tmp_path):
    path = tmp_path / "geoip"
    path.write_text("# header\n1,2,US\nthree,4,DE\n")
    with pytest.raises(ValueError, match=r"geoip:3: not a LOW,HIGH,CC line"):
        load_or_empty(path, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_an_empty_file_caches_an_empty_database(tmp_path, monkeypatch):
    path = tmp_path / "geoip"
    path.write_text("# nothing but a comment\n")
    assert load_or_empty(path, tmp_path / "cache").countries(["128.31.0.39"]) == ["??"]
    no_parse(monkeypatch)
    assert load_or_empty(path, tmp_path / "cache").countries(["128.31.0.39"]) == ["??"]


def test_the_default_cache_directory(monkeypatch, tmp_path, source):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert geoipcache.default_cache_dir() == tmp_path / "xdg" / "allium-agent"
    load_or_empty(source)
    assert [path.name for path in (tmp_path / "xdg" / "allium-agent").iterdir()] == [
        geoipcache.cache_file(source, tmp_path / "xdg" / "allium-agent").name]
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert geoipcache.default_cache_dir() == tmp_path / "home" / ".cache" / "allium-agent"


def test_no_cache_directory_parses(monkeypatch, source):
    monkeypatch.setattr(geoip_module.geoipcache, "default_cache_dir", lambda: None)
    assert load_or_empty(source).countries(["128.31.0.39"]) == ["US"]


@pytest.mark.skipif(not TOR_GEOIP.exists(), reason="tor-geoipdb is not installed")
def test_real_file_cached_looks_up_as_parsed(tmp_path, consensus_bytes, monkeypatch):
    addresses = relay_addresses(consensus_bytes)
    assert len(addresses) > 6000
    addresses += ["0.0.0.0", "255.255.255.255", "10.0.0.1", "127.0.0.1", "not-an-ip", "1.2.3"]
    parsed = GeoIP.load(TOR_GEOIP)
    expected = parsed.countries(addresses)
    assert sum(country != "??" for country in expected) > 6000
    built = load_or_empty(TOR_GEOIP, tmp_path / "cache")
    assert built.countries(addresses) == expected
    no_parse(monkeypatch)
    cached = load_or_empty(TOR_GEOIP, tmp_path / "cache")
    assert same(cached, parsed) and cached.names == parsed.names
    assert cached.countries(addresses) == expected
    # every range's first and last address, and the ones just outside it
    edges = np.concatenate([parsed.starts, parsed.ends, parsed.starts - 1, parsed.ends + 1])
    edges = edges[(edges >= 0) & (edges < 2**32)]
    as_text = [".".join(str(part) for part in int(number).to_bytes(4, "big")) for number in edges[::37]]
    assert cached._look_up(as_text) == parsed._look_up(as_text)
