"""Extra-info descriptors (dir-spec "extra-info"): the few lines the agent reads, and each document's digest.

An extra-info document runs from its ``extra-info NICKNAME FINGERPRINT``
line to the end of its ``router-signature`` object. Its digest, which the
relay's server descriptor names by ``extra-info-digest``, is the SHA-1 of
the document from ``extra-info`` up to and including
``router-signature\\n`` (dir-spec; tor's ``router_get_extrainfo_hash``).
Of the rest only these are read (``agent.model.extrainfo`` says why):

- ``published YYYY-MM-DD HH:MM:SS`` (exactly once, as tor requires);
- ``overload-ratelimits VERSION YYYY-MM-DD HH:MM:SS RATE-LIMIT BURST-LIMIT
  READ-OVERLOAD-COUNT WRITE-OVERLOAD-COUNT`` and ``overload-fd-exhausted
  VERSION YYYY-MM-DD HH:MM:SS`` (proposal 328; tor's rephist.c writes them
  with ``%d %s %PRIu64 ...``; at most once each). Read leniently, as
  ``agent.parse.fastdesc`` reads overload-general: tor's authorities do not
  parse them (no token of routerparse.c's extra-info table), so a malformed
  line is ignored with its reason and the document is kept. Extra
  arguments at the end are allowed (dir-spec 1.2, forward compatibility).

A document that is not an extra-info (no or a bad first line, no
``published``, no ``router-signature``, a NUL byte, not UTF-8) raises
DocumentError naming it; ``parse_extra_infos`` reads a reply of many and a
bad one costs only itself, with its reason. The signature is not checked:
the digest the server descriptor names (itself signed and vouched for by
the authority that served both) is what ties the document to its relay.
"""

from __future__ import annotations

import hashlib
import re

from agent.model.errors import DocumentError
from agent.model.extrainfo import ExtraInfo, RateLimitOverload
from agent.parse import grammar

_FIRST = re.compile(r"extra-info ([^ \n]+) ([^ \n]+)(?: [^\n]*)?")
_SIGNED_END = b"\nrouter-signature\n"
_TIME = r"([0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2})"
_COUNT = r"([0-9]{1,20})"
_RATELIMITS = re.compile(rf"([0-9]{{1,10}}) {_TIME} {_COUNT} {_COUNT} {_COUNT} {_COUNT}(?: [^\n]*)?")
_FD_EXHAUSTED = re.compile(rf"([0-9]{{1,10}}) {_TIME}(?: [^\n]*)?")
_LINE = re.compile(r"^(?:opt )?(published|overload-ratelimits|overload-fd-exhausted)(?: ([^\n]*))?$", re.M)
#: Where a document starts in a reply of many: a line beginning ``extra-info `` (annotations before it skipped).
_START = re.compile(rb"(?:^|\n)extra-info ")
RATELIMITS, FD_EXHAUSTED = "overload-ratelimits", "overload-fd-exhausted"


def extra_info_digest(document: bytes) -> str:
    """The digest a server descriptor names: SHA-1 (upper-case hex) of ``document`` up to ``router-signature\\n``.

    ``document`` starts at its ``extra-info`` line; DocumentError without a
    ``router-signature`` line.
    """
    end = document.find(_SIGNED_END)
    if end < 0:
        raise DocumentError("extra-info: no router-signature line")
    return hashlib.sha1(document[:end + len(_SIGNED_END)]).hexdigest().upper()


def parse_extra_info(document: bytes) -> ExtraInfo:
    """One extra-info document (starting at its ``extra-info`` line); DocumentError naming what is wrong."""
    if b"\x00" in document:
        raise DocumentError("extra-info: a NUL byte")
    digest = extra_info_digest(document)
    try:
        text = document[:document.find(_SIGNED_END) + 1].decode("utf-8")
    except UnicodeDecodeError as error:
        raise DocumentError(f"extra-info: not UTF-8 (byte {error.start})") from None
    first = _FIRST.match(text)
    if first is None or not (grammar.is_nickname(first[1]) and grammar.is_fingerprint(first[2])):
        raise DocumentError(f"extra-info: the first line {text.partition(chr(10))[0][:80]!r} is not "
                            "'extra-info NICKNAME FINGERPRINT'")
    name = f"extra-info {first[1]} ({first[2].upper()})"
    values: dict[str, list[str]] = {}
    for keyword, value in _LINE.findall(text):
        values.setdefault(keyword, []).append(value)
    published = values.get("published", [])
    if len(published) != 1:
        raise DocumentError(f"{name}: {'no' if not published else 'more than one'} published line")
    try:
        when = grammar.parse_time(published[0])
    except ValueError as error:
        raise DocumentError(f"{name}: published {error}") from None
    ignored: list[str] = []
    ratelimits = _once(values.get(RATELIMITS, []), RATELIMITS, _ratelimits, ignored)
    fd_exhausted = _once(values.get(FD_EXHAUSTED, []), FD_EXHAUSTED, _fd_exhausted, ignored)
    for keyword, moment in ((RATELIMITS, ratelimits.at if ratelimits else None), (FD_EXHAUSTED, fd_exhausted)):
        if moment is not None and moment > when:  # tor writes an hour already past: a later one is not tor's
            ignored.append(f"{keyword} time {moment} is after the document's published {when}")
            ratelimits, fd_exhausted = (None, fd_exhausted) if keyword == RATELIMITS else (ratelimits, None)
    return ExtraInfo(first[1], first[2].upper(), when, digest, ratelimits, fd_exhausted, tuple(ignored))


