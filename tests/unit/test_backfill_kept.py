"""How backfill holds archived documents until their period is replayed: files by path, archive members zstd'd."""

import io
import tarfile
from datetime import datetime

from agent.config.loader import load_config
from agent.loop.backfill import BackfillResult, KeptDocument, Period, archived_snapshot
from agent.model.snapshot import DocKind
from agent.parse.archive import ReadReport, read_paths
from tests.conftest import read_data


def test_a_file_is_read_again_and_an_archive_member_kept_packed(tmp_path):
    consensus = read_data("2020-02-29-10-00-00-consensus.xz")
    (tmp_path / "2020-02-29-10-00-00-consensus").write_bytes(consensus)
    with tarfile.open(tmp_path / "consensuses.tar", "w") as archive:
        info = tarfile.TarInfo("consensuses/2020-02-29-10-00-00-consensus")
        info.size = len(consensus)
        archive.addfile(info, io.BytesIO(consensus))
    report = ReadReport()
    kept = {document.name: KeptDocument.of(document) for document in read_paths([tmp_path], report)}
    from_file = kept[str(tmp_path / "2020-02-29-10-00-00-consensus")]
    from_member = kept[f"{tmp_path / 'consensuses.tar'}!consensuses/2020-02-29-10-00-00-consensus"]
    assert from_file.packed is None and from_file.path == tmp_path / "2020-02-29-10-00-00-consensus"
    assert from_member.path is None and 0 < len(from_member.packed) < len(consensus) / 2
    for document in (from_file, from_member):
        again = document.read(report)
        assert again.raw == consensus and again.kind is DocKind.CONSENSUS and again.name == document.name
    assert report.unreadable == []


def test_a_file_gone_before_its_period_is_replayed_is_reported_and_the_period_skipped(tmp_path):
    path = tmp_path / "2020-02-29-10-00-00-consensus"
    path.write_bytes(read_data("2020-02-29-10-00-00-consensus.xz"))
    report = ReadReport()
    (document,) = read_paths([path], report)
    kept = KeptDocument.of(document)
    path.unlink()
    result = BackfillResult()
    period = Period(datetime(2020, 2, 29, 10), [kept])
    assert archived_snapshot(period, load_config(None, environ={}), {}, [], result) is None
    assert result.read.unreadable == [f"{path}: unreadable when its period was replayed (No such file or directory)"]
