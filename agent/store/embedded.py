"""The embedded store: the agent's own VictoriaMetrics on 127.0.0.1, used when no ``store.url`` is set.

A newcomer gets queryable history from the first ``once`` without assembling
a TSDB. The data live in ``state_dir/victoria-metrics``; the running
instance is described in ``state_dir/victoria-metrics.json`` (pid, url), so a
second command (``query`` beside ``run``) uses the instance that is already
up instead of starting another on the same data (VictoriaMetrics locks its
data directory, so two could not run anyway). Whoever started the instance
stops it, by PID, on close; one that was found running is left alone.

If Debian's ``victoria-metrics`` binary is missing, ``start_or_attach``
returns None after saying how to install it: the caller falls back to the
outbox, where every period waits until a store exists.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path

import requests

from agent.model.errors import StoreError
from agent.model.files import write_atomically

log = logging.getLogger(__name__)

DATA_DIR, RUN_FILE, LOG_FILE = "victoria-metrics", "victoria-metrics.json", "victoria-metrics.log"
START_TIMEOUT_SECONDS = 30
STOP_TIMEOUT_SECONDS = 10
INSTALL_HINT = "apt-get install victoria-metrics (or set store.url to a TSDB of your own)"


@dataclass(frozen=True)
class EmbeddedSettings:
    """What the agent needs to know to run its own VictoriaMetrics."""

    state_dir: Path
    binary: str
    port: int
    retention_years: int


class EmbeddedVictoria:
    """One VictoriaMetrics serving ``url``; ``owned`` if this process started (or adopted) it and so stops it."""

    def __init__(self, url: str, pid: int, owned: bool, settings: EmbeddedSettings,
                 process: subprocess.Popen | None = None):
        self.url, self.pid, self.owned, self.settings = url, pid, owned, settings
        self._process = process

    @classmethod
    def start_or_attach(cls, settings: EmbeddedSettings) -> EmbeddedVictoria | None:
        """The running instance for this state directory, else a new one; None if the binary is missing."""
        running = _running_instance(settings)
        if running is not None:
            return running
        binary = shutil.which(settings.binary)
        if binary is None:
            log.warning("no embedded store: %r is not installed (%s); periods wait in the outbox",
                        settings.binary, INSTALL_HINT)
            return None
        return cls._start(binary, settings)

    @classmethod
    def _start(cls, binary: str, settings: EmbeddedSettings) -> EmbeddedVictoria:
        data_dir = (settings.state_dir / DATA_DIR).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        port = settings.port if _port_free(settings.port) else _free_port()
        if port != settings.port:
            log.info("port %d is taken; the embedded store listens on %d", settings.port, port)
        url = f"http://127.0.0.1:{port}"
        command = [binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={data_dir}",
                   f"-retentionPeriod={settings.retention_years}y", "-loggerLevel=WARN", *_store_flags()]
        with open(settings.state_dir / LOG_FILE, "ab") as output:
            # A session of its own: a Ctrl-C meant for the agent must not stop the store before the
            # agent's last write; the agent stops it itself (or the next command adopts it).
            process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        instance = cls(url, process.pid, True, settings, process)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if process.poll() is not None:
                # Lost a race with another agent command starting the same store: use that one.
                running = _running_instance(settings)
                if running is not None:
                    return running
                raise StoreError(f"the embedded store ({binary}) exited with status {process.returncode} "
                                 f"at start; see {settings.state_dir / LOG_FILE}")
            if _healthy(url):
                _write_run_file(settings.state_dir / RUN_FILE, {"pid": process.pid, "url": url, "owner": os.getpid()})
                _OWNED.add(instance)
                log.info("embedded store started: %s (data in %s)", url, data_dir)
                return instance
            time.sleep(0.05)
        instance.stop()
        raise StoreError(f"the embedded store did not answer on {url} within {START_TIMEOUT_SECONDS} s; "
                         f"see {settings.state_dir / LOG_FILE}")

    def ensure_running(self) -> bool:
        """Restarts the store if it died (or the instance this process used went away); True if its URL changed.

        The daemon calls this before each write, so a crashed store costs a
        period's delay in the outbox, never the period.
        """
        alive = self._process.poll() is None if self._process is not None else (
            _alive(self.pid) and _healthy(self.url))
        if alive:
            return False
        log.warning("the embedded store (pid %d) is gone; starting it again", self.pid)
        _OWNED.discard(self)
        replacement = EmbeddedVictoria.start_or_attach(replace(self.settings, port=_port_of(self.url)))
        if replacement is None:
            return False
        changed = replacement.url != self.url
        self.url, self.pid, self.owned, self._process = (replacement.url, replacement.pid, replacement.owned,
                                                         replacement._process)
        _OWNED.discard(replacement)
        if self.owned:
            _OWNED.add(self)
        return changed

    def flush(self) -> None:
        """Makes what was written searchable now (VictoriaMetrics buffers ingestion for about a second)."""
        try:
            requests.get(f"{self.url}/internal/force_flush", timeout=10)
        except requests.RequestException as error:
            log.debug("embedded store flush failed: %s", error)

    def stop(self) -> None:
        """Stops the instance if this process owns it (SIGTERM: it flushes to disk; SIGKILL after 10 s)."""
        _OWNED.discard(self)
        if not self.owned:
            return
        self.owned = False
        if self._process is not None:
            stop_child(self._process)
        elif _is_our_store(self.pid, self.settings.state_dir / DATA_DIR):
            _stop_adopted(self.pid)
        (self.settings.state_dir / RUN_FILE).unlink(missing_ok=True)


#: Instances this process must stop; an interpreter that exits without closing its store stops them here.
_OWNED: set[EmbeddedVictoria] = set()


@atexit.register
def _stop_owned() -> None:
    for instance in list(_OWNED):
        instance.stop()


def stop_child(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """Stops a child process: SIGTERM, then SIGKILL after ``timeout`` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %d s; killing it", process.args[0], timeout)
            process.kill()
            process.wait()


