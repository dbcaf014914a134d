"""uri-rsa proofs: the fingerprint file at https://DOMAIN/.well-known/tor-relay/rsa-fingerprint.txt.

The server is whoever a contact line names, so it is treated as hostile: its
host is resolved once per connection and only allowed addresses
(``agent.aroi.addresses``) are connected to, by address (a second resolution
could answer differently: DNS rebinding); TLS is verified against the host
name; redirects are followed by hand, few and only within the domain; the body
is read up to ``max_proof_bytes``; one deadline bounds everything, down to
each receive, so a server dribbling a byte a second is cut off on time.

http.client and ssl rather than urllib3 or requests: the socket is ours to
open to a chosen address and to bound read by read, and neither reads proxy
settings, cookies or netrc from the environment. Whatever the remote does
ends in a DomainProof with a short classified error, never an exception.
"""

from __future__ import annotations

import functools
import http.client
import math
import re
import socket
import ssl
import time
from urllib.parse import urljoin, urlsplit

from agent import __version__
from agent.aroi.addresses import allowed_address
from agent.aroi.dns import IPAddress, ResolveError, resolve_addresses
from agent.aroi.settings import AroiConfig
from agent.model.aroi import DomainProof

METHOD = "uri-rsa"
PROOF_PATH = "/.well-known/tor-relay/rsa-fingerprint.txt"
REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK_BYTES = 16384
_FINGERPRINT = re.compile(r"\$?([0-9A-Fa-f]{40})")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_PRINTABLE_PATH = re.compile(r"^/[\x21-\x7e]*$")


class _Stop(Exception):
    """Ends a fetch with a classified error; ``refused`` for hostile behaviour rather than a failure."""

    def __init__(self, text: str, refused: bool = False):
        super().__init__(text)
        self.text, self.refused = text, refused


class _DeadlineSocket(ssl.SSLSocket):
    """A TLS socket whose every receive and send waits only until ``deadline`` (a monotonic instant).

    http.client reads headers and body in many small receives; bounding each
    by the time left (rather than a fixed timeout) bounds them all together.
    """

    deadline: float = math.inf

    def _bound(self) -> None:
        if self.deadline != math.inf:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("timed out")
            self.settimeout(remaining)

    def recv(self, buflen=1024, flags=0):
        self._bound()
        return super().recv(buflen, flags)

    def recv_into(self, buffer, nbytes=None, flags=0):
        self._bound()
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data, flags=0):
        self._bound()
        return super().send(data, flags)


def parse_fingerprint_file(body: bytes) -> tuple[frozenset[str], int]:
    """The fingerprints a proof file lists (upper case) and how many of its lines are malformed.

    One fingerprint a line, 40 hex digits, optionally after a ``$``; blank lines
    and ``#`` comments (also after a fingerprint) are skipped. A malformed line
    is ignored rather than failing the proof: the rest still says what it says.
    """
    listed, malformed = set(), 0
    for line in body.decode("utf-8", "replace").lstrip("\ufeff").splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        if match := _FINGERPRINT.fullmatch(text):
            listed.add(match.group(1).upper())
        else:
            malformed += 1
    return frozenset(listed), malformed


def fetch_uri_proof(domain: str, settings: AroiConfig, now: int) -> DomainProof:
    """The uri-rsa proof of ``domain``, fetched within ``settings.timeout_seconds``; never raises for the remote.

    An error is "refused" (``DomainProof.refused``) when the server did what a
    proof must not: resolve to an address that is not allowed, redirect off
    the domain, to http or to another port, redirect more than max_redirects
    times, or send more than max_proof_bytes. Anything else that stops the
    fetch (DNS, connection, TLS, HTTP status, time) is a failure.
    """
    deadline = time.monotonic() + settings.timeout_seconds
    try:
        body = _fetch(domain.lower().rstrip("."), settings, deadline)
    except _Stop as stop:
        return DomainProof(domain, METHOD, now, error=stop.text, refused=stop.refused)
    listed, _malformed = parse_fingerprint_file(body)
    return DomainProof(domain, METHOD, now, listed=listed)


def _fetch(domain: str, settings: AroiConfig, deadline: float) -> bytes:
    if not _is_host_name(domain):
        raise _Stop(f"https: {domain[:80]!r} is not a host name")
    context = _tls_context(settings.ca_file)
    host, path = domain, PROOF_PATH
    for _ in range(settings.max_redirects + 1):
        try:
            connection = _open(host, settings, deadline, context)
            try:
                response = _get(connection, path)
                if response.status in REDIRECTS:
                    host, path = _redirect(domain, host, path, response, settings)
                    continue
                if response.status != 200:
                    raise _Stop(f"https: HTTP {response.status}")
                return _read_body(response, settings, deadline)
            finally:
                connection.close()
        except _Stop:
            raise
        except (TimeoutError, ResolveError, ssl.SSLError, http.client.HTTPException, OSError, ValueError) as error:
            raise _Stop(_describe(error, host, settings)) from None
    raise _Stop(f"https: more than {settings.max_redirects} redirects", refused=True)


