"""The subscription endpoints' real server on 127.0.0.1: idle connections, huge bodies, a clean stop.

The server runs in this process's threads, as in the daemon, so its memory is this process's RSS.
Timeouts here only guard against hangs; nothing is timed.
"""

import socket
import threading

import pytest
import requests

from agent.config.loader import load_config
from agent.testnet.network import _free_ports
from agent.web.subscriptions import WebServer

pytestmark = pytest.mark.integration
HANG_GUARD = 20


def start(tmp_path, settings: str = "") -> tuple[WebServer, str, int]:
    """A started WebServer on a free port, with these extra lines under ``subscriptions``."""
    [port] = _free_ports(1)
    path = tmp_path / "agent.yaml"
    path.write_text(f"state_dir: state\nalerts:\n  public_url: http://127.0.0.1:{port}\n"
                    f"subscriptions:\n  listen: 127.0.0.1:{port}\n{settings}")
    return WebServer(load_config(path, environ={})).start(), f"http://127.0.0.1:{port}", port


@pytest.fixture
def server(tmp_path):
    web, base, port = start(tmp_path)
    yield web, base, port
    web.stop()


def rss_bytes() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def ask_list(base: str) -> int:
    return requests.post(f"{base}/subscriptions", data={"email": "op@example.org"}, timeout=HANG_GUARD).status_code


def test_an_idle_connection_does_not_block_other_requests(server):
    _, base, port = server
    idle = [socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) for _ in range(3)]
    try:
        half = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
        half.sendall(b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")  # then nothing
        assert ask_list(base) == 202  # werkzeug's single thread waited on the first idle socket
        half.close()
    finally:
        for sock in idle:
            sock.close()


def test_an_idle_connection_is_closed_by_the_server(tmp_path):
    web, _, port = start(tmp_path, "  idle_timeout_seconds: 1\n")
    try:
        idle = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
        assert closed_by_server(idle)  # long before the hang guard
    finally:
        web.stop()


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (FIN, or RST for one it had not accepted yet)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def huge_request(port: int, head: bytes, sent: bytes) -> bytes:
    """Sends ``head`` and a few KB of body and returns the server's answer, the rest of the body never sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD) as sock:
        sock.sendall(head + sent)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        return answer


def test_a_declared_gigabyte_is_refused_before_it_is_read(server):
    _, base, port = server
    before = rss_bytes()
    head = (b"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1000000000\r\n\r\n")
    answer = huge_request(port, head, b"email=" + b"a" * 4096)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert rss_bytes() - before < 20 * 2**20
    assert ask_list(base) == 202


def test_a_chunked_body_over_the_limit_is_refused_while_it_arrives(server):
    _, _, port = server
    head = (b"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"8000\r\n" + b"a" * 0x8000 + b"\r\n"  # 32 KiB chunks, never a last one
    answer = huge_request(port, head, chunk * 4)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_stop_is_clean_and_prompt_with_connections_open(tmp_path):
    before = set(threading.enumerate())
    web, base, port = start(tmp_path)
    assert ask_list(base) == 202
    idle = socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
    stopper = threading.Thread(target=web.stop)
    stopper.start()
    stopper.join(HANG_GUARD)
    assert not stopper.is_alive()
    assert closed_by_server(idle)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=HANG_GUARD)
    left = [thread.name for thread in set(threading.enumerate()) - before
            if not isinstance(thread, threading.Timer)]  # the rate limiter's 10 ms expiry timers come and go
    assert left == []  # no thread of the server (loop, workers, mailer) is left


def test_the_limits_are_the_configured_ones(tmp_path):
    web, _, _ = start(tmp_path, "  max_connections: 7\n  max_body_bytes: 2048\n  idle_timeout_seconds: 9\n")
    try:
        adjustments = next(d for d in web.map.values() if hasattr(d, "adj")).adj
        assert (adjustments.connection_limit, adjustments.max_request_body_size, adjustments.channel_timeout) == (
            7, 2048, 9)
        assert not adjustments.clear_untrusted_proxy_headers  # ForwardedFor decides, from the configured proxies
    finally:
        web.stop()
