"""What the subscription endpoints hold against hostile clients, apart from the server's own limits.

- ``ForwardedFor``: the client address is the peer, unless the peer is one of
  ``subscriptions.trusted_proxies``; only then is X-Forwarded-For read (right to
  left, skipping the configured proxies), and from anyone else it is removed.
- ``client_key``: the per-client rate limit's key; an IPv6 client is its /64,
  which one host usually holds whole.
- ``RecipientLimit``: mails per mailbox, whoever asks, so that many clients
  together cannot bomb one address.
- ``cross_origin``: a browser's cross-origin POST (a hostile page making its
  visitors' browsers subscribe a victim, each from its own address) is told by
  ``Sec-Fetch-Site`` or ``Origin``; a request with neither comes from no browser
  (curl, scripts, a mail provider's RFC 8058 one-click) and is let through.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from urllib.parse import urlsplit

from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: Headers that name the client or the original request; believed only from a configured proxy.
PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_X_FORWARDED_HOST", "HTTP_X_FORWARDED_PROTO",
                 "HTTP_X_FORWARDED_PORT", "HTTP_X_REAL_IP", "HTTP_FORWARDED")
#: Security headers on every answer: no framing (a hidden confirm button), no token in a Referer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_address(text: str) -> Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``), or None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped or address


def client_address(peer: str, forwarded: str, proxies: Iterable[Network]) -> str:
    """The client: the peer, or, while the address in hand is a configured proxy, the hop it added before."""
    proxies = tuple(proxies)
    hops = [hop for hop in forwarded.split(",") if hop.strip()]
    address = parse_address(peer)
    client = str(address) if address is not None else peer
    while address is not None and hops and any(address in network for network in proxies):
        address = parse_address(hops.pop())
        if address is not None:
            client = str(address)
    return client


class ForwardedFor:
    """WSGI middleware setting REMOTE_ADDR to ``client_address``; the proxy headers are dropped after."""

    def __init__(self, app, proxies: Iterable[Network]):
        self.app, self.proxies = app, tuple(proxies)

    def __call__(self, environ, start_response):
        peer = environ.get("REMOTE_ADDR", "")
        environ["allium.peer"] = peer
        environ["REMOTE_ADDR"] = client_address(peer, environ.get("HTTP_X_FORWARDED_FOR", ""), self.proxies)
        for name in PROXY_HEADERS:
            environ.pop(name, None)
        return self.app(environ, start_response)


def client_key(address: str) -> str:
    """The rate limit's key for a client address: IPv6 by /64, else the address."""
    parsed = parse_address(address)
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.ip_network(f"{parsed}/64", strict=False))
    return str(parsed) if parsed is not None else address


def mailbox(email: str) -> str:
    """The mailbox an address reaches, as far as we can tell: case and a ``+tag`` make no difference."""
    local, _, domain = email.strip().rpartition("@")
    return f"{local.partition('+')[0].lower()}@{domain.lower().rstrip('.')}"


class RecipientLimit:
    """At most ``rate`` ("5 per day") mails to one mailbox, in memory like the per-client limits."""

    def __init__(self, rate: str):
        self.item = parse(rate)
        self.limiter = MovingWindowRateLimiter(MemoryStorage())

    def allow(self, email: str) -> bool:
        """Counts one mail to this address; False if the mailbox has had its share."""
        return self.limiter.hit(self.item, "recipient", mailbox(email))


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of a URL or an Origin header, or None for ``null`` and nonsense."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def cross_origin(headers, public_url: str) -> bool:
    """True for a browser's request from a page that is not ours (``Sec-Fetch-Site`` or ``Origin`` say so)."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return True
    origin = headers.get("Origin")
    return origin is not None and (origin_of(origin) is None or origin_of(origin) != origin_of(public_url))
