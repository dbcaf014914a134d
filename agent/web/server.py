"""The web server: the subscription endpoints and the REST API (agent/web/api.py) under one waitress in the
daemon's process, in threads of its own, and the Mailer.

Why waitress: it is pure Python (nothing to build, one pinned package),
production-grade, and serves from a thread as werkzeug's development server
did, so the daemon starts and stops it the same way. Its connections are
asynchronous, so idle or slow clients hold no worker thread: one idle socket
no longer blocks every endpoint. It refuses a body over the limit (413) from
its Content-Length, or as chunks arrive, before reading it; closes
connections idle for ``idle_timeout_seconds``; and stops accepting at
``max_connections``. A few worker threads run the Flask app; none of this
touches the collection cycle's threads, and the body limit keeps its memory
bounded. (gunicorn and uvicorn would need processes or an event loop of
their own; cheroot blocks a thread per connection.)
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from waitress import wasyncore
from waitress.server import create_server
from waitress.trigger import trigger

from agent.alerts.dispatch import Alerting
from agent.config.loader import Config
from agent.model.aroi import ProofBook
from agent.model.errors import ConfigError
from agent.pipeline.state import State
from agent.web.settings import ApiConfig, api_settings

log = logging.getLogger(__name__)
#: Worker threads running the app; the database work is serialised anyway, so a few suffice.
THREADS = 4
#: Headers beyond this are refused (431) rather than buffered: requests here carry a few hundred bytes.
MAX_HEADER_BYTES = 16384
STOP_SECONDS = 10


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

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout=30)


class PathDispatcher:
    """One WSGI app of two: the API's paths (agent.web.api.serves) to the API app, the rest to the subscription
    endpoints. Each keeps its own limits and headers; both see the client as agent.web.guards decides it."""

    def __init__(self, api, other):
        from agent.web.api import serves

        self.api, self.other, self.serves = api, other, serves

    def __call__(self, environ, start_response):
        app = self.api if self.serves(environ.get("PATH_INFO", "")) else self.other
        return app(environ, start_response)


class WebServer:
    """The endpoints served by waitress from threads of the daemon, and their Mailer; ``stop`` closes every
    connection and joins every thread."""

    def __init__(self, config: Config, environ=os.environ, proofs: Callable[[], ProofBook] | None = None,
                 api: ApiConfig | None = None):
        from agent.web.api import create_api_app
        from agent.web.subscriptions import create_app

        settings = config.subscriptions
        if settings.listen is None:
            raise ConfigError(config.source, ["subscriptions.listen: must be host:port to serve the endpoints"])
        host, port = settings.listen
        self.mailer = Mailer(config, environ)
        app: Any = create_app(config, environ, mail_queued=self.mailer.wake.set, proofs=proofs)
        api_config = api or api_settings(config)
        self.api = create_api_app(config, api_config) if api_config.enabled else None
        if self.api is not None:
            app = PathDispatcher(self.api, app)
        self.map: dict = {}  # every socket of the server (one per listening address, the connections, triggers)
        self.server = create_server(
            app, map=self.map, host=host, port=port, threads=THREADS, ident="allium-agent",
            channel_timeout=settings.idle_timeout_seconds, cleanup_interval=max(1, settings.idle_timeout_seconds // 2),
            connection_limit=settings.max_connections, max_request_body_size=settings.max_body_bytes,
            max_request_header_size=MAX_HEADER_BYTES,
            clear_untrusted_proxy_headers=False,  # agent.web.guards.ForwardedFor decides, from its list of proxies
            expose_tracebacks=False)
        # One listening socket per address the host resolves to (waitress then returns a MultiSocketServer).
        self.listening = getattr(self.server, "effective_listen", None) or [
            (self.server.effective_host, self.server.effective_port)]
        self.port = self.listening[0][1]
        self.thread = threading.Thread(target=self.server.run, name="subscriptions-web", daemon=True)

    def start(self) -> WebServer:
        self.mailer.thread.start()
        self.thread.start()
        served = "subscription endpoints" + (" and the API (/api/v1, /healthz, /metrics)" if self.api else "")
        log.info("%s on %s", served, ", ".join(f"http://{host}:{port}" for host, port in self.listening))
        return self

    def stop(self) -> None:
        """Closes the listening socket and every connection from the server's own loop, which then ends;
        waits for the worker threads and the Mailer."""
        if self.thread.is_alive():
            wake = next(d for d in list(self.map.values()) if isinstance(d, trigger))
            wake.pull_trigger(self._close_all)  # runs in the server's loop, which ends when nothing is left
            self.thread.join(timeout=STOP_SECONDS)
        else:
            self._close_all()
        self.server.task_dispatcher.shutdown(timeout=STOP_SECONDS)
        self.mailer.stop()
        if self.api is not None:
            self.api.extensions["allium_api"].close()
        if self.thread.is_alive():
            log.warning("the subscription endpoints' thread did not stop within %d s", STOP_SECONDS)

    def _close_all(self) -> None:
        wasyncore.close_all(self.map, ignore_all=True)
