"""Pure parsing of raw directory documents, with type checks.

Network status documents are split: stem parses and validates the header
and footer, ``agent.parse.fastparse`` the router status entries (looked up
among the previous consensus's in backfill, which passes an
``agent.parse.entrymemory.EntryMemory``); the two, and a consensus's bytes,
make an ``agent.model.network_status.NetworkStatus``. Server descriptors go
through ``agent.parse.fastdesc`` (their digests are what the consensus
vouches for). Key certificates and bandwidth files are stem's. What stem
reads is first checked as tor reads it (``agent.parse.stemchecks``: ASCII
numbers within tor's bounds, times in sane years), and a parsed network
status must have its times in order and, a vote, only flags it knows; a NUL
byte anywhere refuses any document.

DirPort replies carry no ``@type`` annotation, so the kind we asked for decides
the parser, and we then check the document really is that kind: an authority
answering the consensus URL with a vote, or a consensus of the other flavour,
is an error that names what was expected and what arrived.
"""

from __future__ import annotations

import gc
import io
import re
from contextlib import contextmanager

import stem.descriptor
from stem.descriptor.networkstatus import NetworkStatusDocumentV3

from agent.model.errors import DocumentError
from agent.model.network_status import NetworkStatus
from agent.model.snapshot import DocKind
from agent.parse import entrymemory, extrainfo, fastdesc, fastparse, stemchecks
from agent.parse.entrymemory import EntryMemory

_NEWLINE = b"\n"
_STEM_TYPES = {
    DocKind.KEY_CERTIFICATES: "dir-key-certificate-3 1.0",
    DocKind.BANDWIDTH_FILE: "bandwidth-file 1.0",
}


def parse_document(kind: DocKind, raw: bytes, source: str, memory: EntryMemory | None = None):
    """Parses ``raw`` as ``kind``; raises DocumentError naming ``source`` and the problem.

    Returns a ``NetworkStatus`` for the three network status kinds, a list
    for key certificates and server descriptors, a BandwidthFile otherwise.
    Any failure inside stem becomes a DocumentError: a document from one
    authority must never take the cycle down with it.

    ``memory``: a consensus's entries are looked up among those of the
    previous consensus of its flavour parsed with the same memory, and
    remembered there for the next (backfill; votes and other kinds ignore
    it). None, the default and the live path, remembers nothing.
    """
    if not raw or not raw.strip():
        raise DocumentError(f"{kind.value} from {source}: empty document")
    nul = raw.find(b"\x00")
    if nul >= 0:  # tor reads documents as C strings: nothing of one is past a NUL
        raise DocumentError(f"{kind.value} from {source}: line {raw.count(_NEWLINE, 0, nul) + 1}: a NUL byte")
    with collector_paused():
        return _parse(kind, raw, source, memory)


