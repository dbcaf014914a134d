"""Matrix over the client-server API (v3) with an access token.

Each message is a PUT under the delivery's token as transaction ID, so a
retry after a lost reply is the same event to the homeserver, never a second
one. ``429`` answers are honoured: a short ``retry_after_ms`` is waited out
here, a long one is handed back to the outbox as the earliest next try.

A homeserver's error text may quote what it was sent, the access token
included: it is redacted (``agent.model.redact``) before it becomes an
error, a log line or a stored ``last_error``.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from agent.alerts.render import Message
from agent.model.errors import DeliveryError
from agent.model.redact import redact, register, register_url

if TYPE_CHECKING:
    import requests

_MAX_INLINE_WAIT_SECONDS = 5.0


@dataclass(frozen=True)
class MatrixConfig:
    """The ``matrix`` section: the homeserver and the environment variable holding the access token."""

    homeserver: str | None
    token_env: str
    timeout_seconds: float

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("homeserver", None, "url"),
        ("token_env", "ALLIUM_MATRIX_TOKEN", "env_name"),
        ("timeout_seconds", 20, "positive_number"),
    )


class MatrixSender:
    """The ``matrix`` notifier (see ``agent.alerts.notifiers``)."""

    target_noun = "Matrix room"

    Settings = MatrixConfig  # its config section

    @classmethod
    def from_config(cls, settings: MatrixConfig, environ: Mapping[str, str]) -> MatrixSender | None:
        """The sender for the ``matrix`` section; None without a homeserver."""
        return cls(settings, environ) if settings.homeserver else None

    def __init__(self, settings, environ, sleep=time.sleep):
        import requests  # here, not at the top: the config loader reads this module for its routes

        self.settings = settings
        self.token = environ.get(settings.token_env)
        register(self.token)
        register_url(settings.homeserver)
        self.sleep = sleep
        self.session = requests.Session()
        self.session.trust_env = False
        self._room_ids: dict[str, str] = {}

    def send(self, room: str, message: Message, token: str) -> str:
        """Sends one message; returns the event ID."""
        if not self.token:
            raise DeliveryError(f"no Matrix access token: set ${self.settings.token_env}")
        room_id = self._room_id(room)
        content = {"msgtype": "m.text", "body": f"{message.subject}\n\n{message.text}",
                   "format": "org.matrix.custom.html",
                   "formatted_body": f"<h4>{html.escape(message.subject)}</h4>\n{message.html}"}
        path = f"/_matrix/client/v3/rooms/{quote(room_id, safe='')}/send/m.room.message/{quote(token, safe='')}"
        return _field(self._request("PUT", path, content), "event_id")

    def _room_id(self, room: str) -> str:
        """Room IDs (``!x:server``) as they are; aliases (``#x:server``) resolved once."""
        if not room.startswith("#"):
            return room
        if room not in self._room_ids:
            answer = self._request("GET", f"/_matrix/client/v3/directory/room/{quote(room, safe='')}")
            self._room_ids[room] = _field(answer, "room_id")
        return self._room_ids[room]

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import requests

        url = self.settings.homeserver.rstrip("/") + path
        register(self.token)  # also a token set after construction
        for _ in range(3):
            try:
                response = self.session.request(method, url, json=body, timeout=self.settings.timeout_seconds,
                                                headers={"Authorization": f"Bearer {self.token}"})
            except requests.RequestException as error:
                raise DeliveryError(redact(f"homeserver {self.settings.homeserver}: {type(error).__name__}")) from None
            if response.status_code == 429:
                wait = _retry_after(response)
                if wait > _MAX_INLINE_WAIT_SECONDS:
                    raise DeliveryError(f"rate limited for {wait:.0f} s", retry_after_seconds=wait)
                self.sleep(wait)
                continue
            if response.status_code == 200:
                return _json(response)
            # Only "this can never work" gives up: bad request, not allowed in the room, too large.
            # 401 (token expired) and 404 (alias not yet created) are fixed by people: keep the queue.
            permanent = response.status_code in (400, 403, 413)
            raise DeliveryError(f"homeserver answered {response.status_code}: {_errcode(response)}",
                                permanent=permanent)
        raise DeliveryError("rate limited three times in a row", retry_after_seconds=_MAX_INLINE_WAIT_SECONDS)


def _retry_after(response: requests.Response) -> float:
    try:
        wait = float(response.json().get("retry_after_ms", 1000)) / 1000
    except (ValueError, AttributeError, TypeError):
        return 1.0
    return min(wait, 86400.0) if wait >= 0 else 1.0  # NaN or negative: a second; at most a day


def _json(response: requests.Response) -> dict:
    """A 200 answer's JSON object; one without (a proxy's page) is a failed try, retried later."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise DeliveryError("homeserver answered 200 without a JSON object")
    return data


def _field(answer: dict, name: str) -> str:
    value = answer.get(name)
    if not isinstance(value, str):
        raise DeliveryError(f"homeserver answered without {name}")
    return value


def _errcode(response: requests.Response) -> str:
    """The error a homeserver gave, redacted: it may quote the request's Authorization header."""
    try:
        data = response.json()
        text = f"{data.get('errcode')} {data.get('error', '')}".strip()
    except (ValueError, AttributeError):
        text = response.text
    return redact(text, 200)

