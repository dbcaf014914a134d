"""Line protocol, the retry policy and the durable outbox, without a server."""

import errno
import logging
import os
import re
import zlib

import numpy as np
import pytest
from influxdb_client import Point as LibraryPoint
from influxdb_client import WritePrecision

from agent.model.errors import StoreError
from agent.model.points import Point, PointColumns
from agent.model.retry import RetryPolicy
from agent.store.lineprotocol import encode, encode_all
from agent.store.outbox import HEADER, MAGIC, Outbox

NASTY = "op, with=odd \"chars\"\\ and\nnewline"


@pytest.mark.parametrize("item", [
    Point("tor_network", {}, {"relays": 6433.0, "weight_total": 1.5e-05}, 1582970400),
    Point("tor_network_flag", {"flag": "Guard"}, {"relays": 2.0, "weight_fraction": 0.123456789012345}, 1),
    Point("tor_operator", {"operator": "a b,c=d", "operator_id": "ab12", "group": "contact"},
          {"relays": 3.0}, 1582970400),
])
def test_line_protocol_matches_influxdb_client(item):
    library = LibraryPoint(item.measurement)
    for key, value in item.tags.items():
        library = library.tag(key, value)
    for key, value in item.fields.items():
        library = library.field(key, value)
    library = library.time(item.time, WritePrecision.S)
    assert encode(item) == library.to_line_protocol()


def test_attacker_controlled_tags_stay_on_one_line():
    line = encode(Point("tor_operator", {"operator": NASTY, "operator_id": "x", "group": "contact"},
                        {"relays": 1.0}, 5))
    assert "\n" not in line and "\\\\" not in line
    assert line.endswith(" relays=1 5")
    assert len(re.split(r"(?<!\\) ", line)) == 3  # tags, fields, time: the newline did not split the tags
    assert encode_all([Point("tor_network", {}, {}, 1)]) == []  # no fields, no line


def test_retry_policy_delays_and_gives_up():
    policy = RetryPolicy(attempts=4, initial_delay_seconds=1, max_delay_seconds=3, jitter=0)
    assert list(policy.delays()) == [1, 2, 3]
    calls, slept = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    assert policy.call(flaky, lambda e: isinstance(e, ConnectionError), "test", sleep=slept.append) == "ok"
    assert slept == [1, 2]
    with pytest.raises(ValueError):
        policy.call(lambda: (_ for _ in ()).throw(ValueError("bad")), lambda e: False, "test", sleep=slept.append)
    calls.clear()
    with pytest.raises(ConnectionError):
        policy.call(lambda: (_ for _ in ()).throw(ConnectionError("down")), lambda e: True, "t",
                    sleep=lambda s: calls.append(s))
    assert len(calls) == 3  # 4 attempts, 3 waits


def periods(outbox):
    return [(record.time, record.lines) for record in outbox.pending()]


def test_outbox_keeps_order_and_survives_reopening(tmp_path):
    outbox = Outbox(tmp_path, max_bytes=10_000_000)
    for hour in range(3):
        assert outbox.append([f"tor_network relays={hour}.0 {hour}"], hour)
    first = next(outbox.pending())
    outbox.commit(first.end)
    outbox.close()
    reopened = Outbox(tmp_path, max_bytes=10_000_000)
    assert reopened.records == 2
    assert periods(reopened) == [(1, ["tor_network relays=1.0 1"]), (2, ["tor_network relays=2.0 2"])]
    for record in list(reopened.pending()):
        reopened.commit(record.end)
    assert reopened.records == 0 and (tmp_path / "outbox.data").stat().st_size == 0


