"""The ways a message can leave the agent, keyed by channel: the one list the dispatcher and routes read.

A notifier is one module (``email``, ``matrix``, ``maildir``, ``webhook``) whose class conforms to
``NotifierFactory``; adding one is that module plus one entry in NOTIFIERS. Webhook targets are
endpoint names from ``webhook.endpoints``, never URLs: a route cannot send anywhere unconfigured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from agent.alerts.email import EmailSender
from agent.alerts.maildir import MaildirSender
from agent.alerts.matrix import MatrixSender
from agent.alerts.render import Message
from agent.alerts.webhook import WebhookSender


class Notifier(Protocol):
    """Sends one message to one target of its channel (an address, a room...)."""

    def send(self, target: str, message: Message, token: str) -> object:
        """Delivers it or raises ``agent.model.errors.DeliveryError``; what it returns is not used.

        ``token`` is the same on every try of the same message: a notifier
        that can pass it on (Message-ID, transaction ID) lets the server
        recognise a retry.
        """
        ...


class NotifierFactory(Protocol):
    """A notifier's class: what routes call its targets, and how to make one from the configuration."""

    #: Names its targets in complaints about a route, e.g. "names no email address, Matrix room or maildir address".
    target_noun: str
    #: Its settings: a frozen dataclass listing ``SETTINGS`` as the other parts do, mounted at the channel's name.
    Settings: type

    def from_config(self, settings: Any, environ: Mapping[str, str]) -> Notifier | None:
        """The notifier for its config section (credentials from ``environ``); None when not configured."""
        ...


#: Every channel there is: a route's targets, the outbox's ``channel`` column and the config key are these names.
NOTIFIERS: dict[str, NotifierFactory] = {
    "email": EmailSender,
    "matrix": MatrixSender,
    "maildir": MaildirSender,
    "webhook": WebhookSender,
}

#: Where subscription alerts go: subscribers sign up with an email address.
SUBSCRIPTION_CHANNEL = "email"


def subscription_channel(config: Any) -> str:
    """The channel subscribers' mail takes: SMTP if configured, else a local mail folder if that is (the demo's)."""
    if config.notifiers[SUBSCRIPTION_CHANNEL].host is None and config.notifiers["maildir"].directory:
        return "maildir"
    return SUBSCRIPTION_CHANNEL


def notifiers(config: Any, environ: Mapping[str, str]) -> dict[str, Notifier]:
    """The configured notifiers by channel (a channel without settings is left out)."""
    made = {channel: factory.from_config(config.notifiers[channel], environ) for channel, factory in NOTIFIERS.items()}
    return {channel: notifier for channel, notifier in made.items() if notifier is not None}
