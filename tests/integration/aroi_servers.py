"""Servers for AROI proof tests, all on 127.0.0.1: a DNS server (dnslib) and an HTTPS server with a test CA.

``ProofServers`` starts both and keeps what they serve: ``add_uri_site`` points
a domain at the HTTPS server (or anywhere, ``address=``) and says how each path
behaves (``text``, ``status``, ``redirect``, ``huge``, ``dribble``);
``add_dns_proof`` writes dns-rsa TXT records. ``aroi_config`` builds an
AroiConfig aimed at them. ``standard_sites`` is the layout the proof tests use
(``GOOD``, ``MISSING``, ...). A test module starts them in a fixture of its own
(importing a fixture from here would trip ruff's F811), for example::

    @pytest.fixture(scope="module")
    def proof_servers(tmp_path_factory):
        with ProofServers(tmp_path_factory.mktemp("aroi")) as servers:
            yield standard_sites(servers)
"""

from __future__ import annotations

import dataclasses
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Network
from pathlib import Path

import trustme
from dnslib import AAAA, QTYPE, RCODE, RR, TXT, A
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from agent.aroi.settings import AroiConfig
from agent.aroi.uri import PROOF_PATH

Behaviour = Callable[["_Handler"], None]
PROOF_TEXT = "we-run-this-tor-relay"

# -- HTTP behaviours: each writes one response ---------------------------------------------------------------------


def text(body: str | bytes, code: int = 200) -> Behaviour:
    data = body.encode() if isinstance(body, str) else body

    def respond(handler: _Handler) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", "text/plain; charset=utf-8")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
    return respond


def status(code: int) -> Behaviour:
    return text(f"HTTP {code}\n", code)


def redirect(location: str, code: int = 302) -> Behaviour:
    def respond(handler: _Handler) -> None:
        handler.send_response(code)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    return respond


def huge(size: int, framing: str = "length") -> Behaviour:
    """``size`` bytes of fingerprint lines, framed by Content-Length ("length"), "chunked" or the connection's end
    ("close"); written until the client hangs up."""
    line = b"$" + b"AB" * 20 + b"\n"

    def respond(handler: _Handler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n")
        handler.wfile.write(f"Content-Length: {size}\r\n".encode() if framing == "length"
                            else b"Transfer-Encoding: chunked\r\n" if framing == "chunked" else b"")
        handler.wfile.write(b"\r\n")
        block = line * 1024
        for _ in range(0, size, len(block)):
            if handler.server.stopping.is_set():
                return
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if framing == "chunked" else block)
    return respond


def dribble(body: str, interval: float = 0.5, headers_too: bool = False) -> Behaviour:
    """A valid response sent a byte every ``interval`` seconds: the body only, or from the status line on."""
    head = f"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n".encode()

    def respond(handler: _Handler) -> None:
        slow = (head if headers_too else b"") + body.encode()
        if not headers_too:
            handler.wfile.write(head)
        for index in range(len(slow)):
            handler.wfile.write(slow[index:index + 1])
            handler.wfile.flush()
            if handler.server.stopping.wait(interval):
                return
    return respond


# -- HTTPS server ---------------------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HttpsServer
    timeout = 10

    def do_GET(self) -> None:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].lower()
        path = self.path.split("?", 1)[0]
        with self.server.lock:
            self.server.requests.append((host, self.path, dict(self.headers)))
            behaviour = self.server.sites.get((host, path))
        try:
            (behaviour or status(404))(self)
        except OSError:
            pass  # the client hung up: what a refusing client does

    def log_message(self, format, *args) -> None:
        pass


