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

People use the same endpoints from a browser: ``GET /`` (or ``/subscribe``)
is the sign-up page (agent.web.pages: plain HTML, no script), its forms post
form-encoded here, and an answer is a page for a client that prefers HTML
(browsers' Accept) and JSON for everyone else, with the same status either
way. A subscription's preferences (the alert kinds it hears, its thresholds
and wait) are chosen on the form, and changed later on its manage page
(``/manage`` or ``/unsubscribe`` with its unsubscribe token, the link in
every mail to it); the token is what authorises it.
"""

from __future__ import annotations

import hashlib
import html
import os
import threading
import time
from collections.abc import Callable
from dataclasses import replace

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
from agent.subscriptions.store import (
    BOUNDS,
    DEFAULTS,
    FLAG_CHOICES,
    KINDS,
    PREFERENCE_FIELDS,
    Preferences,
    Subscription,
    SubscriptionStore,
    normalise,
    normalise_email,
    parse_preferences,
)
from agent.web import pages
from agent.web.guards import SECURITY_HEADERS, ForwardedFor, RecipientLimit, client_key, cross_origin
from agent.web.server import Mailer, WebServer  # noqa: F401 (the daemon's entry points, re-exported)

_ACCEPTED = "If this address can receive mail, a message with the next step is on its way."
_TOO_MANY = "Too many mails to this address lately; try again later."
_CONFIRM_SUBJECT = "Confirm your Allium Agent subscription"
_ACTIVE_SUBJECT = "Your Allium Agent subscription is already active"
_LIST_SUBJECT = "Your Allium Agent subscriptions"
_HTML = {"Content-Type": "text/html; charset=utf-8"}


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

    offered = [kind for kind in KINDS if kind != "contact" or settings.public_contact]

    def answer(body: dict, status: int, html_page: Callable[[], str]):
        """JSON, or the page for a client that prefers HTML (a browser); the same status either way."""
        return (html_page(), status, _HTML) if _wants_html() else (body, status)

    @app.get("/")
    @app.get("/subscribe")
    def subscribe_page():
        return pages.subscribe_page(offered, settings), 200, _HTML

    @app.post("/subscribe")
    def subscribe():
        form = _fields()
        now = int(clock())
        try:
            preferences = _preferences(form, settings)
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
            problem = str(error)
            return answer({"error": problem}, 400, lambda: pages.subscribe_page(offered, settings, form, problem))
        if not recipients.allow(email):
            return answer({"error": _TOO_MANY}, 429, lambda: pages.message_page("Not sent", [_TOO_MANY], True))
        with lock:
            subscription, token = store.request(email, kind, target, now, settings.confirm_hours * 3600, preferences)
            if token is not None:
                mail(email, _CONFIRM_SUBJECT, _confirm_lines(subscription, f"{base_url}/confirm?token={token}",
                                                             settings.confirm_hours, preferences),
                     f"subscribe|{token}")
            else:
                mail(email, _ACTIVE_SUBJECT, _active_lines(subscription, base_url),
                     f"subscribe|{subscription.id}|{now}")
        return answer({"status": "accepted", "message": _ACCEPTED}, 202,
                      lambda: pages.message_page("Check your mail", [_ACCEPTED, "The message has a link to "
                                                 "confirm; nothing is sent until you do."]))

    @app.get("/confirm")
    def confirm_page():
        return _button("Confirm the subscription", "/confirm", request.args.get("token", ""),
                       "Press the button to start receiving these alerts.")

    @app.post("/confirm")
    def confirm():
        with lock:
            subscription = store.confirm(request.values.get("token", ""), int(clock()))
            if subscription is not None and subscription.kind == "operator":
                try:  # the operator may have dropped the address since it subscribed
                    _operator_address(current_proofs(), subscription.target, subscription.email)
                except SubscriptionError as error:
                    store.remove(subscription.id)
                    refused = str(error)
                    return answer({"error": refused}, 409,
                                  lambda: pages.message_page("Not confirmed", [refused], True))
        if subscription is None:
            problem = "unknown, used or expired confirmation token"
            return answer({"error": problem}, 404, lambda: pages.message_page(
                "Not confirmed", [f"This link is {problem[:-6]}.", "Subscribe again to get a new one."], True,
                [("/", "Subscribe")]))
        done = subscription
        return answer({"status": "active", "kind": done.kind, "target": done.target}, 200,
                      lambda: pages.message_page("Subscription active", [
                          f"Your subscription to alerts about {done.kind} {done.target} is active.",
                          "Every alert mail has a link to change what you hear or to stop."],
                          links=[(f"/manage?token={done.unsubscribe_token}", "Manage this subscription")]))

    @app.get("/unsubscribe")
    @app.get("/manage")
    def manage_page():
        token = request.args.get("token", "")
        with lock:
            subscription = store.by_token(token)
        if subscription is None:
            return _unknown_link()
        return pages.manage_page(subscription, settings, token), 200, _HTML

    @app.post("/preferences")
    def preferences():
        form = _fields()
        token = str(form.get("token", "") or request.args.get("token", ""))
        try:
            chosen = _preferences(form, settings)
        except SubscriptionError as error:
            problem = str(error)
            with lock:
                subscription = store.by_token(token)
            if subscription is None:
                return _unknown_link() if _wants_html() else ({"error": "unknown unsubscribe token"}, 404)
            mine = subscription
            return answer({"error": problem}, 400,
                          lambda: pages.manage_page(mine, settings, token, error=problem, values=form))
        with lock:
            changed = store.set_preferences(token, chosen)
        if changed is None:
            return _unknown_link() if _wants_html() else ({"error": "unknown unsubscribe token"}, 404)
        return answer({"status": "saved", "preferences": changed.preferences.as_dict()}, 200,
                      lambda: pages.manage_page(changed, settings, token, notice="Saved: your choices apply from "
                                                "the next voting period."))

    @app.post("/unsubscribe")
    def unsubscribe():
        with lock:
            subscription = store.unsubscribe(request.values.get("token", ""))
        if subscription is None:
            return answer({"error": "unknown unsubscribe token"}, 404, lambda: pages.message_page(
                "Nothing to stop", ["This link belongs to no subscription: it was stopped already, or the link "
                                    "is not whole."], True))
        gone = subscription
        return answer({"status": "removed", "kind": gone.kind, "target": gone.target}, 200,
                      lambda: pages.message_page("Subscription stopped", [
                          f"You will get no more alerts about {gone.kind} {gone.target}."], links=[("/", "Subscribe")]))

    @app.post("/subscriptions")
    def my_subscriptions():
        try:
            email = normalise_email(str(_fields().get("email", "")))
        except SubscriptionError as error:
            problem = str(error)
            return answer({"error": problem}, 400, lambda: pages.message_page("Not sent", [problem], True,
                                                                              [("/", "Back")]))
        if not recipients.allow(email):
            return answer({"error": _TOO_MANY}, 429, lambda: pages.message_page("Not sent", [_TOO_MANY], True))
        with lock:
            mine = [s for s in store.of(email) if s.status == "active"]
            mail(email, _LIST_SUBJECT, _list_lines(mine, base_url),
                 f"list|{int(clock()) // 3600}|{','.join(str(s.id) for s in mine)}")
        return answer({"status": "accepted", "message": _ACCEPTED}, 202,
                      lambda: pages.message_page("Check your mail", [_ACCEPTED]))

    return app


def _guard(app: Flask, base_url: str) -> None:
    """Refuses browsers' cross-origin POSTs (but RFC 8058 one-click unsubscribes, which mail providers
    post) and adds the security headers to every answer."""

    @app.before_request
    def refuse_cross_origin():
        if request.method != "POST" or not cross_origin(_browser_headers(), base_url):
            return None
        if request.path == "/unsubscribe" and request.form.get("List-Unsubscribe") == "One-Click":
            return None
        return {"error": "cross-origin request refused: post from the page of this service"}, 403

    @app.after_request
    def secure(response):
        response.headers.update(SECURITY_HEADERS)
        # The pages' one style element, by its hash; still no script, no other source.
        response.headers["Content-Security-Policy"] += f"; style-src '{pages.STYLE_HASH}'; img-src data:"
        return response


def _browser_headers() -> dict[str, str]:
    """The headers the origin check reads. Our pages' Referrer-Policy (no-referrer, so no token leaks in a
    Referer) makes a browser send ``Origin: null`` even for a post from our own page; then ``Sec-Fetch-Site``,
    which no page can set, decides: ``same-origin`` is our page, anything else (an opaque origin's post is
    ``cross-site``) is still refused, and so is ``null`` without it."""
    headers = {name: request.headers[name] for name in ("Origin", "Sec-Fetch-Site") if name in request.headers}
    same_origin = headers.get("Sec-Fetch-Site", "").strip().lower() == "same-origin"
    if same_origin and headers.get("Origin", "").strip() == "null":
        del headers["Origin"]
    return headers


def _confirm_lines(subscription: Subscription, link: str, hours: float,
                   preferences: Preferences = DEFAULTS) -> list[str]:
    return [f"Someone, hopefully you, asked for alerts about {subscription.kind} "
            f"{clean(subscription.target, 200)} to be sent to this address.",
            f"Chosen: {_described(preferences)}.",
            f"To confirm, open {link} and press the button, within {hours:g} hours.",
            "If it was not you, ignore this message: nothing will be sent."]


def _described(preferences: Preferences) -> str:
    """The preferences in a line of a mail (only what the form allows: names and numbers)."""
    parts = ["alert kinds: " + (", ".join(preferences.kinds) if preferences.kinds is not None else "all")]
    if preferences.flags is not None:
        parts.append("flags: " + (", ".join(preferences.flags) or "none"))
    parts += [f"{name}: {value:g}" for name in BOUNDS if (value := getattr(preferences, name)) is not None]
    return "; ".join(parts) + (" (the rest as configured)" if len(parts) < 2 + len(BOUNDS) else "")


def _active_lines(subscription: Subscription, base_url: str) -> list[str]:
    return [f"Someone, hopefully you, asked again for alerts about {subscription.kind} "
            f"{clean(subscription.target, 200)} to be sent to this address. They already are.",
            f"To change what you hear or stop them, open {base_url}/manage?token={subscription.unsubscribe_token}."]


def _list_lines(mine: list[Subscription], base_url: str) -> list[str]:
    if not mine:
        return ["Someone, hopefully you, asked which Allium Agent subscriptions this address has: none is active."]
    return ["Your Allium Agent subscriptions:"] + [
        f"- {s.kind} {clean(s.target, 200)}: change or stop at {base_url}/manage?token={s.unsubscribe_token}"
        for s in mine]


def _fields() -> dict:
    """The request's form fields, or its JSON object."""
    if request.form:
        return request.form
    found = request.get_json(silent=True)
    return found if isinstance(found, dict) else {}


