"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it accepts."""

from __future__ import annotations

import email
import email.policy
import threading

from aiosmtpd.controller import Controller


class _Keeper:
    def __init__(self):
        self.messages: list = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        parsed = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        with self.lock:
            self.messages.append((list(envelope.rcpt_tos), parsed))
        return "250 OK"


class SmtpServer:
    """Start, stop and start again on the same port (the outage test).

    With ``tls`` ("starttls" or "tls") it serves a certificate for 127.0.0.1
    and, with ``login``, requires AUTH (only after TLS) with that user and password.
    """

    def __init__(self, port: int, tls: str | None = None, certificate: tuple | None = None,
                 login: tuple[str, str] | None = None):
        self.port = port
        self.keeper = _Keeper()
        self.controller: Controller | None = None
        self.tls, self.certificate, self.login = tls, certificate, login
        self.logins: list[str] = []

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        good = (isinstance(auth_data, LoginPassword)
                and (auth_data.login.decode(), auth_data.password.decode()) == self.login)
        if good:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=good, handled=False)  # handled=False: aiosmtpd answers 535 itself

    def start(self) -> None:
        options = {}
        if self.tls:
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.certificate)
            options = {"ssl_context": context} if self.tls == "tls" else {"tls_context": context,
                                                                          "require_starttls": True}
        if self.login:
            # aiosmtpd does not count implicit TLS as TLS for auth_require_tls; that connection is TLS anyway.
            options.update(authenticator=self._authenticate, auth_required=True,
                           auth_require_tls=self.tls != "tls")
        self.controller = Controller(self.keeper, hostname="127.0.0.1", port=self.port,
                                     server_hostname="127.0.0.1", **options)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list:
        """(recipients, parsed EmailMessage) in arrival order."""
        with self.keeper.lock:
            return list(self.keeper.messages)

    def to(self, address: str) -> list:
        return [message for recipients, message in self.messages if address in recipients]


def self_signed_certificate(directory) -> tuple[str, str]:
    """A certificate for 127.0.0.1 (and its key), PEM files in ``directory``; the certificate is its own CA."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = f"{directory}/smtp-cert.pem", f"{directory}/smtp-key.pem"
    with open(cert_path, "wb") as out:
        out.write(certificate.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return cert_path, key_path
