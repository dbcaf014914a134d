"""The subscription endpoints (Flask): subscribe, confirm, unsubscribe, and "mail me my subscriptions".

Answers never reveal who is subscribed to what: subscribing and asking for
one's list always get the same reply after the same database work (and
always mail the address: a confirmation or "already active", the list or
"none"), and the details go only to the address itself. Subjects are fixed
texts: nothing a request says reaches them. Links in mails lead to a page
with a button (GET never changes anything, so mail scanners that follow
links cannot confirm or unsubscribe anyone); one-click unsubscribe (RFC 8058)
is a POST. Every endpoint is rate-limited per client address (Flask-Limiter,
in memory), mails per mailbox whoever asks, and browsers' cross-origin POSTs
are refused (see agent.web.guards). The server is agent.web.server's.
"""

from __future__ import annotations

import hashlib
import html
import os
import threading
import time
from collections.abc import Callable

from flask import Flask, request
from flask_limiter import Limiter

from agent.alerts.dispatch import Alerting
from agent.alerts.notifiers import subscription_channel
from agent.alerts.render import Message, clean
from agent.aroi.service import read_book
from agent.config.loader import Config
from agent.model.aroi import ProofBook
from agent.model.errors import SubscriptionError
from agent.pipeline.state import State
from agent.subscriptions.store import Subscription, SubscriptionStore, normalise, normalise_email
from agent.web.guards import SECURITY_HEADERS, ForwardedFor, RecipientLimit, client_key, cross_origin
from agent.web.server import Mailer, WebServer  # noqa: F401 (the daemon's entry points, re-exported)

_ACCEPTED = "If this address can receive mail, a message with the next step is on its way."
_TOO_MANY = "Too many mails to this address lately; try again later."
_CONFIRM_SUBJECT = "Confirm your Allium Agent subscription"
_ACTIVE_SUBJECT = "Your Allium Agent subscription is already active"
_LIST_SUBJECT = "Your Allium Agent subscriptions"


def create_app(config: Config, environ=os.environ, clock=time.time, mail_queued=lambda: None,
               proofs: Callable[[], ProofBook] | None = None) -> Flask:
    """The endpoints. Mails are only queued here (``mail_queued`` is called after each), so every
    answer takes the same time whatever it did; a Mailer sends them. ``proofs``: the operators' AROI
    proofs as they stand (default: as last saved in the state directory)."""
    settings = config.subscriptions
    app = Flask("allium-agent-subscriptions")
    app.config.update(MAX_CONTENT_LENGTH=settings.max_body_bytes, MAX_FORM_MEMORY_SIZE=settings.max_body_bytes)
    app.wsgi_app = ForwardedFor(app.wsgi_app, settings.trusted_proxies)  # type: ignore[method-assign]
    state = State(config.state_dir)  # its own connection: the daemon's stays in the daemon's thread
    lock = threading.Lock()
    store = SubscriptionStore(state.db)
    alerting = Alerting(config, state.db, environ, clock)
    recipients = RecipientLimit(settings.mails_per_address)
    current_proofs = proofs or (lambda: read_book(config.state_dir))
    # Links are built from the configured URL, never the Host header: a forged one would put the attacker's
    # host in a genuine mail. The origin check compares browsers' Origin with it too.
    base_url = (config.alerts.public_url or "http://127.0.0.1").rstrip("/")
    _guard(app, base_url)
    Limiter(lambda: client_key(request.remote_addr or ""), app=app, default_limits=[settings.rate_limit],
            storage_uri="memory://")

    def mail(address: str, subject: str, lines: list[str], key: str) -> None:
        text = "\n".join(lines) + "\n"
        body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
        token = hashlib.sha256(f"{address}|{key}".encode()).hexdigest()[:40]
        alerting.send_later(subscription_channel(config), address, Message(subject, text, body), token)
        mail_queued()

    @app.post("/subscribe")
    def subscribe():
        form = _fields()
        now = int(clock())
        try:
            email, kind, target = normalise(*(str(form.get(name, "")) for name in ("email", "kind", "target")))
            with lock:
                if kind in ("relay", "family") and not _known_relay(state, target):
                    raise SubscriptionError("target: no relay with this fingerprint in the recent consensuses "
                                            "(mistyped, or it came up within the last hour?)")
            if kind == "contact" and not settings.public_contact:
                raise SubscriptionError("kind: contact subscriptions are added by the administrators; subscribe "
                                        "to your relays by fingerprint, family or verified operator domain")
            if kind == "operator":
                _operator_address(current_proofs(), target, email)
        except SubscriptionError as error:
            return {"error": str(error)}, 400
        if not recipients.allow(email):
            return {"error": _TOO_MANY}, 429
        with lock:
            subscription, token = store.request(email, kind, target, now, settings.confirm_hours * 3600)
            if token is not None:
                mail(email, _CONFIRM_SUBJECT, _confirm_lines(subscription, f"{base_url}/confirm?token={token}",
                                                             settings.confirm_hours), f"subscribe|{token}")
            else:
                mail(email, _ACTIVE_SUBJECT, _active_lines(subscription, base_url),
                     f"subscribe|{subscription.id}|{now}")
        return {"status": "accepted", "message": _ACCEPTED}, 202

    @app.get("/confirm")
    def confirm_page():
        return _button("Confirm the subscription", "/confirm", request.args.get("token", ""))

    @app.post("/confirm")
    def confirm():
        with lock:
            subscription = store.confirm(request.values.get("token", ""), int(clock()))
            if subscription is not None and subscription.kind == "operator":
                try:  # the operator may have dropped the address since it subscribed
                    _operator_address(current_proofs(), subscription.target, subscription.email)
                except SubscriptionError as error:
                    store.remove(subscription.id)
                    return {"error": str(error)}, 409
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
        try:
            email = normalise_email(str(_fields().get("email", "")))
        except SubscriptionError as error:
            return {"error": str(error)}, 400
        if not recipients.allow(email):
            return {"error": _TOO_MANY}, 429
        with lock:
            mine = [s for s in store.of(email) if s.status == "active"]
            mail(email, _LIST_SUBJECT, _list_lines(mine, base_url),
                 f"list|{int(clock()) // 3600}|{','.join(str(s.id) for s in mine)}")
        return {"status": "accepted", "message": _ACCEPTED}, 202

    return app


