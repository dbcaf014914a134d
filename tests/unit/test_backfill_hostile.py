"""Backfill against hostile input: archives that expand past the cap, files that are no files, dates that are
no dates, and consensuses or votes that claim a period beside the genuine one or vouch for themselves.

Sizes are bounded by counts (tracemalloc's peak), hangs by a thread join or a child's timeout; nothing is timed.
"""

import base64
import bz2
import gzip
import hashlib
import io
import lzma
import os
import subprocess
import sys
import tarfile
import threading
import tracemalloc
from datetime import datetime

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.config.loader import load_config
from agent.loop.archived import KeptDocument, Period, archived_snapshot
from agent.loop.backfill import BackfillResult
from agent.model.snapshot import DocKind
from agent.parse.archive import ReadReport, read_paths
from tests.conftest import read_data, run_backfill

MIB = 1 << 20
#: The fastest level of each (the zeros of a bomb compress well at any).
COMPRESSIONS = {"gz": lambda raw: gzip.compress(raw, 1), "bz2": lambda raw: bz2.compress(raw, 1),
                "xz": lambda raw: lzma.compress(raw, preset=0)}
_LEVELS = {"": {}, "gz": {"compresslevel": 1}, "bz2": {"compresslevel": 1}, "xz": {"preset": 0}}
GENUINE_2022 = "2022-11-19-10-00-00-consensus.xz"


# -- building hostile input ------------------------------------------------------------------------------------

def _bomb(size: int) -> bytes:
    """A document that looks like a consensus and is ``size`` bytes, nearly all zeros (compresses ~1000:1)."""
    head = b"network-status-version 3\nvote-status consensus\nvalid-after 2020-02-29 12:00:00\n"
    return head + bytes(size - len(head))


def _tar(path, members: dict[str, bytes], compression: str = "") -> None:
    with tarfile.open(path, f"w:{compression}", **_LEVELS[compression]) as archive:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            archive.addfile(info, io.BytesIO(raw))


class FakeAuthority:
    """An authority nobody configured: its own identity and signing keys, a key certificate that passes every
    check of its own, and Tor's signatures (PKCS#1 v1.5 padding, no DigestInfo) made with them."""

    def __init__(self):
        self.identity_key = rsa.generate_private_key(65537, 1024)
        self.signing_key = rsa.generate_private_key(65537, 1024)
        self.identity = self._digest(self.identity_key)

    @staticmethod
    def _der(key) -> bytes:
        return key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)

    def _digest(self, key) -> str:
        return hashlib.sha1(self._der(key)).hexdigest().upper()

    @staticmethod
    def _sign(key, digest: bytes, kind: str = "SIGNATURE") -> bytes:
        numbers, width = key.private_numbers(), key.key_size // 8
        padded = b"\0\1" + b"\xff" * (width - 3 - len(digest)) + b"\0" + digest
        signature = pow(int.from_bytes(padded, "big"), numbers.d, numbers.public_numbers.n).to_bytes(width, "big")
        body = base64.b64encode(signature).decode()
        lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
        return f"-----BEGIN {kind}-----\n{lines}\n-----END {kind}-----\n".encode()

    def certificate(self) -> bytes:
        pem = [key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
               for key in (self.identity_key, self.signing_key)]
        text = (f"dir-key-certificate-version 3\nfingerprint {self.identity}\n"
                "dir-key-published 2022-01-01 00:00:00\ndir-key-expires 2030-01-01 00:00:00\n").encode()
        text += b"dir-identity-key\n" + pem[0] + b"dir-signing-key\n" + pem[1]
        text += b"dir-key-crosscert\n" + self._sign(self.signing_key, hashlib.sha1(self._der(self.identity_key))
                                                    .digest(), "ID SIGNATURE")
        text += b"dir-key-certification\n"
        return text + self._sign(self.identity_key, hashlib.sha1(text).digest())

    def signed(self, document: bytes) -> bytes:
        """``document`` with its signatures replaced by this authority's one (sha1, as ns consensuses and votes)."""
        body = document[:document.index(b"\ndirectory-signature ") + 1] + b"directory-signature "
        line = f"{self.identity} {self._digest(self.signing_key)}\n".encode()
        signed = body[body.index(b"network-status-version"):]  # not a CollecTor annotation before it
        return body + line + self._sign(self.signing_key, hashlib.sha1(signed).digest())

    def consensus(self, genuine: bytes, change: tuple[bytes, bytes] | None = None) -> bytes:
        """The genuine consensus listing only this authority as its dir-source, signed by it alone."""
        first, entries = genuine.index(b"\ndir-source ") + 1, genuine.index(b"\nr ") + 1
        listed = (f"dir-source forger {self.identity} 127.0.0.1 127.0.0.1 80 443\ncontact nobody\n"
                  f"vote-digest {'0' * 40}\n").encode()
        document = genuine[:first] + listed + genuine[entries:]
        return self.signed(document.replace(*change, 1) if change else document)

    def vote(self, genuine: bytes, author: str) -> bytes:
        """A genuine vote rewritten as this authority's: its dir-source, its key certificate, its signature."""
        start = genuine.index(b"dir-key-certificate-version")
        end = genuine.index(b"-----END SIGNATURE-----\n", genuine.index(b"\ndir-key-certification\n")) + 24
        document = genuine[:start].replace(author.encode(), self.identity.encode()) + self.certificate() \
            + genuine[end:]
        return self.signed(document)


