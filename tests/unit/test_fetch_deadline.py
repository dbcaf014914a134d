"""Every socket operation of a fetch ends by the cycle's deadline, and its cancel ends it at once.

Each peer here is a socket server of our own on 127.0.0.1 that keeps a
connection alive by trickling bytes (each one well inside any per-operation
timeout) or by never answering at all. Every call runs under a hang guard
(the deadline, or the moment of the cancel, plus a generous margin), and
prints how long it took. The last tests run a fresh interpreter: a worker
stuck for good must not keep it alive, nor may the daemon's shutdown
overrun its grace time.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from agent.config.loader import load_config
from agent.fetch.crosscheck import vote_holdings
from agent.fetch.http import Deadline, download, new_session, probe_tcp
from agent.loop.collect import collect
from agent.model.authorities import Authority
from agent.model.snapshot import DocKind, Outcome

ROOT = Path(__file__).parents[2]
#: The margin of every hang guard: far more than any of these calls may need.
MARGIN = 10.0
#: A trickling peer's pause between bytes: far below any timeout used here.
PAUSE = 0.5
HEADERS = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nX-Trickle: " + b"a" * 10_000


class Peer:
    """A TCP server on 127.0.0.1 whose every connection gets ``behaviour`` (headers, body, deflate, silent)."""

    def __init__(self, behaviour: str, backlog: int = 16):
        self.behaviour, self.stopping = behaviour, threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port = self.listener.getsockname()[1]
        self.connections = 0

    def __enter__(self) -> Peer:
        if self.behaviour != "unaccepted":
            threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.listener.close()

    def authority(self, name: str = "peer") -> Authority:
        return Authority(name, "A" * 40, "127.0.0.1", self.port)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            try:
                connection.recv(4096)
                for piece in self._pieces():
                    connection.sendall(piece)
                    if self.stopping.wait(PAUSE):
                        return
            except OSError:
                return

    def _pieces(self):
        if self.behaviour == "headers":  # status line and headers, one byte at a time
            yield from (bytes([b]) for b in HEADERS)
        elif self.behaviour == "body":  # headers at once, then the body one byte at a time
            yield b"HTTP/1.0 200 OK\r\n\r\n"
            while True:
                yield b"n"
        elif self.behaviour == "deflate":  # a deflate body of empty stored blocks: inflates to nothing, ever
            yield b"HTTP/1.0 200 OK\r\nContent-Encoding: deflate\r\n\r\n\x78\x01"
            while True:
                yield b"\x00\x00\x00\xff\xff"
        else:  # silent: reads the request and never answers
            self.stopping.wait()


def finish_within(guard: float, function, *args):
    """Runs ``function`` in a daemon thread; fails if it is still running after ``guard`` seconds (a hang)."""
    outcome: list = []
    started = time.monotonic()
    worker = threading.Thread(target=lambda: outcome.append(function(*args)), daemon=True)
    worker.start()
    worker.join(guard)
    elapsed = time.monotonic() - started
    assert not worker.is_alive(), f"{function.__name__} still running after {guard:.0f} s"
    print(f"{function.__name__}: {elapsed:.2f} s")
    return outcome[0]


def fetch(authority: Authority, deadline: Deadline, timeout: float):
    with new_session() as session:
        return download(session, authority, DocKind.CONSENSUS, deadline, timeout).record


def cancel_after(seconds: float) -> threading.Event:
    cancel = threading.Event()
    timer = threading.Timer(seconds, cancel.set)
    timer.daemon = True
    timer.start()
    return cancel


@pytest.mark.parametrize("behaviour", ["headers", "body", "deflate"])
def test_a_trickling_peer_is_cut_off_at_the_cycle_deadline(behaviour):
    with Peer(behaviour) as peer:
        record = finish_within(2 + MARGIN, fetch, peer.authority(), Deadline(2), 30)
    assert record.outcome is Outcome.FAILED
    assert "the cycle's deadline was reached" in record.error, record.error
    assert record.status == (None if behaviour == "headers" else 200)


def test_a_trickling_peer_is_cut_off_at_the_download_timeout():
    with Peer("headers") as peer:
        record = finish_within(1.5 + MARGIN, fetch, peer.authority(), Deadline(60), 1.5)
    assert record.outcome is Outcome.FAILED and record.error.startswith("timed out after 1.")
    assert "deadline" not in record.error


@pytest.mark.parametrize("behaviour", ["silent", "headers", "deflate"])
def test_cancel_ends_a_read_at_once(behaviour):
    with Peer(behaviour) as peer:
        record = finish_within(MARGIN, fetch, peer.authority(), Deadline(60, cancel_after(0.5)), 30)
    assert record.outcome is Outcome.FAILED and "the agent is stopping" in record.error, record.error


def test_cancel_ends_a_connect_that_is_never_answered():
    # A listener that never accepts, its backlog already full: the kernel drops further SYNs.
    with Peer("unaccepted", backlog=0) as peer, socket.create_connection(("127.0.0.1", peer.port)):
        latency, error = finish_within(MARGIN, probe_tcp, "127.0.0.1", peer.port, Deadline(60, cancel_after(0.5)), 30)
        assert latency is None and "the agent is stopping" in error
        record = finish_within(MARGIN, fetch, peer.authority(), Deadline(60, cancel_after(0.5)), 30)
        assert record.outcome is Outcome.FAILED and record.status is None and "the agent is stopping" in record.error


def test_an_orport_probe_ends_at_the_cycle_deadline():
    with Peer("unaccepted", backlog=0) as peer, socket.create_connection(("127.0.0.1", peer.port)):
        latency, error = finish_within(1 + MARGIN, probe_tcp, "127.0.0.1", peer.port, Deadline(1), 30)
    assert latency is None and error.endswith("the cycle's deadline was reached")


def test_vote_propagation_stops_waiting_when_cancelled():
    with Peer("silent") as peer, ThreadPoolExecutor(2) as pool:
        holdings = finish_within(MARGIN, vote_holdings, pool, [peer.authority("holder")], {"author": "AB" * 20},
                                 Deadline(60, cancel_after(0.5)), 30)
    assert [(h.holder, h.author, h.held) for h in holdings] == [("holder", "author", None)]


def test_collect_cancelled_mid_fetch_returns_and_leaves_no_worker_behind(tmp_path):
    peers = [Peer(behaviour) for behaviour in ("headers", "body", "deflate", "silent")]
    for peer in peers:
        peer.__enter__()
    try:
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump({
            "vantage": "test", "state_dir": str(tmp_path / "state"),
            "authorities": {"discover": False, "bootstrap": [
                {"nickname": peer.behaviour, "v3ident": f"{n:040X}", "address": "127.0.0.1", "dir_port": peer.port}
                for n, peer in enumerate(peers)]},
            "fetch": {"deadline_seconds": 60, "timeout_seconds": 30},
        }))
        config = load_config(path, environ={})
        cancel = threading.Event()
        timer = threading.Timer(1.5, cancel.set)
        timer.start()
        snapshot = finish_within(1.5 + MARGIN, collect, config, None, cancel)
        workers = finish_within(MARGIN, _fetch_workers_gone)
    finally:
        for peer in peers:
            peer.__exit__()
    assert workers == []
    first = [r for r in snapshot.records if r.kind is DocKind.KEY_CERTIFICATES]
    assert len(first) == 4 and all(r.outcome is Outcome.FAILED for r in first)
    assert all("stopping" in r.error or "deadline" in r.error for r in first), [r.error for r in first]


def _fetch_workers_gone() -> list[str]:
    """Waits until no fetch worker thread is left (the hang guard around it decides how long is too long)."""
    while names := [t.name for t in threading.enumerate() if t.name.startswith(("fetch", "orport"))]:
        time.sleep(0.1)
    return names


def _python_exits_within(guard: float, code: str) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter; fails if the process is still alive after ``guard`` seconds."""
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=guard)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the process was still alive after {guard:.0f} s")
    print(f"exited with {done.returncode} after {time.monotonic() - started:.2f} s")
    return done


def test_a_worker_stuck_forever_does_not_keep_the_process_alive():
    done = _python_exits_within(MARGIN, "import threading\n"
                                        "from agent.fetch.workers import DaemonPool\n"
                                        "DaemonPool(2, 'fetch').submit(threading.Event().wait)\n"
                                        "print('done')\n")
    assert (done.returncode, done.stdout) == (0, "done\n"), done.stderr


def test_the_daemon_ends_a_shutdown_that_overruns_its_grace_time():
    # Stop is requested, then the main thread blocks forever (as a join on a stuck thread would).
    done = _python_exits_within(1 + MARGIN, "import threading\n"
                                            "from agent.loop.scheduler import exit_when_shutdown_overruns\n"
                                            "stop = threading.Event()\n"
                                            "exit_when_shutdown_overruns(stop, 0.0, 7)\n"
                                            "stop.set()\n"
                                            "threading.Event().wait()\n")
    assert done.returncode == 7 and "the shutdown did not finish" in done.stderr, done.stderr
