"""The only module that talks to directory authorities' DirPorts.

One GET per (authority, document), bounded by the cycle's overall deadline,
turned into a FetchRecord whatever happens: refused, hung, HTTP error or a
truncated body are all recorded, never raised. We use ``requests`` rather
than ``stem.descriptor.remote``: stem's Query hides the HTTP status, the
bytes on the wire and the reply headers of failed requests, and bounds each
query rather than the whole cycle. stem still parses everything we download.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import requests
import urllib3

from agent import __version__
from agent.model.authorities import Authority
from agent.model.errors import DocumentTooLarge
from agent.model.snapshot import DocKind, FetchRecord, Outcome

PATHS = {
    DocKind.CONSENSUS: "/tor/status-vote/current/consensus",
    DocKind.MICRODESC_CONSENSUS: "/tor/status-vote/current/consensus-microdesc",
    DocKind.VOTE: "/tor/status-vote/current/authority",
    DocKind.KEY_CERTIFICATES: "/tor/keys/all",
    DocKind.BANDWIDTH_FILE: "/tor/status-vote/next/bandwidth",
    DocKind.SERVER_DESCRIPTORS: "/tor/server/all",
}

_CHUNK_BYTES = 64 * 1024
#: All server descriptors of the live network are ~20 MiB uncompressed.
MAX_DOCUMENT_BYTES = 128 * 2**20


class Deadline:
    """One overall time budget, shared by every fetch of a cycle (monotonic clock).

    Setting ``cancel`` (the agent is shutting down) ends the budget at once.
    """

    def __init__(self, seconds: float, cancel: threading.Event | None = None):
        self.seconds = seconds
        self.cancel = cancel
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        if self.cancel is not None and self.cancel.is_set():
            return 0.0
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


@dataclass
class Download:
    """A FetchRecord plus the document bytes when the download succeeded."""

    record: FetchRecord
    body: bytes | None = None


def new_session() -> requests.Session:
    """A session that never reads proxies or netrc from the environment."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update({
        "User-Agent": f"allium-agent/{__version__}",
        # tor compresses when asked (dir-spec 6.1); urllib3 inflates these two.
        "Accept-Encoding": "deflate, gzip",
    })
    return session


def download(session: requests.Session, authority: Authority, kind: DocKind,
             deadline: Deadline, timeout: float, path: str | None = None,
             head_bytes: int | None = None) -> Download:
    """GETs one document from one authority; every failure ends up in the record.

    With ``head_bytes`` only the start of the body is read and the connection
    closed: enough to see that an authority holds a document without
    downloading all of it.
    """
    url = authority.base_url + (path or PATHS[kind])
    record = FetchRecord(authority.nickname, kind, url, started_at=datetime.now(timezone.utc))
    budget = min(timeout, deadline.remaining())
    if budget <= 0:
        record.outcome, record.error = Outcome.SKIPPED, "not attempted: the cycle's deadline was reached"
        return Download(record)
    started = time.monotonic()
    try:
        with session.get(url, timeout=budget, stream=True, allow_redirects=False) as response:
            answered = time.monotonic()
            record.status = response.status_code
            record.clock_skew_seconds = _clock_skew(response.headers.get("Date"), started, answered)
            body = _read_body(response, deadline, started + budget, head_bytes)
            record.wire_bytes = response.raw.tell()
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError, DocumentTooLarge) as error:
        # read1() raises urllib3's own errors (truncated body, stalled read, bad gzip), not requests'.
        record.latency_seconds = time.monotonic() - started
        record.error = _describe_failure(error, record.latency_seconds)
        return Download(record)
    record.latency_seconds = time.monotonic() - started
    record.bytes = len(body)
    return _judge_status(record, response.reason, body)


def _read_body(response: requests.Response, deadline: Deadline, give_up_at: float,
               head_bytes: int | None = None) -> bytes:
    """Reads the body, checking the clock after every socket read.

    ``read1`` returns whatever one read brings, so a server that trickles a
    few bytes at a time is cut off at the deadline instead of holding the
    worker until a full chunk has arrived (``iter_content`` would block).
    """
    chunks, size = [], 0
    while True:
        chunk = response.raw.read1(_CHUNK_BYTES, decode_content=True)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if head_bytes is not None and size >= head_bytes:
            return b"".join(chunks)[:head_bytes]
        if size > MAX_DOCUMENT_BYTES:
            raise DocumentTooLarge(f"document larger than {MAX_DOCUMENT_BYTES // 2**20} MiB")
        if deadline.expired() or time.monotonic() > give_up_at:
            raise TimeoutError


def probe_tcp(host: str, port: int, deadline: Deadline, timeout: float) -> tuple[float | None, str | None]:
    """Opens and closes a TCP connection, like DocTor's ORPort check (no TLS handshake).

    Returns (seconds to connect, None) or (None, why it failed).
    """
    budget = min(timeout, deadline.remaining())
    if budget <= 0:
        return None, "not attempted: the cycle's deadline was reached"
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=budget):
            return time.monotonic() - started, None
    except OSError as error:
        return None, _describe_failure(error, time.monotonic() - started)


def _judge_status(record: FetchRecord, reason: str, body: bytes) -> Download:
    if record.status == 200:
        record.outcome = Outcome.OK
        record.digest = hashlib.sha256(body).hexdigest()
        return Download(record, body)
    if record.status == 404 and record.kind is DocKind.BANDWIDTH_FILE:
        # Only bandwidth authorities serve a bandwidth file; 404 elsewhere is normal.
        record.outcome = Outcome.ABSENT
        return Download(record)
    record.error = f"HTTP {record.status} {reason or ''}".strip()
    return Download(record)


def _clock_skew(date_header: str | None, started: float, answered: float) -> float | None:
    """Authority clock minus ours, taken at the middle of the request.

    tor writes the Date header when it starts answering, so we compare it with
    the midpoint of request and first byte. The header truncates to whole
    seconds, so its true time is on average half a second later: adding 0.5 s
    removes that bias (a steady -0.5 s otherwise).
    """
    if not date_header:
        return None
    try:
        their_time = parsedate_to_datetime(date_header).timestamp() + 0.5
    except (TypeError, ValueError):
        return None
    our_time = time.time() - (time.monotonic() - (started + answered) / 2)
    return round(their_time - our_time, 3)


def _describe_failure(error: Exception, elapsed: float) -> str:
    """A short, stable description of why a download failed."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, DocumentTooLarge):
        return str(error)
    if isinstance(error, (TimeoutError, requests.exceptions.Timeout)) or "timed out" in text:
        return f"timed out after {elapsed:.1f} s"
    for marker, message in (
        ("Connection refused", "connection refused"),
        ("Connection reset", "connection reset by peer"),
        ("RemoteDisconnected", "closed the connection without replying"),
        ("IncompleteRead", "closed the connection mid-document (truncated)"),
        ("ProtocolError", "the connection broke mid-document"),
        ("DecodeError", "the compressed body does not decode"),
    ):
        if marker in text:
            return message
    return f"download failed: {text[:200]}"