class _HttpsServer(http.server.ThreadingHTTPServer):
    """TLS is set up in each request's thread, with a certificate chosen by the SNI name (made on first use)."""

    daemon_threads = False  # server_close() joins every request thread

    def __init__(self, certificate_for: Callable[[str], ssl.SSLContext]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.certificate_for = certificate_for
        self.sites: dict[tuple[str, str], Behaviour] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.context = certificate_for("")
        self.context.sni_callback = self._choose

    def _choose(self, sslobj, name, context) -> None:
        sslobj.context = self.certificate_for(name or "")

    def finish_request(self, request, client_address) -> None:
        with self.lock:
            self.connections += 1
        request.settimeout(10)
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except OSError:
            return  # the client refused our certificate, or went away
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()

    def handle_error(self, request, client_address) -> None:
        pass  # a client cutting a response short is what these tests are about


# -- DNS server -----------------------------------------------------------------------------------------------------


class Zone(BaseResolver):
    """Names (lower case, no trailing dot) and their records; SERVFAIL and AD chosen by name or parent name."""

    def __init__(self) -> None:
        self.records: dict[str, list[tuple[str, str]]] = {}
        self.servfail: set[str] = set()
        self.signed: set[str] = set()
        self.queries: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, name: str, kind: str, value: str) -> None:
        with self.lock:
            self.records.setdefault(name.lower().rstrip("."), []).append((kind, value))

    @staticmethod
    def _under(name: str, names: set[str]) -> bool:
        return any(name == parent.lower() or name.endswith("." + parent.lower()) for parent in names)

    def resolve(self, request, handler):
        reply = request.reply()
        name, kind = str(request.q.qname).rstrip(".").lower(), QTYPE[request.q.qtype]
        with self.lock:
            self.queries.append((name, kind))
            records = list(self.records.get(name, ())) if name in self.records else None
        if self._under(name, self.servfail):
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        reply.header.ad = int(self._under(name, self.signed))  # reply() copies the query's flags, AD included
        if records is None:
            reply.header.rcode = RCODE.NXDOMAIN
        rdata = {"A": A, "AAAA": AAAA, "TXT": TXT}
        for record_kind, value in records or ():
            if record_kind == kind:
                reply.add_answer(RR(request.q.qname, getattr(QTYPE, kind), rdata=rdata[kind](value), ttl=60))
        return reply


def _dns_servers(zone: Zone) -> tuple[DNSServer, DNSServer]:
    """UDP and TCP servers for ``zone`` on one free port of 127.0.0.1."""
    quiet = DNSLogger(logf=lambda message: None)
    for _ in range(20):
        udp = DNSServer(zone, address="127.0.0.1", port=0, logger=quiet)
        try:
            tcp = DNSServer(zone, address="127.0.0.1", port=udp.server.server_address[1], tcp=True, logger=quiet)
        except OSError:
            udp.server.server_close()
            continue
        return udp, tcp
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")


# -- both, and the config aimed at them -----------------------------------------------------------------------------


