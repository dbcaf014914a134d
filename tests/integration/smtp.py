"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it accepts."""

from __future__ import annotations

import email
import email.policy
import threading

from aiosmtpd.controller import Controller


class _Keeper:
    def __init__(self):
        self.messages: list = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"


class SmtpServer:
    """Start, stop and start again on the same port (the outage test)."""

    def __init__(self, port: int):
        self.port = port
        self.keeper = _Keeper()
        self.controller: Controller | None = None

    def start(self) -> None:
        self.controller = Controller(self.keeper, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list:
        """(recipients, parsed EmailMessage) in arrival order."""
        with self.keeper.lock:
            return list(self.keeper.messages)

    def to(self, address: str) -> list:
        return [message for recipients, message in self.messages if address in recipients]