def test_records_of_the_zlib_format_still_waiting_are_delivered_before_new_ones(tmp_path):
    old_payload = zlib.compress(b"tor_network relays=1.0 1\ntor_network relays=1.5 1", 1)  # as 0.x wrote it
    (tmp_path / "outbox.data").write_bytes(
        HEADER.pack(b"ALB1", len(old_payload), zlib.crc32(old_payload), 1) + old_payload)
    outbox = Outbox(tmp_path, max_bytes=10_000_000)
    assert outbox.records == 1
    assert outbox.append(["tor_network relays=2.0 2"], 2)
    assert periods(outbox) == [(1, ["tor_network relays=1.0 1", "tor_network relays=1.5 1"]),
                               (2, ["tor_network relays=2.0 2"])]
    data = (tmp_path / "outbox.data").read_bytes()
    second = HEADER.size + len(old_payload)
    assert MAGIC == b"ALB3" and data[second:second + 4] == MAGIC
    assert data[second + HEADER.size:second + HEADER.size + 4] == b"\x28\xb5\x2f\xfd"  # a zstd frame


def test_a_second_process_cannot_share_the_outbox(tmp_path):
    outbox = Outbox(tmp_path, max_bytes=1000)
    with pytest.raises(StoreError, match="in use by another allium-agent process"):
        Outbox(tmp_path, max_bytes=1000)
    outbox.close()


def test_truncated_last_record_is_reported_and_intact_records_kept(tmp_path, caplog):
    outbox = Outbox(tmp_path, max_bytes=10_000_000)
    for hour in range(3):
        outbox.append([f"tor_network relays={hour}.0 {hour}"] * 50, hour)
    outbox.close()
    data = tmp_path / "outbox.data"
    size = data.stat().st_size
    with open(data, "r+b") as handle:  # a crash in the middle of the last append
        handle.truncate(size - 7)
    with caplog.at_level(logging.ERROR):
        recovered = Outbox(tmp_path, max_bytes=10_000_000)
    assert recovered.records == 2
    assert [time for time, _ in periods(recovered)] == [0, 1]
    assert "damaged (truncated payload" in caplog.text and "kept 2 intact periods" in caplog.text
    damaged = list(tmp_path.glob("outbox.damaged-*"))
    assert len(damaged) == 1 and damaged[0].stat().st_size > HEADER.size
    assert recovered.append(["tor_network relays=9.0 9"], 9)  # and it carries on
    assert [time for time, _ in periods(recovered)] == [0, 1, 9]


def test_corrupted_bytes_are_caught_by_the_checksum(tmp_path, caplog):
    outbox = Outbox(tmp_path, max_bytes=10_000_000)
    outbox.append(["tor_network relays=1.0 1"], 1)
    outbox.append(["tor_network relays=2.0 2"], 2)
    outbox.close()
    data = tmp_path / "outbox.data"
    raw = bytearray(data.read_bytes())
    raw[-3] ^= 0xFF
    data.write_bytes(bytes(raw))
    recovered = Outbox(tmp_path, max_bytes=10_000_000)
    assert [time for time, _ in periods(recovered)] == [1]
    assert "checksum mismatch" in caplog.text


def test_full_outbox_refuses_loudly_and_keeps_what_it_has(tmp_path, caplog):
    outbox = Outbox(tmp_path, max_bytes=300)
    assert outbox.append(["x" * 50], 1)
    assert not outbox.append([os.urandom(400).hex()], 2)
    assert "outbox full" in caplog.text and "NOT stored" in caplog.text
    assert [time for time, _ in periods(outbox)] == [1]


def test_a_crash_between_emptying_and_resetting_the_offset_loses_nothing(tmp_path):
    outbox = Outbox(tmp_path, max_bytes=10_000_000)
    outbox.append(["tor_network relays=1 1"], 1)
    outbox.close()
    data, offset = tmp_path / "outbox.data", tmp_path / "outbox.offset"
    stale = data.stat().st_size
    data.write_bytes(b"")  # emptied after a full drain ...
    offset.write_text(f"{stale}\n")  # ... but the crash came before the offset was reset
    reopened = Outbox(tmp_path, max_bytes=10_000_000)
    assert offset.read_text().strip() == "0"
    for hour in range(2, 6):  # more than the stale offset's worth of new data
        reopened.append([f"tor_network relays={hour} {hour}"], hour)
    reopened.close()
    again = Outbox(tmp_path, max_bytes=10_000_000)
    assert [time for time, _ in periods(again)] == [2, 3, 4, 5]


