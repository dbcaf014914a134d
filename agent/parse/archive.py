"""Reads Tor directory documents from files, directories and CollecTor tarballs.

Layout does not matter: directories are walked, ``.tar`` / ``.tar.xz`` /
``.tar.gz`` / ``.tar.bz2`` archives are opened, and each file or member's
kind comes from its CollecTor ``@type`` annotation, else from its first
line. Kinds the agent does not use (bridge documents, extra-infos, exit
lists, microdescriptors) are counted and passed over. An unreadable file or
member is reported by name and skipped; it never stops the read.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True)
class RawDocument:
    """A file's or member's bytes, its kind, and a name a person can find it by."""

    name: str
    kind: DocKind
    raw: bytes
    path: Path | None = None  # the file it was read from, if it is the whole file (not an archive member)


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


def read_paths(paths: list[Path], report: ReadReport) -> Iterator[RawDocument]:
    """Every usable document under ``paths``, in a stable order."""
    for path in paths:
        path = Path(path)
        if not path.exists():
            report.problem(str(path), "no such file or directory")
        elif path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                yield from _read_file(child, report)
        else:
            yield from _read_file(path, report)


def _read_file(path: Path, report: ReadReport) -> Iterator[RawDocument]:
    if path.name.endswith(_TAR_SUFFIXES):
        yield from _read_tar(path, report)
        return
    try:
        raw = path.read_bytes()
    except OSError as error:
        report.problem(str(path), error.strerror or str(error))
        return
    yield from _classified(str(path), raw, report, path)


def _read_tar(path: Path, report: ReadReport) -> Iterator[RawDocument]:
    try:
        archive = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as error:
        report.problem(str(path), f"not a readable tar archive ({error})")
        return
    with archive:
        while True:
            try:
                member = archive.next()
            except (tarfile.TarError, OSError, EOFError, ValueError) as error:
                report.problem(str(path), f"archive damaged after the last good member ({error})")
                return
            if member is None:
                return
            if not member.isfile():
                continue
            name = f"{path}!{member.name}"
            try:
                raw = archive.extractfile(member).read()
            except (tarfile.TarError, OSError, EOFError, ValueError) as error:
                report.problem(name, f"unreadable member ({error})")
                continue
            yield from _classified(name, raw, report)


def _classified(name: str, raw: bytes, report: ReadReport, path: Path | None = None) -> Iterator[RawDocument]:
    kind = kind_of(raw)
    if kind is None:
        report.ignored += 1
        log.debug("passing over %s: not a kind the agent uses", name)
        return
    yield RawDocument(name, kind, raw, path)
