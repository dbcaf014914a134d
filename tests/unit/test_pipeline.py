"""One way through: a period gives the same points and findings through ``once``, ``run`` and ``backfill``.

Two real consecutive hours (2020-02-29 10:00 and 11:00, with that hour's
server descriptors) go through each path into its own outbox; the 11:00
period (churn measured against 10:00) must carry the same lines and the
same check findings everywhere. Detection is off: backfill does not detect.
"""

from datetime import datetime

import pytest

import agent.loop.backfill as backfill_module
import agent.loop.runner as runner_module
from agent.config.loader import load_config
from agent.loop.backfill import backfill, newest_snapshot
from agent.loop.once import once_from
from agent.loop.runner import PROCESSED, PeriodRunner
from agent.metrics.geoip import GeoIP
from agent.model.time import unix
from agent.pipeline.judge import Memory, judge
from agent.pipeline.state import State
from agent.store.store import Store
from tests.conftest import DATA, read_data

HOURS = ("2020-02-29-10-00-00-consensus", "2020-02-29-11-00-00-consensus")
ELEVEN = unix(datetime(2020, 2, 29, 11))
GEOIP = GeoIP.load(DATA / "geoip-excerpt")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """One folder per hour, each with the hours up to it and the descriptors (as a user would point at them)."""
    root = tmp_path_factory.mktemp("archive")
    descriptors = read_data("2020-02-29-10-05-00-server-descriptors.xz")
    folders = []
    for count in (1, 2):
        folder = root / f"upto-{count}"
        folder.mkdir()
        for name in HOURS[:count]:
            (folder / name).write_bytes(read_data(f"{name}.xz"))
        (folder / "2020-02-29-10-05-00-server-descriptors").write_bytes(descriptors)
        folders.append(folder)
    return folders


def _config(tmp_path, name):
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"state_dir: {tmp_path / name}\nvantage: test\ndetect: {{enabled: false}}\n")
    return load_config(path, environ={})


def _snapshots(archive, config):
    return [newest_snapshot([folder], config)[0] for folder in archive]


def _lines_at(store: Store, time: int) -> list[str]:
    """The outbox's lines of one period, the agent's self-metrics left out (only the daemon writes them)."""
    lines = [line for record in store.outbox.pending() if record.time == time for line in record.lines]
    return sorted(line for line in lines if not line.startswith("allium_agent"))


def _summary(findings) -> list[tuple]:
    return sorted((f.check, str(f.severity), tuple(sorted(f.subjects.items())), f.description) for f in findings)


def test_once_run_and_backfill_give_one_period_the_same_points_and_findings(tmp_path, archive, monkeypatch):
    # once
    config = _config(tmp_path, "once")
    state, store = State(config.state_dir), Store.from_config(config)
    once_findings = [once_from(snapshot, config, state, store, GEOIP).findings
                     for snapshot in _snapshots(archive, config)][-1]
    once_lines = _lines_at(store, ELEVEN)

    # run: the daemon's runner, its fetch replaced by the archived periods, its alerting watched
    config = _config(tmp_path, "run")
    state, store = State(config.state_dir), Store.from_config(config)
    snapshots = iter(_snapshots(archive, config))
    monkeypatch.setattr(runner_module, "collect", lambda *args, **kwargs: next(snapshots))
    runner = PeriodRunner(config, state, store, GEOIP)
    alerted = []
    monkeypatch.setattr(runner.alerting, "on_period", lambda findings, *rest: alerted.append(findings) or [])
    assert [runner.cycle().status for _ in HOURS] == [PROCESSED, PROCESSED]
    run_lines = _lines_at(store, ELEVEN)
    assert any(line.startswith("allium_agent") for record in store.outbox.pending() for line in record.lines)

    # backfill, in one process, its record step watched
    config = _config(tmp_path, "backfill")
    state, store = State(config.state_dir), Store.from_config(config)
    recorded = []
    real_record = backfill_module.record
    monkeypatch.setattr(backfill_module, "record",
                        lambda result, *args, **kwargs: recorded.append(result) or real_record(result, *args, **kwargs))
    result = backfill([archive[1]], config, state, store, GEOIP, progress=False)
    assert result.periods_written == 2
    backfill_lines = _lines_at(store, ELEVEN)

    relays = sum(1 for line in once_lines if line.startswith("tor_relay,"))
    assert relays > 6_000 and len(once_lines) > relays + 100  # the whole period, every relay's line among it
    assert any(line.startswith("tor_network ") and "joined_relays=" in line for line in once_lines)  # churn
    assert once_lines == run_lines == backfill_lines
    eleven = next(judged for judged in recorded if judged.time == ELEVEN)
    assert _summary(once_findings) == _summary(alerted[-1]) == _summary(eleven.findings)


def test_judge_is_pure_the_same_snapshot_and_memory_give_the_same_result(archive, tmp_path):
    config = _config(tmp_path, "pure")
    ten, eleven = _snapshots(archive, config)
    before = judge(ten, Memory(), config, GEOIP)
    first = judge(eleven, Memory(before.relays, before.bandwidth_authorities), config, GEOIP)
    again = judge(eleven, Memory(before.relays, before.bandwidth_authorities), config, GEOIP)
    assert first.time == again.time == ELEVEN
    assert [(p.measurement, p.tags, p.fields) for p in first.points] == \
        [(p.measurement, p.tags, p.fields) for p in again.points]
    assert _summary(first.findings) == _summary(again.findings)
    assert not (tmp_path / "pure").exists()  # nothing written: judge has no effects
