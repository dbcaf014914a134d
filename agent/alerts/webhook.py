"""Webhooks: alerts as an HTTP POST of JSON to named endpoints, signed, in our format or Alertmanager's.

Routes name an endpoint of ``webhook.endpoints`` (``webhook: [ops]``), never
a URL, so no route can send anywhere the configuration does not list. Each
endpoint has a ``format``:

- ``json``: ``{version, token, sent_at, vantage, subject, text, alerts: [...]}``
  (``agent.alerts.render.facts`` for each alert);
- ``alertmanager``: the payload Prometheus Alertmanager's ``webhook_config``
  posts (version "4"), so any receiver written for Alertmanager takes ours.

With a secret (``secret_env``: required for ``json``, optional for
``alertmanager``) the body is signed: ``X-Allium-Signature: sha256=<hex>`` is
HMAC-SHA256 of the exact body bytes. ``X-Allium-Delivery`` is the delivery's
token, the same on every try of a message: receivers dedupe on it (it is
also the JSON payload's ``token``, under the signature). ``X-Allium-Timestamp``
is the try's Unix time (the JSON payload's ``sent_at``).

Exactly-once is the outbox's (``agent.alerts.deliveries``): this module only
sends once and says how it went. A 2xx is delivered; 408, 429 (honouring
``Retry-After``), 5xx, 3xx (redirects are never followed), timeouts and
connection errors are retried; any other 4xx is permanent (given up). The
URL can itself be a credential (``https://hooks.example/T0/B0/secret``): errors
name the endpoint, never the URL; the secret and the signature are never
logged, and what a receiver answers is read only up to a few KB and redacted.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from agent.alerts.deadline import Deadline, deadline_session
from agent.alerts.render import Message
from agent.model.errors import DeliveryError
from agent.model.redact import redact, register

if TYPE_CHECKING:
    import requests

FORMATS = ("json", "alertmanager")
#: The generic JSON payload's ``version``: raised when a field changes meaning or goes away.
JSON_VERSION = 1
SIGNATURE_HEADER = "X-Allium-Signature"
DELIVERY_HEADER = "X-Allium-Delivery"
TIMESTAMP_HEADER = "X-Allium-Timestamp"
#: What is read of a receiver's answer (for the error text); the rest is never downloaded.
ANSWER_LIMIT = 4096
#: Alertmanager's "no end yet" (Go's zero time), as its webhook sends it for firing alerts.
ZERO_TIME = "0001-01-01T00:00:00Z"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_LABEL_NAME = re.compile(r"[^A-Za-z0-9_]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOOPBACK_NAMES = ("localhost",)


class InvalidEndpoints(ValueError):
    """What is wrong with ``webhook.endpoints``, worded to follow "webhook.endpoints: "."""


@dataclass(frozen=True)
class Endpoint:
    """One receiver: where it is, which payload it takes, and the variable holding its signing secret."""

    name: str
    url: str
    format: str = "json"
    secret_env: str | None = None


def parse_endpoints(value: object) -> dict[str, Endpoint]:
    """``webhook.endpoints``: ``{name: {url, format, secret_env}}``; raises InvalidEndpoints naming each bad one.

    URLs must be http:// or https:// with a host and no user information
    (credentials in a URL would end up in logs); http:// only to loopback
    (127.0.0.0/8, ::1, localhost): anything else would carry alerts and the
    signature in clear text. ``json`` endpoints need a ``secret_env``.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEndpoints(f"must map endpoint names to {{url, format, secret_env}}, got {type(value).__name__}")
    endpoints, problems = {}, []
    for name, item in value.items():
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            problems.append(f"{name!r}: a name is letters, digits, '_', '.' or '-' (at most 64)")
            continue
        if not isinstance(item, dict) or "url" not in item or set(item) - {"url", "format", "secret_env"}:
            problems.append(f"{name}: needs a url and only format and secret_env")
            continue
        fmt, secret_env = item.get("format", "json"), item.get("secret_env")
        found = _url_problems(item["url"])
        if fmt not in FORMATS:
            found.append(f"format must be {' or '.join(FORMATS)}, got {fmt!r}")
        if secret_env is not None and not (isinstance(secret_env, str) and _ENV_NAME.fullmatch(secret_env)):
            found.append("secret_env must be an environment variable name")
        elif secret_env is None and fmt == "json":
            found.append("secret_env is required for format json (receivers verify the signature)")
        if found:
            problems.append(f"{name}: " + "; ".join(found))
            continue
        endpoints[name] = Endpoint(name, item["url"], fmt, secret_env)
    if problems:
        raise InvalidEndpoints("; ".join(problems))
    return endpoints


