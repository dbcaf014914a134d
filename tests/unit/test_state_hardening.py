"""The state file under hostile conditions: bad rows, a damaged file, a read-only directory, a full disk.

A bad row costs only itself (quarantined, counted, reported); a damaged or
unusable file is one clear line naming it (exit 4), and ``status`` still
answers. Read-only and disk-full are the kernel's own where we may mount a
tmpfs (root); the same paths are also driven without one.
"""

import json
import logging
import os
import sqlite3
import subprocess
import zlib

import pytest
import yaml

from agent.cli import main as cli
from agent.cli.health import health
from agent.config.loader import load_config
from agent.model.errors import StateError, StoreError
from agent.pipeline import state as state_module
from agent.pipeline.state import State
from agent.pipeline.statefile import state_error
from agent.store.outbox import Outbox

RELAYS = {"A" * 40: frozenset({"Guard", "Running"}), "B" * 40: frozenset({"Exit"})}


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size, read_only=False) -> a directory on a tmpfs of its own; skipped unless we may mount (root)."""
    mounted = []

    def mount(size="1m"):
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                                               capture_output=True).returncode:
            pytest.skip("needs root to mount a tmpfs (the same paths are driven without one below)")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def read_only(point):
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)


def config_for(tmp_path, state_dir):
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(state_dir)}))
    return path


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def fill(directory):
    """Fills the file system of ``directory`` to the last byte."""
    with open(directory / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass


# --- one bad row costs only itself ---------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    b"garbage", zlib.compress(b"{not json")[:-3], zlib.compress(b"[1, 2]"), zlib.compress(b'{"A": 5}'),
    "a text value", 12345, zlib.compress(b"\xff\xfe"),
], ids=["not zlib", "truncated", "not a mapping", "flags not text", "text", "integer", "not utf-8"])
def test_a_corrupt_period_relays_row_is_quarantined_and_the_one_before_used(tmp_path, caplog, bad):
    """Before: every cycle raised zlib.error/ValueError from relays_before (memory_of), so nothing was recorded."""
    state = State(tmp_path)
    state.save_relays(100, RELAYS)
    state.save_relays(200, {"C" * 40: frozenset()})
    state.db.execute("UPDATE period_relays SET relays = ? WHERE valid_after = 200", (bad,))
    with caplog.at_level(logging.ERROR):
        assert state.relays_before(300) == RELAYS  # the bad row's period is skipped, the one before it serves
    assert state.relays_before(300) == RELAYS and state.counters()["rows_quarantined"] == 1  # once, not per call
    assert [row[0] for row in state.db.execute("SELECT valid_after FROM period_relays")] == [100]
    kept = list((tmp_path / "quarantine").glob("period_relays-200-*.bin"))
    assert len(kept) == 1 and kept[0].read_bytes() == (bad if isinstance(bad, bytes) else str(bad).encode())
    assert "row valid_after=200 of period_relays is unreadable" in caplog.text
    state.save_relays(300, RELAYS)  # and the agent carries on
    assert state.relays_before(400) == RELAYS
    state.close()


def test_a_row_that_inflates_past_the_bound_is_quarantined(tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "MAX_RELAYS_BYTES", 1000)
    state = State(tmp_path)
    state.db.execute("INSERT INTO period_relays VALUES (?, ?)", (100, zlib.compress(b" " * 10_000)))
    assert state.relays_before(200) is None and state.counters()["rows_quarantined"] == 1
    state.close()


@pytest.mark.parametrize("key, value, read", [
    ("last_processed", "{", lambda s: s.last_processed()),
    ("last_success", '"yesterday"', lambda s: s.last_success()),
    ("period_seconds", "true", lambda s: s.period_seconds(None)),
    ("bandwidth_authorities", "[1, 2]", lambda s: s.bandwidth_authorities() or None),
    ("last_cycle", "17", lambda s: s.last_cycle()),
    ("counter:cycle_errors", "not json", lambda s: s.counters().get("cycle_errors")),
])
def test_a_corrupt_status_value_reads_as_unset_and_is_quarantined(tmp_path, key, value, read):
    """Before: json.loads raised on every read (status, every cycle)."""
    state = State(tmp_path)
    state.record_processed(1_000, 3600, at=2_000)
    state.db.execute("INSERT OR REPLACE INTO agent_status VALUES (?, ?)", (key, value))
    assert read(state) is None
    assert state.counters()["rows_quarantined"] == 1 and state.count("cycle_errors") >= 1
    assert state.counters()["periods_processed"] == 1  # the rest is untouched
    state.close()


def test_status_reports_quarantined_rows(tmp_path):
    config = load_config(config_for(tmp_path, tmp_path / "state"), environ={})
    state = State(config.state_dir)
    state.record_processed(1_000, 3600, at=2_000)
    state.db.execute("INSERT INTO period_relays VALUES (?, ?)", (500, b"garbage"))
    state.relays_before(1_000)
    state.close()
    report = health(config, now=2_100)
    assert report["healthy"] and report["counters"]["rows_quarantined"] == 1
    assert report["quarantined"] == f"1 unreadable row was set aside in {config.state_dir / 'quarantine'}"


# --- a damaged file -------------------------------------------------------------------------------------------

def damaged_state(tmp_path):
    directory = tmp_path / "state"
    state = State(directory)
    state.record_processed(1_000, 3600, at=2_000)
    state.close()
    path = directory / "agent.sqlite"
    raw = bytearray(path.read_bytes())
    raw[:16] = b"not sqlite here!"  # the header
    path.write_bytes(bytes(raw))
    return directory


def test_a_damaged_header_is_one_clear_error_and_status_still_answers(tmp_path, capsys, monkeypatch):
    """Before: `file is not a database` tracebacks from every command, status included."""
    import agent.loop.once

    directory = damaged_state(tmp_path)
    with pytest.raises(StateError, match=r"agent.sqlite: damaged: not a readable SQLite database"):
        State(directory)
    monkeypatch.setattr(agent.loop.once, "run_cycle", lambda *a: pytest.fail("a cycle ran on a damaged state"))
    config = config_for(tmp_path, directory)
    for command in (["once"], ["alerts", "status"], ["subscriptions", "list"]):
        assert cli.main([*command, "--config", str(config)]) == cli.EXIT_STATE == 4, command
        err = one_line_error(capsys)
        assert err.startswith(f"state: {directory / 'agent.sqlite'}: damaged") and "move it aside" in err
    assert cli.main(["status", "--config", str(config), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["healthy"] is False and report["state"] == str(directory / "agent.sqlite")
    assert report["reason"].startswith("the state file cannot be read: ") and "damaged" in report["reason"]


def test_a_state_from_a_newer_agent_is_refused_by_name(tmp_path):
    State(tmp_path).close()
    with sqlite3.connect(tmp_path / "agent.sqlite") as db:
        db.execute("PRAGMA user_version = 999")
    with pytest.raises(StateError, match="written by a newer allium-agent"):
        State(tmp_path)


def test_a_state_dir_that_is_a_file_is_named(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StateError, match=r"file: File exists|file: Not a directory"):
        State(tmp_path / "file")
    with pytest.raises(StateError, match="file/below: Not a directory"):
        State(tmp_path / "file" / "below")
    (tmp_path / "state" / "agent.sqlite").mkdir(parents=True)
    with pytest.raises(StateError, match="agent.sqlite: not a regular file"):
        State(tmp_path / "state")


def test_only_errors_of_the_file_or_disk_are_mapped():
    assert state_error("x", sqlite3.IntegrityError("UNIQUE constraint failed")) is None
    assert state_error("x", sqlite3.OperationalError("no such table: t")) is None
    assert str(state_error("x", sqlite3.OperationalError("database or disk is full"))) == \
        "x: the disk is full (database or disk is full)"
    assert "read-only" in str(state_error("x", sqlite3.OperationalError("attempt to write a readonly database")))
    assert str(state_error("x", OSError(28, "No space left on device"))) == "x: No space left on device"


# --- a read-only state directory ----------------------------------------------------------------------------

def test_a_read_only_state_dir_is_one_clear_error_and_status_reads_it(tmp_path, tmpfs, capsys, monkeypatch):
    """Before: `unable to open database file` / EROFS tracebacks from every command, status included."""
    import agent.loop.once

    point = tmpfs()
    directory = point / "state"
    state = State(directory)
    state.record_processed(1_000, 3600, at=2_000)
    state.close()
    read_only(point)
    monkeypatch.setattr(agent.loop.once, "run_cycle", lambda *a: pytest.fail("a cycle ran on a read-only state"))
    config = config_for(tmp_path, directory)
    assert cli.main(["once", "--config", str(config)]) == 4
    assert one_line_error(capsys).strip() == f"state: {directory}: the state directory is not writable " \
                                             "(read-only file system)"
    assert cli.main(["outbox", "status", "--config", str(config)]) == 0  # reading needs no write
    assert "waiting  0 periods" in capsys.readouterr().out
    assert cli.main(["status", "--config", str(config), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["counters"] == {"periods_processed": 1} and report["period_seconds"] == 3600  # still read
    assert "read-only file system" in report["reason"]
    fresh = config_for(tmp_path, point / "never-created")
    assert cli.main(["once", "--config", str(fresh)]) == 4
    assert "never-created: Read-only file system" in one_line_error(capsys)


def test_an_unwritable_state_dir_is_named_without_a_mount(tmp_path, monkeypatch, capsys):
    directory = tmp_path / "state"
    directory.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(StateError, match=r"state: the state directory is not writable \(permission denied\)"):
        State(directory)


# --- a full disk --------------------------------------------------------------------------------------------

def test_a_full_disk_is_a_clear_error_and_nothing_accepted_is_lost(tmp_path, tmpfs):
    """Before: sqlite3.OperationalError('database or disk is full') and OSError tracebacks."""
    point = tmpfs("2m")
    state = State(point / "state")
    state.save_relays(100, RELAYS)
    state.record_processed(100, 3600, at=200)
    outbox = Outbox(point / "state" / "outbox", max_bytes=10_000_000)
    assert outbox.append(["tor_network relays=1 100"], 100)
    fill(point)
    many = {f"{n:040X}": frozenset({"Guard", "Running", "Fast", "Valid"}) for n in range(30_000)}
    with pytest.raises(StateError, match=r"agent.sqlite: the disk is full \(database or disk is full\)"):
        state.save_relays(200, many)
    with pytest.raises(StoreError, match=r"cannot append to .*outbox.data: No space left on device"):
        outbox.append([f"tor_network relays={n} 200" for n in range(100_000)], 200)
    (point / "filler").unlink()
    assert state.relays_before(300) == RELAYS and state.last_processed() == 100
    assert [record.time for record in outbox.pending()] == [100]
    outbox.close()
    state.close()


def test_a_full_disk_without_a_mount(tmp_path):
    """The same path without a mount: SQLite's own SQLITE_FULL, from a page limit at the file's current size."""
    state = State(tmp_path)
    state.save_relays(100, RELAYS)
    pages = state.db.execute("PRAGMA page_count").fetchone()[0]
    state.db.execute(f"PRAGMA max_page_count = {pages}")
    many = {f"{n:040X}": frozenset({"Guard", "Running", "Fast", "Valid"}) for n in range(30_000)}
    with pytest.raises(StateError, match=r"agent.sqlite: the disk is full \(database or disk is full\)"):
        state.save_relays(200, many)
    assert state.relays_before(300) == RELAYS  # nothing half-written, nothing accepted lost
    state.close()
