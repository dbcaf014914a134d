"""One deadline over a whole HTTP request made with requests: connect, TLS, send, status, headers, answer.

requests' ``timeout`` bounds each socket operation, not the request: a
receiver that drips its status line and headers a byte just inside the
timeout holds the sender for as long as it likes (http.client accepts 100
header lines of 64 KB each). ``deadline_session`` gives a one-request
session whose connections register a duplicate of their socket with the
``Deadline`` active in the calling thread; when the deadline passes, a timer
shuts those sockets down, so the blocked read returns and requests raises.
A duplicate descriptor is taken because TLS wrapping detaches the original
socket object, while ``shutdown`` acts on the connection the duplicate
shares. Each request gets a fresh session, so no pooled connection escapes
its deadline.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

_active = threading.local()


class Deadline:
    """The sockets one request opened, shut down when ``seconds`` have passed (``expired`` then says so)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self.expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        _active.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _active.deadline = None
        with self._lock:
            for sock in self._sockets:
                sock.close()
            self._sockets.clear()

    def track(self, sock: socket.socket) -> None:
        """Follows a newly connected socket (shut at once if the deadline already passed)."""
        duplicate = sock.dup()
        with self._lock:
            self._sockets.append(duplicate)
            if self.expired:
                _shut(duplicate)

    def expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed by the other side or by the request itself
        pass


def _track(sock: socket.socket) -> None:
    deadline = getattr(_active, "deadline", None)
    if deadline is not None:
        deadline.track(sock)


def deadline_session() -> Any:
    """A requests.Session whose HTTP and HTTPS connections are followed by the thread's active Deadline.

    Proxies and .netrc from the environment are ignored (``trust_env``): the URL is the destination.
    """
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class FollowedHTTP(HTTPConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            _track(sock)
            return sock

    class FollowedHTTPS(HTTPSConnection):
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            _track(sock)
            return sock

    class FollowedHTTPPool(HTTPConnectionPool):
        ConnectionCls = FollowedHTTP

    class FollowedHTTPSPool(HTTPSConnectionPool):
        ConnectionCls = FollowedHTTPS

    class FollowedAdapter(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            super().init_poolmanager(*args, **kwargs)
            self.poolmanager.pool_classes_by_scheme = {"http": FollowedHTTPPool, "https": FollowedHTTPSPool}

    session = requests.Session()
    session.trust_env = False
    adapter = FollowedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session