def test_a_column_block_encodes_each_row_as_its_point_would():
    """Per-relay points are encoded column by column; each line must say what encode() says of the same point."""
    block = PointColumns("tor_relay", "fingerprint", ["AB" * 20, NASTY, "CD" * 20], {
        "in_consensus": np.ones(3),
        "flag_exit": np.array([True, False, True]),
        "weight": np.array([1500.0, 0.0, 2.5e16]),
        "weight_fraction": np.array([0.1234567890123, 0.0, 1 / 3]),
        "measured_median": np.array([np.nan, 17.5, 3.0]),
    }, 1582970400)
    lines = encode_all(block.points())
    assert len(lines) == 3
    for row, line in zip(block.points(), lines):
        expected = encode(Point(row.measurement, row.tags, row.fields, row.time))
        assert parsed_line(line) == parsed_line(expected)
    assert "measured_median" not in lines[0] and "measured_median=17.5" in lines[1]
    assert all("\n" not in line for line in lines)


@pytest.mark.parametrize("fields", [
    {"flag_exit": np.array([1.0, 0.0, 1.0, 1.0]), "fraction": np.array([0.5, 3.0, -2.25, 0.1 + 0.2]),
     "weight": np.array([1e15, -7.0, 0.0, 42.0]), "median": np.array([np.nan, np.nan, 1.5, 2.0]),
     "nothing": np.full(4, np.nan), "ratio": np.array([1 / 3, 1 / 3, 2 / 3, 1e-300])},
    {"weight": np.array([np.nan, 5.0, 2.5, np.nan]), "median": np.array([1.0, np.nan, 7.0, np.nan])},
    {"in_consensus": np.zeros(4)},
], ids=["flags and numbers", "no flag column", "flags only"])
def test_every_way_of_encoding_a_column_says_what_encode_says(fields):
    block = PointColumns("tor_relay", "fingerprint", [NASTY, "AB" * 20, "x\\y", "CD" * 20], fields, 1582970400)
    lines = encode_all(block.points())
    expected = [encode(Point(row.measurement, row.tags, row.fields, row.time)) for row in block.points()]
    assert [parsed_line(line) for line in lines] == [parsed_line(line) for line in expected if line.split(" ")[-2]]


def test_a_row_without_fields_gives_no_line():
    block = PointColumns("tor_relay", "fingerprint", ["AB" * 20], {"weight": np.array([np.nan])}, 1)
    assert encode_all(block.points()) == []


def parsed_line(line: str) -> tuple:
    """(measurement and tags, the fields as a dict, time): field order does not matter to a TSDB."""
    head, fields, time = line.rsplit(" ", 2)
    return head, dict(item.split("=") for item in fields.split(",")), time


# --- damage in the middle: resynchronise on the next intact record -------------------------------------------

class Writer:
    """Takes every write (stands in for the TSDB); remembers the periods it got."""

    url = "http://tsdb.invalid"

    def __init__(self):
        self.times = []

    def write(self, lines):
        self.times.append(int(lines[0].rsplit(" ", 1)[1]))

    def close(self):
        pass


def ten_records(directory):
    """A closed outbox of 10 periods (0..9), each ~2 kB; returns each record's (start, end)."""
    outbox = Outbox(directory, max_bytes=10_000_000)
    spans = []
    for hour in range(10):
        start = (directory / "outbox.data").stat().st_size
        outbox.append([f"tor_relay,fingerprint={hour:040d} weight={hour}.{n} {hour}" for n in range(100)], hour)
        spans.append((start, (directory / "outbox.data").stat().st_size))
    outbox.close()
    return spans


