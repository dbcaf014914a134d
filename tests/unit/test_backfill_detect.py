"""``backfill --detect``: archived periods learned by anomaly detection, in time order, into the state ``run`` and
``once`` resume from, without a notification.

The periods are the real full consensuses of ../shared/tordata (networks of
different years), each restamped to the next hour as benchmarks/memory.py
does, so every hour differs from the one before.
"""

import random
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from agent.config.loader import load_config
from agent.detect.engine import STATE_FILE, Detector, DetectorFile
from agent.loop.backfill import _FactsKept, _with_points, newest_snapshot
from agent.loop.once import once_from
from agent.metrics.geoip import GeoIP
from agent.model.points import point
from agent.model.time import unix
from agent.pipeline.judge import WARMING_UP
from agent.pipeline.state import State
from agent.store.outbox import Outbox, pack
from agent.store.store import EncodedPoints, Store
from benchmarks.memory import restamp
from tests.conftest import DATA, full_consensuses, run_backfill

GEOIP = GeoIP.load(DATA / "geoip-excerpt")
START = datetime(2024, 1, 1)


def hours(count: int, offset: int = 0) -> list[datetime]:
    return [START + timedelta(hours=offset + hour) for hour in range(count)]


def write_hours(directory: Path, moments: list[datetime], name=lambda moment: f"{moment:%Y-%m-%d-%H}-consensus"):
    """One real consensus per hour (the real ones in turn), restamped to that hour."""
    consensuses = full_consensuses()
    if len(consensuses) < 2:
        pytest.skip("needs the real consensuses of ../shared/tordata")
    directory.mkdir(parents=True, exist_ok=True)
    for moment in moments:
        index = round((moment - START).total_seconds() / 3600)
        (directory / name(moment)).write_bytes(restamp(consensuses[index % len(consensuses)].read_bytes(), moment))
    return directory


def config_for(directory: Path, **detect):
    """Detection warms up in two periods, and every alert would be mailed: backfill must queue none."""
    path = directory / "agent.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(directory / "state"), "detect": {"warmup_periods": 2, **detect},
        "alerts": {"routes": [{"name": "everyone", "email": ["ops@example.org"]}]},
        "email": {"host": "127.0.0.1", "port": 9, "security": "none"}}))
    return load_config(path, environ={})


def saved_detector(config) -> Detector:
    """The detector state exactly as ``once`` and ``run`` load it (agent.pipeline.record.Detectors)."""
    return DetectorFile(config.state_dir, config.detect.settings).load()


def outbox_lines(config) -> dict[int, list[str]]:
    outbox = Outbox(Path(config.state_dir) / "outbox", 1 << 30)
    try:
        return {record.time: sorted(record.lines) for record in outbox.pending()}
    finally:
        outbox.close()


def queued(config) -> tuple[int, int]:
    """(alerts, deliveries) in the state: what a notification would leave."""
    state = State(config.state_dir)
    try:
        return tuple(state.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                     for table in ("alerts", "deliveries"))
    finally:
        state.close()


def test_workers_feed_the_detector_in_time_order_from_shuffled_files_and_nothing_is_notified(tmp_path, monkeypatch):
    moments = hours(9)
    names = [f"file-{index}" for index in random.Random(7).sample(range(100), len(moments))]  # not in time order
    files = write_hours(tmp_path / "in", moments, name=lambda moment: names[moments.index(moment)])
    assert sorted(path.name for path in files.iterdir()) != names
    config = config_for(tmp_path)
    seen = []
    update = Detector.update

    def watched(detector, facts):
        seen.append(facts.time)
        return update(detector, facts)

    monkeypatch.setattr(Detector, "update", watched)
    result = run_backfill(config, [files], jobs=2, run_periods=2, detect=True)  # five runs, two processes
    expected = [unix(moment) for moment in moments]
    assert seen == expected  # each period once, in valid-after order
    assert (result.periods_written, result.periods_learned, result.periods_learned_before) == (9, 9, 0)
    assert result.learned_until == expected[-1] and result.anomalies > 0
    detector = saved_detector(config)
    assert (detector.last_time, detector.periods) == (expected[-1], 9)
    lines = outbox_lines(config)
    assert sorted(lines) == expected and sum(map(len, lines.values())) == result.points
    assert all(any(line.startswith("tor_anomaly,") for line in period) for period in lines.values())
    assert queued(config) == (0, 0)  # findings, some anomalous, and a route for all: nothing alerted or queued


def test_one_process_and_worker_processes_learn_and_write_the_same(tmp_path):
    files = write_hours(tmp_path / "in", hours(7))
    written = {}
    for name, options in (("one", {"jobs": 1}), ("pool", {"jobs": 2, "run_periods": 3})):
        (tmp_path / name).mkdir()
        config = config_for(tmp_path / name)
        result = run_backfill(config, [files], detect=True, **options)
        detector = saved_detector(config)
        written[name] = (result.periods_learned, result.anomalies, detector.last_time, detector.periods,
                         len(detector.relays), outbox_lines(config))
    assert written["pool"] == written["one"]
    assert written["one"][3] == 7


