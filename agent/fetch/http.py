"""The only module that talks to directory authorities' DirPorts.

One GET per (authority, document), bounded by the cycle's overall deadline,
turned into a FetchRecord whatever happens: refused, hung, HTTP error or a
truncated body are all recorded, never raised. We use ``requests`` rather
than ``stem.descriptor.remote``: stem's Query hides the HTTP status, the
bytes on the wire and the reply headers of failed requests, and bounds each
query rather than the whole cycle. stem still parses everything we download.

Every socket operation (connect, each send, each receive, wherever urllib3
or http.client loops) waits at most until the sooner of the download's
timeout and the cycle's deadline, in slices short enough to notice the
deadline's ``cancel``: a peer that trickles one byte at a time cannot hold a
worker past the deadline.
"""

from __future__ import annotations

import errno
import hashlib
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

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
    DocKind.EXTRA_INFOS: "/tor/extra/d/",  # + the digests, "+"-separated (dir-spec appendix B)
}

_CHUNK_BYTES = 64 * 1024
#: All server descriptors of the live network are ~20 MiB uncompressed.
MAX_DOCUMENT_BYTES = 128 * 2**20
#: The longest one wait on a socket or the futures lasts before the deadline (and its ``cancel``) is looked at again.
POLL_SECONDS = 0.25


class Deadline:
    """One overall time budget, shared by every fetch of a cycle (monotonic clock).

    Setting ``cancel`` (the agent is shutting down) ends the budget at once.
    """

    def __init__(self, seconds: float, cancel: threading.Event | None = None):
        self.seconds = seconds
        self.cancel = cancel
        self._end = time.monotonic() + seconds

    def cancelled(self) -> bool:
        """True once the agent asked to stop (the budget then is over, whatever the clock says)."""
        return self.cancel is not None and self.cancel.is_set()

    def remaining(self) -> float:
        if self.cancelled():
            return 0.0
        return max(0.0, self._end - time.monotonic())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


class _Bound:
    """How long the socket operations of the current download may still wait.

    The sooner of the download's own timeout and the cycle's deadline;
    re-armed for every download of a session. ``spent`` says which ended it
    ("timeout", "deadline" or "cancel"), for the record.
    """

    def __init__(self) -> None:
        self.deadline = Deadline(0.0)
        self.give_up_at = 0.0
        self.spent: str | None = None

    def arm(self, deadline: Deadline, timeout: float) -> _Bound:
        self.deadline, self.give_up_at, self.spent = deadline, time.monotonic() + timeout, None
        return self

    def slice(self) -> float:
        """Seconds the next wait may last; raises TimeoutError once the bound is spent."""
        own, cycle = self.give_up_at - time.monotonic(), self.deadline.remaining()
        if min(own, cycle) <= 0:
            self.spent = "cancel" if self.deadline.cancelled() else "deadline" if cycle <= 0 else "timeout"
            raise TimeoutError("timed out")
        return min(own, cycle, POLL_SECONDS)


class _BoundedSocket(socket.socket):
    """A TCP socket whose every send and receive ends by its ``bound``, whoever calls it."""

    bound: _Bound

    def recv_into(self, buffer, nbytes=0, flags=0):
        return self._within_bound(super().recv_into, buffer, nbytes, flags)

    def recv(self, bufsize, flags=0):
        return self._within_bound(super().recv, bufsize, flags)

    def send(self, data, flags=0):
        return self._within_bound(super().send, data, flags)

    def sendall(self, data, flags=0):
        # socket.sendall cannot be resumed after a timeout (part may have gone), so send piece by piece.
        view = memoryview(data).cast("B")
        while view:
            view = view[self.send(view, flags):]

    def _within_bound(self, operation, *args):
        while True:
            super().settimeout(self.bound.slice())
            try:
                return operation(*args)
            except TimeoutError:
                continue  # one slice passed without data: the bound decides whether to wait on


def _connect(host: str, port: int, bound: _Bound, options=()) -> _BoundedSocket:
    """Opens a TCP connection whose connect, like every later send and receive, ends by ``bound``."""
    error: OSError | None = None
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = _BoundedSocket(family, kind, proto)
        sock.bound = bound
        try:
            for option in options:
                sock.setsockopt(*option)
            sock.setblocking(False)
            code = sock.connect_ex(address)
            if code in (errno.EINPROGRESS, errno.EWOULDBLOCK):
                with selectors.DefaultSelector() as selector:
                    selector.register(sock, selectors.EVENT_WRITE)
                    while not selector.select(bound.slice()):
                        pass
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                raise OSError(code, os.strerror(code))
            return sock
        except BaseException as failure:
            sock.close()
            if isinstance(failure, TimeoutError) or not isinstance(failure, OSError):
                raise
            error = failure
    raise error or OSError(f"no address for {host}")