@pytest.fixture(scope="module")
def forger():
    return FakeAuthority()


def _config(tmp_path, **settings):
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "detect": {"enabled": False}, **settings}))
    return load_config(path, environ={})


def _backfill(tmp_path, paths, config=None, **options) -> BackfillResult:
    return run_backfill(config or _config(tmp_path), paths, **options)


def _write(folder, name: str, raw: bytes):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(raw)
    return folder / name


# -- sizes: a cap on what one member or file may expand to -----------------------------------------------------

@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_a_tar_member_that_expands_past_the_cap_is_named_and_skipped_the_rest_read(tmp_path, compression):
    archive = tmp_path / f"consensuses.tar.{compression}"
    genuine = read_data("2020-02-29-10-00-00-consensus.xz")
    _tar(archive, {"bomb-consensus": _bomb(64 * MIB), "2020-02-29-10-00-00-consensus": genuine}, compression)
    assert archive.stat().st_size < 3 * MIB  # 64 MiB of member in a small archive
    report = ReadReport()
    tracemalloc.start()
    try:
        documents = list(read_paths([archive], report, max_bytes=4 * MIB))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [d.name for d in documents] == [f"{archive}!2020-02-29-10-00-00-consensus"]
    assert documents[0].raw == genuine
    assert report.unreadable == [f"{archive}!bomb-consensus: larger than the 4 MiB one document may have "
                                 f"({64 * MIB:,} bytes); skipped (raise the cap with backfill --max-document-mib)"]
    assert peak < 16 * MIB  # the code as it was held the whole 64 MiB member


def test_a_compressed_archive_whose_oversized_members_pass_the_skip_budget_is_not_read_further(tmp_path):
    """Passing over a member decompresses it: a few MB of archive could declare terabytes of them."""
    archive = tmp_path / "certs.tar.gz"
    certificates = read_data("2022-11-certs")
    _tar(archive, {"first": certificates, "bomb-1": _bomb(20 * MIB), "second": certificates,
                   "bomb-2": _bomb(20 * MIB), "third": certificates}, "gz")
    report = ReadReport()
    documents = list(read_paths([archive], report, max_bytes=1 * MIB))  # 32 MiB of oversized members may be passed
    assert [document.name for document in documents] == [f"{archive}!first", f"{archive}!second"]
    assert [problem.split(": ")[0] for problem in report.unreadable] == [
        f"{archive}!bomb-1", f"{archive}!bomb-2", str(archive)]
    assert report.unreadable[-1] == (f"{archive}: the rest is not read: its members past the cap would expand to "
                                     "more than 32 times the cap to decompress and pass over")


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_a_compressed_file_is_decompressed_in_chunks_and_stopped_at_the_cap(tmp_path, compression):
    bomb = _write(tmp_path, f"bomb-consensus.{compression}", COMPRESSIONS[compression](_bomb(64 * MIB)))
    genuine = read_data("2020-02-29-10-00-00-consensus.xz")
    small = _write(tmp_path, f"2020-02-29-10-00-00-consensus.{compression}", COMPRESSIONS[compression](genuine))
    report = ReadReport()
    tracemalloc.start()
    try:
        documents = list(read_paths([bomb, small], report, max_bytes=4 * MIB))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(d.name, d.kind, d.raw == genuine, d.path) for d in documents] == [
        (str(small), DocKind.CONSENSUS, True, None)]  # decompressed: held packed, not read again from the file
    assert len(report.unreadable) == 1 and report.unreadable[0].startswith(
        f"{bomb}: larger than the 4 MiB one document may have (expands past that)")
    assert peak < 16 * MIB