def damage(directory, edit):
    path = directory / "outbox.data"
    raw = bytearray(path.read_bytes())
    edit(raw)
    path.write_bytes(bytes(raw))


def delivered(directory):
    """Opens the outbox and drains it into a Writer: the periods it took, in order."""
    from agent.store.store import Store

    store = Store(Outbox(directory, max_bytes=10_000_000), Writer())
    try:
        store.drain()
        assert store.outbox.records == 0 and store.outbox.pending_bytes == 0
        return store.writer.times
    finally:
        store.close()


def set_aside(directory):
    return sorted(path.read_bytes() for path in directory.glob("outbox.damaged-*"))


@pytest.mark.parametrize("where", [0, 5, 9, HEADER.size + 3, -1], ids=[
    "magic", "length", "checksum", "payload", "last payload byte"])
def test_one_flipped_byte_in_the_middle_costs_only_its_record(tmp_path, caplog, where):
    """Before: every record after the flip was set aside (4 of 10 delivered); now 9 are, and the 1 is kept aside."""
    spans = ten_records(tmp_path)
    original = (tmp_path / "outbox.data").read_bytes()
    start, end = spans[4]
    where = where % (end - start)

    def flip(raw):
        raw[start + where] ^= 0x40

    damage(tmp_path, flip)
    with caplog.at_level(logging.ERROR):
        assert delivered(tmp_path) == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    kept = set_aside(tmp_path)
    assert len(kept) == 1 and len(kept[0]) == end - start
    assert kept[0][:where] + kept[0][where + 1:] == original[start:start + where] + original[start + where + 1:end]
    assert f"outbox record at byte {start} is damaged" in caplog.text and "kept 9 intact periods" in caplog.text


@pytest.mark.parametrize("case", ["zeroed block over two records", "garbage inserted", "bytes cut out",
                                  "two damaged records", "the first record", "fake magic in the garbage"])
def test_hostile_damage_loses_only_the_damaged_records(tmp_path, case):
    spans = ten_records(tmp_path)
    edits = {
        "zeroed block over two records": (lambda raw: raw.__setitem__(slice(spans[2][1] - 50, spans[3][0] + 50),
                                                                      bytes(100)), [0, 1, 4, 5, 6, 7, 8, 9]),
        "garbage inserted": (lambda raw: raw.__setitem__(slice(spans[6][0], spans[6][0]), os.urandom(777)),
                             list(range(10))),
        "bytes cut out": (lambda raw: raw.__delitem__(slice(spans[3][0] + 40, spans[3][0] + 90)),
                          [0, 1, 2, 4, 5, 6, 7, 8, 9]),
        "two damaged records": (lambda raw: [raw.__setitem__(spans[i][0] + 30, raw[spans[i][0] + 30] ^ 1)
                                             for i in (1, 7)], [0, 2, 3, 4, 5, 6, 8, 9]),
        "the first record": (lambda raw: raw.__setitem__(40, raw[40] ^ 1), list(range(1, 10))),
        "fake magic in the garbage": (lambda raw: raw.__setitem__(slice(spans[5][0], spans[5][0]),
                                                                  MAGIC + bytes(4) + b"\xff" * 16), list(range(10))),
    }
    edit, expected = edits[case]
    damage(tmp_path, edit)
    assert delivered(tmp_path) == expected
    assert set_aside(tmp_path)  # what was damaged is kept for a person, never silently dropped


def test_damage_that_appears_while_running_is_set_aside_once_and_skipped(tmp_path, caplog):
    """The file is damaged under an open outbox: the drain keeps the record aside, delivers the rest."""
    from agent.store.store import Store

    spans = ten_records(tmp_path)
    store = Store(Outbox(tmp_path, max_bytes=10_000_000), Writer())
    with open(tmp_path / "outbox.data", "r+b") as data:  # bit rot after the start
        data.seek(spans[6][0] + 100)
        byte = data.read(1)
        data.seek(spans[6][0] + 100)
        data.write(bytes([byte[0] ^ 0x10]))
    assert [record.time for record in store.outbox.pending()] == [0, 1, 2, 3, 4, 5, 7, 8, 9]  # outbox status
    store.drain()
    assert store.writer.times == [0, 1, 2, 3, 4, 5, 7, 8, 9]
    assert len(set_aside(tmp_path)) == 1 and store.outbox.records == 0
    store.close()