class _BoundedConnection(HTTPConnection):
    """urllib3's connection on a _BoundedSocket; ``bound`` comes from the session's adapter."""

    def __init__(self, *args, bound: _Bound, **kwargs):
        super().__init__(*args, **kwargs)
        self.bound = bound

    def _new_conn(self) -> socket.socket:
        # The same mapping of errors as urllib3's own _new_conn.
        try:
            return _connect(self.host, self.port, self.bound, self.socket_options or ())
        except socket.gaierror as error:
            raise NameResolutionError(self.host, self, error) from error
        except TimeoutError as error:
            raise ConnectTimeoutError(self, f"Connection to {self.host} timed out") from error
        except OSError as error:
            raise NewConnectionError(self, f"Failed to establish a new connection: {error}") from error


class _BoundedPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _BoundedConnection


class _BoundedAdapter(HTTPAdapter):
    """Plain-HTTP adapter whose connections wait no longer than the session's current download may."""

    def __init__(self) -> None:
        self.bound = _Bound()
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {**self.poolmanager.pool_classes_by_scheme, "http": _BoundedPool}

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        pool = super().get_connection_with_tls_context(request, verify, proxies, cert)
        pool.conn_kw["bound"] = self.bound
        return pool


@dataclass
class Download:
    """A FetchRecord plus the document bytes when the download succeeded."""

    record: FetchRecord
    body: bytes | None = None


def new_session() -> requests.Session:
    """A session for one thread: never reads proxies or netrc from the environment, and every wait is bounded."""
    session = requests.Session()
    session.trust_env = False
    session.headers.update({
        "User-Agent": f"allium-agent/{__version__}",
        # tor compresses when asked (dir-spec 6.1); urllib3 inflates these two.
        "Accept-Encoding": "deflate, gzip",
    })
    session.mount("http://", _BoundedAdapter())
    return session


def _bound_of(session: requests.Session, url: str) -> _Bound:
    """The bound of the session's adapter for ``url``; a session from elsewhere gets a bounded adapter first."""
    adapter = session.get_adapter(url)
    if not isinstance(adapter, _BoundedAdapter):
        adapter = _BoundedAdapter()
        session.mount("http://", adapter)
    return adapter.bound


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
        record.outcome, record.error = Outcome.SKIPPED, f"not attempted: {_why_over(deadline)}"
        return Download(record)
    bound = _bound_of(session, url).arm(deadline, timeout)
    started = time.monotonic()
    try:
        with session.get(url, timeout=budget, stream=True, allow_redirects=False) as response:
            answered = time.monotonic()
            record.status = response.status_code
            record.clock_skew_seconds = _clock_skew(response.headers.get("Date"), started, answered)
            body = _read_body(response, head_bytes)
            record.wire_bytes = response.raw.tell()
    except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, OSError, DocumentTooLarge) as error:
        # read1() raises urllib3's own errors (truncated body, stalled read, bad gzip), not requests'.
        record.latency_seconds = time.monotonic() - started
        record.error = _describe_failure(error, record.latency_seconds, bound.spent)
        return Download(record)
    record.latency_seconds = time.monotonic() - started
    record.bytes = len(body)
    return _judge_status(record, response.reason, body)


def _read_body(response: requests.Response, head_bytes: int | None = None) -> bytes:
    """Reads the body as it comes; the socket's bound ends it at the timeout or deadline.

    ``read1`` returns whatever one read brings rather than waiting for a
    full chunk, so ``head_bytes`` and the size cap are checked as it grows.
    """
    chunks: list[bytes] = []
    size = 0
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


def probe_tcp(host: str, port: int, deadline: Deadline, timeout: float) -> tuple[float | None, str | None]:
    """Opens and closes a TCP connection, like DocTor's ORPort check (no TLS handshake).

    Returns (seconds to connect, None) or (None, why it failed).
    """
    if min(timeout, deadline.remaining()) <= 0:
        return None, f"not attempted: {_why_over(deadline)}"
    bound = _Bound().arm(deadline, timeout)
    started = time.monotonic()
    try:
        _connect(host, port, bound).close()
        return time.monotonic() - started, None
    except OSError as error:
        return None, _describe_failure(error, time.monotonic() - started, bound.spent)


def _judge_status(record: FetchRecord, reason: str, body: bytes) -> Download:
    if record.status == 200:
        record.outcome = Outcome.OK
        record.digest = hashlib.sha256(body).hexdigest()
        return Download(record, body)
    if record.status == 404 and record.kind in (DocKind.BANDWIDTH_FILE, DocKind.EXTRA_INFOS):
        # Only bandwidth authorities serve a bandwidth file; 404 elsewhere is normal. Asked for extra-infos by
        # digest, tor answers 404 when it holds none of them.
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


def _why_over(deadline: Deadline) -> str:
    """Why a deadline with nothing left is over, for a record's error."""
    return "the agent is stopping" if deadline.cancelled() else "the cycle's deadline was reached"


def _describe_failure(error: Exception, elapsed: float, spent: str | None = None) -> str:
    """A short, stable description of why a download failed; ``spent`` names the bound that ended it."""
    if spent == "cancel":
        return f"cancelled after {elapsed:.1f} s: the agent is stopping"
    if spent == "deadline":
        return f"timed out after {elapsed:.1f} s: the cycle's deadline was reached"
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, DocumentTooLarge):
        return str(error)
    if spent or isinstance(error, (TimeoutError, requests.exceptions.Timeout)) or "timed out" in text:
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