class ProofServers:
    """The DNS and HTTPS servers with a test CA; a context manager that stops what it started."""

    def __init__(self, directory: Path):
        self.ca, self.rogue_ca = trustme.CA(), trustme.CA()
        self.ca_file = str(directory / "aroi-test-ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)
        self.wrong_name: set[str] = set()  # domains served a certificate for another name
        self.untrusted: set[str] = set()  # domains served a certificate of a CA the config does not trust
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._lock = threading.Lock()
        self.zone = Zone()
        self.https = _HttpsServer(self._certificate_for)
        self.udp, self.tcp = _dns_servers(self.zone)
        self._https_thread: threading.Thread | None = None

    @property
    def https_port(self) -> int:
        return self.https.server_address[1]

    @property
    def dns_port(self) -> int:
        return self.udp.server.server_address[1]

    def _certificate_for(self, name: str) -> ssl.SSLContext:
        with self._lock:
            if name not in self._contexts:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ca = self.rogue_ca if name in self.untrusted else self.ca
                ca.issue_cert("wrong-name.invalid" if name in self.wrong_name or not name else name).configure_cert(
                    context)
                self._contexts[name] = context
            return self._contexts[name]

    def add_uri_site(self, domain: str, behaviours: dict[str, Behaviour] | Behaviour | None = None,
                     address: str = "127.0.0.1", certificate: str = "good") -> None:
        """``domain`` resolving to ``address``; ``behaviours`` by path (one behaviour: the proof path's)."""
        self.zone.add(domain, "AAAA" if ":" in address else "A", address)
        if certificate == "wrong-name":
            self.wrong_name.add(domain)
        elif certificate == "untrusted":
            self.untrusted.add(domain)
        if callable(behaviours):
            behaviours = {PROOF_PATH: behaviours}
        with self.https.lock:
            self.https.sites.update({(domain, path): behaviour for path, behaviour in (behaviours or {}).items()})

    def add_dns_proof(self, domain: str, fingerprint: str, value: str = PROOF_TEXT) -> None:
        self.zone.add(f"{fingerprint}.{domain}", "TXT", value)

    def requests_for(self, host: str) -> list[tuple[str, str, dict]]:
        with self.https.lock:
            return [request for request in self.https.requests if request[0] == host]

    def config(self, **overrides) -> AroiConfig:
        return aroi_config(self, **overrides)

    def start(self) -> ProofServers:
        self.udp.start_thread()
        self.tcp.start_thread()
        self._https_thread = threading.Thread(target=self.https.serve_forever, name="aroi-https", daemon=True)
        self._https_thread.start()
        return self

    def stop(self) -> None:
        self.https.stopping.set()
        if self._https_thread is not None:
            self.https.shutdown()
            self._https_thread.join(10)
        self.https.server_close()
        for server in (self.udp, self.tcp):
            if getattr(server, "thread", None) is not None:
                server.stop()
                server.thread.join(10)
            server.server.server_close()

    def __enter__(self) -> ProofServers:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


def aroi_config(servers: ProofServers | None = None, **overrides) -> AroiConfig:
    """Every AroiConfig field, aimed at ``servers`` (resolver, CA, HTTPS port) with 127.0.0.0/8 allowed."""
    config = AroiConfig(
        verify=True, refresh_hours=12, retry_hours=2, timeout_seconds=3, max_proof_bytes=1048576, max_redirects=3,
        concurrency=4, resolver=("127.0.0.1", servers.dns_port) if servers else None,
        ca_file=servers.ca_file if servers else None, allowed_networks=(IPv4Network("127.0.0.0/8"),),
        https_port=servers.https_port if servers else 443)
    return dataclasses.replace(config, **overrides)


class SilentResolver:
    """A UDP port on 127.0.0.1 that takes queries and never answers: a resolver that is down."""

    def __enter__(self) -> SilentResolver:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = self.udp.getsockname()[1]
        return self

    def __exit__(self, *exc_info) -> None:
        self.udp.close()


# -- the layout the proof tests use ---------------------------------------------------------------------------------

FP_A, FP_B, FP_C = "A" * 40, "0123456789ABCDEF" * 2 + "01234567", "F" * 40
GOOD, MISSING, HOP, LOOP, OFF_DOMAIN, PLAIN_HTTP = ("good.test", "missing.test", "hop.test", "loop.test",
                                                    "offdomain.test", "plainhttp.test")
DRIBBLE, DRIBBLE_HEADERS = "dribble.test", "dribble-headers.test"
HUGE = {"length": "huge.test", "chunked": "huge-chunked.test", "close": "huge-close.test"}
INTERNAL = {"10.0.0.1": "internal.test", "169.254.169.254": "metadata.test", "::1": "loopback6.test"}
WRONG_NAME, UNTRUSTED = "wrongname.test", "untrusted.test"
DNS_GOOD, DNS_SIGNED, DNS_SERVFAIL, DNS_MIXED = "dnsgood.test", "signed.test", "servfail.test", "mixed.test"
#: The good proof file: comments, a blank line, a "$", lower case, a trailing comment and two malformed lines.
GOOD_FILE = (f"# relays of good.test\n\n{FP_A}\n${FP_B.lower()}  # the second one\nnot a fingerprint\n"
             f"{FP_C[:39]}\n")


def standard_sites(servers: ProofServers) -> ProofServers:
    """The domains the proof tests use, each behaving one way."""
    servers.add_uri_site(GOOD, text(GOOD_FILE))
    servers.add_uri_site(MISSING)
    servers.add_uri_site(HOP, {PROOF_PATH: redirect(f"https://www.{HOP}/tor/fingerprints")})
    servers.add_uri_site(f"www.{HOP}", {"/tor/fingerprints": redirect("/tor/fingerprints.txt", 301),
                                        "/tor/fingerprints.txt": text(f"{FP_A}\n")})
    servers.add_uri_site(LOOP, redirect(PROOF_PATH))
    servers.add_uri_site(OFF_DOMAIN, redirect(f"https://{GOOD}{PROOF_PATH}"))
    servers.add_uri_site(PLAIN_HTTP, redirect(f"http://{PLAIN_HTTP}{PROOF_PATH}"))
    servers.add_uri_site(DRIBBLE, dribble(GOOD_FILE))
    servers.add_uri_site(DRIBBLE_HEADERS, dribble(GOOD_FILE, headers_too=True))
    for framing, domain in HUGE.items():
        servers.add_uri_site(domain, huge(3 * 1048576, framing))
    for address, domain in INTERNAL.items():
        servers.add_uri_site(domain, text(GOOD_FILE), address=address)
    servers.add_uri_site(WRONG_NAME, text(GOOD_FILE), certificate="wrong-name")
    servers.add_uri_site(UNTRUSTED, text(GOOD_FILE), certificate="untrusted")
    servers.add_dns_proof(DNS_GOOD, FP_A)
    servers.add_dns_proof(DNS_GOOD, FP_B, "v=spf1 -all")  # a TXT record, not the proof
    for domain in (DNS_SIGNED, DNS_SERVFAIL, DNS_MIXED):
        servers.add_dns_proof(domain, FP_A)
    servers.zone.signed.add(DNS_SIGNED)
    servers.zone.servfail.update({DNS_SERVFAIL, f"{FP_B}.{DNS_MIXED}"})
    return servers


def elapsed(started: float) -> float:
    return time.monotonic() - started