def test_a_plain_file_past_the_cap_is_refused_by_its_size_before_it_is_read(tmp_path):
    big = _write(tmp_path, "big-consensus", _bomb(4096))
    os.truncate(big, 64 * MIB)  # sparse: no disk written
    report = ReadReport()
    tracemalloc.start()
    try:
        assert list(read_paths([big], report, max_bytes=4 * MIB)) == []
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.unreadable == [f"{big}: larger than the 4 MiB one document may have ({64 * MIB:,} bytes); "
                                 "skipped (raise the cap with backfill --max-document-mib)"]
    assert peak < 1 * MIB


def test_backfill_passes_its_cap_on_and_a_file_grown_past_it_is_not_read_again(tmp_path):
    folder = tmp_path / "in"
    path = _write(folder, "2020-02-29-10-00-00-consensus", read_data("2020-02-29-10-00-00-consensus.xz"))
    result = _backfill(tmp_path, [folder], max_document_bytes=1 * MIB)
    assert result.periods_written == 0 and result.read.unreadable[0].startswith(f"{path}: larger than the 1 MiB")

    report = ReadReport()
    (document,) = read_paths([path], report)
    kept = KeptDocument.of(document, max_bytes=4 * MIB)
    os.truncate(path, 64 * MIB)
    assert kept.read(report) is None
    assert report.unreadable == [f"{path}: unusable when its period was replayed (larger than the 4 MiB one "
                                 f"document may have ({64 * MIB:,} bytes); skipped (raise the cap with backfill "
                                 "--max-document-mib))"]


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz"])
def test_damaged_compressed_files_and_archives_are_named_and_what_came_before_kept(tmp_path, compression):
    genuine = read_data("2020-02-29-10-00-00-consensus.xz")
    _write(tmp_path, f"garbage-consensus.{compression}", b"not compressed at all\n" * 10)
    _write(tmp_path, f"cut-consensus.{compression}", COMPRESSIONS[compression](genuine)[:5000])
    _tar(tmp_path / f"whole.tar.{compression}", {"a": genuine, "b": genuine}, compression)
    whole = (tmp_path / f"whole.tar.{compression}").read_bytes()
    _write(tmp_path, f"cut.tar.{compression}", whole[:len(whole) * 3 // 4])
    report = ReadReport()
    names = [document.name for document in read_paths([tmp_path], report)]
    assert names[-2:] == [f"{tmp_path}/whole.tar.{compression}!a", f"{tmp_path}/whole.tar.{compression}!b"]
    assert set(names[:-2]) <= {f"{tmp_path}/cut.tar.{compression}!a"}  # a member wholly before the cut
    problems = sorted(problem.split(": ")[0] for problem in report.unreadable)
    assert f"{tmp_path}/garbage-consensus.{compression}" in problems
    assert f"{tmp_path}/cut-consensus.{compression}" in problems
    assert f"{tmp_path}/cut.tar.{compression}" in problems  # "archive damaged after the last good member"


def test_links_that_lead_nowhere_are_named_with_their_target(tmp_path):
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "gone").symlink_to(tmp_path / "nothing")
    report = ReadReport()
    assert list(read_paths([tmp_path / "loop", tmp_path], report)) == []
    assert report.unreadable == [
        f"{tmp_path / 'loop'}: a symbolic link to 'loop' that cannot be followed (Too many levels of symbolic links)",
        f"{tmp_path / 'gone'}: a symbolic link to '{tmp_path / 'nothing'}' that cannot be followed (No such file or "
        "directory)",
        f"{tmp_path / 'loop'}: a symbolic link to 'loop' that cannot be followed (Too many levels of symbolic links)"]


# -- things that are no regular files --------------------------------------------------------------------------

def test_a_fifo_is_refused_by_name_without_blocking_given_or_found_in_a_directory(tmp_path):
    folder = tmp_path / "in"
    genuine = _write(folder, "2020-02-29-10-00-00-consensus", read_data("2020-02-29-10-00-00-consensus.xz"))
    fifo = folder / "pipe-consensus"
    os.mkfifo(fifo)
    report, found = ReadReport(), []
    reader = threading.Thread(target=lambda: found.extend(read_paths([fifo, folder], report)), daemon=True)
    reader.start()
    reader.join(timeout=30)  # hang guard: the code as it was blocked in open() until a writer came
    if reader.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # lets the blocked reader go
        reader.join()
        pytest.fail(f"reading {fifo} blocked")
    assert [document.name for document in found] == [str(genuine)]
    refused = f"{fifo}: a FIFO (named pipe), not a regular file: refused (reading it could block or never end)"
    assert report.unreadable == [refused, refused]  # given, and found in the directory


_CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # the code as it was read /dev/zero until this
from pathlib import Path
from agent.parse.archive import ReadReport, read_paths
report = ReadReport()
print(len(list(read_paths([Path(p) for p in sys.argv[1:]], report))))
print("\\n".join(report.unreadable))
"""


def test_dev_zero_and_a_link_to_it_are_refused_by_name(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "zero-consensus.xz").symlink_to("/dev/zero")
    child = subprocess.run([sys.executable, "-c", _CHILD, "/dev/zero", str(folder)], capture_output=True, text=True,
                           timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.splitlines() == [
        "0", "/dev/zero: a character device, not a regular file: refused (reading it could block or never end)",
        f"{folder}/zero-consensus.xz: a character device, not a regular file: refused (reading it could block or "
        "never end)"]


# -- dates that are no dates -----------------------------------------------------------------------------------

def test_a_consensus_whose_valid_after_is_no_date_is_named_and_skipped_the_others_written(tmp_path):
    folder = tmp_path / "in"
    for hour in ("10", "11"):
        _write(folder, f"2020-02-29-{hour}-00-00-consensus", read_data(f"2020-02-29-{hour}-00-00-consensus.xz"))
    bad = read_data("2020-02-29-10-00-00-consensus.xz").replace(b"valid-after 2020-02-29", b"valid-after 2020-13-29")
    month13 = _write(folder, "2020-13-29-10-00-00-consensus", bad)
    vote = _write(folder, "2016-09-20-13-00-00-vote", read_data("2016-09-20-13-00-00-vote-maatuska.xz")
                  .replace(b"valid-after 2016-09-20 13:00:00", b"valid-after 2016-09-31 13:00:00"))
    result = _backfill(tmp_path, [folder])
    assert (result.periods_found, result.periods_written) == (2, 2)
    assert result.read.unreadable == [
        f"{vote}: vote skipped: its valid-after '2016-09-31 13:00:00' is no date (day is out of range for month)",
        f"{month13}: consensus skipped: its valid-after '2020-13-29 10:00:00' is no date (month must be in 1..12)"]


# -- trust: the configured authorities, not the document -------------------------------------------------------

def test_a_tampered_consensus_beside_the_genuine_one_loses_and_is_reported(tmp_path):
    genuine = _write(tmp_path / "in/a", "2022-11-19-10-00-00-consensus", read_data(GENUINE_2022))
    _write(tmp_path / "in/a", "certs", read_data("2022-11-certs"))
    tampered = read_data(GENUINE_2022).replace(b"s Exit Fast", b"s Exit Fass", 1)
    forged = _write(tmp_path / "in/b", "2022-11-19-10-00-00-consensus", tampered)  # read last: it used to win
    result = _backfill(tmp_path, [tmp_path / "in"])
    assert (result.periods_written, result.periods_unverified, result.periods_rejected) == (1, 0, [])
    assert result.conflicts == [
        f"{forged}: not used: {genuine} also claims valid-after 2022-11-19 10:00:00 and was used (verified: 5 valid "
        "signatures by the 9 configured authorities, 5 needed); this one is rejected: the signature of "
        "14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4, 23D15D965BC35114467363C165C4F724B64B4F66, "
        "27102BC123E7AF1D4741AE047E160C91ADC76B21, 49015F787433103580E3B66A1707A00E60F2D15B, "
        "D586D18309DED4CD6D57C18FDB97EFA96D330566, E8A9C45EDE6D711294FADF8E7951F4DE6CA56B58, "
        "ED03BB616EB2F60BEC80151114BB25CEF515B226, EFCBE720AB3A82B99F9E953CD5BF50F7EEFC7B97 does not match the "
        "document (0 valid signatures by the 9 configured authorities, 5 needed)"]


def test_a_consensus_signed_by_an_unknown_key_loses_to_the_genuine_one(tmp_path, forger):
    genuine = _write(tmp_path / "in/a", "2022-11-19-10-00-00-consensus", read_data(GENUINE_2022))
    _write(tmp_path / "in/a", "certs", read_data("2022-11-certs") + forger.certificate())
    forged = _write(tmp_path / "in/b", "2022-11-19-10-00-00-consensus", forger.consensus(read_data(GENUINE_2022)))
    result = _backfill(tmp_path, [tmp_path / "in"])
    assert (result.periods_written, result.periods_unverified, result.periods_rejected) == (1, 0, [])
    assert len(result.conflicts) == 1 and result.conflicts[0].startswith(f"{forged}: not used: {genuine} also claims")
    assert result.conflicts[0].endswith(f"this one is rejected: signed by no configured authority, only by "
                                        f"{forger.identity} (trust comes from authorities.bootstrap, not from the "
                                        "document)")


def test_a_self_signed_consensus_is_not_counted_as_verified(tmp_path, forger):
    folder = tmp_path / "in"
    forged = _write(folder, "2022-11-19-10-00-00-consensus", forger.consensus(read_data(GENUINE_2022)))
    _write(folder, "certs", forger.certificate())
    result = _backfill(tmp_path, [folder])
    assert (result.periods_written, result.conflicts) == (0, [])  # the code as it was: written, as verified
    assert result.periods_rejected == [f"{forged}: rejected: signed by no configured authority, only by "
                                       f"{forger.identity} (trust comes from authorities.bootstrap, not from the "
                                       "document)"]
    assert result.unknown_signers == {forger.identity: 1}


def test_with_the_forger_configured_its_consensus_verifies_and_two_verified_ones_are_a_conflict(tmp_path, forger):
    config = _config(tmp_path, authorities={"bootstrap": [
        {"nickname": "forger", "v3ident": forger.identity, "address": "127.0.0.1", "dir_port": 80}]})
    folder = tmp_path / "in"
    _write(folder, "certs", forger.certificate())
    one = _write(folder / "a", "consensus", forger.consensus(read_data(GENUINE_2022)))
    assert _backfill(tmp_path, [folder], config).periods_written == 1  # verified: trust is what is configured

    other = _write(folder / "b", "consensus", forger.consensus(read_data(GENUINE_2022), (b"s Exit Fast", b"s Fast")))
    result = _backfill(tmp_path, [folder], config, force=True)
    assert result.periods_written == 0
    assert [conflict.split(": not used: ")[0] for conflict in result.conflicts] == [str(one), str(other)]
    assert all("2 differing documents claim valid-after 2022-11-19 10:00:00 and several are verified, so none is "
               "used" in conflict for conflict in result.conflicts)


def test_two_unverified_consensuses_for_one_period_are_both_reported_and_neither_written(tmp_path):
    genuine = read_data("2020-02-29-10-00-00-consensus.xz")
    one = _write(tmp_path / "in/a", "2020-02-29-10-00-00-consensus", genuine)
    other = _write(tmp_path / "in/b", "2020-02-29-10-00-00-consensus", genuine.replace(b"s Exit Fast", b"s Fast", 1))
    result = _backfill(tmp_path, [tmp_path / "in"])
    assert result.periods_written == 0  # the code as it was wrote whichever it read last
    assert [conflict.split(": not used: ")[0] for conflict in result.conflicts] == [str(one), str(other)]
    assert "2 differing documents claim valid-after 2020-02-29 10:00:00 and none is verified" in result.conflicts[0]


def test_copies_of_one_consensus_are_no_conflict(tmp_path):
    genuine = read_data("2020-02-29-10-00-00-consensus.xz")
    _write(tmp_path / "in/a", "2020-02-29-10-00-00-consensus", genuine)
    _write(tmp_path / "in/b", "2020-02-29-10-00-00-consensus", b"@type network-status-consensus-3 1.0\n" + genuine)
    _tar(tmp_path / "in/c.tar.xz", {"2020-02-29-10-00-00-consensus": genuine}, "xz")
    result = _backfill(tmp_path, [tmp_path / "in"])
    assert (result.periods_written, result.periods_unverified, result.conflicts, result.read.unreadable) == \
        (1, 1, [], [])


def _vote_period(tmp_path, votes: dict[str, bytes]) -> tuple[Period, BackfillResult]:
    folder = tmp_path / "in"
    _write(folder, "2016-09-20-13-00-00-consensus", read_data("2016-09-20-13-00-00-consensus.xz"))
    for name, raw in votes.items():
        _write(folder, name, raw)
    result = BackfillResult()
    period = Period(datetime(2016, 9, 20, 13))
    for document in read_paths([folder], result.read):
        (period.consensuses if document.kind is DocKind.CONSENSUS else period.votes).append(KeptDocument.of(document))
    return period, result


def test_forged_votes_lose_to_the_genuine_one_and_a_vote_by_an_unknown_author_is_not_used(tmp_path, forger):
    genuine = read_data("2016-09-20-13-00-00-vote-maatuska.xz")
    maatuska = "49015F787433103580E3B66A1707A00E60F2D15B"
    period, result = _vote_period(tmp_path, {
        "a-vote": genuine,
        "b-vote": genuine.replace(b"s Fast", b"s Exit Fast", 1),  # read last: it used to win
        "c-vote": forger.vote(genuine, maatuska),
        "d-vote": forger.vote(genuine, "no such identity"),  # maatuska's dir-source; the forger's certificate
    })
    snapshot = archived_snapshot(period, _config(tmp_path), {}, [], result)
    assert snapshot.views["maatuska"].vote is not None and len(snapshot.votes()) == 1
    assert len(snapshot.views["maatuska"].vote.routers) == 7903  # the genuine one's
    folder = tmp_path / "in"
    assert result.conflicts == [
        f"{folder / 'b-vote'}: not used: {folder / 'a-vote'} also claims to be maatuska's vote of 2016-09-20 "
        "13:00:00 and was used (verified: signed by its author, whose key certificate it carries); this one is "
        "rejected: signature does not match the document (checked with the key certificate it carries)",
        f"{folder / 'd-vote'}: not used: {folder / 'a-vote'} also claims to be maatuska's vote of 2016-09-20 "
        "13:00:00 and was used (verified: signed by its author, whose key certificate it carries); this one is "
        f"rejected: signed by {forger.identity}, not by its author {maatuska}"]
    assert result.periods_rejected == [f"{folder / 'c-vote'}: rejected: a vote by {forger.identity}, an authority "
                                       "neither configured nor listed in its period's consensus"]


def test_the_backfill_command_takes_a_cap_and_prints_each_conflict_and_refusal(tmp_path, capsys):
    from agent.cli import main as cli

    genuine = read_data("2020-02-29-10-00-00-consensus.xz")
    one = _write(tmp_path / "in/a", "2020-02-29-10-00-00-consensus", genuine)
    other = _write(tmp_path / "in/b", "2020-02-29-10-00-00-consensus", genuine.replace(b"s Exit Fast", b"s Fast", 1))
    _write(tmp_path / "in", "2020-02-29-11-00-00-consensus", read_data("2020-02-29-11-00-00-consensus.xz"))
    _tar(tmp_path / "in/bomb.tar.gz", {"bomb-consensus": _bomb(64 * MIB)}, "gz")
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "metrics": {"geoip_file": None}}))
    arguments = ["backfill", str(tmp_path / "in"), "--config", str(config), "--no-progress", "--jobs", "1"]
    assert cli.main([*arguments, "--max-document-mib", "3"]) == 1
    out = capsys.readouterr().out
    assert "periods: 2 found, 1 written" in out
    assert f"problem: {tmp_path / 'in/bomb.tar.gz'}!bomb-consensus: larger than the 3 MiB one document may have" in out
    assert [line.split(": not used: ")[0] for line in out.splitlines() if line.startswith("conflict: ")] == [
        f"conflict: {one}", f"conflict: {other}"]
    uncounted = "signatures not counted (signer not among authorities.bootstrap): "
    assert f"{uncounted}14C131DFC5C6F93646BE72FA1401C02A8DF2E8B4 (3 consensuses)" in out  # tor26's key of 2020

    with pytest.raises(SystemExit) as exit_status:
        cli.main([*arguments, "--max-document-mib", "0"])
    assert exit_status.value.code == 2 and "not a size in MiB between 0 and 1048576: '0'" in capsys.readouterr().err
