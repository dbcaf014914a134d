"""The subscription endpoints (Flask): subscribe, confirm, unsubscribe, and "mail me my subscriptions".

Answers never reveal who is subscribed to what: subscribing and asking for
one's list always get the same reply, and the details go only to the
address itself. Links in mails lead to a page with a button (GET never
changes anything, so mail scanners that follow links cannot confirm or
unsubscribe anyone); one-click unsubscribe (RFC 8058) is a POST. Every
endpoint is rate-limited per client address (Flask-Limiter, in memory).
"""

from __future__ import annotations

import hashlib
import html
import logging
import os
import threading
import time

from flask import Flask, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from agent.alerts.dispatch import Alerting
from agent.alerts.notifiers import SUBSCRIPTION_CHANNEL
from agent.alerts.render import Message, clean
from agent.config.loader import Config
from agent.model.errors import SubscriptionError
from agent.pipeline.state import State
from agent.subscriptions.store import SubscriptionStore, normalise

log = logging.getLogger(__name__)
_ACCEPTED = "If this address can receive mail, a message with the next step is on its way."


def create_app(config: Config, environ=os.environ, clock=time.time, mail_queued=lambda: None) -> Flask:
    """The endpoints. Mails are only queued here (``mail_queued`` is called after each), so every
    answer takes the same time whatever it did; a Mailer sends them."""
    app = Flask("allium-agent-subscriptions")
    if config.subscriptions.trusted_proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.subscriptions.trusted_proxies)
    state = State(config.state_dir)  # its own connection: the daemon's stays in the daemon's thread
    lock = threading.Lock()
    store = SubscriptionStore(state.db)
    alerting = Alerting(config, state.db, environ, clock)
    Limiter(get_remote_address, app=app, default_limits=[config.subscriptions.rate_limit], storage_uri="memory://")

    def base_url() -> str:
        # Never the Host header: a forged one would put the attacker's host in a genuine mail.
        return (config.alerts.public_url or "http://127.0.0.1").rstrip("/")

    def mail(address: str, subject: str, lines: list[str], key: str) -> None:
        text = "\n".join(lines) + "\n"
        body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
        token = hashlib.sha256(f"{address}|{key}".encode()).hexdigest()[:40]
        alerting.send_later(SUBSCRIPTION_CHANNEL, address, Message(clean(subject, 200), text, body), token)
        mail_queued()

    @app.post("/subscribe")
    def subscribe():
        form = _fields()
        email, kind, target = (str(form.get(name, "")) for name in ("email", "kind", "target"))
        now = int(clock())
        with lock:
            try:
                email, kind, target = normalise(email, kind, target)
                if kind in ("relay", "family") and not _known_relay(state, target):
                    raise SubscriptionError("target: no relay with this fingerprint in the recent consensuses "
                                            "(mistyped, or it came up within the last hour?)")
                subscription, token = store.request(email, kind, target, now, config.subscriptions.confirm_hours * 3600)
            except SubscriptionError as error:
                return {"error": str(error)}, 400
            if token is not None:
                link = f"{base_url()}/confirm?token={token}"
                mail(subscription.email, f"Confirm your Allium Agent subscription ({subscription.kind} "
                                         f"{subscription.target[:60]})",
                     [f"Someone, hopefully you, asked for alerts about {subscription.kind} "
                      f"{clean(subscription.target, 200)} to be sent to this address.",
                      f"To confirm, open {link} and press the button, within "
                      f"{config.subscriptions.confirm_hours:g} hours.",
                      "If it was not you, ignore this message: nothing will be sent."], f"confirm|{token}")
        return {"status": "accepted", "message": _ACCEPTED}, 202

    @app.get("/confirm")
    def confirm_page():
        return _button("Confirm the subscription", "/confirm", request.args.get("token", ""))

    @app.post("/confirm")
    def confirm():
        with lock:
            subscription = store.confirm(request.values.get("token", ""), int(clock()))
        if subscription is None:
            return {"error": "unknown, used or expired confirmation token"}, 404
        return {"status": "active", "kind": subscription.kind, "target": subscription.target}, 200

    @app.get("/unsubscribe")
    def unsubscribe_page():
        return _button("Stop these alerts", "/unsubscribe", request.args.get("token", ""))

    @app.post("/unsubscribe")
    def unsubscribe():
        with lock:
            subscription = store.unsubscribe(request.values.get("token", ""))
        if subscription is None:
            return {"error": "unknown unsubscribe token"}, 404
        return {"status": "removed", "kind": subscription.kind, "target": subscription.target}, 200

    @app.post("/subscriptions")
    def my_subscriptions():
        form = _fields()
        email = str(form.get("email", "")).strip()
        with lock:
            mine = [s for s in store.of(email) if s.status == "active"]
            if mine:
                lines = ["Your Allium Agent subscriptions:"] + [
                    f"- {s.kind} {clean(s.target, 200)}: stop with {base_url()}/unsubscribe?token={s.unsubscribe_token}"
                    for s in mine]
                mail(email, "Your Allium Agent subscriptions", lines, f"list|{int(clock()) // 3600}|{len(mine)}")
        return {"status": "accepted", "message": _ACCEPTED}, 202

    return app


def _fields() -> dict:
    """The request's form fields, or its JSON object."""
    return request.form if request.form else (request.get_json(silent=True) or {})


def _known_relay(state: State, fingerprint: str) -> bool:
    relays = state.relays_before(2**62)
    return relays is not None and fingerprint in relays


def _button(label: str, action: str, token: str):
    page = (f"<!doctype html><title>{html.escape(label)}</title><form method=post action={action}>"
            f"<input type=hidden name=token value=\"{html.escape(token, quote=True)}\">"
            f"<button>{html.escape(label)}</button></form>")
    return page, 200, {"Content-Type": "text/html; charset=utf-8"}


class Mailer:
    """Drains the delivery outbox from its own thread and connection: at once when woken, else every minute.

    Sends confirmation mails within seconds, and retries anything waiting
    between voting periods; claims keep it from sending what the daemon sends.
    """

    def __init__(self, config: Config, environ=os.environ, every_seconds: float = 60):
        self.config, self.environ, self.every_seconds = config, environ, every_seconds
        self.wake, self.stopping = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, name="mailer", daemon=True)

    def _run(self) -> None:
        state = State(self.config.state_dir)
        alerting = Alerting(self.config, state.db, self.environ)
        while not self.stopping.is_set():
            try:
                alerting.drain()
            except Exception:
                log.exception("the mailer's drain failed; it tries again")
            self.wake.wait(self.every_seconds)
            self.wake.clear()
        state.close()


class WebServer:
    """The endpoints served from a thread of the daemon (werkzeug's server, one request at a time), and their Mailer."""

    def __init__(self, config: Config, environ=os.environ):
        from werkzeug.serving import make_server

        host, port = config.subscriptions.listen
        self.mailer = Mailer(config, environ)
        self.server = make_server(host, port, create_app(config, environ, mail_queued=self.mailer.wake.set),
                                  threaded=False)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name="subscriptions-web", daemon=True)

    def start(self) -> WebServer:
        self.mailer.thread.start()
        self.thread.start()
        log.info("subscription endpoints on http://%s:%d", *self.server.server_address[:2])
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.mailer.stopping.set()
        self.mailer.wake.set()
        self.mailer.thread.join(timeout=30)
