"""A verified operator's subscription end to end, on the private Tor network.

Two relays claim ``operator.test`` in CIISS contact lines and its uri-rsa
proof (a real HTTPS server with a test CA, found through a real DNS server,
both on 127.0.0.1) lists them; a third relay claims the domain with a
stranger's address and is not listed. The daemon's cycle hands the claims to
its background verifier; then the stranger cannot subscribe to the
operator, the operator's address (from its verified relays' email: field)
can, confirms from the mailed link, and hears about its relay going down,
and nothing about the impostor's.
"""

import re
import time

import pytest
import requests
import yaml

from agent.config.loader import load_config
from agent.loop.runner import PeriodRunner
from agent.metrics.geoip import GeoIP
from agent.pipeline.state import State
from agent.store.store import Store
from agent.testnet import network as testnet
from agent.testnet.network import _free_ports
from agent.web.subscriptions import WebServer
from tests.integration.aroi_servers import ProofServers, text
from tests.integration.smtp import SmtpServer
from tests.integration.test_alerts_delivery import next_period

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DOMAIN, OPERATOR, STRANGER = "operator.test", "ops@operator.test", "mallory@elsewhere.test"
DOWN_SECONDS = 15


def claim(address: str) -> str:
    return f"email:{address.replace('@', '[]')} url:https://{DOMAIN} proof:uri-rsa ciissversion:2"


def set_contact(network, name: str, contact: str) -> None:
    """Rewrites the relay's ContactInfo and makes it reload: it publishes a new descriptor without a restart."""
    node = network.node(name)
    lines = node.torrc_path.read_text().splitlines(keepends=True)
    node.torrc_path.write_text("".join(f"ContactInfo {contact}\n" if line.startswith("ContactInfo ") else line
                                       for line in lines))
    testnet._signal(network.pids[name], testnet.signal.SIGHUP)


def until(runner, condition, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        next_period(runner)
        if condition():
            return
    raise AssertionError(f"{what}: not within {timeout} s")


def active_alert_keys(runner, prefix: str) -> list[str]:
    return [row[0] for row in runner.state.db.execute("SELECT key FROM alerts WHERE key LIKE ?", (f"{prefix}|%",))]


def down_mails(smtp, fingerprint: str) -> list:
    """The operator's mails telling that relay is down (a period's notices may share one mail)."""
    return [m for m in smtp.to(OPERATOR) if f"TorRelayDown (relay1 {fingerprint[:8]})" in m["Subject"]
            or f"TorRelayDown (relay1 {fingerprint[:8]})" in m.get_body(("plain",)).get_content()]


def members(runner) -> set[str]:
    return {row[0] for row in runner.state.db.execute("SELECT fingerprint FROM subscription_members")}


def test_a_verified_operator_subscribes_and_hears_about_its_relay(tor_network, tmp_path):
    smtp_port, web_port = _free_ports(2)
    public = f"http://127.0.0.1:{web_port}"
    relay1, relay2, relay3 = (tor_network.node(name).fingerprint for name in ("relay1", "relay2", "relay3"))
    smtp = SmtpServer(smtp_port)
    smtp.start()
    with ProofServers(tmp_path) as proofs:
        proofs.add_uri_site(DOMAIN, text(f"# {DOMAIN}'s relays\n{relay1}\n{relay2}\n"))
        base = yaml.safe_load((tor_network.directory / testnet.AGENT_CONFIG).read_text())
        base.update({
            "state_dir": str(tmp_path / "state"),
            "alerts": {"public_url": public, "retry": {"initial_delay_seconds": 1, "max_delay_seconds": 2}},
            "email": {"host": "127.0.0.1", "port": smtp_port, "security": "none"},
            "subscriptions": {"listen": f"127.0.0.1:{web_port}", "down_hours": DOWN_SECONDS / 3600},
            "aroi": {"resolver": f"127.0.0.1:{proofs.dns_port}", "ca_file": proofs.ca_file,
                     "allowed_networks": ["127.0.0.0/8"], "https_port": proofs.https_port, "timeout_seconds": 3}})
        path = tmp_path / "agent.yaml"
        path.write_text(yaml.safe_dump(base))
        config = load_config(path, environ={})
        runner = PeriodRunner(config, State(config.state_dir), Store.from_config(config), GeoIP.empty())
        web = None
        try:
            set_contact(tor_network, "relay1", claim(OPERATOR))
            set_contact(tor_network, "relay2", claim(OPERATOR))
            set_contact(tor_network, "relay3", claim(STRANGER))
            until(runner, lambda: {relay1, relay2} <= runner.proofs.book().listed_by(DOMAIN), 150,
                  "the proof checked")
            book = runner.proofs.book()
            assert book.emails_of(DOMAIN) == {OPERATOR}  # the impostor's address is not the operator's
            print(f"\nproof of {DOMAIN}: {sorted(book.listed_by(DOMAIN))}, addresses {sorted(book.emails_of(DOMAIN))}")
            until(runner, lambda: active_alert_keys(runner, "TorRelayImpersonatesOperator"), 60,
                  "the impostor reported")
            assert [key for key in active_alert_keys(runner, "TorRelayImpersonatesOperator") if relay3 in key]

            web = WebServer(config, proofs=runner.proofs.book).start()
            refused = requests.post(f"{public}/subscribe",
                                    data={"email": STRANGER, "kind": "operator", "target": DOMAIN})
            assert refused.status_code == 400 and refused.json()["error"].startswith("email: not an address")
            accepted = requests.post(f"{public}/subscribe",
                                     data={"email": OPERATOR, "kind": "operator", "target": f"https://{DOMAIN}/"})
            assert accepted.status_code == 202, accepted.text
            end = time.monotonic() + 30
            while not smtp.to(OPERATOR) and time.monotonic() < end:
                time.sleep(0.2)
            [confirmation] = smtp.to(OPERATOR)
            body = confirmation.get_body(("plain",)).get_content()
            print(f"confirmation: {confirmation['Subject']}\n{body}")
            assert f"operator {DOMAIN}" in body
            token = re.search(r"/confirm\?token=([\w-]+)", body).group(1)
            assert requests.post(f"{public}/confirm", data={"token": token}).json() == {
                "status": "active", "kind": "operator", "target": DOMAIN}

            until(runner, lambda: members(runner) == {relay1, relay2}, 60, "the operator's relays covered")
            left_at = time.monotonic()
            testnet.reject_relays(tor_network, ["relay1", "relay3"])
            until(runner, lambda: down_mails(smtp, relay1), 120, "the operator told")
            waited = time.monotonic() - left_at
            [down] = down_mails(smtp, relay1)
            print(f"after {waited:.0f} s: {down['Subject']}\n{down.get_body(('plain',)).get_content()}")
            assert f"relay1 ({relay1}) is not in the consensus" in down.get_body(("plain",)).get_content()
            assert waited >= DOWN_SECONDS
            next_period(runner)  # one more period: still nothing about the impostor's relay3
            # (relay2 may be told about a flag on this little network: its mails are the operator's to get)
            assert not [m for m in smtp.to(OPERATOR) if relay3 in m.get_body(("plain",)).get_content()]
            assert smtp.to(STRANGER) == []
        finally:
            if web is not None:
                web.stop()
            runner.proofs.stop()
            smtp.stop()
            testnet.reject_relays(tor_network, [])
            testnet.republish(tor_network, ["relay1", "relay2", "relay3"])  # their usual contact lines again
        until(runner, lambda: {relay1, relay3} <= set(runner.state.relays_before(2**62) or {}), 180,
              "the rejected relays back")
