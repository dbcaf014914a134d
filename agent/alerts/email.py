"""Email over SMTP: STARTTLS, implicit TLS or plain (loopback only), optional login.

Credentials come from the environment variables the config names, never
from the file, and are never logged (nor anything a server says about them:
see ``agent.model.redact``). The Message-ID is the delivery's token, so a
retried message is recognisably the same message.

Whatever reaches a header is made safe here, whatever wrote the outbox row:
the target must be exactly one address (spacing around it is dropped, an
international domain goes out in its ASCII form, a non-ASCII mailbox needs
a server offering SMTPUTF8), every other value is cleaned of line breaks
and bounded, and only the headers the agent sets itself go out. The
envelope recipient is the validated target, never read back from headers.
A message that cannot be addressed or built is refused as permanent: it is
given up with the reason and holds back nothing.
"""

from __future__ import annotations

import email.policy
import hashlib
import re
import smtplib
import ssl
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any, ClassVar

from agent.alerts.inline import attach
from agent.alerts.render import SUBJECT_LIMIT, Message, clean
from agent.model import redact
from agent.model.errors import DeliveryError

#: The headers a stored message may add, by their lower-case name (RFC 2369, RFC 8058).
EXTRA_HEADERS = {"list-unsubscribe": "List-Unsubscribe", "list-unsubscribe-post": "List-Unsubscribe-Post"}
_ATEXT = "A-Za-z0-9!#$%&'*+/=?^_`{|}~-"
_ASCII_LOCAL = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_TOKEN = re.compile(r"[A-Za-z0-9._-]{1,64}")
_BODY_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BODY_BREAKS = re.compile("\r\n?|[\x85\u2028\u2029]")


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
        """Plain SMTP only to a server on loopback."""
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
        redact.register_login(self.username, self.password)

    def send(self, target: str, message: Message, token: str) -> None:
        """Hands one message for ``target`` to the SMTP server, or raises DeliveryError."""
        address, international = mailbox(target)
        try:
            data = self.build(target, message, token).as_bytes(
                policy=email.policy.SMTPUTF8 if international else email.policy.SMTP)
        except DeliveryError:
            raise
        except Exception as error:  # building is pure: what fails once fails every time
            raise DeliveryError(f"the message cannot be built: {type(error).__name__}: {redact.redact(error, 300)}",
                                permanent=True) from None
        self._deliver(address, international, data)

    def _deliver(self, address: str, international: bool, data: bytes) -> None:
        try:
            with self._connect() as smtp:
                if self.username:
                    _login(smtp, self.username, self.password or "")
                smtp.ehlo_or_helo_if_needed()
                if international and not smtp.has_extn("smtputf8"):
                    raise DeliveryError(f"{address} needs SMTPUTF8, which the server does not offer", permanent=True)
                options = ["SMTPUTF8", "BODY=8BITMIME"] if international else []
                smtp.sendmail(self._sender()[0], [address], data, options)
        except smtplib.SMTPRecipientsRefused as error:
            code, text = _reply(error.recipients.get(address))
            # 5xx: this address will never take it; 4xx (greylisting, full mailbox): later.
            raise DeliveryError(f"{address} refused: {code} {text}", permanent=code >= 500) from None
        except smtplib.SMTPDataError as error:
            raise DeliveryError(f"SMTP {error.smtp_code} {_decode(error.smtp_error)}",
                                permanent=error.smtp_code >= 500) from None
        except smtplib.SMTPResponseException as error:
            # Login or sender refused: a configuration to fix, not a reason to drop the queue.
            raise DeliveryError(f"SMTP {error.smtp_code} {_decode(error.smtp_error)}") from None
        except (OSError, smtplib.SMTPException) as error:
            raise DeliveryError(redact.redact(f"SMTP server {self.settings.host}:{self.settings.port}: "
                                              f"{type(error).__name__}: {error}", 500)) from None

    def build(self, target: str, message: Message, token: str) -> EmailMessage:
        """The message as it goes out, with header-safe values only; DeliveryError for a target that is no address."""
        return compose(self._sender()[0], target, message, token)

    def _sender(self) -> tuple[str, bool]:
        """The configured sender; a bad one keeps the queue (a configuration to fix, not the messages' fault)."""
        return sender_address(self.settings.sender)

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