def _wants_html() -> bool:
    """True for a client that prefers a page to JSON (a browser's Accept); scripts and curl get JSON."""
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def _preferences(fields, settings) -> Preferences:
    """The preferences a request sends: the page's form fields (check boxes: every one unticked is a choice),
    a JSON object's ``preferences`` or its top-level fields; none sent: the defaults. Flags equal to the
    configured ones are the default, so a later change of ``subscriptions.flags`` applies to them."""
    getlist = getattr(fields, "getlist", None)
    if isinstance(fields.get("preferences"), dict):
        fields = fields["preferences"]
    if getlist is not None:  # a form: lists are repeated fields
        page = "preferences_form" in fields
        chosen = {name: (getlist(name) if page or name in fields else None) if name in ("kinds", "flags")
                  else fields.get(name) for name in PREFERENCE_FIELDS}
    else:
        chosen = {name: fields.get(name) for name in PREFERENCE_FIELDS}
    preferences = parse_preferences(chosen)
    if preferences.flags is not None and set(preferences.flags) == set(settings.flags) & set(FLAG_CHOICES):
        preferences = replace(preferences, flags=None)
    return preferences


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


def _button(label: str, action: str, token: str, explanation: str):
    return pages.button_page(label, explanation, action, token, label), 200, _HTML


def _unknown_link():
    return pages.message_page("Unknown link", ["This link belongs to no subscription: it was stopped already, "
                                               "or the link is not whole."], True, [("/", "Subscribe")]), 404, _HTML
