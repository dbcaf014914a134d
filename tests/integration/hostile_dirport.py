"""A small DirPort of our own on 127.0.0.1 that misbehaves on purpose.

Each server plays one authority with one behaviour; the healthy one serves
real 2022 documents. Used for the faults a real tor will not produce on
demand (garbage, truncation, wrong document types, hangs, trickling).

The ``trickle-*`` behaviours never end on their own: ``trickle-headers``
sends its status line and headers one byte per second, ``trickle-body``
sends its headers at once and then the body one byte per second, and
``trickle-deflate`` sends a deflate body of empty blocks, a few bytes at a
time, that never inflates to a single byte (so a client that waits for
decoded data before looking at the clock waits forever).
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import chain, repeat

from tests.conftest import read_data

BEHAVIOURS = ("healthy", "busy", "hang", "trickle", "garbage", "truncated", "wrong-type", "short",
              "trickle-headers", "trickle-body", "trickle-deflate")
#: What trickle-headers sends, a byte a second: a status line and one header line that never ends.
_ENDLESS_HEADERS = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nX-Trickle: "
#: A zlib stream header, then empty non-final stored blocks (BFINAL=0, LEN=0, NLEN=0xffff): valid, and empty.
_ZLIB_HEADER, _EMPTY_DEFLATE_BLOCK = b"\x78\x01", b"\x00\x00\x00\xff\xff"


def _documents() -> dict[str, bytes]:
    consensus = read_data("2022-11-19-10-00-00-consensus.xz")
    return {
        "/tor/status-vote/current/consensus": consensus,
        "/tor/status-vote/current/consensus-microdesc": read_data("2022-11-19-10-00-00-consensus-microdesc.xz"),
        "/tor/status-vote/current/authority": read_data("2017-07-17-17-00-00-vote-cropped"),
        "/tor/keys/all": read_data("2022-11-certs"),
        "/tor/server/all": read_data("server-descriptors-2"),
    }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        server: HostileDirPort = self.server.owner
        server.requests.append(self.path)
        behaviour = server.behaviour
        if behaviour == "busy":
            return self._reply(503, b"", reason="Directory busy, try again later")
        if behaviour == "hang":
            server.stopping.wait(60)
            return
        if behaviour.startswith("trickle-"):
            return self._trickle_forever(behaviour)
        body = server.documents.get(self.path)
        if body is None:
            return self._reply(404, b"", reason="Not found")
        if behaviour == "garbage":
            body = bytes(range(256)) * 40
        elif behaviour == "truncated" and self.path.endswith("/consensus"):
            body = body[: len(body) // 3]
        elif behaviour == "wrong-type":
            body = {"/tor/status-vote/current/consensus":
                    server.documents["/tor/status-vote/current/consensus-microdesc"],
                    "/tor/status-vote/current/authority": server.documents["/tor/status-vote/current/consensus"],
                    }.get(self.path, server.documents["/tor/server/all"])
        if behaviour == "trickle":
            return self._trickle(body)
        if behaviour == "short":  # promises more than it sends, then hangs up
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 5000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        return self._reply(200, body)

    def _reply(self, status: int, body: bytes, reason: str | None = None):
        self.send_response(status, reason)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, body: bytes):
        self.send_response(200)
        self.end_headers()
        try:
            for offset in range(0, len(body), 100):
                if self.server.owner.stopping.is_set():
                    return
                self.wfile.write(body[offset:offset + 100])
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:  # the client cut it off, as it should
            return

    def _trickle_forever(self, behaviour: str):
        """Writes until the client goes away or the server stops; never finishes the reply."""
        stopping = self.server.owner.stopping
        if behaviour == "trickle-headers":
            head, pieces, pause = b"", chain((bytes([b]) for b in _ENDLESS_HEADERS), repeat(b"a")), 1.0
        elif behaviour == "trickle-body":
            head, pieces, pause = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n", repeat(b"n"), 1.0
        else:
            head = b"HTTP/1.0 200 OK\r\nContent-Encoding: deflate\r\n\r\n" + _ZLIB_HEADER
            pieces, pause = repeat(_EMPTY_DEFLATE_BLOCK), 0.2
        try:
            for piece in chain([head], pieces):
                self.wfile.write(piece)
                self.wfile.flush()
                if stopping.wait(pause):
                    return
        except OSError:  # the client gave up: that is the point
            return


class HostileDirPort:
    """Serves one behaviour on 127.0.0.1:<port> in a background thread."""

    def __init__(self, behaviour: str):
        assert behaviour in BEHAVIOURS, behaviour
        self.behaviour = behaviour
        self.documents = _documents()
        self.requests: list[str] = []
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.owner = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> HostileDirPort:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()


def refused_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


class UnansweredPort:
    """A loopback port whose connects never complete: its listener never accepts and its backlog is full.

    The kernel then drops every further SYN, as a firewall that silently
    drops packets would (an ORPort probe's worst case).
    """

    def __enter__(self) -> UnansweredPort:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=0)
        self.port = self._listener.getsockname()[1]
        self._filler = socket.create_connection(("127.0.0.1", self.port))
        return self

    def __exit__(self, *exc) -> None:
        self._filler.close()
        self._listener.close()