def _url_problems(url: object) -> list[str]:
    if not isinstance(url, str) or any(c.isspace() or ord(c) < 32 for c in url):
        return ["url must be an http:// or https:// URL"]
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port
    except ValueError:
        return ["url must be an http:// or https:// URL"]
    if parts.scheme not in ("http", "https") or not host:
        return ["url must be an http:// or https:// URL with a host"]
    if parts.username or parts.password:
        return ["url must not hold a user or password"]
    if parts.scheme == "http" and not _loopback(host):
        return [f"url: http:// sends alerts in clear text; only allowed to loopback, not {host} (use https://)"]
    return []


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() in _LOOPBACK_NAMES


@dataclass(frozen=True)
class WebhookConfig:
    """The ``webhook`` section: the named endpoints routes send to."""

    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    timeout_seconds: float = 10.0  # each connect or read
    deadline_seconds: float = 30.0  # the whole request, however slowly the receiver answers
    #: Alertmanager payloads' ``externalURL`` and ``generatorURL`` (the agent's web address, if it has one).
    external_url: str | None = None

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("endpoints", {}, "webhook_endpoints"),
        ("timeout_seconds", 10, "positive_number"),
        ("deadline_seconds", 30, "positive_number"),
        ("external_url", None, "url"),
    )


class WebhookSender:
    """The ``webhook`` notifier (see ``agent.alerts.notifiers``); its targets are endpoint names."""

    target_noun = "webhook endpoint"

    Settings = WebhookConfig  # its config section

    @classmethod
    def from_config(cls, settings: WebhookConfig, environ: Mapping[str, str]) -> WebhookSender | None:
        """The sender for the ``webhook`` section; None without endpoints."""
        return cls(settings, environ) if settings.endpoints else None

    def __init__(self, settings: WebhookConfig, environ: Mapping[str, str], clock=time.time):
        self.settings = settings
        self.clock = clock
        self.secrets = {name: environ.get(e.secret_env) if e.secret_env else None
                        for name, e in settings.endpoints.items()}
        register(*self.secrets.values(), *(e.url for e in settings.endpoints.values()))

    def send(self, target: str, message: Message, token: str) -> int:
        """POSTs one message to the endpoint named ``target``; returns the HTTP status (2xx) or raises DeliveryError."""
        endpoint = self.settings.endpoints.get(target)
        if endpoint is None:  # queued before the endpoint left the config: nowhere to send it any more
            raise DeliveryError(f"no webhook endpoint named {redact(target, 80)!r} in the config", permanent=True)
        secret = self.secrets.get(target)
        if endpoint.secret_env and not secret:  # a configuration to fix: keep the queue
            raise DeliveryError(f"no signing secret for webhook {target}: set ${endpoint.secret_env}")
        now = self.clock()
        try:
            body = self.body(endpoint, message, token, now)
        except Exception as error:  # building is pure: what fails once fails every time
            raise DeliveryError(f"the payload cannot be built: {type(error).__name__}", permanent=True) from None
        return self._post(endpoint, body, headers(body, token, now, secret))

    def body(self, endpoint: Endpoint, message: Message, token: str, now: float) -> bytes:
        """The exact bytes that go out (and are signed)."""
        if endpoint.format == "alertmanager":
            payload = alertmanager_payload(message, endpoint.name, self.settings.external_url)
        else:
            payload = json_payload(message, token, now)
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogatepass")

    def _post(self, endpoint: Endpoint, body: bytes, sent: dict[str, str]) -> int:
        """One request under one deadline (``agent.alerts.deadline``): the status and the answer's start."""
        import requests  # here, not at the top: the config loader reads this module

        with deadline_session() as session, Deadline(self.settings.deadline_seconds) as deadline:
            try:
                response = session.post(endpoint.url, data=body, headers=sent, allow_redirects=False, stream=True,
                                        timeout=self.settings.timeout_seconds)
                try:
                    status, answer = response.status_code, _answer(response, sent.get(SIGNATURE_HEADER))
                finally:
                    response.close()
            except requests.RequestException as error:
                if not deadline.expired:
                    raise DeliveryError(f"webhook {endpoint.name}: {type(error).__name__}") from None
        if deadline.expired:  # a cut answer can still parse (headers end at the cut): it is no answer
            raise DeliveryError(f"webhook {endpoint.name}: no answer within the "
                                f"{self.settings.deadline_seconds:g} s deadline")
        if 200 <= status < 300:
            return status
        text = f"webhook {endpoint.name} answered {status}" + (f": {answer}" if answer else "")
        if status in (429, 503):
            raise DeliveryError(text, retry_after_seconds=_retry_after(response.headers.get("Retry-After")))
        if 300 <= status < 400:
            raise DeliveryError(f"{text} (redirects are not followed: set the endpoint's final url)")
        raise DeliveryError(text, permanent=400 <= status < 500 and status != 408)


