"""Email over SMTP: STARTTLS, implicit TLS or plain (loopback only), optional login.

Credentials come from the environment variables the config names, never
from the file, and are never logged. The Message-ID is the delivery's
token, so a retried message is recognisably the same message.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, ClassVar

from agent.alerts.render import Message, clean
from agent.model.errors import DeliveryError


@dataclass(frozen=True)
class EmailConfig:
    """The ``email`` section: the SMTP server alerts and confirmations go through."""

    host: str | None
    port: int
    security: str
    sender: str
    username_env: str | None
    password_env: str | None
    timeout_seconds: float
    ca_file: str | None = None

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("host", None, "optional_name"),
        ("port", 587, "positive_int"),
        ("security", "starttls", "security"),
        ("sender", "allium-agent@localhost", "name"),
        ("username_env", None, "optional_env_name"),
        ("password_env", None, "optional_env_name"),
        ("timeout_seconds", 20, "positive_number"),
        ("ca_file", None, "optional_path"),
    )

    def problems(self, section: str) -> list[str]:
        if self.security == "none" and self.host not in (None, "127.0.0.1", "::1", "localhost"):
            return [f"{section}.security: none sends the login and alerts in clear text; only allowed for a "
                    f"server on loopback, not {self.host}"]
        return []


class EmailSender:
    """The ``email`` notifier (see ``agent.alerts.notifiers``)."""

    target_noun = "email address"

    Settings = EmailConfig  # its config section

    @classmethod
    def from_config(cls, settings: EmailConfig, environ: Mapping[str, str]) -> EmailSender | None:
        """The sender for the ``email`` section; None without an SMTP host."""
        return cls(settings, environ) if settings.host else None

    def __init__(self, settings, environ):
        self.settings = settings
        self.username = environ.get(settings.username_env) if settings.username_env else None
        self.password = environ.get(settings.password_env) if settings.password_env else None

    def send(self, target: str, message: Message, token: str) -> None:
        email = self.build(target, message, token)
        try:
            with self._connect() as smtp:
                if self.username:
                    _login(smtp, self.username, self.password or "")
                smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as error:
            code, text = _reply(error.recipients.get(target))
            # 5xx: this address will never take it; 4xx (greylisting, full mailbox): later.
            raise DeliveryError(f"{target} refused: {code} {text}", permanent=code >= 500) from None
        except smtplib.SMTPDataError as error:
            raise DeliveryError(f"SMTP {error.smtp_code} {_decode(error.smtp_error)}",
                                permanent=error.smtp_code >= 500) from None
        except smtplib.SMTPResponseException as error:
            # Login or sender refused: a configuration to fix, not a reason to drop the queue.
            raise DeliveryError(f"SMTP {error.smtp_code} {_decode(error.smtp_error)}") from None
        except (OSError, smtplib.SMTPException) as error:
            raise DeliveryError(f"SMTP server {self.settings.host}:{self.settings.port}: "
                                f"{type(error).__name__}: {error}") from None

    def build(self, target: str, message: Message, token: str) -> EmailMessage:
        email = EmailMessage()
        email["From"] = self.settings.sender
        email["To"] = clean(target, 254)
        email["Subject"] = clean(message.subject)
        email["Date"] = formatdate(usegmt=True)
        email["Message-ID"] = f"<{token}@allium-agent>"
        email["Auto-Submitted"] = "auto-generated"
        for name, value in message.headers.items():
            email[name] = clean(value, 900)
        email.set_content(message.text)
        email.add_alternative(f"<html><body>{message.html}</body></html>", subtype="html")
        return email

    def _connect(self) -> smtplib.SMTP:
        settings = self.settings
        context = ssl.create_default_context(cafile=settings.ca_file)
        if settings.security == "tls":
            return smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout_seconds, context=context)
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_seconds)
        if settings.security == "starttls":
            try:
                smtp.starttls(context=context)
            except Exception:
                smtp.close()
                raise
        return smtp


def _login(smtp: smtplib.SMTP, username: str, password: str) -> None:
    """AUTH PLAIN when offered (one exchange, a clear 535 on a wrong password), else smtplib's choice.

    smtplib's login() goes on to the next mechanism after a refusal, and some
    servers then wait for a LOGIN continuation until the connection times out.
    """
    smtp.ehlo_or_helo_if_needed()
    if "PLAIN" in smtp.esmtp_features.get("auth", "").upper().split():
        smtp.user, smtp.password = username, password
        smtp.auth("PLAIN", smtp.auth_plain)
    else:
        smtp.login(username, password)


def _reply(reply) -> tuple[int, str]:
    if not reply:
        return 550, "refused"
    code, text = reply
    return code, _decode(text)


def _decode(text) -> str:
    return text.decode(errors="replace") if isinstance(text, bytes) else str(text)
