"""A receiver that drips its answer cannot hold the webhook sender: one deadline covers the whole request.

Each byte of the drip arrives well inside the per-read timeout, so before the deadline the sender waited
for as long as the receiver kept dripping (here 60 s; http.client would take 100 header lines of 64 KB).
"""

import socket
import ssl
import threading
import time

import pytest
import trustme

from agent.alerts.deadline import Deadline, deadline_session
from agent.model.errors import DeliveryError
from tests.unit.test_webhook import message, sender

DRIP_SECONDS = 60.0


class Dripper:
    """Reads a request, then sends a status line and one header byte every 0.2 s for DRIP_SECONDS."""

    def __init__(self, context: ssl.SSLContext | None = None):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.context = context
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        raw, _ = self.listener.accept()
        try:
            with self.context.wrap_socket(raw, server_side=True) if self.context else raw as conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                ends = time.monotonic() + DRIP_SECONDS
                while time.monotonic() < ends and not self.stopped.is_set():
                    conn.sendall(b"a")
                    time.sleep(0.2)
        except OSError:  # the sender gave up on us: what it should do
            pass

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()


def test_a_dripping_receiver_is_cut_at_the_deadline():
    dripper = Dripper()
    try:
        notifier = sender(f"http://127.0.0.1:{dripper.port}/hook", timeout=1.0, deadline_seconds=1.5)
        started = time.monotonic()
        with pytest.raises(DeliveryError) as error:
            notifier.send("ops", message(), "t")
        waited = time.monotonic() - started
    finally:
        dripper.close()
    assert str(error.value) == "webhook ops: no answer within the 1.5 s deadline" and not error.value.permanent
    assert waited < DRIP_SECONDS / 3  # cut at the deadline, not when the drip ends


def test_the_deadline_also_cuts_a_tls_connection(tmp_path):
    """TLS wrapping detaches the socket the connection opened; the deadline holds a duplicate of it."""
    authority = trustme.CA()
    server = authority.issue_cert("127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.configure_cert(context)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    dripper = Dripper(context)
    try:
        started = time.monotonic()
        with deadline_session() as session, Deadline(1.5) as deadline:
            try:  # the cut answer may raise or may parse with its headers ended at the cut
                session.post(f"https://127.0.0.1:{dripper.port}/hook", data=b"{}", timeout=1.0,
                             verify=str(tmp_path / "ca.pem")).close()
            except OSError:  # requests' errors are OSErrors
                pass
        waited = time.monotonic() - started
    finally:
        dripper.close()
    assert deadline.expired and waited < DRIP_SECONDS / 3


def test_a_quick_answer_is_untouched_by_the_deadline():
    listener = socket.create_server(("127.0.0.1", 0))

    def answer():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer, daemon=True).start()
    try:
        assert sender(f"http://127.0.0.1:{listener.getsockname()[1]}/hook", deadline_seconds=5).send(
            "ops", message(), "t") == 204
    finally:
        listener.close()
