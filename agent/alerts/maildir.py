"""Mail into a local Maildir: alerts for people without an SMTP server (and for ``allium-agent demo``).

Each message is written as Maildir delivery prescribes: into ``tmp/``,
fsync'd, then renamed into ``new/``, where any mail reader (mutt -f DIR,
neomutt, Evolution, ``python -m mailbox``) finds it. The file name comes from
the delivery token and the target, so a retry of the same message replaces
its own file instead of adding a second copy: delivery is exactly once.
The message itself is the one SMTP would carry (``agent.alerts.email.compose``).
"""

from __future__ import annotations

import email.policy
import hashlib
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from agent.alerts.email import compose, mailbox, sender_address
from agent.alerts.render import Message
from agent.model.errors import DeliveryError


@dataclass(frozen=True)
class MaildirConfig:
    """The ``maildir`` section: a local mail folder alerts are delivered into."""

    directory: str | None
    sender: str

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("directory", None, "optional_path"),
        ("sender", "allium-agent@localhost", "name"),
    )


class MaildirSender:
    """The ``maildir`` notifier (see ``agent.alerts.notifiers``); its targets are the addresses mail is to."""

    target_noun = "maildir address"

    Settings = MaildirConfig

    @classmethod
    def from_config(cls, settings: MaildirConfig, environ: Mapping[str, str]) -> MaildirSender | None:
        """The sender for the ``maildir`` section; None without a directory."""
        return cls(settings) if settings.directory else None

    def __init__(self, settings: MaildirConfig):
        self.settings = settings
        self.root = Path(settings.directory or ".")

    def send(self, target: str, message: Message, token: str) -> None:
        """Delivers one message into ``new/``, or raises DeliveryError (permanent for a bad address)."""
        address, international = mailbox(target)
        try:
            mail = compose(sender_address(self.settings.sender)[0], address, message, token)
            data = mail.as_bytes(policy=email.policy.SMTPUTF8 if international else email.policy.SMTP)
        except DeliveryError:
            raise
        except Exception as error:  # building is pure: what fails once fails every time
            raise DeliveryError(f"the message cannot be built: {type(error).__name__}", permanent=True) from None
        name = f"{_unique(token, address)}.{socket.gethostname().replace('/', '_').replace(':', '_')}"
        try:
            self._deliver(name, data)
        except OSError as error:  # a full disk or a missing permission: retried later
            raise DeliveryError(f"maildir {self.root}: {error.strerror or error}") from None

    def _deliver(self, name: str, data: bytes) -> None:
        for folder in ("tmp", "new", "cur"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        temporary = self.root / "tmp" / name
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.root / "new" / name)
        directory = os.open(self.root / "new", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _unique(token: str, address: str) -> str:
    """A Maildir base name that is the same on every try of one message to one address."""
    return hashlib.sha256(f"{token}\0{address}".encode(errors="surrogatepass")).hexdigest()[:32]