@functools.lru_cache(maxsize=4)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The TLS client context trusting ``ca_file`` or the system's CAs; made once (loading the CAs takes a while)."""
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        raise _Stop(f"https: CA file {ca_file}: {getattr(error, 'strerror', None) or error}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.sslsocket_class = _DeadlineSocket
    return context


def _open(host: str, settings: AroiConfig, deadline: float, context: ssl.SSLContext) -> http.client.HTTPSConnection:
    """An HTTPS connection to an allowed address of ``host``, TLS verified for ``host``, every wait to ``deadline``."""
    addresses = resolve_addresses(host, settings, deadline)
    allowed = [address for address in addresses if allowed_address(address, settings)]
    if not allowed:
        shown = ", ".join(str(address) for address in addresses[:4])
        raise _Stop(f"https: {shown} {'is not an address' if len(addresses) == 1 else 'are not addresses'} "
                    f"proofs may come from ({host})", refused=True)
    raw = _connect(allowed, settings.https_port, deadline)
    try:
        raw.settimeout(_remaining(deadline))
        tls = context.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise
    assert isinstance(tls, _DeadlineSocket)
    tls.deadline = deadline
    connection = http.client.HTTPSConnection(host, settings.https_port, context=context)
    connection.sock = tls  # already connected: HTTPSConnection would otherwise resolve and connect by itself
    return connection


def _connect(addresses: list[IPAddress], port: int, deadline: float) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that accepts; each try gets its share of the time left."""
    failure: OSError | None = None
    for index, address in enumerate(addresses):
        share = _remaining(deadline) / (len(addresses) - index)
        try:
            return socket.create_connection((str(address), port), timeout=share)
        except TimeoutError as error:
            failure = error
        except OSError as error:
            failure = OSError(f"{address} port {port}: {error.strerror or error}")
    raise failure or OSError("no address to connect to")


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("timed out")
    return remaining


def _get(connection: http.client.HTTPSConnection, path: str) -> http.client.HTTPResponse:
    connection.request("GET", path, headers={
        "User-Agent": f"allium-agent/{__version__}",
        "Accept": "text/plain",
        "Accept-Encoding": "identity",
        "Connection": "close",
    })
    return connection.getresponse()


def _redirect(domain: str, host: str, path: str, response: http.client.HTTPResponse,
              settings: AroiConfig) -> tuple[str, str]:
    """The (host, path) a redirect points to, when it may be followed: https, same port, within ``domain``."""
    location = (response.getheader("Location") or "").strip()
    if not location:
        raise _Stop(f"https: HTTP {response.status} without a Location")
    shown = _shown(location)
    try:
        target = urlsplit(urljoin(f"https://{host}{path}", location))
        port = target.port
    except ValueError:
        raise _Stop(f"https: redirect to {shown} is not a URL", refused=True) from None
    shown = _shown(target.geturl())
    new_host = (target.hostname or "").rstrip(".")
    if not (new_host == domain or new_host.endswith("." + domain)):
        raise _Stop(f"https: redirect to {shown} leaves {domain}", refused=True)
    if target.scheme.lower() != "https":
        raise _Stop(f"https: redirect to {shown} is not https", refused=True)
    if port not in (None, settings.https_port):
        raise _Stop(f"https: redirect to {shown} leaves port {settings.https_port}", refused=True)
    new_path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    if not _is_host_name(new_host) or not _PRINTABLE_PATH.match(new_path):
        raise _Stop(f"https: redirect to {shown} is not a URL", refused=True)
    return new_host, new_path


def _read_body(response: http.client.HTTPResponse, settings: AroiConfig, deadline: float) -> bytes:
    """The body, streamed; refused once it is longer than max_proof_bytes, whatever Content-Length said."""
    limit = settings.max_proof_bytes
    too_large = _Stop(f"https: proof larger than {limit} bytes", refused=True)
    if response.length is not None and response.length > limit:
        raise too_large
    chunks: list[bytes] = []
    total = 0
    while True:
        _remaining(deadline)
        chunk = response.read1(_CHUNK_BYTES)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            raise too_large
        chunks.append(chunk)


def _describe(error: BaseException, host: str, settings: AroiConfig) -> str:
    """A short classified text for what stopped a fetch."""
    if isinstance(error, ResolveError):
        return str(error)
    if isinstance(error, TimeoutError):
        return f"https: timed out after {settings.timeout_seconds:g} s"
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"https: certificate verify failed: {error.verify_message} ({host})"
    if isinstance(error, ssl.SSLError):
        return f"https: TLS failed: {error.reason or error} ({host})"
    if isinstance(error, http.client.HTTPException | ValueError):
        return f"https: bad HTTP response from {host}: {type(error).__name__} {_shown(str(error), 80)}"
    if isinstance(error, OSError):
        return f"https: {error.strerror or error} ({host})"
    return f"https: {type(error).__name__}: {_shown(str(error), 80)}"


def _is_host_name(name: str) -> bool:
    labels = name.split(".")
    return (len(name) <= 253 and len(labels) >= 2 and all(_HOST_LABEL.match(label) for label in labels)
            and not labels[-1].isdigit())  # an IPv4 address is no host name


def _shown(text: str, limit: int = 120) -> str:
    """``text`` as it may appear in an error: printable, and cut to ``limit`` characters."""
    printable = "".join(character if character.isprintable() else "?" for character in text)
    return printable if len(printable) <= limit else printable[:limit] + "..."
