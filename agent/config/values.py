"""Converters for the configuration's values, each raising InvalidValue worded to follow "<key>: ".

The parts' settings (``agent/<part>/settings.py``) name them, and ``agent.config.loader``
looks the names up here, so that no part imports the config package.
"""

from __future__ import annotations

import ipaddress
import json
import math
import socket
from datetime import datetime, timezone
from typing import Any

from agent.alerts.routes import InvalidRoutes, Route, parse_routes  # noqa: F401 (Route: re-exported for the loader)
from agent.alerts.webhook import InvalidEndpoints, parse_endpoints
from agent.model.authorities import default_authorities, make_authority, parse_dir_authority_line
from agent.model.snapshot import DOCUMENT_KINDS, DocKind

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class InvalidValue(ValueError):
    """A converter's complaint, worded to follow "<key>: "."""


def _describe(value: Any) -> str:
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def positive_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidValue(f"must be a positive number, got {_describe(value)}")
    return float(value)


def positive_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidValue(f"must be a positive whole number, got {_describe(value)}")
    return value


def boolean(value):
    if not isinstance(value, bool):
        raise InvalidValue(f"must be true or false, got {_describe(value)}")
    return value


def vantage(value):
    if value is None:
        return socket.gethostname()
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise InvalidValue(f"must be a non-empty name of at most 64 characters, got {_describe(value)}")
    return value.strip()


def name(value):
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise InvalidValue(f"must be a non-empty string, got {_describe(value)}")
    return value.strip()


def path(value):
    """A file or directory name: a non-empty string without NUL characters (the system cannot take those)."""
    value = name(value)
    if "\0" in value:
        raise InvalidValue(f"must not contain a NUL character, got {_describe(value)}")
    return value


def env_name(value):
    if not isinstance(value, str) or not value.replace("_", "A").isalnum() or value[0].isdigit():
        raise InvalidValue(f"must be an environment variable name, got {_describe(value)}")
    return value


def url(value):
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        raise InvalidValue(f"must be null or an http:// or https:// URL, got {_describe(value)}")
    return value.rstrip("/")


def non_negative_number(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InvalidValue(f"must be a number >= 0, got {_describe(value)}")
    return float(value)


def names(value):
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InvalidValue(f"must be a list of names, got {_describe(value)}")
    return tuple(value)


def ratio(value):
    number = positive_number(value)
    if number > 1:
        raise InvalidValue(f"must be a ratio between 0 and 1, got {_describe(value)}")
    return number


def silences(value):
    from agent.model.findings import Silence

    if not isinstance(value, list):
        raise InvalidValue(f"must be a list of {{check, until, reason[, authority]}}, got {_describe(value)}")
    silences, problems = [], []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not {"check", "until", "reason"} <= set(item) \
                or set(item) - {"check", "until", "reason", "authority"}:
            problems.append(f"[{index}] needs check, until and reason (and optionally authority)")
            continue
        try:
            until = datetime.fromisoformat(str(item["until"]).replace("Z", "+00:00"))
        except ValueError:
            problems.append(f"[{index}] until must be an ISO time, got {_describe(str(item['until']))}")
            continue
        until = until.astimezone(timezone.utc).replace(tzinfo=None) if until.tzinfo else until
        silences.append(Silence(str(item["check"]), until, str(item["reason"]), item.get("authority")))
    if problems:
        raise InvalidValue("; ".join(problems))
    return tuple(silences)


def routes(value):
    """``alerts.routes``: parsed by ``agent.alerts.routes``, next to the notifiers whose channels it takes."""
    try:
        return parse_routes(value)
    except InvalidRoutes as error:
        raise InvalidValue(str(error)) from None


def webhook_endpoints(value):
    """``webhook.endpoints``: parsed by ``agent.alerts.webhook``, next to the notifier that posts to them."""
    try:
        return parse_endpoints(value)
    except InvalidEndpoints as error:
        raise InvalidValue(str(error)) from None


def hours_by_alert(value):
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, (int, float))
                                              and not isinstance(v, bool) and v >= 0 for k, v in value.items()):
        raise InvalidValue(f"must map alert IDs to hours (>= 0), got {_describe(value)}")
    return {key: float(hours) for key, hours in value.items()}


def security(value):
    if value not in ("starttls", "tls", "none"):
        raise InvalidValue(f"must be starttls, tls or none, got {_describe(value)}")
    return value


def listen(value):
    if value is None:
        return None
    host, _, port = str(value).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidValue(f"must be host:port, got {_describe(value)}")
    return host.strip("[]"), int(port)


def rate(value):
    parts = str(value).split()
    if (len(parts) != 3 or not parts[0].isdigit() or parts[1] != "per"
            or parts[2] not in ("second", "minute", "hour", "day")):
        raise InvalidValue(f'must read like "20 per hour", got {_describe(value)}')
    return str(value)


def non_negative_int(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidValue(f"must be a whole number >= 0, got {_describe(value)}")
    return value


def networks(value):
    """IP addresses or networks; 0, the old "no proxy" count, is none (other counts are refused)."""
    if value == 0 and not isinstance(value, bool):
        return ()
    if not isinstance(value, list):
        raise InvalidValue("must be a list of proxy addresses or networks, e.g. [127.0.0.1, 10.0.0.0/8] (a count "
                           f"of proxies is no longer accepted: it trusted X-Forwarded-For from anyone), got "
                           f"{_describe(value)}")
    try:
        return tuple(ipaddress.ip_network(str(item), strict=False) for item in value)
    except ValueError as error:
        raise InvalidValue(f"not an IP address or network: {error}") from None


def flags(value):
    flags = names(value)
    unknown = set(flags) - {"Guard", "Exit", "Stable", "Fast", "HSDir", "Valid", "Running"}
    if unknown:
        raise InvalidValue(f"unknown flag(s) {', '.join(sorted(unknown))}")
    return tuple(flags)


def log_level(value):
    if not isinstance(value, str) or value.upper() not in LOG_LEVELS:
        raise InvalidValue(f"must be one of {', '.join(LOG_LEVELS)}, got {_describe(value)}")
    return value.upper()


def document_kinds(value):
    known = [kind.value for kind in DOCUMENT_KINDS]
    if not isinstance(value, list) or not value:
        raise InvalidValue(f"must be a non-empty list of {', '.join(known)}, got {_describe(value)}")
    unknown = [item for item in value if item not in known]
    if unknown:
        raise InvalidValue(f"unknown document kind {_describe(unknown[0])}; known: {', '.join(known)}")
    return tuple(DocKind(item) for item in value)


def bootstrap(value):
    if value == "default":
        return default_authorities()
    if not isinstance(value, list) or not value:
        raise InvalidValue(f'must be "default" or a non-empty list of authorities, got {_describe(value)}')
    authorities, problems = [], []
    for index, item in enumerate(value):
        try:
            if isinstance(item, str):
                authorities.append(parse_dir_authority_line(item))
            elif isinstance(item, dict):
                authorities.append(make_authority(**item))
            else:
                raise ValueError(f"must be a DirAuthority line or a mapping, got {_describe(item)}")
        except (TypeError, ValueError) as error:
            problems.append(f"[{index}] {error}")
    if problems:
        raise InvalidValue("; ".join(problems))
    return tuple(authorities)


def optional(convert):
    """The converter that also takes null (the setting is then unset)."""
    return lambda value: None if value is None else convert(value)


optional_name = optional(name)
optional_path = optional(path)
optional_env_name = optional(env_name)
optional_positive_int = optional(positive_int)