def headers(body: bytes, token: str, now: float, secret: str | None) -> dict[str, str]:
    """The request's headers; the signature only with a secret."""
    sent = {"Content-Type": "application/json", "User-Agent": "allium-agent", DELIVERY_HEADER: _header_safe(token),
            TIMESTAMP_HEADER: str(int(now))}
    if secret:
        sent[SIGNATURE_HEADER] = "sha256=" + sign(secret, body)
    return sent


def sign(secret: str, body: bytes) -> str:
    """HMAC-SHA256 of the exact body bytes, in hex."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature_header: str | None) -> bool:
    """What a receiver does: compare ``sha256=<hex>`` with its own HMAC, in constant time."""
    expected = "sha256=" + sign(secret, body)
    return bool(signature_header) and hmac.compare_digest(expected, str(signature_header))


def json_payload(message: Message, token: str, now: float) -> dict[str, Any]:
    """The generic payload: the message as the mail has it, and each alert as data."""
    return {"version": JSON_VERSION, "token": _header_safe(token), "sent_at": _iso(now), "vantage": message.vantage,
            "subject": message.subject, "text": message.text, "alerts": [dict(alert) for alert in message.alerts]}


def alertmanager_payload(message: Message, receiver: str, external_url: str | None) -> dict[str, Any]:
    """The payload Alertmanager's webhook sends (version 4), one alert per notice."""
    alerts = [_am_alert(alert, message.vantage, external_url) for alert in message.alerts]
    common_labels = _common([alert["labels"] for alert in alerts])
    group_labels = {"vantage": message.vantage} if message.vantage else {}
    return {
        "version": "4",
        "groupKey": "{}:{" + ",".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}",
        "truncatedAlerts": 0,
        "status": "firing" if any(alert["status"] == "firing" for alert in alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": _common([alert["annotations"] for alert in alerts]),
        "externalURL": external_url or "",
        "alerts": alerts,
    }


def _am_alert(alert: Mapping[str, Any], vantage: str, external_url: str | None) -> dict[str, Any]:
    labels = {"alertname": str(alert.get("id", "")), "severity": str(alert.get("severity", ""))}
    if vantage:
        labels["vantage"] = vantage
    for name, value in dict(alert.get("subjects") or {}).items():
        label = _LABEL_NAME.sub("_", str(name))
        labels.setdefault(label if not label[:1].isdigit() else f"_{label}", str(value))
    fingerprint = hashlib.sha256(json.dumps(labels, sort_keys=True).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return {"status": "resolved" if alert.get("status") == "resolved" else "firing",
            "labels": labels,
            "annotations": {"summary": str(alert.get("summary", "")), "description": str(alert.get("description", ""))},
            "startsAt": alert.get("started_at") or ZERO_TIME,
            "endsAt": alert.get("ended_at") or ZERO_TIME,
            "generatorURL": external_url or "",
            "fingerprint": fingerprint}


def _common(mappings: list[dict[str, str]]) -> dict[str, str]:
    """The pairs every mapping has (Alertmanager's commonLabels and commonAnnotations)."""
    if not mappings:
        return {}
    return {key: value for key, value in mappings[0].items() if all(m.get(key) == value for m in mappings[1:])}


def _answer(response: requests.Response, signature: str | None) -> str:
    """The start of what the receiver said, decoded and redacted (our signature too, if it echoes the request)."""
    try:
        data = response.raw.read(ANSWER_LIMIT, decode_content=False) if response.raw is not None else b""
    except Exception:  # a broken answer after the status line: the status is what counts
        return ""
    text = data.decode("utf-8", errors="replace")
    if signature:
        text = text.replace(signature.removeprefix("sha256="), "[redacted]")
    return redact(" ".join(text.split()), 200)


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta or HTTP date), at most a day; None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    return min(max(seconds, 0.0), 86400.0) if seconds == seconds else None  # NaN: none


def _header_safe(token: str) -> str:
    """The token as a header value: printable ASCII only (ours are hex; a stranger row's are hashed)."""
    text = str(token)
    if re.fullmatch(r"[\x21-\x7e]{1,200}", text):
        return text
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