def _stop_adopted(pid: int) -> None:
    """Stops a store a dead agent process left running (not our child: polled, not waited for)."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _store_flags() -> list[str]:
    """The flags every store the agent writes to needs (dedup of re-sent periods, lookback for hourly data)."""
    from agent.store.victoria_flags import victoria_flags

    # The live network's hour is the longest period there is; the flags suit shorter ones too.
    return victoria_flags(3600)


def _running_instance(settings: EmbeddedSettings) -> EmbeddedVictoria | None:
    """The instance another agent command started for this state directory, if it still answers.

    One whose starter has died (a ``kill -9``) is adopted: this process then
    stops it when done, so a crash leaves no store running for good.
    """
    try:
        described = json.loads((settings.state_dir / RUN_FILE).read_text())
        pid, url, owner = int(described["pid"]), str(described["url"]), int(described["owner"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not url.startswith("http://127.0.0.1:") or not _is_our_store(pid, settings.state_dir / DATA_DIR) \
            or not _healthy(url):
        return None
    adopted = owner != os.getpid() and not _alive(owner)
    instance = EmbeddedVictoria(url, pid, owned=adopted, settings=settings)
    if adopted:
        log.info("adopting the embedded store (pid %d) a stopped agent command left running", pid)
        _write_run_file(settings.state_dir / RUN_FILE, {"pid": pid, "url": url, "owner": os.getpid()})
        _OWNED.add(instance)
    return instance


def describe(state_dir: Path) -> dict | None:
    """``{"pid", "url"}`` of the running embedded store, for ``status``; None if none (starts or adopts nothing)."""
    try:
        described = json.loads((state_dir / RUN_FILE).read_text())
        pid, url = int(described["pid"]), str(described["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {"pid": pid, "url": url} if _is_our_store(pid, state_dir / DATA_DIR) and _healthy(url) else None


def _is_our_store(pid: int, data_dir: Path) -> bool:
    """True if ``pid`` is a VictoriaMetrics on ``data_dir`` (never signal a process that merely reused the pid)."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return f"-storageDataPath={data_dir.resolve()}".encode() in arguments


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _write_run_file(path: Path, content: dict) -> None:
    write_atomically(path, json.dumps(content).encode())


def stop_left_running(state_dir: Path) -> bool:
    """Stops the embedded store of ``state_dir`` if one is running whose starter has exited; True if it did."""
    settings = EmbeddedSettings(Path(state_dir), "victoria-metrics", 0, 1)
    running = _running_instance(settings)
    if running is None or not running.owned:
        return False
    running.stop()
    return True
