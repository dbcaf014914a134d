"""The subscription page in a real headless browser (Debian's chromium through Playwright) against the real server.

Everything is on 127.0.0.1: the agent's waitress server, a real SMTP server
(aiosmtpd), and chromium, started with its networking features off and every
other host name unresolvable. The flow is a person's: fill in the form,
confirm from the mailed link, get an alert after the wait they chose, change
a preference from the alert mail's link, then stop. Screenshots of the filled
form and of "Subscription active" are saved under $ALLIUM_ARTIFACTS (else
the test's tmp dir) and their paths printed.
"""

import os
import re
import time
from datetime import timezone
from pathlib import Path

import pytest
import yaml

from agent.alerts.dispatch import Alerting
from agent.config.loader import load_config
from agent.pipeline.state import State
from agent.subscriptions.store import Preferences, SubscriptionStore
from agent.subscriptions.watch import RelayWatch
from agent.testnet.network import _free_ports
from agent.web.subscriptions import WebServer
from tests.integration.smtp import SmtpServer
from tests.unit.test_subscriptions import NOW, consensus_of, descriptor, entry, snapshot_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHROMIUM = "/usr/bin/chromium"
FINGERPRINT = "9695DFC35FFEB861329B9F1AB04C46397020CE31"
OPERATOR = "op@example.org"
CHOSEN_HOURS = 2
PERIOD = int(NOW.replace(tzinfo=timezone.utc).timestamp())  # the test consensus' valid-after
BROWSER_ARGS = ["--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps", "--metrics-recording-only",
                "--disable-domain-reliability", "--disable-breakpad", "--disable-features=Translate,OptimizationHints,"
                "MediaRouter,AutofillServerCommunication", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]
WAIT = 30  # a guard against hangs only