def compose(sender: str, target: str, message: Message, token: str) -> EmailMessage:
    """The mail as it goes out (SMTP or a local mail folder), with header-safe values only.

    Raises a permanent DeliveryError for a target that is no single address.
    """
    address, _ = mailbox(target)
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = address
    mail["Subject"] = clean(message.subject, SUBJECT_LIMIT)
    mail["Date"] = formatdate(usegmt=True)
    mail["Message-ID"] = f"<{_message_id(token)}@allium-agent>"
    mail["Auto-Submitted"] = "auto-generated"
    for name, value in message.headers.items():
        canonical = EXTRA_HEADERS.get(str(name).lower())
        if canonical and canonical not in mail:
            mail[canonical] = clean(value, 900)
    mail.set_content(_body(message.text))
    mail.add_alternative(f"<html><body>{_body(message.html)}</body></html>", subtype="html")
    attach(mail, message.images)  # inline images (agent.alerts.inline), the monthly report's chart
    return mail


def sender_address(sender: str) -> tuple[str, bool]:
    """The configured sender; a bad one keeps the queue (a configuration to fix, not the messages' fault)."""
    try:
        return mailbox(sender)
    except DeliveryError:
        raise DeliveryError("email.sender is not a single email address") from None


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


def mailbox(target: object) -> tuple[str, bool]:
    """The one address ``target`` names, as it goes into the envelope and the To header, and whether it needs SMTPUTF8.

    Raises a permanent DeliveryError for anything else: a line break, a
    second address, a display name, a quoted mailbox, an address literal, more
    than 254 characters.
    """
    text = target.strip() if isinstance(target, str) else ""
    local, _, domain = text.rpartition("@")
    try:
        ascii_domain = domain.encode("idna").decode("ascii") if not domain.isascii() else domain
    except UnicodeError:
        ascii_domain = ""
    address = f"{local}@{ascii_domain}"
    labels = ascii_domain.split(".")
    if not (local and ascii_domain and _local_part(local) and all(_LABEL.fullmatch(label) for label in labels)
            and len(address.encode()) <= 254 and len(local.encode()) <= 64):
        shown = redact.redact(text, 80).encode("unicode_escape").decode("ascii")
        raise DeliveryError(f"not a single email address: '{shown}'", permanent=True)
    return address, not local.isascii()


def _local_part(local: str) -> bool:
    """A dot-atom of RFC 5322 characters, or (RFC 6531) letters, marks, digits and symbols beyond ASCII."""
    plain = "".join(c if c.isascii() else "a" for c in local if c.isascii() or unicodedata.category(c)[0] in "LMNS")
    return len(plain) == len(local) and _ASCII_LOCAL.fullmatch(plain) is not None


def _message_id(token: str) -> str:
    """The token as the left side of a Message-ID; one that could not be is hashed (still the same on every try)."""
    text = str(token)
    return text if _TOKEN.fullmatch(text) else hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()[:40]


def _body(text: str) -> str:
    """A body part's text as any server takes it: line breaks as LF, no other controls, no lone surrogates."""
    lines = _BODY_BREAKS.sub("\n", _BODY_CONTROL.sub("", str(text)))
    return lines.encode("utf-8", errors="replace").decode("utf-8")


def _reply(reply) -> tuple[int, str]:
    if not reply:
        return 550, "refused"
    code, text = reply
    return code, _decode(text)


def _decode(text) -> str:
    """A server's reply as text to log and store: decoded, redacted, bounded."""
    return redact.redact(text.decode(errors="replace") if isinstance(text, bytes) else str(text), 300)
