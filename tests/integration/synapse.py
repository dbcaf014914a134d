"""A real Matrix homeserver (Synapse from PyPI, in its own virtualenv) on 127.0.0.1, for the alert tests.

Federation, key servers, URL previews and stats are all off: it talks to
nobody but us. `scripts/install.sh --test` creates the virtualenv in
``.venv-synapse``; ``$ALLIUM_SYNAPSE_PYTHON`` may point at another one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import subprocess
import time
from pathlib import Path

import requests
import yaml

REPO = Path(__file__).parents[2]
SYNAPSE_PYTHON = Path(os.environ.get("ALLIUM_SYNAPSE_PYTHON", REPO / ".venv-synapse" / "bin" / "python"))


class Synapse:
    def __init__(self, directory: Path, port: int, messages_per_second: float | None = None):
        self.directory, self.port = Path(directory), port
        self.messages_per_second = messages_per_second  # None: Synapse's default rate limit
        self.url = f"http://127.0.0.1:{port}"
        self.secret = secrets.token_urlsafe(24)
        self.process: subprocess.Popen | None = None
        self.session = requests.Session()
        self.session.trust_env = False

    def configure(self) -> Path:
        if not SYNAPSE_PYTHON.exists():
            raise RuntimeError(f"no Synapse at {SYNAPSE_PYTHON}: run ./scripts/install.sh --test")
        self.directory.mkdir(parents=True, exist_ok=True)
        config_path = self.directory / "homeserver.yaml"
        log_config = self.directory / "log.yaml"
        log_config.write_text(yaml.safe_dump({
            "version": 1, "formatters": {"plain": {"format": "%(asctime)s %(name)s %(levelname)s %(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "formatter": "plain",
                                  "filename": str(self.directory / "homeserver.log")}},
            "root": {"level": "INFO", "handlers": ["file"]}, "disable_existing_loggers": False}))
        config = {
            "server_name": "localhost",
            "pid_file": str(self.directory / "homeserver.pid"),
            "listeners": [{"port": self.port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
                           "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}]}],
            "database": {"name": "sqlite3", "args": {"database": str(self.directory / "homeserver.db")}},
            "log_config": str(log_config),
            "media_store_path": str(self.directory / "media"),
            "signing_key_path": str(self.directory / "localhost.signing.key"),
            "registration_shared_secret": self.secret,
            "macaroon_secret_key": secrets.token_urlsafe(24),
            "form_secret": secrets.token_urlsafe(24),
            "report_stats": False,
            # Loopback only: no federation, no key servers, no previews, no phoning home.
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            "federation_domain_whitelist": [],
            "url_preview_enabled": False,
            "enable_metrics": False,
            "rc_login": {"address": {"per_second": 100, "burst_count": 100},
                         "account": {"per_second": 100, "burst_count": 100}},
            "rc_registration": {"per_second": 100, "burst_count": 100},
        }
        if self.messages_per_second is not None:
            config["rc_message"] = {"per_second": self.messages_per_second, "burst_count": 1}
        config_path.write_text(yaml.safe_dump(config))
        subprocess.run([str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(config_path),
                        "--generate-keys"], check=True, capture_output=True, timeout=120)
        return config_path

    def start(self, timeout: float = 120) -> None:
        config_path = self.directory / "homeserver.yaml"
        if not config_path.exists():
            config_path = self.configure()
        output = open(self.directory / "stdout.log", "ab")
        self.process = subprocess.Popen([str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "-c", str(config_path)],
                                        stdout=output, stderr=subprocess.STDOUT, cwd=self.directory)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"Synapse exited with {self.process.returncode}; see {self.directory}/stdout.log")
            try:
                if self.session.get(self.url + "/_matrix/client/versions", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise RuntimeError("Synapse did not answer within its start timeout")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def register(self, user: str) -> str:
        """Registers a user through the shared-secret admin API; returns its access token."""
        endpoint = self.url + "/_synapse/admin/v1/register"
        nonce = self.session.get(endpoint, timeout=10).json()["nonce"]
        password = secrets.token_urlsafe(16)
        mac = hmac.new(self.secret.encode(), digestmod=hashlib.sha1)
        mac.update(b"\x00".join([nonce.encode(), user.encode(), password.encode(), b"notadmin"]))
        answer = self.session.post(endpoint, json={"nonce": nonce, "username": user, "password": password,
                                                   "admin": False, "mac": mac.hexdigest()}, timeout=30)
        answer.raise_for_status()
        return answer.json()["access_token"]

    def create_room(self, token: str, alias: str) -> str:
        answer = self.session.post(self.url + "/_matrix/client/v3/createRoom", timeout=30,
                                   headers={"Authorization": f"Bearer {token}"},
                                   json={"room_alias_name": alias, "preset": "private_chat"})
        answer.raise_for_status()
        return answer.json()["room_id"]

    def messages(self, token: str, room_id: str) -> list[dict]:
        """Every m.room.message event in the room, oldest first."""
        answer = self.session.get(f"{self.url}/_matrix/client/v3/rooms/{room_id}/messages", timeout=30,
                                  headers={"Authorization": f"Bearer {token}"}, params={"dir": "b", "limit": 1000})
        answer.raise_for_status()
        events = [event for event in answer.json()["chunk"] if event["type"] == "m.room.message"]
        return list(reversed(events))
