"""Credentials out of text: the secrets the agent holds and the usual shapes of credentials.

Servers echo what they were sent: a TSDB or homeserver that quotes the
Authorization header in an error body would otherwise put the token into the
logs, ``once --json`` and the state file. Whatever a server says that is
logged, raised or stored goes through ``redact`` first, and is redacted
before it is cut short, so a cut cannot leave half a secret behind.

Two nets: the exact values registered with ``register`` (tokens and
passwords read from the environment, in their common encodings), and
patterns for credentials the agent never held (``Authorization:`` headers,
``Bearer``/``Basic``/``Token`` values, ``token=``/``password=`` pairs, user
information in URLs). ``RedactingFilter`` applies the same to log records.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from urllib.parse import quote, quote_plus, unquote, urlsplit

MASK = "[redacted]"
#: Shorter secrets are not masked by value (they would mangle ordinary words); the patterns still catch them.
MIN_SECRET_LENGTH = 4

_lock = threading.Lock()
_secrets: set[str] = set()
_by_value: re.Pattern[str] | None = None

_VALUE = r"""(?:"[^"\r\n]*"|'[^'\r\n]*'|[^\s&"',;})\]<>]+)"""


def _pair(match: re.Match[str]) -> str:
    """Masks the value of ``name=value`` always, of ``name: value`` when it looks like a secret, not a word.

    ``no access token: set $X`` is a sentence; ``password: hunter2`` and ``"token": "..."`` are not.
    """
    value = match["value"]
    wordlike = value.isalpha() and len(value) < 8
    if match["sep"] == ":" and wordlike and not value.startswith(("'", '"')):
        return match[0]
    return match["keep"] + MASK


_SHAPES: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    # Authorization and friends as a header, a JSON member or a Python dict item: everything to the line's end.
    (re.compile(r"""(?P<keep>\b(?:proxy-)?(?:authorization|x-api-key|api-key|x-auth-token|cookie|set-cookie)"""
                r"""["']?\s*[:=]\s*)(?:"[^"\r\n]*"|'[^'\r\n]*'|[^\r\n]*)""", re.IGNORECASE), rf"\g<keep>{MASK}"),
    # scheme://user:password@host
    (re.compile(r"(?P<keep>\b[a-z][a-z0-9+.-]*://)[^/\s@?#]+@", re.IGNORECASE), rf"\g<keep>{MASK}@"),
    # token=..., "password": "...", ALLIUM_MATRIX_TOKEN=..., ?access_token=... (see _pair for "name: word")
    (re.compile(r"""(?P<keep>[\w.-]*(?:token|passw(?:or)?d|pwd|secret|api[_-]?key|access[_-]?key|credentials?)"""
                rf"""["']?\s*(?P<sep>[:=])\s*)(?P<value>{_VALUE})""", re.IGNORECASE), _pair),
    # Authorization schemes anywhere in running text.
    (re.compile(r"(?P<keep>\b(?:bearer|basic|digest|negotiate)\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE),
     rf"\g<keep>{MASK}"),
    # "Token <value>" (InfluxDB's scheme) only with something token-like after it, not "token expired".
    (re.compile(r"(?P<keep>\btoken\s+)(?=[A-Za-z0-9._~+/=-]*[0-9_+/=])[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE),
     rf"\g<keep>{MASK}"),
    # JSON web tokens and well-known token prefixes (Matrix, GitHub, GitLab, Slack).
    (re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]*"), MASK),
    (re.compile(r"\b(?:syt|syr|ghp|gho|ghs|github_pat|glpat|xox[abprs])[_-][A-Za-z0-9_-]{8,}"), MASK),
)


def register(*values: str | None) -> None:
    """Remembers secrets the agent holds, so that ``redact`` masks them wherever they show up.

    Each is also masked in the encodings a server may echo it in: URL-quoted,
    JSON-escaped and base64 (AUTH LOGIN, a Basic header of it alone).
    """
    added = {variant for value in values if value and len(value) >= MIN_SECRET_LENGTH for variant in _variants(value)}
    global _by_value
    with _lock:
        if added - _secrets:
            _secrets.update(added)
            ordered = sorted(_secrets, key=len, reverse=True)  # the longest first: no half-masked overlap
            _by_value = re.compile("|".join(re.escape(secret) for secret in ordered), re.IGNORECASE)


def register_login(username: str | None, password: str | None) -> None:
    """A user name and password: the password, and the base64 forms that carry both (Basic, AUTH PLAIN)."""
    register(password)
    if username and password:
        for combined in (f"{username}:{password}", f"\0{username}\0{password}", f"{username}\0{username}\0{password}"):
            register(*_base64_forms(combined))


def register_url(url: str | None) -> None:
    """The credentials in a URL's user information (``https://user:password@host``), if any."""
    if not url:
        return
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:
        return
    if password:
        register_login(unquote(username or ""), unquote(password))
    elif username:
        register(unquote(username))  # https://TOKEN@host


def redact(text: object, limit: int | None = None) -> str:
    """``text`` with every registered secret and credential-shaped value masked, then cut to ``limit``."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    result = str(text)
    by_value = _by_value
    if by_value is not None:
        result = by_value.sub(MASK, result)
    for pattern, replacement in _SHAPES:
        result = pattern.sub(replacement, result)
    if limit is not None and len(result) > limit:
        result = result[: max(0, limit - 1)] + "…"
    return result


def redact_all(values: Iterable[object]) -> list[str]:
    """``redact`` of each (for log arguments and the like)."""
    return [redact(value) for value in values]


class RedactingFilter(logging.Filter):
    """Masks credentials in every record that passes a handler: the message, its arguments and any traceback."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is logging's own complaint to make
            return True
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install_log_filter(handlers: bool = True) -> None:
    """Puts a RedactingFilter on the root logger and (with ``handlers``) on each of its handlers, once.

    The root logger's own filter catches records logged on it directly
    (influxdb-client logs error bodies with ``logging.debug``); a handler's
    catches every record that reaches it, from any library.
    """
    root = logging.getLogger()
    for target in [root, *(root.handlers if handlers else [])]:
        if not any(isinstance(existing, RedactingFilter) for existing in target.filters):
            target.addFilter(RedactingFilter())


def _variants(secret: str) -> set[str]:
    """The secret as a server may echo it back."""
    escaped = json.dumps(secret)[1:-1]
    forms = {secret, quote(secret, safe=""), quote_plus(secret), escaped, escaped.replace("/", "\\/"),
             *_base64_forms(secret)}
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


def _base64_forms(value: str) -> set[str]:
    raw = value.encode("utf-8", errors="surrogatepass")
    forms = {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode()}
    return forms | {form.rstrip("=") for form in forms}
