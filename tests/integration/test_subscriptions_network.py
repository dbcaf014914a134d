"""Operator subscriptions end to end: HTTP subscribe, confirm from the mailed link, relay down, relay back.

The relay is rejected by the authorities (approved-routers), which takes it
out of the next consensus: our test authorities assume every relay
reachable, and real tor keeps a silent relay Running for up to 45 minutes
(see agent.testnet.network.reject_relays). It keeps running, so when the
rejection is lifted it comes back by publishing a new descriptor, without
the reachability self-test a restart needs (which in a three-relay network
can take minutes to find a circuit).
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
from agent.subscriptions.store import SubscriptionStore
from agent.testnet import network as testnet
from agent.testnet.network import _free_ports
from agent.web.subscriptions import WebServer
from tests.integration.smtp import SmtpServer
from tests.integration.test_alerts_delivery import next_period

pytestmark = [pytest.mark.integration, pytest.mark.slow]
OPERATOR, LURKER, FAMILY = "op@example.org", "lurker@example.org", "family@example.org"
DOWN_SECONDS = 15


def mails_to(smtp, address, containing=""):
    return [m for m in smtp.to(address) if containing in m["Subject"]]


def periods_until(runner, condition, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        next_period(runner)
        if condition():
            return
    raise AssertionError("condition not reached")


def test_subscribe_confirm_down_and_back(tor_network, tmp_path):
    smtp_port, web_port = _free_ports(2)
    smtp = SmtpServer(smtp_port)
    smtp.start()
    base = yaml.safe_load((tor_network.directory / testnet.AGENT_CONFIG).read_text())
    public = f"http://127.0.0.1:{web_port}"
    base.update({"state_dir": str(tmp_path / "state"),
                 "alerts": {"public_url": public, "retry": {"initial_delay_seconds": 1, "max_delay_seconds": 2}},
                 "email": {"host": "127.0.0.1", "port": smtp_port, "security": "none"},
                 "subscriptions": {"listen": f"127.0.0.1:{web_port}", "down_hours": DOWN_SECONDS / 3600}})
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump(base))
    config = load_config(path, environ={})
    runner = PeriodRunner(config, State(config.state_dir), Store.from_config(config), GeoIP.empty())
    relay1, relay2, relay3 = (tor_network.node(name).fingerprint for name in ("relay1", "relay2", "relay3"))
    next_period(runner)  # the agent knows the relays now
    web = WebServer(config).start()
    try:
        for address in (OPERATOR, LURKER):
            answer = requests.post(f"{public}/subscribe", data={"email": address, "kind": "relay", "target": relay1})
            assert answer.status_code == 202, answer.text
        assert requests.post(f"{public}/subscribe", data={"email": OPERATOR, "kind": "relay",
                                                          "target": "F" * 40}).status_code == 400
        end = time.monotonic() + 30  # the web server only queues; its mailer thread sends
        while not mails_to(smtp, OPERATOR) and time.monotonic() < end:
            time.sleep(0.2)
        [confirmation] = mails_to(smtp, OPERATOR)
        body = confirmation.get_body(("plain",)).get_content()
        print(f"\nconfirmation: {confirmation['Subject']}\n{body}")
        token = re.search(r"/confirm\?token=([\w-]+)", body).group(1)
        assert requests.post(f"{public}/confirm", data={"token": token}).json()["status"] == "active"
        SubscriptionStore(runner.state.db).add_active(FAMILY, "family", relay2, int(time.time()))

        join_family(tor_network, ["relay2", "relay3"], [relay2, relay3])
        periods_until(runner, lambda: family_formed(runner, relay2, relay3), timeout=150)

        left_at = time.monotonic()
        testnet.reject_relays(tor_network, ["relay1", "relay3"])
        periods_until(runner, lambda: mails_to(smtp, OPERATOR, "TorRelayDown"), timeout=120)
        waited = time.monotonic() - left_at
        [down] = mails_to(smtp, OPERATOR, "TorRelayDown")
        text = down.get_body(("plain",)).get_content()
        print(f"after {waited:.0f} s: {down['Subject']}\n{text}")
        assert waited >= DOWN_SECONDS
        assert down["Subject"] == f"[warning] TorRelayDown (relay1 {relay1[:8]})"
        assert f"relay1 ({relay1}) is not in the consensus" in text
        assert down["List-Unsubscribe"].startswith(f"<{public}/unsubscribe?token=")
        periods_until(runner, lambda: mails_to(smtp, FAMILY, "TorRelayDown"), timeout=60)
        assert mails_to(smtp, FAMILY, "TorRelayDown")[0]["Subject"] == f"[warning] TorRelayDown (relay3 {relay3[:8]})"
    finally:
        testnet.reject_relays(tor_network, [])
        testnet.republish(tor_network, ["relay1", "relay3"])
    try:
        periods_until(runner, lambda: resolved(smtp), timeout=180)
        [back] = resolved(smtp)
        print(f"{back['Subject']}\n{back.get_body(('plain',)).get_content()}")
        assert back["Subject"] == f"[resolved] TorRelayDown (relay1 {relay1[:8]})"
        assert [m["Subject"] for m in smtp.to(LURKER)] == [confirmation["Subject"]]  # never confirmed: nothing else
    finally:
        web.stop()
        smtp.stop()


def resolved(smtp):
    return [m for m in smtp.to(OPERATOR) if "resolved" in m["Subject"] and "TorRelayDown" in m["Subject"]]


def join_family(tor_network, names, fingerprints):
    """Declares the relays one family (MyFamily both ways) and makes them reload; they publish new descriptors."""
    for name in names:
        node = tor_network.node(name)
        torrc = node.torrc_path.read_text()
        if "MyFamily" not in torrc:
            node.torrc_path.write_text(torrc + "MyFamily " + ",".join(f"${fp}" for fp in fingerprints) + "\n")
        testnet._signal(tor_network.pids[name], testnet.signal.SIGHUP)


def family_formed(runner, first, second) -> bool:
    rows = runner.state.db.execute("SELECT fingerprint FROM subscription_members").fetchall()
    return {first, second} <= {row[0] for row in rows}
