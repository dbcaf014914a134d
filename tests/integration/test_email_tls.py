"""Email over STARTTLS and implicit TLS with a login, against aiosmtpd on 127.0.0.1."""

import pytest

from agent.alerts.email import EmailSender
from agent.alerts.render import Message
from agent.config.loader import load_config
from agent.model.errors import DeliveryError
from agent.testnet.network import _free_ports
from tests.integration.smtp import SmtpServer, self_signed_certificate

pytestmark = pytest.mark.integration
LOGIN = ("allium", "s3cret-from-the-environment")


def sender(tmp_path, port, security, ca_file, password=LOGIN[1]):
    path = tmp_path / "agent.yaml"
    path.write_text(f"email:\n  host: 127.0.0.1\n  port: {port}\n  security: {security}\n  ca_file: {ca_file}\n"
                    "  username_env: SMTP_USER\n  password_env: SMTP_PASSWORD\n")
    settings = load_config(path, environ={}).notifiers["email"]
    return EmailSender(settings, {"SMTP_USER": LOGIN[0], "SMTP_PASSWORD": password})


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_and_login(tmp_path, security):
    certificate = self_signed_certificate(tmp_path)
    [port] = _free_ports(1)
    server = SmtpServer(port, tls=security, certificate=certificate, login=LOGIN)
    server.start()
    try:
        message = Message("[warning] TorAuthorityClockSkew (moria1)", "text\n", "<p>text</p>")
        sender(tmp_path, port, security, certificate[0]).send("list@example.org", message, "tok1")
        [(recipients, mail)] = server.messages
        assert recipients == ["list@example.org"] and server.logins == ["allium"]
        assert mail["Subject"] == "[warning] TorAuthorityClockSkew (moria1)"
        assert mail["Message-ID"] == "<tok1@allium-agent>"
        assert mail.get_body(("html",)).get_content().strip() == "<html><body><p>text</p></body></html>"
        with pytest.raises(DeliveryError, match="SMTP 535"):
            sender(tmp_path, port, security, certificate[0], password="wrong").send("list@example.org", message, "t2")
        with pytest.raises(DeliveryError, match="CERTIFICATE_VERIFY_FAILED"):  # the system CAs do not know it
            sender(tmp_path, port, security, "null").send("list@example.org", message, "t3")
    finally:
        server.stop()
