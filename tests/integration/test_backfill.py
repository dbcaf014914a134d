"""Backfill from CollecTor-style files and tarballs; the same points as the live path."""

import io
import lzma
import tarfile
from pathlib import Path

import pytest
import yaml

from agent.config.loader import load_config
from agent.loop.collect import collect
from agent.metrics.geoip import GeoIP
from agent.metrics.period import snapshot_points
from tests.conftest import DATA, read_data, run_backfill
from tests.integration.commands import agent
from tests.integration.hostile_dirport import HostileDirPort

pytestmark = [pytest.mark.integration]
GEOIP = GeoIP.load(DATA / "geoip-excerpt")


def tar_xz(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:xz") as archive:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))


@pytest.fixture
def collector_tree(tmp_path):
    """A directory laid out like CollecTor's archive/ and recent/ trees, with one bad member."""
    root = tmp_path / "collector"
    tar_xz(root / "archive/relay-descriptors/consensuses/consensuses-2020-02.tar.xz", {
        "consensuses-2020-02/29/2020-02-29-10-00-00-consensus": read_data("2020-02-29-10-00-00-consensus.xz"),
        "consensuses-2020-02/29/2020-02-29-11-00-00-consensus": read_data("2020-02-29-11-00-00-consensus.xz"),
        "consensuses-2020-02/29/2020-02-29-12-00-00-consensus": b"@type network-status-consensus-3 1.0\n"
                                                                 b"network-status-version 3\n"
                                                                 b"valid-after 2020-02-29 12:00:00\ngarbage\n",
    })
    tar_xz(root / "archive/relay-descriptors/votes/votes-2016-09.tar.xz", {
        "votes-2016-09/20/2016-09-20-13-00-00-vote-49015F78": read_data("2016-09-20-13-00-00-vote-maatuska.xz"),
    })
    recent = root / "recent/relay-descriptors"
    (recent / "consensuses").mkdir(parents=True)
    (recent / "consensuses/2016-09-20-13-00-00-consensus").write_bytes(read_data("2016-09-20-13-00-00-consensus.xz"))
    (recent / "server-descriptors").mkdir(parents=True)
    (recent / "server-descriptors/2020-02-29-10-05-00-server-descriptors").write_bytes(
        read_data("2020-02-29-10-05-00-server-descriptors.xz"))
    damaged = root / "archive/relay-descriptors/certs/certs.tar.xz"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(lzma.compress(b"x" * 5000)[:100])
    return root


def config_for(tmp_path, store_url=None):
    """Writing to ``store_url``, or (None) to the outbox only: these tests read what waits there."""
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"),
                                    "store": {"url": store_url, "embedded": False}}))
    return load_config(path, environ={})


def test_backfill_of_a_collector_tree_is_resumable_and_names_bad_members(collector_tree, tmp_path, victoria):
    config = config_for(tmp_path, victoria.url)
    first = run_backfill(config, [collector_tree])
    assert first.periods_written == 3  # 2016-09-20 13:00, 2020-02-29 10:00 and 11:00
    assert first.documents["consensus"] == 4 and first.documents["vote"] == 1
    problems = "\n".join(first.read.unreadable)
    assert "consensuses-2020-02.tar.xz!consensuses-2020-02/29/2020-02-29-12-00-00-consensus" in problems
    assert "certs.tar.xz: not a readable tar archive" in problems
    assert first.periods_unverified == 3 and first.periods_waiting == 0

    second = run_backfill(config, [collector_tree])
    assert (second.periods_written, second.periods_already_done, second.lines_written) == (0, 3, 0)

    relays = victoria.settled_export("tor_network_relays", 3)
    assert len(relays) == 1 and len(relays[0]["timestamps"]) == 3
    joined = victoria.export("tor_network_joined_relays")
    assert [len(series["timestamps"]) for series in joined] == [1]  # churn only where the hour before is in the input
    vote = victoria.export('tor_authority_vote_relays{authority="maatuska"}')
    assert vote[0]["values"] == [7903]

    forced = run_backfill(config, [collector_tree], force=True)
    assert forced.periods_written == 3
    victoria.flush()
    assert len(victoria.export("tor_network_relays")[0]["timestamps"]) == 3  # rewritten, not duplicated


