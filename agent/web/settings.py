"""The ``api`` config section: the read-only REST API under /api/v1, its keys, limits and CORS.

The API is served by the same server as the subscription endpoints
(``subscriptions.listen``, agent/web/server.py), behind the same trusted
proxies. Settings are ``(key, default, converter name in agent.config.values)``;
the config loader mounts them under ``api``. ``api_settings(config)`` gives
the defaults while a config has no ``api`` section mounted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

#: The data routes, by operation name. Health, metrics and the spec are always open (and rate-limited).
DATA_ROUTES = ("network", "relays", "relay", "operators", "authorities", "findings", "anomalies")


@dataclass(frozen=True)
class ApiConfig:
    enabled: bool
    anonymous: tuple[str, ...]
    rate_limit: str
    key_rate_limit: str
    cors_origins: tuple[str, ...]
    page_limit: int
    max_page_limit: int
    cache_seconds: float

    SETTINGS: ClassVar[tuple[tuple[str, Any, str], ...]] = (
        ("enabled", True, "boolean"),
        # Data routes answered without a key. The cheap one only by default: the others query the store
        # per request (relays, operators, anomalies, ...) and need a key unless listed here ("*": all).
        ("anonymous", ["network"], "names"),
        # Per client address (an IPv6 client by its /64), for requests without a key.
        ("rate_limit", "60 per minute", "rate"),
        # Per key, whatever address it comes from.
        ("key_rate_limit", "600 per minute", "rate"),
        # Origins (scheme://host[:port]) whose browser pages may read the API; none by default (no CORS headers).
        ("cors_origins", [], "names"),
        ("page_limit", 100, "positive_int"),
        ("max_page_limit", 500, "positive_int"),
        # Store answers are reused for this long: a burst of requests costs one query.
        ("cache_seconds", 30, "non_negative_number"),
    )

    def problems(self, section: str) -> list[str]:
        problems = [f"{section}.anonymous: unknown route {name!r}; known: {', '.join(DATA_ROUTES)} or *"
                    for name in self.anonymous if name != "*" and name not in DATA_ROUTES]
        problems += [f"{section}.cors_origins: {origin!r} is not an origin like https://example.org"
                     for origin in self.cors_origins if not _is_origin(origin)]
        if self.page_limit > self.max_page_limit:
            problems.append(f"{section}.page_limit: must not exceed {section}.max_page_limit")
        return problems

    def is_anonymous(self, route: str) -> bool:
        return "*" in self.anonymous or route in self.anonymous

    @classmethod
    def defaults(cls) -> ApiConfig:
        values: dict[str, Any] = {key: tuple(default) if isinstance(default, list) else default
                                  for key, default, _ in cls.SETTINGS}
        return cls(**values)


def _is_origin(text: str) -> bool:
    scheme, _, rest = text.partition("://")
    return scheme in ("http", "https") and bool(rest) and "/" not in rest and not rest.endswith(":")


def api_settings(config) -> ApiConfig:
    """The config's ``api`` section, or the defaults if the loader has none mounted."""
    return getattr(config, "api", None) or ApiConfig.defaults()
