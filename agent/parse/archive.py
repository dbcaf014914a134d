"""Reads Tor directory documents from files, directories and CollecTor tarballs.

Layout does not matter: directories are walked, ``.tar`` / ``.tar.xz`` /
``.tar.gz`` / ``.tar.bz2`` archives are opened, single ``.xz`` / ``.gz`` /
``.bz2`` files are decompressed, and each file or member's kind comes from
its CollecTor ``@type`` annotation, else from its first line. Kinds the
agent does not use (bridge documents, extra-infos, exit lists,
microdescriptors) are counted and passed over after their first 4 KiB.
An unreadable file or member is reported by name and skipped; it never
stops the read.

Hostile input is bounded: only regular files are opened (a FIFO, device or
socket is refused by name before it is opened, and checked again on the
open descriptor), and everything is read, and decompressed, in 1 MiB
chunks with a running count that stops at ``max_bytes`` per document
(``MAX_DOCUMENT_BYTES`` by default), so a small archive that expands to
gigabytes costs one chunk past the cap, never the whole. Passing over an
oversized member of a compressed archive still means decompressing it, so
once those add up to ``SKIP_BUDGET`` times the cap the rest of that archive
is left unread (and reported): memory and time both stay bounded.
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from agent.model.errors import DocumentError
from agent.model.snapshot import DocKind

log = logging.getLogger(__name__)

_TYPES = {
    "network-status-consensus-3": DocKind.CONSENSUS,
    "network-status-microdesc-consensus-3": DocKind.MICRODESC_CONSENSUS,
    "network-status-vote-3": DocKind.VOTE,
    "server-descriptor": DocKind.SERVER_DESCRIPTORS,
    "dir-key-certificate-3": DocKind.KEY_CERTIFICATES,
    "bandwidth-file": DocKind.BANDWIDTH_FILE,
}
_TAR_SUFFIXES = (".tar", ".tar.xz", ".tar.gz", ".tgz", ".tar.bz2")
#: Single compressed files, by suffix: each opener decompresses a stream chunk by chunk.
_DECOMPRESSORS: dict[str, Callable[[IO[bytes]], Any]] = {
    ".xz": lzma.LZMAFile, ".lzma": lzma.LZMAFile, ".gz": lambda stream: gzip.GzipFile(fileobj=stream),
    ".bz2": bz2.BZ2File,
}
#: What one file or archive member may expand to. The largest real documents a backfill reads are a day of
#: server descriptors in one file (~35 MB: 2020-02-29 10:00's hour is 1.5 MB) and a vote (~4 MB; a consensus
#: ~2.4 MB); 128 MiB is 3.5 times the day, and bounds what one hostile document costs to read (and to parse:
#: stem's bandwidth file parser takes ~8.5 times its input).
MAX_DOCUMENT_BYTES = 128 << 20
#: Members past the cap a compressed archive may hold, in multiples of the cap, before the rest of it is left
#: unread: passing over one decompresses it (1.3 s a GiB of gzip, 3.4 of bzip2 or xz: 4 GiB by default is at
#: most ~14 s), and a tar.bz2 of 2 kB can declare 256 MiB, so one of a few MB hundreds of GB. A real one has none.
SKIP_BUDGET = 32
_HEAD = 4096  # enough to tell the kind (kind_of reads 2,000 bytes)
_CHUNK = 1 << 20
_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


@dataclass(frozen=True)
class RawDocument:
    """A file's or member's bytes, its kind, and a name a person can find it by."""

    name: str
    kind: DocKind
    raw: bytes
    path: Path | None = None  # the file it was read from, if it is the whole file (not a member, not compressed)


@dataclass
class ReadReport:
    """What reading found besides documents."""

    ignored: int = 0  # files of kinds the agent does not use
    unreadable: list[str] | None = None

    def __post_init__(self):
        self.unreadable = self.unreadable or []

    def problem(self, name: str, reason: str) -> None:
        self.add(f"{name}: {reason.strip().splitlines()[0] if reason.strip() else 'unknown error'}")

    def add(self, message: str) -> None:
        """Records a problem whose message already names the file."""
        self.unreadable.append(message)
        log.error("cannot use %s", message)


def kind_of(raw: bytes) -> DocKind | None:
    """The document kind from the @type annotation or the first line; None if unused or unknown."""
    head = raw[:200].lstrip()
    if head.startswith(b"@type "):
        name = head[6:].split(b"\n", 1)[0].decode("ascii", "replace").rsplit(" ", 1)[0]
        return _TYPES.get(name)
    first = head.split(b"\n", 1)[0]
    if first.startswith(b"network-status-version 3"):
        body = raw[:2000]
        if b"\nvote-status vote" in body:
            return DocKind.VOTE
        return DocKind.MICRODESC_CONSENSUS if first.endswith(b"microdesc") else DocKind.CONSENSUS
    if first.startswith(b"router "):
        return DocKind.SERVER_DESCRIPTORS
    if first.startswith(b"dir-key-certificate-version"):
        return DocKind.KEY_CERTIFICATES
    if first.strip().isdigit():
        return DocKind.BANDWIDTH_FILE  # a bandwidth file starts with its Unix timestamp
    return None


def read_paths(paths: list[Path], report: ReadReport, max_bytes: int = MAX_DOCUMENT_BYTES) -> Iterator[RawDocument]:
    """Every usable document under ``paths``, in a stable order; none larger than ``max_bytes``."""
    for path in paths:
        path = Path(path)
        if not path.exists():
            report.problem(str(path), _unreachable(path, "no such file or directory"))
        elif path.is_dir():
            for child in sorted(path.rglob("*")):
                if not child.is_dir():  # a link to a directory is not followed (nor was it ever)
                    yield from _read_file(child, report, max_bytes)
        else:
            yield from _read_file(path, report, max_bytes)


def read_file(path: Path, max_bytes: int = MAX_DOCUMENT_BYTES) -> bytes:
    """The bytes of the regular file ``path``; DocumentError if it is something else or larger than ``max_bytes``.

    OSError if it cannot be opened or read.
    """
    with open_regular(path) as stream:
        size = os.fstat(stream.fileno()).st_size
        if size > max_bytes:
            raise DocumentError(f"{path}: {_too_large(max_bytes, size)}")
        return read_capped(stream, max_bytes, str(path))


def open_regular(path: Path) -> IO[bytes]:
    """``path`` opened for reading if it is a regular file; DocumentError naming it and what it is otherwise.

    Checked before opening (opening a FIFO would block) and again on the open
    descriptor, in case the file was replaced meanwhile; O_NONBLOCK keeps that
    open from blocking and changes nothing for a regular file.
    """
    _refuse_unless_regular(path, os.stat(path).st_mode)
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        _refuse_unless_regular(path, os.fstat(descriptor).st_mode)
        os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def _unreachable(path: Path, reason: str) -> str:
    """Why ``path`` cannot be opened, naming the target of a symbolic link that leads nowhere (or in a loop)."""
    if not path.is_symlink():
        return reason
    try:
        os.stat(path)
    except OSError as error:
        reason = error.strerror or reason
    return f"a symbolic link to {os.readlink(path)!r} that cannot be followed ({reason})"


def _refuse_unless_regular(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    what = next((name for test, name in _SPECIAL if test(mode)), "not a file")
    raise DocumentError(f"{path}: {what}, not a regular file: refused (reading it could block or never end)")


def read_capped(stream: IO[bytes], max_bytes: int, name: str, head: bytes = b"") -> bytes:
    """``head`` and the rest of ``stream``, read chunk by chunk; DocumentError naming ``name`` past ``max_bytes``.

    The stream may decompress: the count is of what it yields, so reading stops
    one chunk past the cap however much the input would expand to.
    """
    chunks, total = [head], len(head)
    while total <= max_bytes:
        chunk = stream.read(min(_CHUNK, max_bytes + 1 - total))
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        total += len(chunk)
    raise DocumentError(f"{name}: {_too_large(max_bytes)}")


def _too_large(max_bytes: int, size: int | None = None) -> str:
    found = f"{size:,} bytes" if size is not None else "expands past that"
    return (f"larger than the {max_bytes / (1 << 20):g} MiB one document may have ({found}); "
            "skipped (raise the cap with backfill --max-document-mib)")


def _read_head(stream: IO[bytes]) -> bytes:
    """The first ``_HEAD`` bytes (fewer only at the end): enough to tell the kind."""
    head = b""
    while len(head) < _HEAD:
        chunk = stream.read(_HEAD - len(head))
        if not chunk:
            break
        head += chunk
    return head


_READ_ERRORS = (OSError, EOFError, ValueError, tarfile.TarError, lzma.LZMAError, zlib.error)


def _read_file(path: Path, report: ReadReport, max_bytes: int) -> Iterator[RawDocument]:
    try:
        stream = open_regular(path)
    except DocumentError as error:
        report.add(str(error))
        return
    except OSError as error:
        report.problem(str(path), _unreachable(path, error.strerror or str(error)))
        return
    with stream:
        if path.name.endswith(_TAR_SUFFIXES):
            yield from _read_tar(path, stream, report, max_bytes)
        elif path.suffix in _DECOMPRESSORS:
            yield from _read_compressed(path, stream, report, max_bytes)
        else:
            size = os.fstat(stream.fileno()).st_size
            yield from _document(str(path), stream, report, max_bytes, size, path)


def _read_compressed(path: Path, stream: IO[bytes], report: ReadReport, max_bytes: int) -> Iterator[RawDocument]:
    """A single compressed document, decompressed as it is read (its size is known only by reading)."""
    with _DECOMPRESSORS[path.suffix](stream) as decompressed:
        yield from _document(str(path), decompressed, report, max_bytes)


def _read_tar(path: Path, stream: IO[bytes], report: ReadReport, max_bytes: int) -> Iterator[RawDocument]:
    try:
        archive = tarfile.open(str(path), "r:*", fileobj=stream)
    except _READ_ERRORS as error:
        report.problem(str(path), f"not a readable tar archive ({error})")
        return
    # Passing over a member of a compressed archive means decompressing it: oversized ones may cost this much.
    budget = SKIP_BUDGET * max_bytes if archive.fileobj is not stream else None
    with archive:
        while True:
            try:
                member = archive.next()
            except _READ_ERRORS as error:
                report.problem(str(path), f"archive damaged after the last good member ({error})")
                return
            if member is None:
                return
            archive.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every header read: ~10^5 a month
            if not member.isfile():
                continue
            yield from _member(archive, member, f"{path}!{member.name}", report, max_bytes)
            if budget is not None and member.size > max_bytes:
                budget -= member.size
                if budget < 0:
                    report.problem(str(path), f"the rest is not read: its members past the cap would expand to more "
                                              f"than {SKIP_BUDGET} times the cap to decompress and pass over")
                    return


def _member(archive: tarfile.TarFile, member: tarfile.TarInfo, name: str, report: ReadReport,
            max_bytes: int) -> Iterator[RawDocument]:
    try:
        stream = archive.extractfile(member)
    except _READ_ERRORS as error:
        report.problem(name, f"unreadable member ({error})")
        return
    if stream is not None:
        yield from _document(name, stream, report, max_bytes, member.size)


def _document(name: str, stream: IO[bytes], report: ReadReport, max_bytes: int, size: int | None = None,
              path: Path | None = None) -> Iterator[RawDocument]:
    """The document ``stream`` holds, if of a kind the agent uses and not past ``max_bytes``.

    ``size``, when known beforehand (a file's, a tar member's header), refuses
    an oversized document before reading more than its first bytes.
    """
    try:
        head = _read_head(stream)
        kind = kind_of(head)
        if kind is None:
            report.ignored += 1
            log.debug("passing over %s: not a kind the agent uses", name)
            return
        if size is not None and size > max_bytes:
            raise DocumentError(f"{name}: {_too_large(max_bytes, size)}")
        raw = read_capped(stream, max_bytes, name, head)
    except DocumentError as error:
        report.add(str(error))
        return
    except _READ_ERRORS as error:
        report.problem(name, f"unreadable ({error})")
        return
    yield RawDocument(name, kind, raw, path)