@pytest.fixture
def served(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    smtp_port, web_port = _free_ports(2)
    smtp = SmtpServer(smtp_port)
    smtp.start()
    public = f"http://127.0.0.1:{web_port}"
    path = tmp_path / "agent.yaml"
    path.write_text(yaml.safe_dump({
        "state_dir": str(tmp_path / "state"),
        "alerts": {"public_url": public, "retry": {"initial_delay_seconds": 1, "max_delay_seconds": 2}},
        "email": {"host": "127.0.0.1", "port": smtp_port, "security": "none"},
        "subscriptions": {"listen": f"127.0.0.1:{web_port}"}}))
    config = load_config(path, environ={})
    state = State(config.state_dir)
    state.save_relays(PERIOD - 3600, {FINGERPRINT: frozenset({"Running", "Valid"})})  # a relay the agent knows
    web = WebServer(config, environ={}).start()
    try:
        yield config, state, smtp, public
    finally:
        web.stop()
        smtp.stop()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    args = BROWSER_ARGS + (["--no-sandbox"] if os.geteuid() == 0 else [])
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def artifacts(tmp_path) -> Path:
    directory = Path(os.environ.get("ALLIUM_ARTIFACTS") or tmp_path / "artifacts")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def mail_to(smtp, address, subject_part, count=1):
    """The ``count``-th mail to ``address`` whose subject holds ``subject_part`` (waits for the mailer)."""
    end = time.monotonic() + WAIT
    while time.monotonic() < end:
        found = [m for m in smtp.to(address) if subject_part in m["Subject"]]
        if len(found) >= count:
            return found[count - 1]
        time.sleep(0.2)
    raise AssertionError(f"no mail with {subject_part!r} to {address}")


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def test_subscribe_confirm_alert_manage_and_stop_in_a_browser(served, browser, tmp_path):
    from playwright.sync_api import expect

    config, state, smtp, public = served
    out = artifacts(tmp_path)
    requested: list[str] = []
    # Tall enough for the whole form: a full_page screenshot leaves this chromium's page unclickable after it.
    page = browser.new_page(viewport={"width": 1000, "height": 1900})
    page.on("request", lambda request: requested.append(request.url))

    # the form, filled in by its labels
    page.goto(f"{public}/")
    page.get_by_label("Your email address").fill(OPERATOR)
    page.get_by_label("What to watch").select_option("relay")
    page.get_by_label("Which one").fill(FINGERPRINT.lower())
    for box in page.locator("input[name=kinds]").all():
        box.uncheck()
    page.get_by_label(re.compile(r"is down \(TorRelayDown\)")).check()
    page.get_by_label(re.compile(r"\(TorRelayVersionObsolete\)")).check()
    page.get_by_label("Tell me a relay is down after (hours)").fill(str(CHOSEN_HOURS))
    filled = out / "subscription-page-filled.png"
    page.screenshot(path=str(filled), full_page=False)
    print(f"\nscreenshot: {filled}")
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading")).to_have_text("Check your mail")

    # the confirmation mail's link, and its button
    confirmation = mail_to(smtp, OPERATOR, "Confirm")
    body = text_of(confirmation)
    assert f"down_hours: {CHOSEN_HOURS}" in body and "TorRelayDown, TorRelayVersionObsolete" in body
    link = re.search(r"(http://\S+/confirm\?token=[\w-]+)", body).group(1)
    page.goto(link)
    assert SubscriptionStore(state.db).active() == []  # opening the link changed nothing
    page.get_by_role("button", name="Confirm the subscription").click()
    expect(page.get_by_role("heading")).to_have_text("Subscription active")
    expect(page.get_by_role("status")).to_contain_text("is active")
    page.set_viewport_size({"width": 1000, "height": 600})
    active_shot = out / "subscription-active.png"
    page.screenshot(path=str(active_shot), full_page=False)
    print(f"screenshot: {active_shot}")
    [subscription] = SubscriptionStore(state.db).active()
    assert (subscription.target, subscription.preferences) == (FINGERPRINT, Preferences(
        kinds=("TorRelayDown", "TorRelayVersionObsolete"), down_hours=CHOSEN_HOURS))

    # the relay goes down: told after the chosen wait, not the configured hour
    watch, alerting = RelayWatch(state.db, config.subscriptions), Alerting(config, state.db, environ={})
    down = snapshot_of(consensus_of(entry("B" * 40)), [descriptor(FINGERPRINT)])
    for hours in range(CHOSEN_HOURS + 1):
        at = PERIOD + hours * 3600
        notices = alerting.on_period([], watch.alerts(down, at), at)
        alerting.drain()
        assert [n.alert.id for n in notices] == (["TorRelayDown"] if hours == CHOSEN_HOURS else []), hours
    alert = mail_to(smtp, OPERATOR, "TorRelayDown")
    assert FINGERPRINT in text_of(alert)

    # the alert mail's link: the manage page; change the wait, then stop
    manage = re.search(r"(http://\S+/unsubscribe\?token=[\w-]+)", text_of(alert)).group(1)
    page.goto(manage)
    expect(page.get_by_role("heading")).to_have_text("Your subscription")
    assert page.get_by_label("Tell me a relay is down after (hours)").input_value() == str(CHOSEN_HOURS)
    page.get_by_label("Tell me a relay is down after (hours)").fill("6")
    page.get_by_label(re.compile(r"\(TorRelayVersionObsolete\)")).uncheck()
    page.get_by_role("button", name="Save my choices").click()
    expect(page.get_by_role("status")).to_contain_text("Saved")
    assert SubscriptionStore(state.db).active()[0].preferences == Preferences(kinds=("TorRelayDown",), down_hours=6)
    page.get_by_role("button", name="Stop these alerts").click()
    expect(page.get_by_role("heading")).to_have_text("Subscription stopped")
    assert SubscriptionStore(state.db).everything() == []

    assert {re.match(r"\w+://[^/]+", url).group(0) for url in requested} == {public}  # nothing else was asked
    assert filled.stat().st_size > 0 and active_shot.stat().st_size > 0
