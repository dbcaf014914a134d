"""The health-score replay (python -m agent.evaluation.health_replay) against a real VictoriaMetrics on 127.0.0.1:
a month of the real depictor history (LizardNSA inside) goes in through /api/v2/write, comes back through
PromQL's range API equal to what was computed, and the PNG is drawn from that answer."""

import os
import struct
import zlib
from pathlib import Path

import pytest

from agent.evaluation.health_replay import HOUR, INCIDENTS, THRESHOLD, main, query_range, read_depictor, replay
from agent.metrics.health import WEIGHTS

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEPICTOR = (Path(__file__).resolve().parents[3] / "shared" / "timeseries" / "depictor-historical"
            / "vote_stats_hourly_2014-2016.csv")


@pytest.fixture
def december_2014(tmp_path):
    """The CSV's rows of 2014-12 (the LizardNSA flood on the 26th), header included."""
    if not DEPICTOR.is_file():
        pytest.skip("needs ../shared/timeseries/depictor-historical")
    lines = DEPICTOR.read_text().splitlines(keepends=True)
    path = tmp_path / "december.csv"
    path.write_text(lines[0] + "".join(line for line in lines[1:] if line.startswith("2014-12")))
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert zlib.crc32(data[12:29]) == int.from_bytes(data[29:33], "big")
    return width, height


def test_replay_through_victoria_metrics_reads_back_what_it_computed(victoria, december_2014, tmp_path, capsys):
    png = tmp_path / "img" / "score.png"
    assert main(["--depictor", str(december_2014), "--out", str(png), "--store", victoria.url]) == 0
    printed = capsys.readouterr().out
    assert "| LizardNSA | 12 |" in printed and png.is_file()
    assert png_size(png)[0] == 1200

    scored = replay(read_depictor(december_2014))
    computed = {item.time: item.score for item in scored if item.score is not None and item.time % HOUR == 0}
    start, end = min(computed), max(computed)
    victoria.flush()
    queried = query_range(victoria.url, "last_over_time(tor_health_score_value[1h])", start, end)[""]
    assert queried.keys() == computed.keys()  # collection gaps stay gaps: no value carried over them
    assert all(queried[t] == pytest.approx(computed[t], rel=1e-9, abs=1e-9) for t in computed)
    lizard = INCIDENTS[1]
    assert min(v for t, v in queried.items() if lizard.covers(t)) < THRESHOLD

    components = query_range(victoria.url, "last_over_time(tor_health_component_weight[1h])", start, end)
    assert components.keys() == WEIGHTS.keys()
    assert {name for name, values in components.items() if max(values.values()) == 0} == {
        "freshness", "capacity", "diversity"}  # left out of the depictor replay, and shown as such
    flood = lizard.start
    contributions = query_range(victoria.url, "last_over_time(tor_health_component_contribution[1h])", flood, flood)
    assert sum(values[flood] for values in contributions.values()) == pytest.approx(queried[flood], rel=1e-9)


def test_replay_starts_and_stops_its_own_victoria_metrics(december_2014, tmp_path, capsys):
    png = tmp_path / "own.png"
    assert main(["--depictor", str(december_2014), "--out", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "739 periods (1 collection gaps)" in printed and "| other hours |" in printed
    assert png_size(png)[1] > 300
    assert not children_running("health-replay-"), "the replay's VictoriaMetrics outlived it"


def children_running(marker: str) -> list[int]:
    """PIDs of this process's children whose command line mentions ``marker``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text()
            if proc.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid() \
                    and marker in (proc / "cmdline").read_text():
                found.append(int(proc.name))
        except OSError:
            continue
    return found