@contextmanager
def collector_paused():
    """The cyclic garbage collector off for a while (as it was before, afterwards).

    Parsing and metrics allocate ~100,000 objects a document, none of them in
    cycles that matter: the collector would walk them again and again. It runs
    again afterwards, and then collects anything cyclic.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _parse(kind: DocKind, raw: bytes, source: str, memory: EntryMemory | None):
    if kind is DocKind.EXTRA_INFOS:
        return _extra_infos(raw, source)
    try:
        if kind not in (DocKind.CONSENSUS, DocKind.MICRODESC_CONSENSUS, DocKind.VOTE, DocKind.SERVER_DESCRIPTORS):
            _refuse_what_stem_mishandles(kind, raw)  # network status: only the part stem parses is checked
        if kind in (DocKind.CONSENSUS, DocKind.MICRODESC_CONSENSUS, DocKind.VOTE):
            return _network_status(kind, raw, source, memory)
        if kind is DocKind.SERVER_DESCRIPTORS:
            parsed = fastdesc.parse_server_descriptors(raw)
        else:
            _check_stem_input(kind, raw)
            parsed = list(stem.descriptor.parse_file(io.BytesIO(raw), _STEM_TYPES[kind], validate=True))
    except DocumentError:
        raise
    except _Refused as error:
        raise DocumentError(f"{kind.value} from {source}: {error}") from None
    except Exception as error:  # stem raises more than ValueError on hostile input (OverflowError, ...)
        raise DocumentError(f"{kind.value} from {source}: {_first_line(error)}") from error
    if not parsed:
        raise DocumentError(f"{kind.value} from {source}: no {kind.value} in the document")
    if kind is DocKind.BANDWIDTH_FILE:
        return parsed[0]
    return parsed


def _extra_infos(raw: bytes, source: str) -> list:
    """Extra-info documents (``agent.parse.extrainfo``): those that read; refused only when none does.

    The fetch reads them with ``parse_extra_infos`` itself, where each bad
    one is logged with its reason; here a reply is one document, as for the
    other kinds.
    """
    try:
        documents, problems = extrainfo.parse_extra_infos(raw)
    except DocumentError as error:
        raise DocumentError(f"{DocKind.EXTRA_INFOS.value} from {source}: {error}") from None
    if not documents:
        why = problems[0] if problems else "no extra-info in the document"
        raise DocumentError(f"{DocKind.EXTRA_INFOS.value} from {source}: {why}")
    return documents


class _Refused(ValueError):
    """Input stem 1.8.2 would hang on or blow up with; refused before parsing."""


_PROTOCOL_LINE = re.compile(rb"^(?:pr|proto|(?:recommended|required)-(?:client|relay)-protocols) (.*)$", re.M)
_RANGE = re.compile(rb"(\d+)-(\d+)")
#: Protocol versions are small numbers; stem expands a range into a list, so
#: "Link=1-2000000000" in one router line would exhaust memory.
MAX_PROTOCOL_RANGE = 1000


def _refuse_what_stem_mishandles(kind: DocKind, raw: bytes) -> None:
    if kind is DocKind.BANDWIDTH_FILE:
        # stem looks for the header terminator with a loop that never ends at
        # EOF: a versioned (> 1.0.0) file must contain one.
        lines = [line.strip() for line in raw.splitlines()[:100]]
        versioned = any(line.startswith(b"version=") and line != b"version=1.0.0" for line in lines)
        if versioned and b"=====" not in raw and b"\n====\n" not in raw:
            raise _Refused("version > 1.0.0 but no header terminator line (=====)")
    for line in _PROTOCOL_LINE.finditer(raw):
        for low, high in _RANGE.findall(line.group(1)):
            if int(high) - int(low) > MAX_PROTOCOL_RANGE:
                raise _Refused(f"protocol range {low.decode()}-{high.decode()} is implausibly wide")


def _check_stem_input(kind: DocKind, raw: bytes) -> None:
    """The numbers and times of a key certificate or bandwidth file, read as tor reads them (before stem does)."""
    stripped = _strip_annotations(raw)
    first_line = raw.count(b"\n", 0, len(raw) - len(stripped)) + 1
    text = stripped.decode("utf-8", "replace")
    if kind is DocKind.BANDWIDTH_FILE:
        stemchecks.check_bandwidth_file(text, first_line)
    else:
        stemchecks.check_lines(text, first_line)


def _network_status(kind: DocKind, raw: bytes, source: str, memory: EntryMemory | None) -> NetworkStatus:
    stripped = _strip_annotations(raw)
    annotation_lines = raw.count(b"\n", 0, len(raw) - len(stripped))  # still counted in errors' line numbers
    raw = stripped
    first_line = raw.split(b"\n", 1)[0]
    if not first_line.startswith(b"network-status-version 3"):
        shown = first_line[:60].decode("ascii", "replace")
        raise DocumentError(f"{kind.value} from {source}: not a v3 network status document (starts {shown!r})")
    header, entries, footer = fastparse.split_network_status(raw)
    _refuse_what_stem_mishandles(kind, header + footer)
    entries_line = annotation_lines + header.count(b"\n") + 1
    stemchecks.check_lines(header.decode("utf-8", "replace"), annotation_lines + 1)
    stemchecks.check_lines(footer.decode("utf-8", "replace"), entries_line + entries.count(b"\n"))
    header_and_footer = NetworkStatusDocumentV3(header + footer, validate=True)
    routers = entrymemory.parse_entries(entries, header_and_footer.is_microdescriptor, not header_and_footer.is_vote,
                                        first_line=entries_line, memory=memory)
    stemchecks.check_network_status(header_and_footer, routers)
    # stem parsed header and footer only: signatures are checked against the whole consensus, whose bytes the
    # collector keeps anyway. A vote's are not kept: nine votes' bytes are ~30 MB and nothing reads them after.
    document = NetworkStatus(header_and_footer, routers, raw if kind is not DocKind.VOTE else None)
    actual = describe_network_status(document)
    expected = {
        DocKind.CONSENSUS: "ns consensus",
        DocKind.MICRODESC_CONSENSUS: "microdesc consensus",
        DocKind.VOTE: "vote",
    }[kind]
    if actual != expected:
        raise DocumentError(f"{kind.value} from {source}: expected {expected}, got {actual}")
    if not document.signatures:
        raise DocumentError(f"{kind.value} from {source}: no directory-signature (truncated?)")
    return document


def _strip_annotations(raw: bytes) -> bytes:
    """Drops CollecTor's leading ``@type ...`` lines, which stem's constructor rejects."""
    raw = raw.lstrip()
    while raw.startswith(b"@"):
        raw = raw.split(b"\n", 1)[1] if b"\n" in raw else b""
    return raw


def describe_network_status(document) -> str:
    """'vote', 'ns consensus' or 'microdesc consensus'."""
    if document.is_vote:
        return "vote"
    return "microdesc consensus" if document.is_microdescriptor else "ns consensus"


def _first_line(error: Exception) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:300]