def test_once_resumes_from_the_state_backfill_left(tmp_path):
    files = write_hours(tmp_path / "in", hours(4))
    config = config_for(tmp_path)
    run_backfill(config, [files], detect=True)
    before = saved_detector(config)
    assert (before.periods, before.last_time) == (4, unix(hours(4)[-1]))
    (next_hour,) = hours(1, offset=4)
    snapshot, _ = newest_snapshot([write_hours(tmp_path / "next", [next_hour])], config)
    state, store = State(config.state_dir), Store.from_config(config)
    try:
        cycle = once_from(snapshot, config, state, store, GEOIP)  # the live path: memory_of, judge, record
    finally:
        store.close()
        state.close()
    after = saved_detector(config)
    assert (after.periods, after.last_time) == (5, unix(next_hour))
    assert WARMING_UP not in {finding.check for finding in cycle.findings}  # warmed up by the backfill
    assert queued(config) == (0, 0)


def test_learning_goes_forward_and_relearns_what_was_written_without_it(tmp_path):
    files = write_hours(tmp_path / "in", hours(6))
    config = config_for(tmp_path)
    plain = run_backfill(config, [files])
    assert (plain.periods_written, plain.periods_learned) == (6, 0)
    assert not (Path(config.state_dir) / STATE_FILE).exists()

    first = run_backfill(config, [files], detect=True, until=hours(3)[-1])  # written before, not learned: again
    assert (first.periods_written, first.periods_learned, first.periods_already_done) == (3, 3, 0)
    rest = run_backfill(config, [files], detect=True)
    assert (rest.periods_written, rest.periods_learned, rest.periods_already_done) == (3, 3, 3)
    again = run_backfill(config, [files], detect=True)
    assert (again.periods_written, again.periods_learned, again.periods_already_done) == (0, 0, 6)
    assert (saved_detector(config).periods, saved_detector(config).last_time) == (6, unix(hours(6)[-1]))

    write_hours(files, hours(1, offset=-1))  # an hour before everything learned: written, never learned
    older = run_backfill(config, [files], detect=True)
    assert (older.periods_written, older.periods_learned, older.periods_learned_before) == (1, 0, 1)
    assert saved_detector(config).periods == 6 and queued(config) == (0, 0)


def test_the_command_learns_says_so_and_refuses_when_detection_is_off(tmp_path, capsys):
    from agent.cli.main import main

    files = write_hours(tmp_path / "in", hours(3))
    config = config_for(tmp_path)
    assert main(["backfill", "--detect", "--no-progress", "--jobs", "1", "--config",
                 str(tmp_path / "agent.yaml"), str(files)]) == 0
    out = capsys.readouterr().out
    assert "anomaly detection: 3 periods learned, 0 skipped" in out
    assert "it has learned up to 2024-01-01T02:00:00Z" in out
    assert saved_detector(config).periods == 3

    (tmp_path / "off").mkdir()
    config_for(tmp_path / "off", enabled=False)
    assert main(["backfill", "--detect", "--config", str(tmp_path / "off" / "agent.yaml"), str(files)]) == 2
    assert "detect.enabled: false" in capsys.readouterr().err
    assert not (tmp_path / "off" / "state" / STATE_FILE).exists()

    with pytest.raises(SystemExit):
        main(["backfill", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--detect" in help_text and "detectors.pickle" in help_text and "never notified" in help_text


def test_detection_points_join_the_period_in_one_outbox_record(tmp_path):
    """The outbox unpacks one zstd frame per record: the repacked payload must be one, with its size."""
    more = [point("tor_anomaly", {"detector": "baseline", "series": "relays"}, {"score": 0.5}, 1704067200)]
    outbox = Outbox(tmp_path, 1 << 20)
    try:
        for period, lines in ((1, ["tor_network relays=1 1"]), (2, [])):
            joined = _with_points(EncodedPoints(pack(lines), len(lines)), more)
            assert joined.line_count == len(lines) + 1
            outbox.append_packed(joined.payload, joined.line_count, period)
        assert [record.lines for record in outbox.pending()] == [
            ["tor_network relays=1 1", "tor_anomaly,detector=baseline,series=relays score=0.5 1704067200"],
            ["tor_anomaly,detector=baseline,series=relays score=0.5 1704067200"]]
    finally:
        outbox.close()
    assert _with_points([], more) == more
    kept = _FactsKept()
    assert kept.packed() is None
    scored = kept.update("facts")
    assert scored.skipped and not scored.findings and not scored.points and kept.packed()