def _guard(app: Flask, base_url: str) -> None:
    """Refuses browsers' cross-origin POSTs (but RFC 8058 one-click unsubscribes, which mail providers
    post) and adds the security headers to every answer."""

    @app.before_request
    def refuse_cross_origin():
        if request.method != "POST" or not cross_origin(request.headers, base_url):
            return None
        if request.path == "/unsubscribe" and request.form.get("List-Unsubscribe") == "One-Click":
            return None
        return {"error": "cross-origin request refused: post from the page of this service"}, 403

    @app.after_request
    def secure(response):
        response.headers.update(SECURITY_HEADERS)
        return response


def _confirm_lines(subscription: Subscription, link: str, hours: float) -> list[str]:
    return [f"Someone, hopefully you, asked for alerts about {subscription.kind} "
            f"{clean(subscription.target, 200)} to be sent to this address.",
            f"To confirm, open {link} and press the button, within {hours:g} hours.",
            "If it was not you, ignore this message: nothing will be sent."]


def _active_lines(subscription: Subscription, base_url: str) -> list[str]:
    return [f"Someone, hopefully you, asked again for alerts about {subscription.kind} "
            f"{clean(subscription.target, 200)} to be sent to this address. They already are.",
            f"To stop them, open {base_url}/unsubscribe?token={subscription.unsubscribe_token} and press the button."]


def _list_lines(mine: list[Subscription], base_url: str) -> list[str]:
    if not mine:
        return ["Someone, hopefully you, asked which Allium Agent subscriptions this address has: none is active."]
    return ["Your Allium Agent subscriptions:"] + [
        f"- {s.kind} {clean(s.target, 200)}: stop with {base_url}/unsubscribe?token={s.unsubscribe_token}"
        for s in mine]


def _fields() -> dict:
    """The request's form fields, or its JSON object."""
    if request.form:
        return request.form
    found = request.get_json(silent=True)
    return found if isinstance(found, dict) else {}


def _operator_address(proofs: ProofBook, domain: str, email: str) -> None:
    """Raises unless ``domain`` is a verified operator whose verified relays name ``email`` in CIISS email:.

    Only the operator can then subscribe to its relays' alerts: the address
    comes from relays the domain's proof lists, so a stranger's relay that
    merely claims the domain cannot add one.
    """
    if domain not in proofs.domains():
        raise SubscriptionError(f"target: {domain} is not a verified operator (no relay's CIISS claim for it "
                                "is confirmed by its proof yet; see docs/aroi.md)")
    if email.lower() not in proofs.emails_of(domain):
        raise SubscriptionError(f"email: not an address the CIISS email: field of {domain}'s verified relays "
                                "names; subscribe with that address")


def _known_relay(state: State, fingerprint: str) -> bool:
    relays = state.relays_before(2**62)
    return relays is not None and fingerprint in relays


def _button(label: str, action: str, token: str):
    page = (f"<!doctype html><title>{html.escape(label)}</title><form method=post action={action}>"
            f"<input type=hidden name=token value=\"{html.escape(token, quote=True)}\">"
            f"<button>{html.escape(label)}</button></form>")
    return page, 200, {"Content-Type": "text/html; charset=utf-8"}
