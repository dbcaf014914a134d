"""A real VictoriaMetrics (Debian package victoria-metrics) on 127.0.0.1 for tests."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VictoriaMetrics:
    """Starts and stops one single-node VictoriaMetrics by PID; data survives a restart.

    -search.latencyOffset 0s: fresh points are visible to queries at once.
    -dedup.minScrapeInterval 1s: samples of a series with the same timestamp
      count once, which makes re-sent periods idempotent (the agent stamps a
      period's points with its valid-after).
    -retentionPeriod 100y: backfilled history from 2016-2020 is kept.
    """

    def __init__(self, data_dir: Path, extra_flags: tuple[str, ...] = ()):
        binary = shutil.which("victoria-metrics")
        if binary is None:
            raise RuntimeError("victoria-metrics is not installed (apt-get install victoria-metrics)")
        self.binary, self.data_dir, self.extra_flags = binary, Path(data_dir), tuple(extra_flags)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> VictoriaMetrics:
        log = open(self.data_dir.parent / f"victoria-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            [self.binary, f"-httpListenAddr=127.0.0.1:{self.port}", f"-storageDataPath={self.data_dir}",
             "-search.latencyOffset=0s", "-dedup.minScrapeInterval=1s", "-retentionPeriod=100y",
             "-loggerLevel=WARN", *self.extra_flags], stdout=log, stderr=subprocess.STDOUT)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                if requests.get(f"{self.url}/health", timeout=1).status_code in (200, 401):
                    return self
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"VictoriaMetrics did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def flush(self) -> None:
        """Makes everything written so far searchable (ingestion buffers for about a second)."""
        requests.get(f"{self.url}/internal/force_flush", timeout=10)

    def settled_export(self, selector: str, samples: int, timeout: float = 20.0) -> list[dict]:
        """The export of ``selector`` once its first series has ``samples`` samples (or at the timeout).

        Ingestion is asynchronous (acknowledged rows become searchable within
        about a second, longer under load), so a test waits for what it expects
        instead of reading once; a real loss still fails after the timeout.
        """
        end = time.monotonic() + timeout
        while True:
            self.flush()
            exported = self.export(selector)
            if (exported and len(exported[0]["timestamps"]) >= samples) or time.monotonic() > end:
                return exported
            time.sleep(0.5)

    def settled_query(self, promql: str, at: float, timeout: float = 20.0) -> list[dict]:
        """The instant query's result once it has any (or at the timeout): see ``settled_export``."""
        end = time.monotonic() + timeout
        while True:
            self.flush()
            result = self.query(promql, at=at)
            if result or time.monotonic() > end:
                return result
            time.sleep(0.5)

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql}
        if at is not None:
            params["time"] = at
        answer = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def export(self, selector: str) -> list[dict]:
        """Raw samples of every series matching ``selector`` (one JSON object per series)."""
        import json

        text = requests.get(f"{self.url}/api/v1/export", params={"match[]": selector}, timeout=30).text
        return [json.loads(line) for line in text.splitlines() if line.strip()]