def parse_extra_infos(raw: bytes) -> tuple[list[ExtraInfo], list[str]]:
    """Every document of a reply (``/tor/extra/d/...``, a cached-extrainfo file, a CollecTor file).

    Returns the documents read and, for each that could not be, its reason.
    Raises DocumentError only when ``raw`` holds text but no document at all
    (an error page, another kind of document).
    """
    starts = [match.start() + (raw[match.start():match.start() + 1] == b"\n") for match in _START.finditer(raw)]
    if not starts:
        if raw.strip():
            raise DocumentError(f"not extra-info documents (begins {raw[:40]!r})")
        return [], []
    documents, problems = [], []
    for start, end in zip(starts, [*starts[1:], len(raw)]):
        try:
            documents.append(parse_extra_info(raw[start:end]))
        except DocumentError as error:
            problems.append(str(error))
    return documents, problems


def _once(values: list[str], keyword: str, read, ignored: list[str]):
    """The one line's reading, or None with the reason in ``ignored`` (a second line: neither counts)."""
    if not values:
        return None
    if len(values) > 1:
        ignored.append(f"a second {keyword} line (dir-spec: at most once)")
        return None
    try:
        return read(values[0])
    except ValueError as error:
        ignored.append(f"{keyword}: {error}")
        return None


def _version_and_time(match: re.Match | None, keyword: str, value: str):
    if match is None:
        raise ValueError(f"{(keyword + ' ' + value)[:80]!r} does not have the line's fields")
    if not 1 <= int(match[1]) <= grammar.INT_MAX:
        raise ValueError(f"version {match[1]} is not from 1 to {grammar.INT_MAX}")
    return grammar.parse_time(match[2])


def _ratelimits(value: str) -> RateLimitOverload:
    match = _RATELIMITS.fullmatch(value)
    if match is None:
        raise ValueError(f"{(RATELIMITS + ' ' + value)[:80]!r} does not have the line's fields")
    at = _version_and_time(match, RATELIMITS, value)
    rate, burst, read, write = (grammar.number(match[i], 0, grammar.UINT64_MAX) for i in range(3, 7))
    return RateLimitOverload(at, rate, burst, read, write)


def _fd_exhausted(value: str):
    return _version_and_time(_FD_EXHAUSTED.fullmatch(value), FD_EXHAUSTED, value)


#: In server descriptors: the lines that say which relay, when, and which extra-info (``opt`` is an old prefix).
_NAMING = re.compile(rb"^(?:opt )?(router|fingerprint|published|extra-info-digest) ([^\n]*)$", re.M)


def named_digests(raw: bytes) -> dict[str, str]:
    """Fingerprint -> the ``extra-info-digest`` (SHA-1, upper-case hex) its newest server descriptor names.

    A scan of the raw server descriptors (``/tor/server/all``) for four
    lines, so the descriptor parser stays as it is; descriptors without the
    line (or with a malformed one) name nothing. Never raises.
    """
    newest: dict[str, tuple[bytes, str]] = {}
    fingerprint = published = digest = None

    def close() -> None:
        if fingerprint is not None and digest is not None and published is not None:
            known = newest.get(fingerprint)
            if known is None or published > known[0]:
                newest[fingerprint] = (published, digest)

    for keyword, value in _NAMING.findall(raw):
        if keyword == b"router":
            close()
            fingerprint = published = digest = None
        elif keyword == b"fingerprint":
            hexed = value.replace(b" ", b"").decode("ascii", "replace")
            fingerprint = hexed.upper() if grammar.is_fingerprint(hexed) else None
        elif keyword == b"published":
            published = value  # YYYY-MM-DD HH:MM:SS sorts as the time
        else:
            first = value.split(b" ", 1)[0].decode("ascii", "replace")
            digest = first.upper() if grammar.is_fingerprint(first) else None  # 40 hex digits, as a fingerprint
    close()
    return {fingerprint: digest for fingerprint, (_, digest) in newest.items()}
