"""The read-only REST API (/api/v1), /healthz and /metrics as a Flask app of their own.

Routes are declared in agent.web.api_schema; their parameters are checked
from those declarations (agent.web.openapi), so /api/v1/openapi.json and the
server agree. Access: the health, metrics and spec routes are open; a data
route needs a key (``Authorization: Bearer aa_...`` or ``X-API-Key``) with
the read scope unless ``api.anonymous`` lists it (by default only
``network``, the cheap one). Every request counts against a rate limit
(Flask-Limiter, in memory): per key when it carries a valid key, else per
client address as agent.web.guards decides it (trusted proxies, IPv6 by /64);
over it, 429 with Retry-After. CORS headers go only to ``api.cors_origins``.
Every error is JSON ``{error, detail}``.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, g, request
from flask_limiter import Limiter
from werkzeug.exceptions import HTTPException

from agent import __version__
from agent.web.api_data import Sources, StoreUnavailable
from agent.web.api_handlers import HANDLERS, NotFound
from agent.web.api_ops import CONTENT_TYPE, healthz, metrics
from agent.web.api_schema import routes
from agent.web.apikeys import ApiKey, KeyStore
from agent.web.guards import ForwardedFor, client_key
from agent.web.openapi import PAGE_POLICY, BadParameter, Route, document, parse, render_html
from agent.web.settings import ApiConfig, api_settings

log = logging.getLogger(__name__)
#: Paths this app answers; agent.web.server sends everything else to the subscription endpoints.
PATH_PREFIXES = ("/api/", "/healthz", "/metrics")
_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
            "Cache-Control": "no-store"}
_JSON_POLICY = "default-src 'none'; frame-ancestors 'none'"


def error(status: int, title: str, detail: str, headers: dict | None = None):
    return {"error": title, "detail": detail}, status, headers or {}


def create_api_app(config, settings: ApiConfig | None = None, clock=time.time) -> Flask:
    """The API app over this config's state and store; ``settings`` default to the config's ``api`` section."""
    settings = settings or api_settings(config)
    app = Flask("allium-agent-api")
    app.wsgi_app = ForwardedFor(app.wsgi_app, config.subscriptions.trusted_proxies)  # type: ignore[method-assign]
    sources = Sources(config, settings, clock)
    app.extensions["allium_api"] = sources
    keys = KeyStore(sources.state.db)
    declared = routes(settings)
    spec = document(declared, settings.is_anonymous, __version__)
    page = render_html(spec)

    def presented() -> str | None:
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return header[7:].strip()
        return request.headers.get("X-API-Key")

    def current_key() -> ApiKey | None:
        if "api_key" not in g:
            text = presented()
            g.key_presented = text is not None
            if text is None:
                g.api_key = None
            else:
                with sources.lock:
                    g.api_key = keys.verify(text, int(clock()))
        return g.api_key

    def limit_key() -> str:
        key = current_key()
        return f"key:{key.id}" if key else f"client:{client_key(request.remote_addr or '')}"

    Limiter(limit_key, app=app, storage_uri="memory://", headers_enabled=True, strategy="moving-window",
            default_limits=[lambda: settings.key_rate_limit if current_key() else settings.rate_limit])

    def access(route: Route):
        """None if the request may use the route, else the 401/403 answer."""
        if route.open or request.method == "OPTIONS":
            return None
        key = current_key()
        if key is None and g.key_presented:
            return error(401, "unauthorized", "the API key is unknown or revoked",
                         {"WWW-Authenticate": 'Bearer realm="allium-agent"'})
        if key is None:
            if settings.is_anonymous(route.name):
                return None
            return error(401, "unauthorized", f"{route.path} needs an API key (Authorization: Bearer <key> "
                         "or X-API-Key)", {"WWW-Authenticate": 'Bearer realm="allium-agent"'})
        if not key.allows("read"):
            return error(403, "forbidden", "the key lacks the read scope")
        return None

    def view_for(route: Route):
        def view(**path_values):
            denied = access(route)
            if denied is not None:
                return denied
            try:
                params = parse(route, request.args, path_values)
                if route.name == "healthz":
                    return healthz(sources)
                if route.name == "metrics":
                    return metrics(sources), 200, {"Content-Type": CONTENT_TYPE}
                if route.name == "openapi":
                    return spec
                if route.name == "docs":
                    return page, 200, {"Content-Type": "text/html; charset=utf-8",
                                       "Content-Security-Policy": PAGE_POLICY}
                return HANDLERS[route.name](sources, params)
            except BadParameter as bad:
                return error(400, "bad parameter", f"{bad.name}: {bad.detail}")
            except NotFound as missing:
                return error(404, "not found", str(missing))
            except StoreUnavailable as down:
                return error(503, "store unavailable", str(down))

        view.__name__ = route.name
        return view

    for route in declared:
        app.add_url_rule(route.flask_path, route.name, view_for(route), methods=["GET"])

    @app.errorhandler(HTTPException)
    def http_error(failure: HTTPException):
        answer = error(failure.code or 500, (failure.name or "error").lower(), failure.description or "")
        response = app.make_response(answer)
        if failure.code == 405:
            response.headers["Allow"] = "GET, HEAD, OPTIONS"
        return response

    @app.errorhandler(Exception)
    def unexpected(failure: Exception):
        log.exception("the API failed on %s", request.path)
        return error(500, "internal error", "the agent could not answer; its log says why")

    @app.after_request
    def headers(response):
        response.headers.update(_HEADERS)
        response.headers.setdefault("Content-Security-Policy", _JSON_POLICY)
        origin = request.headers.get("Origin")
        if origin and origin in settings.cors_origins:
            response.headers.update({
                "Access-Control-Allow-Origin": origin, "Access-Control-Allow-Methods": "GET, OPTIONS",
                "Access-Control-Allow-Headers": "Authorization, X-API-Key", "Access-Control-Max-Age": "600",
                "Access-Control-Expose-Headers": "Retry-After, X-RateLimit-Limit, X-RateLimit-Remaining"})
            response.vary.add("Origin")
        return response

    return app


def serves(path: str) -> bool:
    """True for the paths the API app answers."""
    return path.startswith(PATH_PREFIXES[0]) or path in PATH_PREFIXES[1:]