@pytest.mark.parametrize("offset", ["-5", "12abc", "\xff\xfe"])
def test_an_unreadable_offset_file_resends_everything(tmp_path, offset):
    ten_records(tmp_path)
    (tmp_path / "outbox.offset").write_bytes(offset.encode("latin-1"))
    assert delivered(tmp_path) == list(range(10))


def test_an_offset_in_the_middle_of_a_record_resumes_at_the_next(tmp_path):
    spans = ten_records(tmp_path)
    (tmp_path / "outbox.offset").write_text(f"{spans[3][0] + 20}\n")
    assert delivered(tmp_path) == [4, 5, 6, 7, 8, 9]


def test_a_disk_full_while_marking_delivered_names_the_file(tmp_path, monkeypatch):
    ten_records(tmp_path)
    outbox = Outbox(tmp_path, max_bytes=10_000_000)
    record = next(outbox.pending())

    def full(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StoreError, match=r"cannot write .*outbox.offset: No space left on device"):
        outbox.commit(record.end)
    outbox.close()


def test_a_rejected_period_that_cannot_be_kept_aside_stays_in_the_outbox(tmp_path):
    """Before: the OSError escaped the drain (a traceback); now the period waits, and is kept aside next time."""
    from agent.store.store import Store

    class Refusing(Writer):
        def write(self, lines):
            raise StoreError("HTTP 400: bad line", permanent=True)

    store = Store(Outbox(tmp_path, max_bytes=10_000_000), Refusing())
    store.outbox.append(["tor_network relays=1 1"], 1)
    blocked = tmp_path / "rejected-1-0.lp"
    blocked.mkdir()  # where the rejected lines would go cannot be written
    periods, _, error = store.drain()
    assert periods == 0 and "cannot keep rejected period 1 aside" in error and store.outbox.records == 1
    blocked.rmdir()
    assert store.drain() == (0, 0, None) and store.outbox.records == 0
    assert blocked.read_text() == "tor_network relays=1 1\n"
    store.close()


def test_a_flipped_bit_in_a_records_period_time_costs_only_that_record(tmp_path):
    """The period time is under the checksum: a record whose hour was damaged is set aside, not delivered as
    another hour's points (the ALB2 checksum covered the payload only, so this record was delivered)."""
    outbox = Outbox(tmp_path, max_bytes=10_000_000)
    for hour in (1, 2, 3):
        assert outbox.append([f"tor_network relays={hour}.0 {hour}"], hour * 3600)
    outbox.close()
    data = bytearray((tmp_path / "outbox.data").read_bytes())
    second = next(index for index in range(1, len(data)) if data[index:index + 4] == MAGIC)
    data[second + HEADER.size - 1] ^= 0x01  # the period time's last byte: 7200 becomes 7201
    (tmp_path / "outbox.data").write_bytes(bytes(data))
    reopened = Outbox(tmp_path, max_bytes=10_000_000)
    assert [time for time, _ in periods(reopened)] == [3600, 10800]
    assert list(tmp_path.glob("outbox.damaged-*"))


def test_records_of_the_alb2_format_are_still_read(tmp_path):
    from agent.store.outbox import compress

    payload = compress(b"tor_network relays=1.0 1")
    (tmp_path / "outbox.data").write_bytes(HEADER.pack(b"ALB2", len(payload), zlib.crc32(payload), 1) + payload)
    assert periods(Outbox(tmp_path, max_bytes=10_000_000)) == [(1, ["tor_network relays=1.0 1"])]