def test_since_and_until_choose_periods(collector_tree, tmp_path):
    from datetime import datetime

    result = run_backfill(config_for(tmp_path), [collector_tree], since=datetime(2020, 2, 29, 11),
                          until=datetime(2020, 2, 29, 11))
    assert result.periods_written == 1 and result.periods_waiting == 1


def test_backfill_writes_what_the_live_path_writes(tmp_path):
    """The same real documents, fetched from a DirPort and read from files, give the same points."""
    with HostileDirPort("healthy") as dirport:
        live_config = tmp_path / "live.yaml"
        live_config.write_text(yaml.safe_dump({
            "authorities": {"discover": False, "bootstrap": [{
                "nickname": "healthy", "v3ident": "23D15D965BC35114467363C165C4F724B64B4F66",  # longclaw signed it
                "address": "127.0.0.1", "dir_port": dirport.port}]},
            "fetch": {"documents": ["consensus", "key-certificates", "server-descriptors"]}}))
        live = snapshot_points(collect(load_config(live_config, environ={})), None, GEOIP)
    files = tmp_path / "files"
    files.mkdir()
    (files / "consensus").write_bytes(read_data("2022-11-19-10-00-00-consensus.xz"))
    (files / "certs").write_bytes(read_data("2022-11-certs"))
    (files / "descriptors").write_bytes(read_data("server-descriptors-2"))
    config = config_for(tmp_path)
    result = run_backfill(config, [files])
    assert result.periods_written == 1 and result.periods_unverified == 0  # verified with the certificates
    outbox_lines = set()
    from agent.store.outbox import Outbox

    outbox = Outbox(config.state_dir / "outbox", 1 << 30)
    for record in outbox.pending():
        outbox_lines.update(record.lines)
    outbox.close()
    from agent.store.lineprotocol import encode_all

    # Per-authority points differ by construction (live: the configured authority
    # and its fetches; backfill: the consensus's nine dir-sources); the rest must match.
    shared = ("tor_network", "tor_relay", "tor_operator")
    live_lines = {line for line in encode_all(live) if line.split(",")[0].split(" ")[0].startswith(shared)}
    backfill_lines = {line for line in outbox_lines if line.split(",")[0].split(" ")[0].startswith(shared)}
    assert len(live_lines) > 6000
    assert live_lines == backfill_lines


def test_backfill_command_shows_progress_and_counts(collector_tree, tmp_path):
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state")}))
    result = agent("backfill", collector_tree, "--config", config, timeout=300)
    print(result.stderr[-600:], result.stdout, sep="\n")
    assert result.returncode == 1  # the bad member and the damaged archive are reported
    assert "backfill: 100%" in result.stderr and "period/s" in result.stderr
    assert "periods: 4 found, 3 written" in result.stdout
    assert "problem: " in result.stdout and "2020-02-29-12-00-00-consensus" in result.stdout


def test_worker_processes_write_what_one_process_writes(collector_tree, tmp_path):
    """Runs of one period each, computed in two spawned worker processes, give the same periods, lines
    (churn included: each run reads the period before it again) and counts as one process."""
    from agent.store.outbox import Outbox

    written = {}
    for name, options in (("one", {"jobs": 1}), ("pool", {"jobs": 2, "run_periods": 1})):
        (tmp_path / name).mkdir()
        config = config_for(tmp_path / name)
        result = run_backfill(config, [collector_tree], **options)
        outbox = Outbox(config.state_dir / "outbox", 1 << 30)
        lines = {record.time: sorted(record.lines) for record in outbox.pending()}
        outbox.close()
        written[name] = (result.periods_written, result.periods_unverified, sorted(result.periods_rejected),
                         sorted(result.read.unreadable), lines)
    assert written["pool"] == written["one"]
    periods, _, _, problems, lines = written["one"]
    assert periods == 3 and len(lines) == 3 and any("2020-02-29-12-00-00" in problem for problem in problems)
    joined = [line for line in lines[1582974000] if line.startswith("tor_network ")]  # 2020-02-29 11:00
    assert "joined_relays=" in joined[0]  # churn against 10:00, read again by the run of 11:00
